"""Run generator_node on a recorded pose/action trajectory and record what it publishes.

Starts the node in its own process with the chosen model, sends the bag's first camera image
as the start image (resized to the model's size), replays its ``/camera/pose`` and joint
commands (``/joint_commands``, to the node's ``joint_states``) over ROS 2 topics, and writes, in
a new folder:

- ``generated.mp4``: the published images;
- ``generated_bag/``: a rosbag2 (MCAP) with the published ``image_raw`` and ``camera_info``
  next to the input pose and joint messages (bag time = receive time);
- ``summary.json`` and ``node.log``.

It prints the frame rate and the per-frame latency. Pacing ``lockstep`` (default) sends the
next pose as soon as the image of the previous one arrives, which measures what the node can
sustain; ``recorded`` sends at the bag's own timing, as a live robot would.

Example::

    aapt-demo --output-dir demo_output/run1 --device cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState
from tqdm import tqdm

from aapt_ros.data.bags import TYPESTORE, BagError, BagWriter, read_messages
from aapt_ros.data.episodes import bag_topics
from aapt_ros.data.mapping import SIM_MAPPING
from aapt_ros.eval.live import CameraClient, NodeProcess, ReplayError
from aapt_ros.model.checkpoint import CONFIG_FILE, CheckpointError, load_config
from aapt_ros.node.conversions import stamp_to_ns
from aapt_ros.node.generator_node import default_model_path
from aapt_ros.node.image_conversion import array_to_image_msg, compressed_msg_to_rgb8, image_msg_to_rgb8

DEFAULT_BAG = Path(__file__).resolve().parents[1] / 'data' / 'samples' / 'sim_episode'  # made by aapt-record-sim
POSE_TOPIC = '/camera/pose'
ACTION_TOPIC = '/joint_commands'
IMAGE_TOPIC = '/camera/image_raw/compressed'
NAMESPACE = '/aapt_demo'


@dataclass(frozen=True)
class DemoSummary:
    model: str
    device: str
    frames: int
    poses_sent: int
    fps: float  # images received per second of replay
    latency_p50_ms: float  # pose published -> image received, end to end over ROS 2
    latency_p99_ms: float
    node_step_p50_ms: float  # generation time inside the node (from /diagnostics)
    node_step_p99_ms: float
    video: str
    bag: str


def new_output_dir(requested: Path | None) -> Path:
    folder = requested or Path('demo_output') / datetime.now().strftime('%Y%m%d-%H%M%S')
    if folder.exists() and any(folder.iterdir()):
        raise ReplayError(f'refusing to overwrite the non-empty folder {folder}; choose another --output-dir')
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def first_image(bag: Path, topic: str, size: tuple[int, int]) -> Image:
    """The bag's first image on ``topic`` (raw or compressed) as an rgb8 Image of the model's size."""
    message = next(read_messages(bag, [topic]))
    if message.msgtype == 'sensor_msgs/msg/CompressedImage':
        rgb = compressed_msg_to_rgb8(deserialize_message(message.data, CompressedImage))
    else:
        rgb = image_msg_to_rgb8(deserialize_message(message.data, Image))
    if rgb.shape[1::-1] != size:  # the recording's size may differ from the model's
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return array_to_image_msg(rgb, 'rgb8')


def arm_base_pose(bag: Path, frame: str = SIM_MAPPING.arm_base_frame) -> list[float]:
    """The node's arm_base_pose parameter (x, y, z, qx, qy, qz, qw) from the bag's static transform
    to ``frame``; empty when the bag has none (an older recording: the node then warns)."""
    topic = SIM_MAPPING.tf_static_topic  # where aapt-record-sim writes it
    if topic not in bag_topics(bag)[0]:
        return []
    pose: list[float] = []
    for message in read_messages(bag, [topic]):
        for transform in TYPESTORE.deserialize_cdr(message.data, message.msgtype).transforms:
            if transform.child_frame_id.lstrip('/') == frame:
                t, q = transform.transform.translation, transform.transform.rotation
                pose = [t.x, t.y, t.z, q.x, q.y, q.z, q.w]
    return pose


def run_demo(
    model: Path,
    bag: Path,
    output_dir: Path,
    *,
    device: str,
    pacing: str,
    max_frames: int | None,
    timeout: float,
    action_topic: str = ACTION_TOPIC,
    image_topic: str | None = IMAGE_TOPIC,
) -> DemoSummary:
    messages = list(read_messages(bag, [POSE_TOPIC, action_topic]))
    camera = load_config(model / CONFIG_FILE).camera
    start_image = first_image(bag, image_topic, (camera.width, camera.height)) if image_topic else None
    n_poses = sum(m.topic == POSE_TOPIC for m in messages)
    if n_poses == 0:
        raise ReplayError(f'bag {bag} has no messages on {POSE_TOPIC}')
    limit = min(n_poses, max_frames) if max_frames else n_poses
    parameters: dict[str, object] = {
        'model_path': str(model.resolve()),
        'device': device,
        'input_depth': 1000,
        'image_depth': 1000,
    }
    base = arm_base_pose(bag)
    if base:
        parameters['arm_base_pose'] = base
    context = rclpy.Context()  # its own, so the demo also runs inside a process that uses rclpy
    with (
        NodeProcess(parameters, namespace=NAMESPACE, log_path=output_dir / 'node.log') as node,
        rclpy.init(context=context),
        BagWriter(output_dir / 'generated_bag') as bag_out,
    ):
        client = CameraClient(NAMESPACE, context=context)
        client.wait_connected(timeout, node)
        if start_image is not None:  # image-to-video: the recording's first frame seeds the stream
            client.start_image_pub.publish(start_image)
            client.spin_until(lambda: 'start image received' in node.log_text(), timeout, 'the start image', node)
        sent: dict[int, float] = {}
        first_stamp, first_send = None, time.perf_counter()
        progress = tqdm(total=limit, desc='frames', unit='frame')
        for message in messages:
            if len(sent) == limit:
                break
            msg_type = PoseStamped if message.topic == POSE_TOPIC else JointState  # actions go to joint_states
            msg = deserialize_message(message.data, msg_type)
            if pacing == 'recorded':  # keep the bag's timing relative to its first message
                first_stamp = message.log_time_ns if first_stamp is None else first_stamp
                due = first_send + (message.log_time_ns - first_stamp) / 1e9
                client.spin_until(lambda due=due: time.perf_counter() >= due, timeout, 'pacing')
            (client.pose_pub if msg_type is PoseStamped else client.joint_pub).publish(msg)
            bag_out.write(f'{NAMESPACE}/{message.topic.split("/")[-1]}', message.msgtype, time.time_ns(), message.data)
            if msg_type is PoseStamped:
                stamp = stamp_to_ns(msg.header.stamp)
                sent[stamp] = time.perf_counter()
                if pacing == 'lockstep':
                    client.spin_until(
                        lambda stamp=stamp: client.image_with_stamp(stamp) is not None,
                        timeout,
                        f'the image of pose {len(sent)}',
                        node,
                    )
                progress.update(1)
        client.spin_until(lambda: len(client.images) >= len(sent), timeout, 'the last images', node)
        client.spin_until(lambda: _final_diagnostics(client, len(sent)) is not None, timeout, 'final diagnostics', node)
        progress.close()
        frames = _write_outputs(client, bag_out, output_dir, load_config(model / CONFIG_FILE).camera.rate_hz)
    received = [client.image_with_stamp(s) for s in sent]
    latencies = np.array([(r.receive_time - sent[stamp_to_ns(r.msg.header.stamp)]) * 1e3 for r in received if r])
    arrival = [r.receive_time for r in received if r]
    duration = arrival[-1] - min(sent.values()) if arrival else 0.0
    diagnostics = _final_diagnostics(client, len(sent)) or {}
    return DemoSummary(
        model=str(model),
        device=diagnostics.get('device', device),  # what 'auto' resolved to
        frames=frames,
        poses_sent=len(sent),
        fps=frames / duration if duration > 0 else 0.0,
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p99_ms=float(np.percentile(latencies, 99)),
        node_step_p50_ms=float(diagnostics.get('latency_p50_ms', 0.0)),
        node_step_p99_ms=float(diagnostics.get('latency_p99_ms', 0.0)),
        video=str(output_dir / 'generated.mp4'),
        bag=str(output_dir / 'generated_bag'),
    )


def _final_diagnostics(client: CameraClient, frames: int) -> dict[str, str] | None:
    """The node's /diagnostics values (and its device) once it has counted ``frames`` frames."""
    for received in reversed(client.diagnostics):
        for status in received.msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if int(values.get('frames', 0)) >= frames:
                return {**values, 'device': status.hardware_id}
    return None


