"""Which topics of a rosbag2 hold the images, the camera pose and the actions: a small YAML config.

Every robot names its topics differently, so the dataset code never hard-codes them. A mapping
file is a flat YAML dictionary whose keys are the fields of :class:`TopicMapping`::

    image_topic: /front/color/compressed     # sensor_msgs/Image or CompressedImage (type read from the bag)
    tf_parent: world                         # camera pose from /tf: the transform world -> child
    tf_child: front_color_optical_frame
    action_topic: /cmd_vel
    action_type: twist_stamped               # joint_state, twist, twist_stamped, joy or none
    action_names: [linear.x, angular.z]      # order of the action vector
    max_skew_s: 0.05
    arm_base_frame: base_link                # optional: the arm base pose, from /tf_static

Pose sources (exactly one): ``pose_topic`` carrying ``geometry_msgs/PoseStamped``,
``PoseWithCovarianceStamped``, ``TransformStamped`` or ``nav_msgs/Odometry``; or ``tf_parent`` +
``tf_child``, a transform published directly from parent to child on ``tf_topic`` (``/tf``).
Chains of transforms are not composed (tf2 is not available without a ROS install): record the
camera pose as its own topic, or publish the direct transform, when the camera sits on a moving
link. The pose is that of the camera *optical* frame (REP 103: z forward, x right, y down).

Arm base (optional): ``arm_base_frame`` names a frame whose pose is read once per bag from a
static transform on ``tf_static_topic`` (``/tf_static``): the transform whose child is that frame.
Its parent must be the camera poses' own frame (the pose messages' ``header.frame_id``, or
``tf_parent``), since transforms are not chained; a robot drawn from its joint angles by forward
kinematics then sits where the camera sees it. Empty (the default): no arm base is read, and bags
without ``/tf_static`` are fine.

Action names: joint names for ``joint_state`` (looked up by name in each message, so joints may
come in any order and in separate messages); ``linear.x`` .. ``angular.z`` for ``twist`` and
``twist_stamped`` (all six when left empty); ``axes.<i>`` and ``buttons.<i>`` for ``joy``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final

import yaml

from aapt_ros.model.config import KUKA_IIWA_JOINTS


class MappingError(ValueError):
    """A topic mapping is invalid or does not fit a bag; the message names the key and the fix."""


class ActionType(str, Enum):
    """The message type of the action topic, and how a vector is read from it."""

    JOINT_STATE = 'joint_state'  # sensor_msgs/msg/JointState, by joint name
    TWIST = 'twist'  # geometry_msgs/msg/Twist: no header, so the bag (receive) time stamps it
    TWIST_STAMPED = 'twist_stamped'  # geometry_msgs/msg/TwistStamped
    JOY = 'joy'  # sensor_msgs/msg/Joy
    NONE = 'none'  # no actions: the action vector has length 0


JOINT_STATE_FIELDS: Final = ('position', 'velocity', 'effort')
TWIST_COMPONENTS: Final = tuple(f'{part}.{axis}' for part in ('linear', 'angular') for axis in 'xyz')
_JOY_NAME: Final = re.compile(r'(axes|buttons)\.(\d+)')


@dataclass(frozen=True)
class TopicMapping:
    """Where a bag keeps the images, the camera pose and the actions (see the module docstring)."""

    image_topic: str
    pose_topic: str | None = None
    tf_parent: str | None = None
    tf_child: str | None = None
    action_topic: str | None = None
    action_type: str = ActionType.NONE  # an ActionType value; stored as the ActionType member
    action_names: tuple[str, ...] = ()
    joint_state_field: str = 'position'
    max_skew_s: float = 0.05  # largest |stamp difference| between an image and the nearest pose/action sample
    interpolate: bool = True  # poses: linear position + slerp; actions: linear (joy buttons: nearest)
    tf_topic: str = '/tf'
    # Child frame of the static transform parent -> arm base to read from tf_static_topic, the parent
    # being the camera poses' frame; '' reads none (Episode.arm_base then has shape (0,)).
    arm_base_frame: str = ''
    tf_static_topic: str = '/tf_static'  # tf2_msgs/TFMessage topic of the arm base transform

    def __post_init__(self) -> None:
        try:
            action_type = ActionType(self.action_type)
        except ValueError:
            raise MappingError(
                f'action_type {self.action_type!r} is not one of {[t.value for t in ActionType]}'
            ) from None
        object.__setattr__(self, 'action_type', action_type)
        object.__setattr__(self, 'action_names', tuple(self.action_names))
        if not self.image_topic:
            raise MappingError('image_topic is empty; name the sensor_msgs/Image or CompressedImage topic')
        has_tf = self.tf_parent is not None or self.tf_child is not None
        if (self.pose_topic is not None) == has_tf:
            raise MappingError(
                'give exactly one pose source: pose_topic, or tf_parent and tf_child '
                f'(got pose_topic={self.pose_topic!r}, tf_parent={self.tf_parent!r}, tf_child={self.tf_child!r})'
            )
        if has_tf and not (self.tf_parent and self.tf_child):
            raise MappingError(
                f'a /tf pose needs both tf_parent and tf_child, got {self.tf_parent!r} and {self.tf_child!r}'
            )
        self._check_actions(action_type)
        if self.arm_base_frame and not self.tf_static_topic:
            raise MappingError(
                f'arm_base_frame {self.arm_base_frame!r} needs a tf_static_topic (e.g. /tf_static) to read it from'
            )
        if not self.max_skew_s > 0:
            raise MappingError(f'max_skew_s must be positive (seconds), got {self.max_skew_s}')

    def _check_actions(self, action_type: ActionType) -> None:
        if action_type is ActionType.NONE:
            if self.action_topic is not None or self.action_names:
                raise MappingError(
                    f'action_type is none but action_topic={self.action_topic!r} and action_names='
                    f'{list(self.action_names)}; set action_type or remove them'
                )
            return
        if not self.action_topic:
            raise MappingError(f'action_type {action_type.value} needs an action_topic')
        if action_type in (ActionType.TWIST, ActionType.TWIST_STAMPED) and not self.action_names:
            object.__setattr__(self, 'action_names', TWIST_COMPONENTS)
        if not self.action_names:
            raise MappingError(f'action_type {action_type.value} needs action_names (the order of the action vector)')
        if len(set(self.action_names)) != len(self.action_names):
            raise MappingError(f'action_names has duplicates: {list(self.action_names)}')
        if action_type in (ActionType.TWIST, ActionType.TWIST_STAMPED):
            bad = [n for n in self.action_names if n not in TWIST_COMPONENTS]
            if bad:
                raise MappingError(f'twist action_names {bad} are not among {list(TWIST_COMPONENTS)}')
        if action_type is ActionType.JOY:
            bad = [n for n in self.action_names if not _JOY_NAME.fullmatch(n)]
            if bad:
                raise MappingError(f"joy action_names {bad} must look like 'axes.<i>' or 'buttons.<i>'")
        if self.joint_state_field not in JOINT_STATE_FIELDS:
            raise MappingError(f'joint_state_field {self.joint_state_field!r} is not one of {list(JOINT_STATE_FIELDS)}')

    @property
    def topics(self) -> tuple[str, ...]:
        """The bag topics this mapping reads: image, pose (or tf) and, if any, action and tf_static."""
        pose = self.pose_topic if self.pose_topic is not None else self.tf_topic
        action = (self.action_topic,) if self.action_topic else ()
        return (self.image_topic, pose, *action) + ((self.tf_static_topic,) if self.arm_base_frame else ())

    def as_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready values (lists, strings), the inverse of :func:`load_mapping`."""
        values = dataclasses.asdict(self)
        values['action_type'] = ActionType(self.action_type).value
        values['action_names'] = list(self.action_names)
        return values


