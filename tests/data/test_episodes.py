"""Reading episodes from bags through topic mappings (aapt_ros.data.episodes and aapt_ros.data.mapping)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from aapt_ros.data.alignment import resample, slerp
from aapt_ros.data.bags import BagError, Storage
from aapt_ros.data.episodes import read_episode, sim_mapping
from aapt_ros.data.mapping import (
    SIM_COMPRESSED_MAPPING,
    SIM_MAPPING,
    TWIST_COMPONENTS,
    ActionType,
    MappingError,
    TopicMapping,
    load_mapping,
)
from aapt_ros.data.trajectory import orbit_trajectory, write_trajectory_bag
from aapt_ros.model.config import KUKA_IIWA_JOINTS
from tests.data.synthetic_bags import (
    ARM_BASE,
    ARM_BASE_FRAME,
    NS,
    SIZE,
    START_NS,
    compressed,
    flat_frame,
    frame_value,
    image,
    joint_state,
    joints_at,
    joy,
    odometry,
    position_at,
    quaternion_at,
    sim_messages,
    tf,
    transform,
    twist,
    twist_stamped,
    write_bag,
)

REPO = Path(__file__).resolve().parents[2]
STEP_30HZ = round(NS / 30)


def seconds(stamps_ns: np.ndarray) -> np.ndarray:
    return (stamps_ns - START_NS) / NS


def grey_levels(frames: np.ndarray) -> list[int]:
    return [int(v) for v in frames[:, 0, 0, 0]]


def unit_arm_base(base: tuple[float, ...]) -> np.ndarray:
    """x, y, z, qx, qy, qz, qw with the quaternion normalised, as read_episode returns it."""
    values = np.array(base, dtype=np.float64)
    values[3:] /= np.linalg.norm(values[3:])
    return values


# --- the mapping config ---------------------------------------------------------------------------


def test_shipped_sim_mapping_file_equals_sim_mapping() -> None:
    assert load_mapping(REPO / 'config' / 'topics_sim.yaml') == SIM_MAPPING
    assert SIM_MAPPING.action_type is ActionType.JOINT_STATE
    assert SIM_MAPPING.action_names == KUKA_IIWA_JOINTS


def test_mapping_round_trips_through_its_dict(tmp_path: Path) -> None:
    import yaml

    (tmp_path / 'm.yaml').write_text(yaml.safe_dump(SIM_MAPPING.as_dict()))
    assert load_mapping(tmp_path / 'm.yaml') == SIM_MAPPING


def test_mapping_with_an_unknown_key_names_it_and_the_valid_keys(tmp_path: Path) -> None:
    (tmp_path / 'm.yaml').write_text('image_topic: /a\npose_topic: /p\nimage_topik: /b\n')
    with pytest.raises(MappingError, match=r"unknown key\(s\) \['image_topik'\]; valid keys: .*'image_topic'"):
        load_mapping(tmp_path / 'm.yaml')


@pytest.mark.parametrize(
    ('text', 'match'),
    [
        ('image_topic: /a\npose_topic: /p\ntf_parent: world\ntf_child: cam\n', 'exactly one pose source'),
        ('image_topic: /a\n', 'exactly one pose source'),
        ('image_topic: /a\ntf_parent: world\n', 'needs both tf_parent and tf_child'),
        ('pose_topic: /p\n', 'image_topic is required'),
        ('image_topic: /a\npose_topic: /p\nmax_skew_s: soon\n', 'max_skew_s must be a number'),
        ('image_topic: /a\npose_topic: /p\nmax_skew_s: 0\n', 'max_skew_s must be positive'),
        ('image_topic: /a\npose_topic: /p\ninterpolate: 1\n', 'interpolate must be true or false'),
        ('image_topic: /a\npose_topic: /p\naction_names: j1\n', 'action_names must be a list of strings'),
        ('image_topic: /a\npose_topic: /p\naction_type: keyboard\n', r"'keyboard' is not one of \['joint_state'"),
        ('image_topic: /a\npose_topic: /p\naction_type: joint_state\n', 'needs an action_topic'),
        ('image_topic: /a\npose_topic: /p\naction_topic: /j\naction_type: joint_state\n', 'needs action_names'),
        ('image_topic: /a\npose_topic: /p\naction_topic: /j\n', 'action_type is none but action_topic'),
        (
            'image_topic: /a\npose_topic: /p\naction_topic: /j\naction_type: joint_state\naction_names: [a]\n'
            'joint_state_field: torque\n',
            r"joint_state_field 'torque' is not one of \['position'",
        ),
        (
            'image_topic: /a\npose_topic: /p\naction_topic: /v\naction_type: twist\naction_names: [linear.w]\n',
            r"twist action_names \['linear.w'\] are not among",
        ),
        (
            'image_topic: /a\npose_topic: /p\naction_topic: /joy\naction_type: joy\naction_names: [axis.0]\n',
            r"joy action_names \['axis.0'\] must look like 'axes.<i>'",
        ),
        ('- image_topic\n', 'must be a YAML dictionary'),
        ('image_topic: [/a\n', 'is not valid YAML'),
        ('image_topic: /a\npose_topic: /p\narm_base_frame: null\n', 'arm_base_frame must be a string'),
        ("image_topic: /a\npose_topic: /p\narm_base_frame: base\ntf_static_topic: ''\n", 'needs a tf_static_topic'),
    ],
)
def test_bad_mapping_files_are_rejected_with_the_reason(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / 'm.yaml').write_text(text)
    with pytest.raises(MappingError, match=match):
        load_mapping(tmp_path / 'm.yaml')


def test_missing_mapping_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=f'cannot read topic mapping {tmp_path / "none.yaml"}'):
        load_mapping(tmp_path / 'none.yaml')


@pytest.mark.parametrize('action_type', [ActionType.TWIST, ActionType.TWIST_STAMPED])
def test_twist_action_names_default_to_all_six_components(action_type: ActionType) -> None:
    mapping = TopicMapping('/image', pose_topic='/pose', action_topic='/cmd_vel', action_type=action_type)
    assert mapping.action_names == TWIST_COMPONENTS


# --- reading our recorder's bags --------------------------------------------------------------------


@pytest.mark.parametrize('storage', list(Storage))
def test_sim_bag_gives_every_image_with_its_pose_and_action(tmp_path: Path, storage: Storage) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(12), storage=storage)
    episode = read_episode(bag, SIM_MAPPING)
    t = seconds(episode.stamps_ns)
    assert len(episode) == 12 and episode.skipped == 0
    np.testing.assert_array_equal(episode.stamps_ns, START_NS + np.arange(12) * STEP_30HZ)
    assert episode.frames.shape == (12, SIZE[1], SIZE[0], 3) and episode.frames.dtype == np.uint8
    assert grey_levels(episode.frames) == [frame_value(i) for i in range(12)]
    np.testing.assert_array_equal(episode.frames[3], flat_frame(frame_value(3)))
    np.testing.assert_allclose(episode.positions, position_at(t), atol=1e-12)
    np.testing.assert_allclose(episode.orientations, quaternion_at(t), atol=1e-12)
    np.testing.assert_allclose(episode.actions, joints_at(t), atol=1e-12)
    assert episode.action_names == KUKA_IIWA_JOINTS and episode.source == str(bag)
    assert episode.arm_base.shape == (7,) and episode.arm_base.dtype == np.float64
    np.testing.assert_allclose(episode.arm_base, unit_arm_base(ARM_BASE), atol=1e-12)


def test_pose_and_action_are_interpolated_at_the_image_header_stamp(tmp_path: Path) -> None:
    # Poses 10 ms and actions 20 ms after each image, and received 40 ms / 1 ms after their stamps.
    bag = write_bag(tmp_path / 'bag', sim_messages(20, pose_offset_ns=10_000_000, action_offset_ns=-20_000_000))
    episode = read_episode(bag, SIM_MAPPING)
    t = seconds(episode.stamps_ns)
    assert len(episode) == 20 and episode.skipped == 0
    # Image 0 precedes every pose: the nearest one (10 ms later) is held; the rest are bracketed.
    np.testing.assert_allclose(episode.positions[0], position_at(0.010)[0], atol=1e-12)
    np.testing.assert_allclose(episode.positions[1:], position_at(t[1:]), atol=1e-12)
    np.testing.assert_allclose(episode.orientations[1:], quaternion_at(t[1:]), atol=1e-12)  # only slerp is exact
    np.testing.assert_allclose(episode.actions[:-1], joints_at(t[:-1]), atol=1e-12)
    np.testing.assert_allclose(episode.actions[-1], joints_at(t[-1] - 0.020)[0], atol=1e-12)  # after the last


def test_without_interpolation_the_nearest_sample_is_used(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(10, pose_offset_ns=10_000_000, action_offset_ns=-20_000_000))
    mapping = TopicMapping(**{**SIM_MAPPING.as_dict(), 'interpolate': False})
    episode = read_episode(bag, mapping)
    t = seconds(episode.stamps_ns)
    np.testing.assert_allclose(episode.positions, position_at(t + 0.010), atol=1e-12)
    np.testing.assert_allclose(episode.orientations, quaternion_at(t + 0.010), atol=1e-12)
    # Actions 20 ms before each image: the next one, 13 ms after, is nearer (except for the last image).
    np.testing.assert_allclose(episode.actions[:-1], joints_at(t[:-1] + STEP_30HZ / NS - 0.020), atol=1e-12)
    np.testing.assert_allclose(episode.actions[-1], joints_at(t[-1] - 0.020)[0], atol=1e-12)


def test_slerp_follows_the_shorter_arc_at_constant_speed() -> None:
    identity = np.array([[0.0, 0.0, 0.0, 1.0]])
    quarter_turn_z = np.array([[0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)]])
    third = slerp(identity, quarter_turn_z, np.array([1 / 3]))
    np.testing.assert_allclose(third, [[0.0, 0.0, np.sin(np.pi / 12), np.cos(np.pi / 12)]], atol=1e-12)
    flipped = slerp(identity, -quarter_turn_z, np.array([1 / 3]))  # q and -q are the same rotation
    np.testing.assert_allclose(flipped, third, atol=1e-12)
    np.testing.assert_allclose(slerp(identity, identity, np.array([0.5])), identity)


def test_images_without_a_pose_within_max_skew_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(20, pose_count=12))  # the pose stream stops after 12
    with caplog.at_level(logging.WARNING):
        episode = read_episode(bag, SIM_MAPPING)
    # Image 12 is 33 ms after the last pose (within 50 ms), images 13..19 are further.
    assert len(episode) == 13 and episode.skipped == 7
    assert grey_levels(episode.frames) == [frame_value(i) for i in range(13)]
    np.testing.assert_allclose(episode.positions[12], position_at(11 * STEP_30HZ / NS)[0], atol=1e-12)
    assert 'skipped 7 of 20 images' in caplog.text and 'no pose within 0.050 s: 7' in caplog.text


def test_images_with_a_repeated_stamp_are_skipped(tmp_path: Path) -> None:
    stamps = [START_NS + i * STEP_30HZ for i in (0, 1, 1, 2, 3)]
    bag = write_bag(tmp_path / 'bag', sim_messages(5, image_stamps_ns=stamps))
    episode = read_episode(bag, SIM_MAPPING)
    assert len(episode) == 4 and episode.skipped == 1
    assert grey_levels(episode.frames) == [frame_value(i) for i in (0, 1, 3, 4)]  # the first of the pair is kept


def test_images_out_of_stamp_order_come_out_sorted(tmp_path: Path) -> None:
    stamps = [START_NS + i * STEP_30HZ for i in (0, 2, 1, 3)]
    episode = read_episode(write_bag(tmp_path / 'bag', sim_messages(4, image_stamps_ns=stamps)), SIM_MAPPING)
    np.testing.assert_array_equal(episode.stamps_ns, START_NS + np.arange(4) * STEP_30HZ)
    assert grey_levels(episode.frames) == [frame_value(i) for i in (0, 2, 1, 3)]


def test_no_image_within_max_skew_of_a_pose_is_an_error_that_shows_both_spans(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(10, pose_offset_ns=NS))  # a one-second clock offset
    with pytest.raises(BagError, match=r'none of the 10 images has a pose and an action within max_skew_s=0.05 s'):
        read_episode(bag, SIM_MAPPING)
    assert read_episode(bag, TopicMapping(**{**SIM_MAPPING.as_dict(), 'max_skew_s': 1.5})).skipped == 0


# --- resampling, resizing, limits -----------------------------------------------------------------------


def test_resampling_a_30_hz_bag_to_15_hz_keeps_every_other_image(tmp_path: Path) -> None:
    jitter = np.random.default_rng(0).integers(-3_000_000, 3_000_000, size=30)  # +-3 ms camera jitter
    stamps = [START_NS + i * STEP_30HZ + int(j) for i, j in enumerate(jitter)]
    bag = write_bag(tmp_path / 'bag', sim_messages(30, image_stamps_ns=stamps))
    episode = read_episode(bag, SIM_MAPPING, rate_hz=15.0)
    assert grey_levels(episode.frames) == [frame_value(i) for i in range(0, 30, 2)]
    np.testing.assert_array_equal(episode.stamps_ns, np.array(stamps[::2]))  # the images' own stamps
    np.testing.assert_allclose(episode.positions, position_at(seconds(episode.stamps_ns)), atol=1e-12)


def test_resampling_drops_output_times_without_an_image_and_never_repeats_one() -> None:
    stamps = START_NS + np.array([0, 100, 200, 600, 700]) * 1_000_000  # 10 Hz with a gap
    np.testing.assert_array_equal(resample(stamps, 10.0, 50_000_000), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(resample(stamps, 5.0, 50_000_000), [0, 2, 3])  # 400 ms has no image
    np.testing.assert_array_equal(resample(stamps, 40.0, 50_000_000), [0, 1, 2, 3, 4])  # no duplicates
    thirty_hz = START_NS + np.arange(13) * STEP_30HZ  # 33_333_333 ns steps: 12 steps fall 4 ns short of 0.4 s
    np.testing.assert_array_equal(resample(thirty_hz, 15.0, 1_000_000), np.arange(0, 13, 2))  # the last is kept


def test_resampling_a_10_hz_bag_to_15_hz_leaves_gaps_rather_than_slow_frames(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(10, rate_hz=10.0))
    episode = read_episode(bag, SIM_MAPPING, rate_hz=15.0)  # output times every 66.7 ms
    # Images every 100 ms; an output time takes one only within a quarter period (16.7 ms).
    np.testing.assert_array_equal(seconds(episode.stamps_ns), [0.0, 0.2, 0.4, 0.6, 0.8])


def test_image_size_resizes_every_frame(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(4, size=(64, 48)))
    episode = read_episode(bag, SIM_MAPPING, image_size=(16, 8))
    assert episode.frames.shape == (4, 8, 16, 3)
    np.testing.assert_array_equal(episode.frames[2], flat_frame(frame_value(2), (16, 8)))  # area mean of a flat frame


def test_max_frames_keeps_the_first_frames(tmp_path: Path) -> None:
    episode = read_episode(write_bag(tmp_path / 'bag', sim_messages(30)), SIM_MAPPING, rate_hz=10.0, max_frames=4)
    assert grey_levels(episode.frames) == [frame_value(i) for i in (0, 3, 6, 9)]
    assert episode.actions.shape == (4, 7)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'rate_hz': 0.0}, 'rate_hz must be positive'),
        ({'image_size': (0, 8)}, 'image_size must be'),
        ({'max_frames': 0}, 'max_frames must be at least 1'),
    ],
)
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_episode(tmp_path, SIM_MAPPING, **kwargs)  # type: ignore[arg-type]


def test_frames_of_different_sizes_need_an_image_size(tmp_path: Path) -> None:
    messages = sim_messages(3)
    messages.append(
        ('/camera/image_raw', START_NS + 3 * STEP_30HZ, image(START_NS + 3 * STEP_30HZ, flat_frame(9, (8, 8))))
    )
    bag = write_bag(tmp_path / 'bag', messages)
    with pytest.raises(BagError, match=r'is 8x8, earlier ones 32x24; pass image_size'):
        read_episode(bag, SIM_MAPPING)
    assert read_episode(bag, SIM_MAPPING, image_size=(8, 8)).frames.shape == (4, 8, 8, 3)


# --- other robots' bags through a mapping file ------------------------------------------------------------


def _other_robot_bag(path: Path, action: str) -> Path:
    """A bag with a compressed front camera, the camera pose in /tf and velocity or joystick actions."""
    return write_bag(path, _other_robot_bag_messages(action), storage=Storage.SQLITE3)


def _other_robot_bag_messages(action: str) -> list[tuple[str, int, object]]:
    messages: list[tuple[str, int, object]] = []
    for i in range(10):
        stamp = START_NS + i * 50_000_000  # 20 Hz
        t = (stamp - START_NS) / NS
        messages.append(('/front/color/compressed', stamp + 30_000_000, compressed(stamp, flat_frame(frame_value(i)))))
        robot = transform(stamp + 3_000_000, 'odom', 'base_link', (t, 0, 0), (0, 0, 0, 1))
        pose = position_at(t + 0.003)[0], quaternion_at(t + 0.003)[0]
        camera = transform(stamp + 3_000_000, '/world', 'front_optical', *pose)
        messages.append(('/tf', stamp + 8_000_000, tf(robot, camera)))
        action_stamp = stamp + 7_000_000
        if action == 'twist_stamped':
            messages.append(('/cmd_vel', action_stamp, twist_stamped(action_stamp, (0.1 * i, 0, 0), (0, 0, -0.2 * i))))
        elif action == 'twist':  # no header: the bag time stamps it
            messages.append(('/cmd_vel', action_stamp, twist((0.1 * i, 0, 0), (0, 0, -0.2 * i))))
        else:
            messages.append(
                ('/joy', action_stamp + 90_000_000, joy(action_stamp, (0.1 * i, 0.5, -0.2 * i), (0, i % 2)))
            )
    messages.append(('/rosout_like', START_NS, joint_state(START_NS, ['unrelated'], [0.0])))
    return messages


@pytest.mark.parametrize('action', ['twist_stamped', 'twist', 'joy'])
def test_another_robots_bag_loads_through_a_mapping_file(tmp_path: Path, action: str) -> None:
    bag = _other_robot_bag(tmp_path / 'bag', action)
    names = '[axes.0, axes.2, buttons.1]' if action == 'joy' else '[linear.x, angular.z]'
    (tmp_path / 'robot.yaml').write_text(
        'image_topic: /front/color/compressed\n'
        'tf_parent: world\n'
        'tf_child: front_optical\n'
        f'action_topic: {"/joy" if action == "joy" else "/cmd_vel"}\n'
        f'action_type: {action}\n'
        f'action_names: {names}\n'
    )
    episode = read_episode(bag, load_mapping(tmp_path / 'robot.yaml'), rate_hz=10.0)
    t = seconds(episode.stamps_ns)
    assert len(episode) == 5 and episode.skipped == 0
    assert np.abs(np.array(grey_levels(episode.frames)) - [frame_value(i) for i in range(0, 10, 2)]).max() <= 2  # JPEG
    # The transform is stamped 3 ms after each image: interpolated (linear and slerp) back onto the image stamp.
    np.testing.assert_allclose(episode.positions[1:], position_at(t[1:]), atol=1e-12)
    np.testing.assert_allclose(episode.orientations[1:], quaternion_at(t[1:]), atol=1e-12)
    i = np.arange(0, 10, 2)
    # Actions come 7 ms after the images at 20 Hz: image k sits 7/50 of the way from action k-1 to action k.
    before = np.maximum(i - 1, 0) + np.where(i > 0, 43 / 50, 0.0)
    if action == 'joy':
        expected = np.stack([0.1 * before, -0.2 * before, i % 2], axis=1)  # buttons take the nearest sample
        np.testing.assert_allclose(episode.actions, expected, atol=1e-6)  # float32 axes
    else:
        np.testing.assert_allclose(episode.actions, np.stack([0.1 * before, -0.2 * before], axis=1), atol=1e-12)


@pytest.mark.parametrize('message', [odometry, lambda s, p, q: transform(s, 'world', 'cam', p, q)])
def test_odometry_and_transform_stamped_pose_topics_are_read(tmp_path: Path, message: object) -> None:
    messages = [m for m in sim_messages(5) if m[0] != '/camera/pose']
    for i in range(5):
        stamp = START_NS + i * STEP_30HZ
        t = i * STEP_30HZ / NS
        messages.append(('/camera/pose', stamp, message(stamp, position_at(t)[0], quaternion_at(t)[0])))  # type: ignore[operator]
    episode = read_episode(write_bag(tmp_path / 'bag', messages), SIM_MAPPING)
    np.testing.assert_allclose(episode.positions, position_at(seconds(episode.stamps_ns)), atol=1e-12)


def test_joints_split_over_messages_in_any_order_are_gathered_by_name(tmp_path: Path) -> None:
    messages = [m for m in sim_messages(6) if m[0] != '/joint_commands']
    for i in range(6):
        stamp = START_NS + i * STEP_30HZ
        joints = joints_at(i * STEP_30HZ / NS)[0]
        messages.append(('/joint_commands', stamp, joint_state(stamp, KUKA_IIWA_JOINTS[:4][::-1], joints[:4][::-1])))
        messages.append(
            ('/joint_commands', stamp, joint_state(stamp, [*KUKA_IIWA_JOINTS[4:], 'gripper'], [*joints[4:], 9]))
        )
    episode = read_episode(write_bag(tmp_path / 'bag', messages), SIM_MAPPING)
    np.testing.assert_allclose(episode.actions, joints_at(seconds(episode.stamps_ns)), atol=1e-12)


def test_mapping_without_actions_gives_an_empty_action_vector(tmp_path: Path) -> None:
    mapping = TopicMapping('/camera/image_raw', pose_topic='/camera/pose')
    episode = read_episode(write_bag(tmp_path / 'bag', sim_messages(3)), mapping)
    assert episode.actions.shape == (3, 0) and episode.action_names == ()


def test_the_demo_trajectory_bag_has_no_images_for_the_sim_mapping(tmp_path: Path) -> None:
    write_trajectory_bag(orbit_trajectory(1.0, 5.0, 0), tmp_path / 'bag')
    with pytest.raises(MappingError, match=r"no topic\(s\) \['/camera/image_raw', '/joint_commands'\]"):
        read_episode(tmp_path / 'bag', SIM_MAPPING)


# --- the arm base from /tf_static ------------------------------------------------------------------------------


def _with_static(messages: list[tuple[str, int, object]], *transforms: object) -> list[tuple[str, int, object]]:
    return [*messages, ('/tf_static', START_NS, tf(*transforms))]


def test_the_last_arm_base_transform_is_read_among_others(tmp_path: Path) -> None:
    first = transform(START_NS, 'world', ARM_BASE_FRAME, (9.0, 9.0, 9.0), (0, 0, 0, 1))
    table = transform(START_NS, 'world', 'table', (1.0, 2.0, 3.0), (0, 0, 0, 1))
    base = transform(START_NS, '/world', '/' + ARM_BASE_FRAME, ARM_BASE[:3], ARM_BASE[3:])  # leading '/' ignored
    messages = _with_static(_with_static(sim_messages(4, arm_base=None), first), table, base)
    episode = read_episode(write_bag(tmp_path / 'bag', messages), SIM_MAPPING, rate_hz=15.0)
    np.testing.assert_allclose(episode.arm_base, unit_arm_base(ARM_BASE), atol=1e-12)
    assert np.linalg.norm(episode.arm_base[3:]) == pytest.approx(1.0, abs=1e-15)


def test_the_arm_base_is_read_with_a_tf_pose_source(tmp_path: Path) -> None:
    base = transform(START_NS, 'world', 'arm_link_0', (0.5, 0.0, 0.2), (0, 0, 0, 1))
    bag = write_bag(tmp_path / 'bag', [*_other_robot_bag_messages('twist'), ('/tf_static', START_NS, tf(base))])
    mapping = TopicMapping(
        '/front/color/compressed', tf_parent='world', tf_child='front_optical', arm_base_frame='arm_link_0'
    )
    np.testing.assert_array_equal(read_episode(bag, mapping).arm_base, [0.5, 0.0, 0.2, 0, 0, 0, 1])


def test_bags_recorded_before_tf_static_read_without_an_arm_base(tmp_path: Path) -> None:
    old = write_bag(tmp_path / 'old', sim_messages(3, arm_base=None))
    episode = read_episode(old, TopicMapping(**{**SIM_MAPPING.as_dict(), 'arm_base_frame': ''}))
    assert len(episode) == 3 and episode.arm_base.shape == (0,)
    assert sim_mapping(old) == TopicMapping(**{**SIM_MAPPING.as_dict(), 'arm_base_frame': ''})
    assert read_episode(old, sim_mapping(old)).arm_base.shape == (0,)
    new = write_bag(tmp_path / 'new', sim_messages(3, compressed_images=True))
    assert sim_mapping(new) == SIM_COMPRESSED_MAPPING and sim_mapping(new).arm_base_frame == ARM_BASE_FRAME


def test_a_bag_without_tf_static_is_refused_when_the_mapping_asks_for_the_arm_base(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(3, arm_base=None))
    with pytest.raises(
        MappingError,
        match=rf"bag {tmp_path / 'bag'} has no /tf_static message to read the arm base frame 'lbr_iiwa_link_0' "
        r"from; set arm_base_frame: '' in the topic mapping to read no arm base, or re-record the bag with "
        r'aapt-record-sim .*; its topics: /camera/image_raw',
    ):
        read_episode(bag, SIM_MAPPING)


def test_a_tf_static_without_the_arm_base_frame_lists_the_frames_seen(tmp_path: Path) -> None:
    table = transform(START_NS, 'world', 'table', (1.0, 2.0, 3.0), (0, 0, 0, 1))
    bag = write_bag(tmp_path / 'bag', _with_static(sim_messages(3, arm_base=None), table))
    with pytest.raises(
        MappingError,
        match=rf"bag {tmp_path / 'bag'}: /tf_static has no transform to the arm base frame 'lbr_iiwa_link_0' "
        r"\(child frames seen: \['table'\]\); set arm_base_frame: '' .* re-record the bag with aapt-record-sim",
    ):
        read_episode(bag, SIM_MAPPING)


def test_an_arm_base_in_another_frame_than_the_poses_is_refused(tmp_path: Path) -> None:
    base = transform(START_NS, 'odom', ARM_BASE_FRAME, ARM_BASE[:3], ARM_BASE[3:])
    bag = write_bag(tmp_path / 'bag', _with_static(sim_messages(3, arm_base=None), base))
    with pytest.raises(
        MappingError,
        match=r"the arm base 'odom' -> 'lbr_iiwa_link_0' on /tf_static is not given in the frame of the camera "
        r"poses \['world'\]; transforms are not chained",
    ):
        read_episode(bag, SIM_MAPPING)


@pytest.mark.parametrize('base', [(np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5)])
def test_a_non_finite_or_non_unit_arm_base_is_an_error(tmp_path: Path, base: tuple[float, ...]) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(3, arm_base=base))
    with pytest.raises(BagError, match=r'the arm base .* needs a finite position and a unit quaternion'):
        read_episode(bag, SIM_MAPPING)


# --- errors ---------------------------------------------------------------------------------------------------


def test_missing_topic_error_lists_the_bags_topics_and_types(tmp_path: Path) -> None:
    bag = _other_robot_bag(tmp_path / 'bag', 'twist_stamped')
    with pytest.raises(
        MappingError,
        match=r"no topic\(s\) \['/camera/image_raw', '/camera/pose', '/joint_commands'\] named by the mapping; "
        r'its topics: /cmd_vel \(geometry_msgs/msg/TwistStamped, 10 msgs\), '
        r'/front/color/compressed \(sensor_msgs/msg/CompressedImage, 10 msgs\)',
    ):
        read_episode(bag, SIM_MAPPING)


def test_a_compressed_stream_of_the_mapped_image_topic_is_suggested(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(3, compressed_images=True))
    with pytest.raises(MappingError, match='named by the mapping; set image_topic to /camera/image_raw/compressed;'):
        read_episode(bag, SIM_MAPPING)
    assert len(read_episode(bag, SIM_COMPRESSED_MAPPING)) == 3


@pytest.mark.parametrize(
    ('changes', 'match'),
    [
        ({'image_topic': '/camera/pose'}, 'image_topic /camera/pose carries geometry_msgs/msg/PoseStamped, expected'),
        ({'pose_topic': '/joint_commands'}, 'pose_topic /joint_commands carries sensor_msgs/msg/JointState'),
        (
            {'action_topic': '/camera/pose', 'action_type': 'twist', 'action_names': []},
            'action_topic of action_type twist /camera/pose carries geometry_msgs/msg/PoseStamped',
        ),
        (
            {'action_type': 'twist_stamped', 'action_names': []},
            r'expected geometry_msgs/msg/TwistStamped \(action_type joint_state reads it\)',
        ),
        ({'pose_topic': None, 'tf_parent': 'a', 'tf_child': 'b', 'tf_topic': '/camera/pose'}, 'expected tf2_msgs'),
        ({'tf_static_topic': '/camera/pose'}, 'tf_static_topic /camera/pose carries geometry_msgs/msg/PoseStamped'),
    ],
)
def test_wrong_message_type_on_a_mapped_topic_is_named(tmp_path: Path, changes: dict[str, object], match: str) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(3))
    with pytest.raises(MappingError, match=match):
        read_episode(bag, TopicMapping(**{**SIM_MAPPING.as_dict(), **changes}))


def test_a_tf_pair_that_is_never_published_lists_the_pairs_seen(tmp_path: Path) -> None:
    bag = _other_robot_bag(tmp_path / 'bag', 'twist')
    mapping = TopicMapping('/front/color/compressed', tf_parent='map', tf_child='front_optical')
    with pytest.raises(
        MappingError, match=r"no transform map->front_optical .*seen: \['odom->base_link', 'world->front"
    ):
        read_episode(bag, mapping)


def test_joints_that_never_appear_are_named(tmp_path: Path) -> None:
    mapping = TopicMapping(**{**SIM_MAPPING.as_dict(), 'action_names': ['lbr_iiwa_joint_1', 'finger']})
    with pytest.raises(
        MappingError, match=r"action_names \['finger'\] never appear .*names seen: \['lbr_iiwa_joint_1'"
    ):
        read_episode(write_bag(tmp_path / 'bag', sim_messages(3)), mapping)


@pytest.mark.parametrize(
    ('encoding', 'match'),
    [
        ('16UC1', "A colour image is required, got depth encoding '16UC1'"),
        ('bayer_rggb8', 'Unsupported image encoding'),
    ],
)
def test_unknown_image_encoding_is_an_error(tmp_path: Path, encoding: str, match: str) -> None:
    messages = [m for m in sim_messages(3) if m[0] != '/camera/image_raw']
    frame = np.zeros((SIZE[1], SIZE[0], 1), dtype=np.uint8)  # the encoding is refused before the pixels are read
    messages.append(('/camera/image_raw', START_NS, image(START_NS, frame, encoding=encoding)))
    with pytest.raises(BagError, match=f'cannot decode the image on /camera/image_raw at 1700000000.000000 s: {match}'):
        read_episode(write_bag(tmp_path / 'bag', messages), SIM_MAPPING)


def test_undecodable_compressed_image_is_an_error(tmp_path: Path) -> None:
    messages = [m for m in sim_messages(2, compressed_images=True)]
    messages[0][2].data = np.frombuffer(b'not a jpeg', dtype=np.uint8)
    mapping = TopicMapping(**{**SIM_MAPPING.as_dict(), 'image_topic': '/camera/image_raw/compressed'})
    with pytest.raises(BagError, match=r'Could not decode 10 bytes of CompressedImage'):
        read_episode(write_bag(tmp_path / 'bag', messages), mapping)


@pytest.mark.parametrize(
    ('topic', 'msgtype', 'match'),
    [
        ('/camera/image_raw', 'sensor_msgs/msg/Image', 'a message on /camera/image_raw is truncated \\(6 bytes\\)'),
        ('/camera/pose', 'geometry_msgs/msg/PoseStamped', 'cannot deserialize a message on /camera/pose'),
    ],
)
def test_a_damaged_message_is_an_error(tmp_path: Path, topic: str, msgtype: str, match: str) -> None:
    messages = [*sim_messages(3), (topic, START_NS, b'\x00\x01\x00\x00\x01\x02')]
    bag = write_bag(tmp_path / 'bag', messages, empty_topics={topic: msgtype})
    with pytest.raises(BagError, match=match):
        read_episode(bag, SIM_MAPPING)


def test_a_tf_topic_mapped_as_pose_topic_gets_a_hint(tmp_path: Path) -> None:
    bag = _other_robot_bag(tmp_path / 'bag', 'twist')
    with pytest.raises(MappingError, match='for a transform in /tf set tf_parent and tf_child instead'):
        read_episode(bag, TopicMapping('/front/color/compressed', pose_topic='/tf'))


def test_empty_bag_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=f'bag {tmp_path / "bag"} is empty: it has no topics'):
        read_episode(write_bag(tmp_path / 'bag', []), SIM_MAPPING)


def test_bag_without_images_is_an_error(tmp_path: Path) -> None:
    messages = [m for m in sim_messages(3) if m[0] != '/camera/image_raw']
    bag = write_bag(tmp_path / 'bag', messages, empty_topics={'/camera/image_raw': 'sensor_msgs/msg/Image'})
    with pytest.raises(BagError, match='has no messages on the image_topic /camera/image_raw'):
        read_episode(bag, SIM_MAPPING)


@pytest.mark.parametrize('storage', list(Storage))
def test_truncated_bag_is_an_error_naming_it(tmp_path: Path, storage: Storage) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(10), storage=storage)
    (data,) = [p for p in bag.iterdir() if p.name != 'metadata.yaml']
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(BagError, match=f'cannot read bag {bag}: .*truncated or corrupt'):
        read_episode(bag, SIM_MAPPING)


def test_missing_bag_is_named(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=f'bag not found: {tmp_path / "none"}'):
        read_episode(tmp_path / 'none', SIM_MAPPING)


def test_a_bag_copied_elsewhere_reads_the_same(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', sim_messages(4))
    shutil.copytree(bag, tmp_path / 'copy')
    a, b = read_episode(bag, SIM_MAPPING), read_episode(tmp_path / 'copy', SIM_MAPPING)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.actions, b.actions)
