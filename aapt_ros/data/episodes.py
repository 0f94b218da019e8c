"""One recording (episode) read from a rosbag2: frames with the camera pose and actions at their stamps.

The topics come from a :class:`~aapt_ros.data.mapping.TopicMapping`, so any bag works. Matching
uses **header stamps** (the acquisition time), never the bag time (the receive time), except for
``geometry_msgs/Twist``, which has no header.

For each image, at its stamp ``t``:

- a stream (the pose, or one action component) *matches* when its nearest sample lies within
  ``max_skew_s`` of ``t``; an image that a stream does not match is skipped and counted
  (``Episode.skipped``, and a logged warning); nothing left is an error.
- with ``interpolate``, a matched value is interpolated between the samples just before and just
  after ``t`` (positions and actions linearly, orientations by slerp; joy buttons take the nearest
  sample); at the ends of a stream, or without ``interpolate``, the nearest sample is used.
- images with the same stamp as an earlier one are skipped (counted as well).

With ``arm_base_frame`` set, the arm base pose (``Episode.arm_base``) is read from the static
transforms on ``tf_static_topic``: the one whose child is that frame (the last one, if the bag
repeats it). Its parent must be the frame of the camera poses (every pose message's
``header.frame_id``, or ``tf_parent``): transforms are not chained, as there is no TF tree without
ROS. Its quaternion is renormalised.

``rate_hz`` resamples: output times run from the first usable image's stamp in steps of
``P = 1 / rate_hz``; each takes the usable image nearest to it if that lies within
``min(max_skew_s, P / 4)``, and is dropped otherwise (so ``stamps_ns`` shows the gap;
:mod:`aapt_ros.data.clips` never cuts a clip across one). The quarter period keeps consecutive
frames 0.5 to 1.5 periods apart, so a 10 Hz camera asked for 15 Hz gives 15 Hz frames with gaps,
not 10 Hz frames passed off as 15 Hz. An image is used at most once. Episode stamps are always
the chosen images' own stamps, and poses and actions are taken at those stamps.

The bag is read twice: once for stamps, poses and actions (image pixels are not decoded; the
stamp is read from the serialized header), once to decode the chosen images only, so memory
holds the output frames and not the whole recording.

Errors: :class:`MappingError` when the mapping does not fit the bag (missing topic, with the
bag's topics and types; wrong message type; a joint, joy index or tf pair never seen; no arm base
transform, or one in another frame than the poses); :class:`BagError` when the bag is unreadable
(missing, truncated, corrupt), empty, has no image, has an image that cannot be decoded, has no
image left after matching, or has an arm base that is not finite or whose quaternion is not unit.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from rosbags.rosbag2 import Reader

from aapt_ros.data.alignment import NS, lookup, resample, slerp
from aapt_ros.data.bags import TYPESTORE, BagError, read_messages
from aapt_ros.data.mapping import SIM_COMPRESSED_MAPPING, SIM_MAPPING, ActionType, MappingError, TopicMapping
from aapt_ros.model.camera import QUATERNION_NORM_TOLERANCE
from aapt_ros.node.image_conversion import ImageConversionError, compressed_msg_to_rgb8, image_msg_to_rgb8

log = logging.getLogger(__name__)

IMAGE_TYPES: Final = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
TF_TYPE: Final = 'tf2_msgs/msg/TFMessage'
# The pose part of each accepted pose message: (header, geometry_msgs/Pose or Transform).
POSE_TYPES: Final[dict[str, Callable[[Any], tuple[Any, Any]]]] = {
    'geometry_msgs/msg/PoseStamped': lambda m: (m.header, m.pose),
    'geometry_msgs/msg/PoseWithCovarianceStamped': lambda m: (m.header, m.pose.pose),
    'geometry_msgs/msg/TransformStamped': lambda m: (m.header, m.transform),
    'nav_msgs/msg/Odometry': lambda m: (m.header, m.pose.pose),
}
ACTION_TYPES: Final = {
    ActionType.JOINT_STATE: 'sensor_msgs/msg/JointState',
    ActionType.TWIST: 'geometry_msgs/msg/Twist',
    ActionType.TWIST_STAMPED: 'geometry_msgs/msg/TwistStamped',
    ActionType.JOY: 'sensor_msgs/msg/Joy',
}
# How to get past a missing arm base: every arm base error ends with this.
_ARM_BASE_FIX: Final = (
    "set arm_base_frame: '' in the topic mapping to read no arm base, or re-record the bag with "
    'aapt-record-sim (which writes the arm base to /tf_static)'
)


@dataclass(frozen=True, eq=False)  # eq would compare arrays elementwise and fail
class Episode:
    """Aligned frames, camera poses and actions of one bag; row i of every per-frame array is one instant."""

    stamps_ns: np.ndarray  # (N,) int64, the images' header stamps, increasing
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    positions: np.ndarray  # (N, 3) float64, camera optical frame origin in the pose's parent frame
    orientations: np.ndarray  # (N, 4) float64 unit quaternion x, y, z, w of the optical frame
    actions: np.ndarray  # (N, A) float64, columns in action_names order (A = 0 without actions)
    action_names: tuple[str, ...]
    source: str  # bag path
    # (7,) float64 x, y, z, qx, qy, qz, qw (unit quaternion) of mapping.arm_base_frame in the poses'
    # parent frame, the same for every frame (the base does not move); (0,) when the mapping reads none.
    arm_base: np.ndarray
    skipped: int = 0  # images left out: no pose/action within max_skew_s, or a repeated stamp

    def __len__(self) -> int:
        return len(self.stamps_ns)


class _Series:
    """Samples of one stream, gathered in bag order; ``arrays`` sorts them by stamp."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.values: list[Any] = []

    def add(self, stamp_ns: int, value: Any) -> None:
        self.stamps.append(stamp_ns)
        self.values.append(value)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps (M,) int64 strictly increasing, values (M, ...) float64); repeated stamps keep the first."""
        stamps = np.asarray(self.stamps, dtype=np.int64)
        order = np.argsort(stamps, kind='stable')
        stamps, first = np.unique(stamps[order], return_index=True)
        return stamps, np.asarray(self.values, dtype=np.float64)[order][first]


@dataclass
class _Recording:
    """What the first pass gathers: image stamps in bag order, the pose stream, one stream per action,
    the frames the poses are given in and the last arm base transform (parent frame, 7 values)."""

    image_stamps: list[int]
    pose: _Series
    actions: list[_Series]
    pose_frames: set[str] = dataclasses.field(default_factory=set)
    arm_base: tuple[str, list[float]] | None = None


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * NS + int(header.stamp.nanosec)


def _header_stamp_ns(data: bytes) -> int:
    """Stamp of a serialized Image/CompressedImage without deserializing its pixels.

    The Header is the first field, so ``sec`` (int32) and ``nanosec`` (uint32) follow the 4-byte
    CDR encapsulation header, whose second byte's low bit says little endian.
    """
    sec, nanosec = struct.unpack_from('<iI' if data[1] & 1 else '>iI', data, 4)
    return int(sec) * NS + int(nanosec)


def _pose_values(pose: Any) -> list[float]:
    """Position + quaternion of a geometry_msgs Pose or Transform, as 7 floats."""
    p = pose.position if hasattr(pose, 'position') else pose.translation
    q = pose.orientation if hasattr(pose, 'orientation') else pose.rotation
    return [p.x, p.y, p.z, q.x, q.y, q.z, q.w]


def bag_topics(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Message type and message count of every topic in the bag.

    Raises:
        BagError: the bag is missing, or rosbags cannot open it (truncated, corrupt, not a bag).
    """
    if not path.exists():
        raise BagError(f'bag not found: {path}')
    try:
        with Reader(path) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
            counts = dict.fromkeys(types, 0)
            for c in reader.connections:
                counts[c.topic] += c.msgcount
    except Exception as err:  # rosbags raises several reader errors; the path and a hint are what help
        raise BagError(
            f'cannot read bag {path}: {err} (the file is truncated or corrupt, e.g. an interrupted '
            f'recording; `mcap recover` can repair an MCAP file)'
        ) from None
    return types, counts