def _write_outputs(client: CameraClient, bag_out: BagWriter, output_dir: Path, rate_hz: float) -> int:
    if not client.images:
        raise ReplayError('the node published no images')
    first = client.images[0].msg
    writer = cv2.VideoWriter(
        str(output_dir / 'generated.mp4'), cv2.VideoWriter_fourcc(*'mp4v'), rate_hz, (first.width, first.height)
    )
    for received in client.images:
        writer.write(cv2.cvtColor(image_msg_to_rgb8(received.msg), cv2.COLOR_RGB2BGR))
        bag_out.write(
            f'{NAMESPACE}/image_raw',
            'sensor_msgs/msg/Image',
            int(received.receive_time * 1e9),
            serialize_message(received.msg),
        )
    writer.release()
    for received in client.camera_infos:
        bag_out.write(
            f'{NAMESPACE}/camera_info',
            'sensor_msgs/msg/CameraInfo',
            int(received.receive_time * 1e9),
            serialize_message(received.msg),
        )
    return len(client.images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', type=Path, default=None, help='checkpoint folder (default: the shipped model)')
    parser.add_argument('--bag', type=Path, default=DEFAULT_BAG, help=f'rosbag2 with {POSE_TOPIC} and the actions')
    parser.add_argument('--action-topic', default=ACTION_TOPIC, help='JointState topic of the bag sent as actions')
    parser.add_argument(
        '--image-topic',
        default=IMAGE_TOPIC,
        help='Image or CompressedImage topic whose first frame seeds the stream; "" for none',
    )
    parser.add_argument(
        '--output-dir', type=Path, default=None, help='new folder for the outputs (default: demo_output/<date-time>)'
    )
    parser.add_argument('--device', default='auto', help='cpu, cuda, cuda:N or auto')
    parser.add_argument(
        '--pacing',
        choices=['lockstep', 'recorded'],
        default='lockstep',
        help="send each pose after the previous image (lockstep) or at the bag's timing",
    )
    parser.add_argument('--max-frames', type=int, default=None, help='stop after this many poses')
    parser.add_argument('--timeout', type=float, default=120.0, help='seconds to wait for the node at each stage')
    args = parser.parse_args(argv)
    try:
        output_dir = new_output_dir(args.output_dir)
        summary = run_demo(
            args.model or default_model_path(),
            args.bag,
            output_dir,
            device=args.device,
            pacing=args.pacing,
            max_frames=args.max_frames,
            timeout=args.timeout,
            action_topic=args.action_topic,
            image_topic=args.image_topic or None,
        )
    except (ReplayError, BagError, CheckpointError) as err:
        print(f'ERROR: {err}', file=sys.stderr)
        return 1
    (output_dir / 'summary.json').write_text(json.dumps(asdict(summary), indent=2) + '\n')
    print(
        f'{summary.frames} frames for {summary.poses_sent} poses on {summary.device}: {summary.fps:.1f} frames/s; '
        f'latency pose->image p50 {summary.latency_p50_ms:.1f} ms, p99 {summary.latency_p99_ms:.1f} ms '
        f'(generation in the node p50 {summary.node_step_p50_ms:.1f} ms, p99 {summary.node_step_p99_ms:.1f} ms)'
    )
    print(f'wrote {summary.video}, {summary.bag}, {output_dir / "summary.json"}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
