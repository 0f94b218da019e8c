"""Simulated recordings: bag layout, determinism, the optical-frame camera convention and the CLI."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip('pybullet')

import cv2
import pybullet as p

from aapt_ros.data import episodes
from aapt_ros.data.bags import TYPESTORE, Storage, read_messages
from aapt_ros.data.mapping import SIM_COMPRESSED_MAPPING, SIM_MAPPING
from aapt_ros.data.sim_episode import (
    CAMERA_INFO_TOPIC,
    COMMAND_TOPIC,
    COMPRESSED_TOPIC,
    IMAGE_TOPIC,
    TF_STATIC_TOPIC,
    Compression,
    EpisodeSpec,
    plan_episode,
    record_episode,
)
from aapt_ros.data.sim_motion import (
    ARM_AMPLITUDES,
    ARM_HOME,
    MIN_CAMERA_DISTANCE,
    CameraMode,
    camera_path,
    joint_command_path,
)
from aapt_ros.data.sim_recorder import (
    METADATA_FILE,
    SPLIT_SEEDS,
    RecordingError,
    Split,
    build_parser,
    main,
    parse_size,
    plan_episodes,
    prepare_output,
    split_of,
    split_seeds,
)
from aapt_ros.data.sim_scene import (
    ARM_BASE_FRAME,
    TABLE_TOP_Z,
    Intrinsics,
    Lighting,
    Scene,
    bullet_client,
    quaternion_to_rotation,
    view_matrix,
)
from aapt_ros.data.trajectory import JOINT_TOPIC, POSE_TOPIC, look_at
from aapt_ros.model.config import KUKA_IIWA_JOINTS


def small_spec(seed: int, **options: Any) -> EpisodeSpec:
    """10 frames of 64x48: fast enough for every test."""
    return EpisodeSpec(seed=seed, seconds=1.0, rate_hz=10.0, width=64, height=48, **options)


def read_episode(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(bag time, deserialised message)] in bag order."""
    topics: dict[str, list[tuple[int, Any]]] = {}
    for m in read_messages(path):
        topics.setdefault(m.topic, []).append((m.log_time_ns, TYPESTORE.deserialize_cdr(m.data, m.msgtype)))
    return topics


def stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


@pytest.mark.parametrize('storage', list(Storage))
def test_episode_has_every_topic_once_per_frame_stamped_alike(tmp_path: Path, storage: Storage) -> None:
    spec = small_spec(3, compression=Compression.NONE, storage=storage)
    result = record_episode(spec, tmp_path / 'episode')
    topics = read_episode(tmp_path / 'episode')
    assert len(topics.pop(TF_STATIC_TOPIC)) == 1  # once per episode: test_tf_static_holds_the_arm_base_link
    assert set(topics) == {JOINT_TOPIC, COMMAND_TOPIC, CAMERA_INFO_TOPIC, IMAGE_TOPIC, POSE_TOPIC}
    assert result.frames == spec.frames == 10
    assert all(len(messages) == 10 for messages in topics.values())
    for i in range(10):
        stamps = {stamp_ns(topics[t][i][1]) for t in topics} | {topics[t][i][0] for t in topics}
        assert stamps == {1_000_000_000 + i * 100_000_000}  # bag time = header stamp = sim time, from 1 s
    for _, image in topics[IMAGE_TOPIC]:
        assert (image.encoding, image.height, image.width, image.step) == ('rgb8', 48, 64, 3 * 64)
        assert image.header.frame_id == 'camera_optical_frame' and len(image.data) == 48 * 64 * 3
    info = topics[CAMERA_INFO_TOPIC][0][1]
    k = Intrinsics.from_fov(64, 48, 60.0)
    np.testing.assert_allclose(info.k.reshape(3, 3), k.matrix())
    np.testing.assert_allclose(info.p.reshape(3, 4)[:, :3], k.matrix())
    assert (info.width, info.height, info.header.frame_id) == (64, 48, 'camera_optical_frame')
    pose = topics[POSE_TOPIC][0][1]
    q = pose.pose.orientation
    assert pose.header.frame_id == 'world' and abs(np.linalg.norm([q.x, q.y, q.z, q.w]) - 1) < 1e-9
    for topic in (JOINT_TOPIC, COMMAND_TOPIC):
        assert list(topics[topic][0][1].name) == list(KUKA_IIWA_JOINTS)
    assert len(topics[JOINT_TOPIC][0][1].velocity) == 7


def yaw_of(quaternion: np.ndarray) -> float:
    """Rotation about z (rad) of a quaternion x, y, z, w that turns about z only."""
    assert np.allclose(quaternion[:2], 0.0, atol=1e-7), quaternion
    return float(2 * np.arctan2(quaternion[2], quaternion[3]))