def _check_topics(path: Path, mapping: TopicMapping) -> None:
    """Raise unless the bag has the mapping's topics, with usable types and at least one message each."""
    types, counts = bag_topics(path)
    if not types:
        raise BagError(f'bag {path} is empty: it has no topics')
    listing = ', '.join(f'{t} ({types[t]}, {counts[t]} msgs)' for t in sorted(types))
    base_topic = mapping.tf_static_topic if mapping.arm_base_frame else None
    missing = [t for t in mapping.topics if t not in types and t != base_topic]  # the arm base has its own message
    if missing:
        compressed = f'{mapping.image_topic}/compressed'  # image_transport's name for the JPEG/PNG stream
        hint = f'; set image_topic to {compressed}' if mapping.image_topic in missing and compressed in types else ''
        raise MappingError(f'bag {path} has no topic(s) {missing} named by the mapping{hint}; its topics: {listing}')
    if base_topic is not None and counts.get(base_topic, 0) == 0:
        raise MappingError(
            f'bag {path} has no {base_topic} message to read the arm base frame {mapping.arm_base_frame!r} '
            f'from; {_ARM_BASE_FIX}; its topics: {listing}'
        )

    def wrong(key: str, topic: str, expected: str) -> MappingError:
        return MappingError(f'bag {path}: {key} {topic} carries {types[topic]}, expected {expected}')

    if types[mapping.image_topic] not in IMAGE_TYPES:
        raise wrong('image_topic', mapping.image_topic, ' or '.join(IMAGE_TYPES))
    if mapping.pose_topic is not None and types[mapping.pose_topic] not in POSE_TYPES:
        tf_hint = (
            ' (for a transform in /tf set tf_parent and tf_child instead)'
            if types[mapping.pose_topic] == TF_TYPE
            else ''
        )
        raise wrong('pose_topic', mapping.pose_topic, ', '.join(POSE_TYPES) + tf_hint)
    if mapping.pose_topic is None and types[mapping.tf_topic] != TF_TYPE:
        raise wrong('tf_topic', mapping.tf_topic, TF_TYPE)
    if mapping.arm_base_frame and types[mapping.tf_static_topic] != TF_TYPE:
        raise wrong('tf_static_topic', mapping.tf_static_topic, TF_TYPE)
    action_type = ActionType(mapping.action_type)
    if mapping.action_topic is not None and types[mapping.action_topic] != ACTION_TYPES[action_type]:
        fits = [t.value for t, name in ACTION_TYPES.items() if name == types[mapping.action_topic]]
        hint = f' (action_type {fits[0]} reads it)' if fits else ''
        expected = ACTION_TYPES[action_type] + hint
        raise wrong(f'action_topic of action_type {action_type.value}', mapping.action_topic, expected)
    for key, topic in (('image_topic', mapping.image_topic), ('pose source', mapping.topics[1])):
        if counts[topic] == 0:
            raise BagError(f'bag {path} has no messages on the {key} {topic}; its topics: {listing}')
    if mapping.action_topic is not None and counts[mapping.action_topic] == 0:
        raise BagError(f'bag {path} has no messages on the action_topic {mapping.action_topic}')


