"""Small rosbag2 files for the dataset tests, written with rosbags (no ROS install needed).

The motion is analytic so interpolated values can be checked exactly: the position and the joint
angles are linear in time and the orientation turns about a fixed axis at a constant rate, so
linear interpolation and slerp between two samples reproduce the truth at any stamp between them.
Each frame is one flat colour that encodes its index (:func:`frame_value`), which survives JPEG.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import Writer

from aapt_ros.data.bags import BAG_VERSION, TYPESTORE, Storage
from aapt_ros.model.config import KUKA_IIWA_JOINTS

T = TYPESTORE.types
NS = 1_000_000_000
START_NS = 1_700_000_000 * NS  # a realistic epoch stamp: int64 arithmetic must stay exact
SIZE = (32, 24)  # width, height of the test frames
AXIS = np.array([1.0, 2.0, 2.0]) / 3.0  # unit rotation axis of the orientation
TURN_RATE = 6.0  # rad/s: 0.2 rad between 30 Hz samples, so slerp and normalised lerp differ visibly
ARM_BASE_FRAME = 'lbr_iiwa_link_0'
# Arm base x, y, z, qx, qy, qz, qw in world: a yaw of 0.4 rad, the quaternion 0.5% long (as a float32
# sender might write it) so that the reader's renormalisation shows.
ARM_BASE = (-0.4, 0.1, 0.625, 0.0, 0.0, 1.005 * np.sin(0.2), 1.005 * np.cos(0.2))


def position_at(t_s: np.ndarray | float) -> np.ndarray:
    """(N, 3) camera position at seconds ``t_s`` after START_NS."""
    t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    return np.stack([0.1 + t, -2.0 * t, 0.5 + 0.0 * t], axis=1)


def quaternion_at(t_s: np.ndarray | float) -> np.ndarray:
    """(N, 4) x, y, z, w: a turn of TURN_RATE * t about AXIS."""
    t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    half = 0.5 * TURN_RATE * t
    return np.concatenate([np.sin(half)[:, None] * AXIS, np.cos(half)[:, None]], axis=1)


def joints_at(t_s: np.ndarray | float) -> np.ndarray:
    """(N, 7) joint angles, linear in time, different per joint."""
    t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    return 0.1 * np.arange(1, 8) + 0.3 * t[:, None] * np.arange(1, 8)


def frame_value(index: int) -> int:
    """Grey level that identifies frame ``index`` (steps of 7 stay apart after JPEG)."""
    return 10 + (7 * index) % 230


def flat_frame(value: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of one colour derived from ``value``."""
    width, height = size
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = (value, 255 - value, value // 2)
    return frame


def header(stamp_ns: int, frame_id: str = 'world') -> Any:
    sec, nanosec = divmod(int(stamp_ns), NS)
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id)


def image(stamp_ns: int, rgb: np.ndarray, encoding: str = 'rgb8') -> Any:
    height, width = rgb.shape[:2]
    data = np.ascontiguousarray(rgb).reshape(-1).view(np.uint8)
    return T['sensor_msgs/msg/Image'](
        header=header(stamp_ns, 'camera_optical_frame'),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=len(data) // height,
        data=data,
    )


def compressed(stamp_ns: int, rgb: np.ndarray, fmt: str = 'jpeg') -> Any:
    ok, encoded = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return T['sensor_msgs/msg/CompressedImage'](
        header=header(stamp_ns, 'camera_optical_frame'), format=f'rgb8; {fmt} compressed bgr8', data=encoded.reshape(-1)
    )


def _pose(position: Sequence[float], quaternion: Sequence[float]) -> Any:
    return T['geometry_msgs/msg/Pose'](
        position=T['geometry_msgs/msg/Point'](*map(float, position)),
        orientation=T['geometry_msgs/msg/Quaternion'](*map(float, quaternion)),
    )


def pose_stamped(stamp_ns: int, position: Sequence[float], quaternion: Sequence[float]) -> Any:
    return T['geometry_msgs/msg/PoseStamped'](header=header(stamp_ns), pose=_pose(position, quaternion))


def odometry(stamp_ns: int, position: Sequence[float], quaternion: Sequence[float]) -> Any:
    covariance = T['geometry_msgs/msg/PoseWithCovariance'](pose=_pose(position, quaternion), covariance=np.zeros(36))
    zero = T['geometry_msgs/msg/Vector3'](0.0, 0.0, 0.0)
    twist = T['geometry_msgs/msg/TwistWithCovariance'](
        twist=T['geometry_msgs/msg/Twist'](linear=zero, angular=zero), covariance=np.zeros(36)
    )
    return T['nav_msgs/msg/Odometry'](header=header(stamp_ns), child_frame_id='camera', pose=covariance, twist=twist)