@pytest.mark.parametrize('compression', [Compression.NONE, Compression.JPEG])
def test_tf_static_holds_the_arm_base_link_in_the_poses_frame(tmp_path: Path, compression: Compression) -> None:
    spec = small_spec(6, compression=compression)
    record_episode(spec, tmp_path / 'episode')
    topics = read_episode(tmp_path / 'episode')
    ((log_time, message),) = topics[TF_STATIC_TOPIC]
    (base,) = message.transforms
    first_pose = topics[POSE_TOPIC][0][1]
    assert log_time == stamp_ns(base) == stamp_ns(first_pose) == 1_000_000_000  # the first frame's stamp
    assert base.header.frame_id == first_pose.header.frame_id == 'world'
    assert base.child_frame_id == ARM_BASE_FRAME == SIM_MAPPING.arm_base_frame
    t, r = base.transform.translation, base.transform.rotation
    position, quaternion = np.array([t.x, t.y, t.z]), np.array([r.x, r.y, r.z, r.w])
    # Independently of Scene.arm_base_pose: joint 1 sits 0.1575 m above the URDF root link and turns it
    # about z, so its frame (pybullet's link frame, not the inertial frame) fixes the base's x, y and yaw.
    with bullet_client() as client:
        scene = plan_episode(spec).build_scene(client)
        link = p.getLinkState(scene.arm, scene.joint_indices[0], computeForwardKinematics=True, physicsClientId=client)
    joint_1 = topics[JOINT_TOPIC][0][1].position[0]  # at the instant of the first frame, as the scene now
    np.testing.assert_allclose(position, [link[4][0], link[4][1], TABLE_TOP_Z], atol=1e-6)
    assert link[4][2] == pytest.approx(TABLE_TOP_Z + 0.1575, abs=1e-6)
    wrapped = np.angle(np.exp(1j * (yaw_of(quaternion) + joint_1 - yaw_of(np.array(link[5])))))
    assert abs(wrapped) < 1e-5  # base yaw + joint 1 = joint 1's link yaw (mod 2 pi)
    assert -0.45 <= position[0] <= -0.3 and -0.15 <= position[1] <= 0.15 and abs(yaw_of(quaternion)) <= 0.5
    # read_episode hands it on through the mapping sim_mapping picks (raw or compressed images).
    mapping = episodes.sim_mapping(tmp_path / 'episode')
    assert mapping == (SIM_MAPPING if compression is Compression.NONE else SIM_COMPRESSED_MAPPING)
    episode = episodes.read_episode(tmp_path / 'episode', mapping)
    np.testing.assert_allclose(episode.arm_base, [*position, *quaternion], atol=1e-12)


def test_measured_joints_follow_the_commands(tmp_path: Path) -> None:
    record_episode(EpisodeSpec(seed=4, seconds=3.0, width=32, height=24), tmp_path / 'episode')
    topics = read_episode(tmp_path / 'episode')
    measured = np.array([m.position for _, m in topics[JOINT_TOPIC]])
    commanded = np.array([m.position for _, m in topics[COMMAND_TOPIC]])
    np.testing.assert_allclose(measured[0], commanded[0], atol=0.02)  # the arm settled at the first command
    assert np.abs(measured[1:] - commanded[:-1]).mean() < 0.05  # a frame later it is near the previous target
    assert np.ptp(measured, axis=0).max() > 0.05  # and it moves


def image_bytes(path: Path) -> list[bytes]:
    return [bytes(m.data) for _, m in read_episode(path)[COMPRESSED_TOPIC]]


def test_the_same_seed_gives_identical_images_and_other_seeds_other_scenes(tmp_path: Path) -> None:
    for name, seed in (('a', 7), ('b', 7), ('c', 8)):
        record_episode(small_spec(seed, compression=Compression.PNG), tmp_path / name)
    assert image_bytes(tmp_path / 'a') == image_bytes(tmp_path / 'b')
    assert all(a != c for a, c in zip(image_bytes(tmp_path / 'a'), image_bytes(tmp_path / 'c'), strict=True))


@pytest.mark.parametrize('compression', [Compression.JPEG, Compression.PNG])
def test_compressed_images_decode_to_the_recorded_size(tmp_path: Path, compression: Compression) -> None:
    record_episode(small_spec(1, compression=compression), tmp_path / 'episode')
    topics = read_episode(tmp_path / 'episode')
    assert IMAGE_TOPIC not in topics and len(topics[COMPRESSED_TOPIC]) == 10
    msg = topics[COMPRESSED_TOPIC][0][1]
    assert msg.format == f'rgb8; {compression.value} compressed bgr8'
    assert msg.header.frame_id == 'camera_optical_frame'
    assert cv2.imdecode(msg.data, cv2.IMREAD_COLOR).shape == (48, 64, 3)


def test_png_images_are_the_raw_images_in_bgr_order(tmp_path: Path) -> None:
    record_episode(small_spec(2, compression=Compression.NONE), tmp_path / 'raw')
    record_episode(small_spec(2, compression=Compression.PNG), tmp_path / 'png')
    raw = read_episode(tmp_path / 'raw')[IMAGE_TOPIC][0][1]
    png = read_episode(tmp_path / 'png')[COMPRESSED_TOPIC][0][1]
    rgb = raw.data.reshape(48, 64, 3)
    np.testing.assert_array_equal(cv2.imdecode(png.data, cv2.IMREAD_COLOR)[..., ::-1], rgb)
    assert rgb[..., 0].mean() != rgb[..., 2].mean()  # a channel swap would not go unnoticed


@pytest.mark.parametrize('size', [(160, 120), (128, 128), (96, 48)])
def test_a_point_in_front_of_the_optical_frame_renders_where_the_intrinsics_say(size: tuple[int, int]) -> None:
    k = Intrinsics.from_fov(*size, 60.0)
    position = np.array([1.2, 0.4, 0.9])
    orientation = look_at(position, np.array([0.0, 0.0, 0.4]))
    rotation = quaternion_to_rotation(orientation)
    rng = np.random.default_rng(0)
    with bullet_client() as client:
        sphere = p.createVisualShape(p.GEOM_SPHERE, radius=0.03, rgbaColor=[1, 0, 0, 1], physicsClientId=client)
        scene = Scene(client, -1, (), (), Lighting((0.0, 0.0, 1.0), 1.0, 0.0, 0.0, shadow=False))
        checked = 0
        while checked < 8:
            point = np.array([0.0, 0.0, 0.4]) + rng.uniform(-0.3, 0.3, size=3)
            in_camera = rotation.T @ (point - position)  # optical frame: z forward, x right, y down
            u, v, _ = k.matrix() @ in_camera / in_camera[2]
            if not (5 < u < k.width - 5 and 5 < v < k.height - 5):
                continue
            body = p.createMultiBody(0, -1, sphere, point.tolist(), physicsClientId=client)
            image = scene.render(k, position, orientation).astype(int)
            p.removeBody(body, physicsClientId=client)
            rows, cols = np.nonzero((image[..., 0] > 150) & (image[..., 1] < 80))
            assert len(rows) > 0, f'sphere at {point} not rendered'
            assert abs(cols.mean() - u) < 1.5 and abs(rows.mean() - v) < 1.5, (cols.mean(), rows.mean(), u, v)
            checked += 1


def test_view_matrix_of_a_look_at_optical_frame_matches_pybullets_look_at() -> None:
    eye, target = np.array([1.0, -1.5, 1.2]), np.array([0.1, 0.2, 0.7])
    expected = p.computeViewMatrix(eye.tolist(), target.tolist(), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(view_matrix(eye, look_at(eye, target)), expected, atol=1e-6)


@pytest.mark.parametrize('mode', list(CameraMode))
def test_camera_paths_look_at_the_workspace_smoothly_from_a_distance(mode: CameraMode) -> None:
    times = np.arange(300) / 15.0
    path = camera_path(mode, times, np.random.default_rng(5))
    for position, orientation, target in zip(path.positions, path.orientations, path.targets, strict=True):
        forward = quaternion_to_rotation(orientation)[:, 2]
        to_target = (target - position) / np.linalg.norm(target - position)
        assert forward @ to_target > 0.999
    assert np.linalg.norm(path.positions - path.targets, axis=1).min() >= MIN_CAMERA_DISTANCE - 1e-9
    assert np.linalg.norm(np.diff(path.positions, axis=0), axis=1).max() < 0.1  # < 1.5 m/s


def test_joint_commands_stay_within_their_range() -> None:
    commands = joint_command_path(np.arange(3000) / 15.0, np.random.default_rng(0))
    assert commands.shape == (3000, 7)
    assert np.all(np.abs(commands - ARM_HOME) <= ARM_AMPLITUDES + 1e-9)


def test_split_seed_ranges_are_disjoint_and_fixed() -> None:
    assert [split_of(s) for s in (0, 899_999, 900_000, 949_999, 950_000, 999_999)] == [
        Split.TRAIN,
        Split.TRAIN,
        Split.VAL,
        Split.VAL,
        Split.TEST,
        Split.TEST,
    ]
    assert split_seeds(Split.TEST, 3, offset=2) == [950_002, 950_003, 950_004]
    assert sum(len(r) for r in SPLIT_SEEDS.values()) == 1_000_000
    with pytest.raises(RecordingError, match='seed 1000000 is outside every split range'):
        split_of(1_000_000)
    with pytest.raises(RecordingError, match=r'3 episodes from --seed-offset 49998 do not fit the val split'):
        split_seeds(Split.VAL, 3, offset=49_998)


def test_test_split_episodes_last_a_minute_by_default() -> None:
    specs = plan_episodes(build_parser().parse_args(['--output', 'x', '--split', 'test', '--minutes', '3']))
    assert [s.seed for s in specs] == [950_000, 950_001, 950_002] and {s.seconds for s in specs} == {60.0}
    specs = plan_episodes(build_parser().parse_args(['--output', 'x', '--minutes', '1']))
    assert len(specs) == 3 and specs[0].seconds == 20.0 and specs[0].frames == 300


@pytest.mark.parametrize(
    ('flags', 'message'),
    [
        (['--size', '160'], "--size '160' is not WIDTHxHEIGHT"),
        (['--size', '0x120'], "--size '0x120' must be positive"),
        (['--rate', '0'], '--rate 0.0 is out of range'),
        (['--episode-seconds', '-1'], '--episode-seconds -1.0 is out of range'),
        (['--jpeg-quality', '101'], '--jpeg-quality 101 is out of range'),
        (['--workers', '0'], '--workers 0 is out of range'),
        (['--episodes', '0'], '--episodes 0 is out of range'),
        (['--split', 'val', '--episodes', '2', '--seed-offset', '49999'], 'do not fit the val split'),
    ],
)
def test_bad_options_are_refused_with_the_flag_named(flags: list[str], message: str) -> None:
    with pytest.raises(RecordingError, match=message):
        plan_episodes(build_parser().parse_args(['--output', 'x', *flags]))


def test_parse_size_reads_width_then_height() -> None:
    assert parse_size('160x120') == (160, 120) and parse_size('128X128') == (128, 128)


def test_output_must_be_new_or_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare_output(tmp_path / 'empty')  # created
    prepare_output(tmp_path / 'empty')  # exists but empty: accepted
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'keep.txt').write_text('precious')
    with pytest.raises(RecordingError, match=r'refusing to overwrite .*full: it exists and is not an empty folder'):
        prepare_output(tmp_path / 'full')
    assert main(['--output', str(tmp_path / 'full'), '--episodes', '1']) == 1
    assert 'ERROR: refusing to overwrite' in capsys.readouterr().err
    assert [f.name for f in (tmp_path / 'full').iterdir()] == ['keep.txt']


def test_cli_records_episodes_in_parallel_under_their_split(tmp_path: Path) -> None:
    output = tmp_path / 'rec'
    flags = '--episodes 2 --episode-seconds 0.5 --size 32x24 --split val --seed-offset 5 --camera-mode orbit'
    argv = ['--output', str(output), *shlex.split(flags), '--workers', '2', '--storage', 'sqlite3']
    assert main(argv) == 0
    metadata = yaml.safe_load((output / METADATA_FILE).read_text())
    assert metadata['seeds'] == [900_005, 900_006]
    assert [e['path'] for e in metadata['episodes']] == ['val/episode_900005', 'val/episode_900006']
    assert [e['frames'] for e in metadata['episodes']] == [8, 8] and metadata['total_frames'] == 16
    assert {e['camera_mode'] for e in metadata['episodes']} == {'orbit'}
    assert metadata['package']['aapt_ros'] and metadata['arguments']['split'] == 'val'
    assert len(read_episode(output / 'val' / 'episode_900006')[COMPRESSED_TOPIC]) == 8


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    flags = '--output --minutes --episodes --episode-seconds --split --seed-offset --rate --size --horizontal-fov'
    for flag in [*flags.split(), '--compression', '--jpeg-quality', '--storage', '--camera-mode', '--no-shadows']:
        assert flag in text


def test_docstring_usage_examples_parse() -> None:
    from aapt_ros.data import sim_recorder

    examples = [
        line.strip()
        for line in (sim_recorder.__doc__ or '').splitlines()
        if line.strip().startswith('aapt-record-sim ')
    ]
    assert len(examples) == 2
    for example in examples:
        assert plan_episodes(build_parser().parse_args(shlex.split(example)[1:]))