def _action_reader(mapping: TopicMapping) -> Callable[[Any, int], Iterator[tuple[int, int, float]]]:
    """A function (message, bag time) -> (component, stamp_ns, value) for every component it carries."""
    names = mapping.action_names
    action_type = ActionType(mapping.action_type)
    if action_type is ActionType.JOINT_STATE:
        column = {name: k for k, name in enumerate(names)}

        def joint_state(msg: Any, _: int) -> Iterator[tuple[int, int, float]]:
            values, stamp = getattr(msg, mapping.joint_state_field), _stamp_ns(msg.header)
            for j, name in enumerate(msg.name):
                if name in column and j < len(values):  # empty fields (e.g. no velocity) carry nothing
                    yield column[name], stamp, float(values[j])

        return joint_state
    if action_type in (ActionType.TWIST, ActionType.TWIST_STAMPED):
        parts = [name.split('.') for name in names]

        def twist(msg: Any, log_time_ns: int) -> Iterator[tuple[int, int, float]]:
            stamp = log_time_ns if action_type is ActionType.TWIST else _stamp_ns(msg.header)
            body = msg if action_type is ActionType.TWIST else msg.twist
            for k, (part, axis) in enumerate(parts):
                yield k, stamp, float(getattr(getattr(body, part), axis))

        return twist
    fields = [(name.split('.')[0], int(name.split('.')[1])) for name in names]

    def joy(msg: Any, _: int) -> Iterator[tuple[int, int, float]]:
        stamp = _stamp_ns(msg.header)
        for k, (field, index) in enumerate(fields):
            values = getattr(msg, field)
            if index < len(values):
                yield k, stamp, float(values[index])

    return joy


def _action_names_in(msg: Any) -> list[str]:
    """Names a JointState or Joy message could provide (for error messages); twists have all six."""
    if hasattr(msg, 'name'):
        return list(msg.name)
    if hasattr(msg, 'axes'):
        return [f'axes.{i}' for i in range(len(msg.axes))] + [f'buttons.{i}' for i in range(len(msg.buttons))]
    return []


