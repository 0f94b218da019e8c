"""Conversions between ROS 2 messages and the streaming engine's plain values.

Each function takes or returns a message and raises ``InputError`` with a reason a person can
act on; the node logs that reason, drops the message and keeps serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose as PoseMsg
from geometry_msgs.msg import Twist
from sensor_msgs.msg import CameraInfo, JointState
from std_msgs.msg import Header

from aapt_ros.model.camera import Pose
from aapt_ros.model.config import CameraConfig

TWIST_FIELDS = ('linear.x', 'linear.y', 'linear.z', 'angular.x', 'angular.y', 'angular.z')


class InputError(ValueError):
    """An incoming message cannot be used; the message says why."""


class ActionSource(str, Enum):
    """Which message type carries the robot's actions."""

    JOINT_STATE = 'joint_state'  # sensor_msgs/JointState, values looked up by joint name
    TWIST = 'twist'  # geometry_msgs/Twist (velocity command, no header)
    TWIST_STAMPED = 'twist_stamped'  # geometry_msgs/TwistStamped
    NONE = 'none'  # no action topic: actions are zero (a camera moved by hand)


def pose_from_msg(msg: PoseMsg) -> Pose:
    """geometry_msgs/Pose -> Pose; the quaternion is checked by ``Pose.validated``."""
    p, q = msg.position, msg.orientation
    return Pose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def format_stamp(ns: int) -> str:
    return f'{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}'


def order_action(values: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """The model's action vector (len(names),) float64 from a name -> value mapping."""
    missing = [n for n in names if n not in values]
    if missing:
        raise InputError(f'action lacks {missing}; the model expects {list(names)}, got {sorted(values)}')
    return np.array([values[n] for n in names], dtype=np.float64)


def action_from_joint_state(msg: JointState, names: Sequence[str], field: str = 'position') -> np.ndarray:
    """Look up the model's joints by name in ``msg.<field>`` (position, velocity or effort)."""
    data = list(getattr(msg, field))
    if len(data) != len(msg.name):
        raise InputError(f'JointState has {len(msg.name)} names but {len(data)} {field} values')
    return order_action(dict(zip(msg.name, data, strict=True)), names)


def action_from_twist(msg: Twist, names: Sequence[str]) -> np.ndarray:
    values = {f'{part}.{axis}': getattr(getattr(msg, part), axis) for part in ('linear', 'angular') for axis in 'xyz'}
    return order_action(values, names)


def action_from_named_vector(action_names: Sequence[str], action: Sequence[float], names: Sequence[str]) -> np.ndarray:
    """For the Control message: parallel arrays of names and values."""
    if len(action_names) != len(action):
        raise InputError(f'action has {len(action)} values for {len(action_names)} names')
    if len(action) != len(names):
        raise InputError(f'action has {len(action)} values, the model expects {len(names)}: {list(names)}')
    return order_action(dict(zip(action_names, action, strict=True)), names)


def check_action_source(source: ActionSource, names: Sequence[str]) -> None:
    """Refuse at start-up a source that can never provide the model's actions."""
    if source in (ActionSource.TWIST, ActionSource.TWIST_STAMPED) and not set(names) <= set(TWIST_FIELDS):
        raise InputError(
            f'action_source {source.value!r} provides {list(TWIST_FIELDS)}, but the model expects {list(names)}; '
            'use action_source "joint_state" or a model trained on velocity commands'
        )


def camera_info_msg(camera: CameraConfig, header: Header) -> CameraInfo:
    """CameraInfo with the intrinsics the model was trained with (no distortion: images are synthetic)."""
    msg = CameraInfo()
    msg.header = header
    msg.width, msg.height = camera.width, camera.height
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg
