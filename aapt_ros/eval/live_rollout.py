"""Live rollout: an episode sent over ROS 2 to a generator_node process, at the recorded rate.

The node runs with ``use_sim_time``; ``/clock`` follows the episode's stamps. Each frame sends
the action (as JointState) and then the pose (PoseStamped); the first frame goes as the start
image. The node answers each pose with an image stamped like it, which is matched by stamp.
With the same model and seed, the images equal those of the offline rollout (tested): the node
adds transport, not a different computation.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState

from aapt_ros.data.episodes import Episode
from aapt_ros.eval.live import CameraClient, NodeProcess
from aapt_ros.node.image_conversion import array_to_image_msg, image_msg_to_rgb8

NAMESPACE = '/aapt_eval'


def _stamp(msg_stamp: object, stamp_ns: int) -> None:
    msg_stamp.sec, msg_stamp.nanosec = divmod(stamp_ns, 1_000_000_000)  # type: ignore[attr-defined]


def rollout_live(
    model: Path,
    episode: Episode,
    log_path: Path,
    *,
    device: str,
    seed: int,
    pacing: str = 'recorded',
    timeout: float = 120.0,
    decoder: str = 'auto',
    window_frames: int | None = None,
) -> list[np.ndarray]:
    """Generated frames for ``episode`` from a node process; frame 0 is the start image as published.

    ``pacing``: 'recorded' sends frame i at its stamp's offset from the first (real time);
    'lockstep' sends each frame once the previous image has arrived.
    """
    parameters = {
        'model_path': str(model.resolve()),
        'device': device,
        'seed': seed,
        'decoder': decoder,
        'window_frames': window_frames or 0,
        'use_sim_time': True,
        'input_depth': 1000,
        'image_depth': 1000,
    }
    context = rclpy.Context()
    stamps = episode.stamps_ns.tolist()
    with NodeProcess(parameters, namespace=NAMESPACE, log_path=log_path) as node, rclpy.init(context=context):
        client = CameraClient(NAMESPACE, context=context, name='aapt_eval_client')
        clock = client.create_publisher(Clock, '/clock', 10)
        client.wait_connected(timeout, node)
        tick = Clock()
        _stamp(tick.clock, stamps[0])
        clock.publish(tick)
        client.start_image_pub.publish(array_to_image_msg(episode.frames[0], 'rgb8'))
        client.spin_until(lambda: 'start image received' in node.log_text(), timeout, 'the start image', node)
        start = time.perf_counter()
        for i, stamp in enumerate(stamps):
            if pacing == 'recorded':
                due = start + (stamp - stamps[0]) / 1e9
                client.spin_until(lambda due=due: time.perf_counter() >= due, timeout, 'pacing')
            _stamp(tick.clock, stamp)
            clock.publish(tick)
            joints = JointState(name=list(episode.action_names), position=episode.actions[i].tolist())
            _stamp(joints.header.stamp, stamp)
            client.joint_pub.publish(joints)
            pose = PoseStamped()
            _stamp(pose.header.stamp, stamp)
            pose.header.frame_id = 'world'
            p, q = pose.pose.position, pose.pose.orientation
            p.x, p.y, p.z = episode.positions[i].tolist()
            q.x, q.y, q.z, q.w = episode.orientations[i].tolist()
            client.pose_pub.publish(pose)
            if pacing == 'lockstep':
                client.spin_until(lambda s=stamp: client.image_with_stamp(s) is not None, timeout, f'image {i}', node)
        client.spin_until(lambda: all(client.image_with_stamp(s) for s in stamps), timeout, 'the last images', node)
        frames = [image_msg_to_rgb8(client.image_with_stamp(s).msg) for s in stamps]  # type: ignore[union-attr]
        client.destroy_node()
    return frames