def _collect(path: Path, mapping: TopicMapping) -> _Recording:
    """First pass: image stamps (pixels untouched), pose samples and action samples."""
    recording = _Recording([], _Series(), [_Series() for _ in mapping.action_names])
    read_action = _action_reader(mapping) if mapping.action_topic is not None else None
    tf_pairs: set[str] = set()
    seen: set[str] = set()  # action names the messages carry, for the error message
    tf_wanted = ((mapping.tf_parent or '').lstrip('/'), (mapping.tf_child or '').lstrip('/'))
    base_frame = mapping.arm_base_frame.lstrip('/')
    static_children: set[str] = set()  # child frames on tf_static_topic, for the error message
    if mapping.pose_topic is None:
        recording.pose_frames.add(tf_wanted[0])
    for message in read_messages(path, mapping.topics):
        if message.topic == mapping.image_topic:
            try:
                recording.image_stamps.append(_header_stamp_ns(message.data))
            except (struct.error, IndexError):
                raise BagError(
                    f'bag {path}: a message on {message.topic} is truncated ({len(message.data)} bytes)'
                ) from None
            continue
        try:
            msg: Any = TYPESTORE.deserialize_cdr(message.data, message.msgtype)
        except Exception as err:  # rosbags deserialisation errors: a damaged message
            raise BagError(f'bag {path}: cannot deserialize a message on {message.topic}: {err}') from None
        if message.topic == mapping.pose_topic:
            header, pose = POSE_TYPES[message.msgtype](msg)
            recording.pose.add(_stamp_ns(header), _pose_values(pose))
            recording.pose_frames.add(header.frame_id.lstrip('/'))
        elif mapping.pose_topic is None and message.topic == mapping.tf_topic:
            for transform in msg.transforms:
                parent, child = transform.header.frame_id.lstrip('/'), transform.child_frame_id.lstrip('/')
                tf_pairs.add(f'{parent}->{child}')
                if (parent, child) == tf_wanted:
                    recording.pose.add(_stamp_ns(transform.header), _pose_values(transform.transform))
        if message.topic == mapping.action_topic and read_action is not None:
            for k, stamp, value in read_action(msg, message.log_time_ns):
                recording.actions[k].add(stamp, value)
            seen.update(_action_names_in(msg))
        if base_frame and message.topic == mapping.tf_static_topic:  # not elif: it may also be tf_topic
            for transform in msg.transforms:
                child = transform.child_frame_id.lstrip('/')
                static_children.add(child)
                if child == base_frame:  # the last one wins, as a later static transform replaces one in tf2
                    parent = transform.header.frame_id.lstrip('/')
                    recording.arm_base = (parent, _pose_values(transform.transform))
    if not recording.pose.stamps:
        raise MappingError(
            f'bag {path}: {mapping.tf_topic} has no transform {mapping.tf_parent}->{mapping.tf_child} '
            f'(only direct transforms are read); transforms seen: {sorted(tf_pairs)[:20]}'
        )
    if base_frame and recording.arm_base is None:
        raise MappingError(
            f'bag {path}: {mapping.tf_static_topic} has no transform to the arm base frame {base_frame!r} '
            f'(child frames seen: {sorted(static_children)[:20]}); {_ARM_BASE_FIX}'
        )
    absent = [name for name, series in zip(mapping.action_names, recording.actions, strict=True) if not series.stamps]
    if absent:
        field = f', field {mapping.joint_state_field}' if mapping.action_type is ActionType.JOINT_STATE else ''
        raise MappingError(
            f'bag {path}: action_names {absent} never appear on {mapping.action_topic}{field}; '
            f'names seen: {sorted(seen)[:50]}'
        )
    return recording


def _valid_poses(path: Path, pose: _Series) -> tuple[np.ndarray, np.ndarray]:
    """Pose stamps and (M, 7) values with non-finite or non-unit quaternions dropped, the rest renormalised."""
    stamps, values = pose.arrays()
    norms = np.linalg.norm(values[:, 3:], axis=1)
    good = np.all(np.isfinite(values), axis=1) & (np.abs(norms - 1) <= QUATERNION_NORM_TOLERANCE)
    if not good.all():
        log.warning('%s: dropped %d of %d poses (non-finite or |q| != 1)', path, (~good).sum(), len(good))
    if not good.any():
        raise BagError(f'bag {path}: no pose has a finite position and a unit quaternion')
    values = values[good]
    values[:, 3:] /= np.linalg.norm(values[:, 3:], axis=1, keepdims=True)
    return stamps[good], values