# Topics written by our recorder (the sim data pipeline); config/topics_sim.yaml says the same.
SIM_MAPPING: Final = TopicMapping(
    image_topic='/camera/image_raw',
    pose_topic='/camera/pose',
    action_topic='/joint_commands',
    action_type=ActionType.JOINT_STATE,
    action_names=KUKA_IIWA_JOINTS,
    arm_base_frame='lbr_iiwa_link_0',  # sim_scene.ARM_BASE_FRAME (not imported: that module needs pybullet)
)

# The same bags recorded with --compression jpeg|png (the recorder's default is JPEG).
SIM_COMPRESSED_MAPPING: Final = dataclasses.replace(SIM_MAPPING, image_topic='/camera/image_raw/compressed')

_FIELDS: Final = {f.name: f for f in dataclasses.fields(TopicMapping)}
_OPTIONAL_STR: Final = ('pose_topic', 'tf_parent', 'tf_child', 'action_topic')


def _checked(key: str, value: Any, path: Path) -> Any:
    """``value`` converted to the field's type, or MappingError naming the key and the file."""

    def wrong(expected: str) -> MappingError:
        return MappingError(f'{path}: {key} must be {expected}, got {value!r} ({type(value).__name__})')

    if key in _OPTIONAL_STR:
        if value is not None and not isinstance(value, str):
            raise wrong('a string or null')
        return value
    if key == 'action_names':
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong('a list of strings')
        return tuple(value)
    if key == 'max_skew_s':
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong('a number of seconds')
        return float(value)
    if key == 'interpolate':
        if not isinstance(value, bool):
            raise wrong('true or false')
        return value
    if not isinstance(value, str):
        raise wrong('a string')
    return value


def load_mapping(path: str | Path) -> TopicMapping:
    """Read a mapping YAML file (keys = :class:`TopicMapping` fields; missing keys keep their defaults).

    Raises:
        MappingError: the file is missing or not a YAML dictionary, a key is unknown (the message
            lists the valid keys), a value has the wrong type, or the mapping is inconsistent
            (e.g. both or neither pose source).
    """
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise MappingError(f'cannot read topic mapping {path}: {err.strerror}') from None
    except yaml.YAMLError as err:
        raise MappingError(f'topic mapping {path} is not valid YAML: {err}') from None
    if not isinstance(loaded, dict):
        raise MappingError(f'topic mapping {path} must be a YAML dictionary of {sorted(_FIELDS)}, got {loaded!r}')
    unknown = sorted(str(k) for k in loaded if k not in _FIELDS)
    if unknown:
        raise MappingError(f'{path}: unknown key(s) {unknown}; valid keys: {sorted(_FIELDS)}')
    if 'image_topic' not in loaded:
        raise MappingError(f'{path}: image_topic is required')
    values = {key: _checked(key, value, path) for key, value in loaded.items()}
    try:
        return TopicMapping(**values)
    except MappingError as err:
        raise MappingError(f'{path}: {err}') from None