def transform(stamp_ns: int, parent: str, child: str, position: Sequence[float], quaternion: Sequence[float]) -> Any:
    return T['geometry_msgs/msg/TransformStamped'](
        header=header(stamp_ns, parent),
        child_frame_id=child,
        transform=T['geometry_msgs/msg/Transform'](
            translation=T['geometry_msgs/msg/Vector3'](*map(float, position)),
            rotation=T['geometry_msgs/msg/Quaternion'](*map(float, quaternion)),
        ),
    )


def tf(*transforms: Any) -> Any:
    return T['tf2_msgs/msg/TFMessage'](transforms=list(transforms))


def joint_state(stamp_ns: int, names: Sequence[str], positions: Sequence[float]) -> Any:
    return T['sensor_msgs/msg/JointState'](
        header=header(stamp_ns),
        name=list(names),
        position=np.array(positions, dtype=np.float64),  # a contiguous copy, as rosbags serialises the buffer
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )


def twist(linear: Sequence[float], angular: Sequence[float]) -> Any:
    vector = T['geometry_msgs/msg/Vector3']
    return T['geometry_msgs/msg/Twist'](linear=vector(*map(float, linear)), angular=vector(*map(float, angular)))


def twist_stamped(stamp_ns: int, linear: Sequence[float], angular: Sequence[float]) -> Any:
    return T['geometry_msgs/msg/TwistStamped'](header=header(stamp_ns), twist=twist(linear, angular))


def joy(stamp_ns: int, axes: Sequence[float], buttons: Sequence[int]) -> Any:
    return T['sensor_msgs/msg/Joy'](
        header=header(stamp_ns), axes=np.asarray(axes, dtype=np.float32), buttons=np.asarray(buttons, dtype=np.int32)
    )


def write_bag(
    path: Path,
    messages: Iterable[tuple[str, int, Any]],
    *,
    storage: Storage = Storage.MCAP,
    empty_topics: dict[str, str] | None = None,
) -> Path:
    """Write ``(topic, bag time ns, message)`` in bag-time order.

    ``empty_topics`` (topic: type) get their connection first, even without messages; a message
    given as ``bytes`` is written as is (raw CDR) on such a topic.
    """
    writer = Writer(path, version=BAG_VERSION, storage_plugin=storage.plugin)
    connections: dict[str, Any] = {}
    with writer:
        for topic, msgtype in (empty_topics or {}).items():
            connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
        for topic, log_time_ns, msg in sorted(messages, key=lambda m: m[1]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=TYPESTORE)
            data = msg if isinstance(msg, bytes) else TYPESTORE.serialize_cdr(msg, msg.__msgtype__)
            writer.write(connections[topic], log_time_ns, data)
    return path


def sim_messages(
    n: int = 30,
    rate_hz: float = 30.0,
    *,
    pose_offset_ns: int = 0,
    action_offset_ns: int = 0,
    pose_count: int | None = None,
    compressed_images: bool = False,
    image_stamps_ns: Sequence[int] | None = None,
    size: tuple[int, int] = SIZE,
    arm_base: Sequence[float] | None = ARM_BASE,
) -> list[tuple[str, int, Any]]:
    """Our recorder's topics: ``n`` images, poses and joint commands at ``rate_hz``, and one
    ``/tf_static`` world -> ARM_BASE_FRAME at ``arm_base`` (None: none, as in bags recorded before it).

    Poses and actions are stamped ``*_offset_ns`` after the images and received later than the
    images (bag time = stamp + 40 ms for poses, + 5 ms for images), so aligning by bag time would
    give wrong values. ``pose_count`` stops the pose stream early.
    """
    step = round(NS / rate_hz)
    stamps = list(image_stamps_ns) if image_stamps_ns is not None else [START_NS + i * step for i in range(n)]
    messages: list[tuple[str, int, Any]] = []
    for i, stamp in enumerate(stamps):
        frame = flat_frame(frame_value(i), size)
        if compressed_images:
            messages.append(('/camera/image_raw/compressed', stamp + 5_000_000, compressed(stamp, frame)))
        else:
            messages.append(('/camera/image_raw', stamp + 5_000_000, image(stamp, frame)))
    for i in range(n if pose_count is None else pose_count):
        stamp = START_NS + i * step + pose_offset_ns
        t = (stamp - START_NS) / NS
        messages.append(
            ('/camera/pose', stamp + 40_000_000, pose_stamped(stamp, position_at(t)[0], quaternion_at(t)[0]))
        )
    for i in range(n):
        stamp = START_NS + i * step + action_offset_ns
        t = (stamp - START_NS) / NS
        messages.append(('/joint_commands', stamp + 1_000_000, joint_state(stamp, KUKA_IIWA_JOINTS, joints_at(t)[0])))
    if arm_base is not None:
        base = transform(START_NS, 'world', ARM_BASE_FRAME, arm_base[:3], arm_base[3:])
        messages.append(('/tf_static', START_NS, tf(base)))
    return messages