def _arm_base(path: Path, mapping: TopicMapping, recording: _Recording) -> np.ndarray:
    """The arm base pose (7,) float64 in the camera poses' frame, quaternion renormalised; (0,) if not read."""
    if recording.arm_base is None:
        return np.zeros(0)
    parent, values = recording.arm_base
    frame, topic = mapping.arm_base_frame.lstrip('/'), mapping.tf_static_topic
    if recording.pose_frames != {parent}:
        raise MappingError(
            f'bag {path}: the arm base {parent!r} -> {frame!r} on {topic} is not given in the frame of the '
            f'camera poses {sorted(recording.pose_frames)}; transforms are not chained (no TF tree without ROS), '
            f"so publish the base directly in the poses' frame, or {_ARM_BASE_FIX}"
        )
    base = np.asarray(values, dtype=np.float64)
    norm = float(np.linalg.norm(base[3:]))
    if not np.all(np.isfinite(base)) or abs(norm - 1) > QUATERNION_NORM_TOLERANCE:
        raise BagError(
            f'bag {path}: the arm base {parent!r} -> {frame!r} on {topic} is {base.tolist()}: it needs a finite '
            f"position and a unit quaternion (|q| = {norm:.4g}); fix the recording, or set arm_base_frame: '' in "
            f'the topic mapping to read no arm base'
        )
    base[3:] /= norm
    return base


def _match(
    path: Path, mapping: TopicMapping, recording: _Recording
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Images that every stream matches: (bag indices, stamps, positions, orientations, actions, skipped)."""
    image_stamps = np.asarray(recording.image_stamps, dtype=np.int64)
    order = np.argsort(image_stamps, kind='stable')
    _, first = np.unique(image_stamps[order], return_index=True)
    index = order[first]  # bag order index of each distinct stamp, by increasing stamp
    t = image_stamps[index]
    skew = round(mapping.max_skew_s * NS)
    pose_stamps, pose_values = _valid_poses(path, recording.pose)
    pose = lookup(pose_stamps, t, skew, mapping.interpolate)
    ok = pose.ok.copy()
    actions = np.zeros((len(t), len(mapping.action_names)))
    unmatched_actions = 0
    for k, (name, series) in enumerate(zip(mapping.action_names, recording.actions, strict=True)):
        stamps, values = series.arrays()
        found = lookup(stamps, t, skew, mapping.interpolate)
        actions[:, k] = values[found.nearest] if name.startswith('buttons.') else found.lerp(values)
        unmatched_actions = max(unmatched_actions, int((~found.ok).sum()))
        ok &= found.ok
    skipped = len(image_stamps) - int(ok.sum())
    if not ok.any():
        raise BagError(
            f'bag {path}: none of the {len(image_stamps)} images has a pose and an action within max_skew_s='
            f'{mapping.max_skew_s} s of its stamp (images {_span(t)}, poses {_span(pose_stamps)}); check the '
            f'header stamps (clock offsets) or raise max_skew_s'
        )
    if skipped:
        log.warning(
            '%s: skipped %d of %d images (repeated stamp: %d, no pose within %.3f s: %d, no action: up to %d)',
            path, skipped, len(image_stamps), len(image_stamps) - len(t), mapping.max_skew_s,
            int((~pose.ok).sum()), unmatched_actions,
        )  # fmt: skip
    positions = pose.lerp(pose_values[:, :3])
    if mapping.interpolate:
        orientations = slerp(pose_values[pose.left, 3:], pose_values[pose.right, 3:], pose.weight)
    else:
        orientations = pose_values[pose.nearest, 3:]
    return index[ok], t[ok], positions[ok], orientations[ok], actions[ok], skipped


def _span(stamps: np.ndarray) -> str:
    return f'{stamps[0] / NS:.3f}..{stamps[-1] / NS:.3f} s' if len(stamps) else 'none'


def _decode(
    path: Path, topic: str, wanted: np.ndarray, image_size: tuple[int, int] | None, stamps: np.ndarray
) -> np.ndarray:
    """Second pass: decode the images at bag-order indices ``wanted`` (increasing) into (N, H, W, 3) uint8."""
    rows = {int(i): row for row, i in enumerate(wanted)}
    frames: np.ndarray | None = None
    done = 0
    for k, message in enumerate(read_messages(path, [topic])):
        row = rows.get(k)
        if row is None:
            continue
        stamp = f'{stamps[row] / NS:.6f} s'
        try:
            msg = TYPESTORE.deserialize_cdr(message.data, message.msgtype)
            image = image_msg_to_rgb8(msg) if message.msgtype == IMAGE_TYPES[0] else compressed_msg_to_rgb8(msg)
        except ImageConversionError as err:
            raise BagError(f'bag {path}: cannot decode the image on {topic} at {stamp}: {err}') from None
        except Exception as err:  # rosbags deserialisation errors: a damaged message
            raise BagError(f'bag {path}: cannot deserialize the image on {topic} at {stamp}: {err}') from None
        if frames is None:
            width, height = image_size if image_size is not None else (image.shape[1], image.shape[0])
            frames = np.empty((len(wanted), height, width, 3), dtype=np.uint8)  # (N, H, W, 3)
        if image.shape[:2] != frames.shape[1:3]:
            if image_size is None:
                raise BagError(
                    f'bag {path}: image on {topic} at {stamp} is {image.shape[1]}x{image.shape[0]}, earlier ones '
                    f'{frames.shape[2]}x{frames.shape[1]}; pass image_size to resize them all'
                )
            # INTER_AREA averages the source pixels a target pixel covers: no aliasing when shrinking.
            frames[row] = cv2.resize(image, (frames.shape[2], frames.shape[1]), interpolation=cv2.INTER_AREA)
        else:
            frames[row] = image
        done += 1
        if done == len(wanted):
            break
    assert frames is not None and done == len(wanted), 'the second pass sees the messages of the first'
    return frames


def read_episode(
    bag: str | Path,
    mapping: TopicMapping,
    *,
    rate_hz: float | None = None,
    image_size: tuple[int, int] | None = None,
    max_frames: int | None = None,
) -> Episode:
    """Read, align and optionally resample one bag (rules in the module docstring).

    Args:
        bag: rosbag2 folder (sqlite3 or MCAP).
        mapping: which topics hold images, pose and actions.
        rate_hz: output frame rate; None keeps every usable image.
        image_size: (width, height) of the output frames, resized with cv2.INTER_AREA; None keeps
            the bag's size (which must then be the same for every image).
        max_frames: keep only the first this many output frames (the rest is not decoded).

    Raises:
        MappingError, BagError: see the module docstring. ValueError: a bad argument.
    """
    path = Path(bag)
    if rate_hz is not None and not rate_hz > 0:
        raise ValueError(f'rate_hz must be positive or None, got {rate_hz}')
    if image_size is not None and (len(image_size) != 2 or min(image_size) <= 0):
        raise ValueError(f'image_size must be (width, height) with positive values, got {image_size}')
    if max_frames is not None and max_frames < 1:
        raise ValueError(f'max_frames must be at least 1 or None, got {max_frames}')
    _check_topics(path, mapping)
    recording = _collect(path, mapping)
    arm_base = _arm_base(path, mapping, recording)
    index, stamps, positions, orientations, actions, skipped = _match(path, mapping, recording)
    if rate_hz is None:
        keep = np.arange(len(stamps))[:max_frames]
    else:
        tolerance = min(mapping.max_skew_s * NS, NS / rate_hz / 4)  # why a quarter period: module docstring
        keep = resample(stamps, rate_hz, tolerance)[:max_frames]
    wanted = np.argsort(index[keep])  # decode in bag order, which need not be stamp order
    decoded = _decode(path, mapping.image_topic, index[keep][wanted], image_size, stamps[keep][wanted])
    frames = np.empty_like(decoded)
    frames[wanted] = decoded
    return Episode(
        stamps_ns=stamps[keep],
        frames=frames,
        positions=positions[keep],
        orientations=orientations[keep],
        actions=actions[keep],
        action_names=tuple(mapping.action_names),
        source=str(path),
        arm_base=arm_base,
        skipped=skipped,
    )


def sim_mapping(bag: Path) -> TopicMapping:
    """The topics aapt-record-sim writes, with compressed images when the bag has them (its default),
    and the arm base when the bag has ``/tf_static`` (recordings made before it was written lack it,
    and are read with ``arm_base_frame: ''``)."""
    types, _ = bag_topics(Path(bag))
    mapping = SIM_COMPRESSED_MAPPING if SIM_COMPRESSED_MAPPING.image_topic in types else SIM_MAPPING
    return mapping if mapping.tf_static_topic in types else dataclasses.replace(mapping, arm_base_frame='')
