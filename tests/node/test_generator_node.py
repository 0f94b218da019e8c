"""generator_node in its own process, driven over real ROS 2 topics (rclpy, Fast DDS)."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, TwistStamped
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState

from aapt_ros.eval.live import CameraClient, NodeProcess
from aapt_ros.model.config import KUKA_IIWA_JOINTS
from aapt_ros.node.conversions import TWIST_FIELDS, stamp_to_ns
from aapt_ros.node.image_conversion import array_to_image_msg, image_msg_to_array, image_msg_to_rgb8
from tests.conftest import save_tiny_model

WIDTH, HEIGHT = 48, 32  # the tiny test model's camera
TIMEOUT = 60.0


def pose_msg(
    i: int,
    stamp_ns: int | None = None,
    *,
    position: tuple[float, float, float] | None = None,
    orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0),
) -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id = 'world'
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(
        stamp_ns if stamp_ns is not None else 10**9 + i * 66_666_667, 10**9
    )
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = position or (0.02 * i, 0.0, 0.5)
    q = msg.pose.orientation
    q.x, q.y, q.z, q.w = orientation
    return msg


def joints_msg(values: list[float] | None = None, names: tuple[str, ...] = KUKA_IIWA_JOINTS) -> JointState:
    msg = JointState()
    msg.name = list(names)
    msg.position = values if values is not None else [0.1] * len(names)
    return msg


class Harness:
    """One node process and a client in its namespace."""

    def __init__(self, node: NodeProcess, client: CameraClient):
        self.node, self.client = node, client
        self.next_stamp = 10**9

    def stamp(self) -> int:
        self.next_stamp += 66_666_667
        return self.next_stamp

    def send_pose(self, msg: PoseStamped, *, expect_image: bool = True) -> Image | None:
        """Publish a pose; return its image, or check that none comes (a rejected pose)."""
        stamp = stamp_to_ns(msg.header.stamp)
        before = len(self.client.images)

        def image() -> Image | None:
            new = [r.msg for r in self.client.images[before:] if stamp_to_ns(r.msg.header.stamp) == stamp]
            return new[0] if new else None

        self.client.pose_pub.publish(msg)
        if not expect_image:
            self.spin(0.5)
            assert image() is None
            return None
        self.client.spin_until(lambda: image() is not None, TIMEOUT, 'image', self.node)
        return image()

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.client.spin_until(lambda: time.monotonic() > end, seconds + 5, 'time')

    def wait_log(self, text: str) -> str:
        end = time.monotonic() + TIMEOUT
        while text not in self.node.log_text():
            assert time.monotonic() < end, f'{text!r} not in the node log:\n{self.node.log_tail()}'
            self.spin(0.05)
        return self.node.log_text()


@contextmanager
def start_harness(tiny_model: Path, tmp_path: Path, namespace: str, **params: object) -> Iterator[Harness]:
    parameters = {'model_path': str(tiny_model), 'publish_compressed': True, 'diagnostics_period': 0.2, **params}
    with NodeProcess(parameters, namespace=namespace, log_path=tmp_path / 'node.log') as node:
        client = CameraClient(namespace, name=f'client_{namespace.strip("/")}')
        try:
            client.wait_connected(
                TIMEOUT, node, joint_states=params.get('action_source', 'joint_state') == 'joint_state'
            )
            yield Harness(node, client)
        finally:
            client.destroy_node()


@pytest.fixture(scope='module')
def harness(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, ros_context: None) -> Iterator[Harness]:
    with start_harness(tiny_model, tmp_path_factory.mktemp('node'), '/cam_on_pose') as h:
        yield h


@pytest.fixture
def fresh(harness: Harness) -> Harness:
    """The module's node after a reset, with the joints published once."""
    assert harness.client.reset().success
    harness.client.joint_pub.publish(joints_msg())
    harness.spin(0.1)
    return harness


def test_one_image_per_pose_with_the_pose_stamp_and_matching_camera_info(fresh: Harness) -> None:
    client = fresh.client
    images_before, infos_before = len(client.images), len(client.camera_infos)
    stamps = [fresh.stamp() for _ in range(12)]
    for i, stamp in enumerate(stamps):  # all at once: the node must queue, not drop
        client.pose_pub.publish(pose_msg(i, stamp))
    client.spin_until(
        lambda: len(client.images) >= images_before + 12 and len(client.camera_infos) >= infos_before + 12,
        TIMEOUT,
        '12 images',
        fresh.node,
    )
    fresh.spin(0.3)
    images = client.images[images_before:]
    infos = client.camera_infos[infos_before:]
    assert [stamp_to_ns(r.msg.header.stamp) for r in images] == stamps
    assert [stamp_to_ns(r.msg.header.stamp) for r in infos] == stamps
    for received, info in zip(images, infos, strict=True):
        image = received.msg
        assert (image.encoding, image.width, image.height, image.step) == ('rgb8', WIDTH, HEIGHT, WIDTH * 3)
        assert image.header.frame_id == info.msg.header.frame_id == 'camera_optical_frame'
        assert image_msg_to_array(image).shape == (HEIGHT, WIDTH, 3)
        assert (info.msg.width, info.msg.height) == (WIDTH, HEIGHT)
        assert list(info.msg.k) == [40.0, 0.0, 24.0, 0.0, 40.0, 16.0, 0.0, 0.0, 1.0]


def test_start_image_seeds_the_stream(fresh: Harness) -> None:
    start = np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    fresh.client.start_image_pub.publish(array_to_image_msg(start[..., ::-1].copy(), 'bgr8'))
    fresh.wait_log('start image received')
    first = fresh.send_pose(pose_msg(0, fresh.stamp()))
    assert first is not None and np.array_equal(image_msg_to_rgb8(first), start)
    assert fresh.send_pose(pose_msg(1, fresh.stamp())) is not None


@pytest.mark.parametrize(
    ('make_pose', 'reason'),
    [
        (lambda s: pose_msg(1, s, position=(math.nan, 0.0, 0.0)), 'rejected pose: position is not finite'),
        (lambda s: pose_msg(1, s, position=(0.0, math.inf, 0.0)), 'rejected pose: position is not finite'),
        (lambda s: pose_msg(1, s, orientation=(0.0, 0.0, 0.0, math.nan)), 'rejected pose: orientation is not finite'),
        (
            lambda s: pose_msg(1, s, orientation=(0.0, 0.0, 0.5, 0.5)),
            'rejected pose: orientation quaternion is not normalised',
        ),
        (
            lambda s: pose_msg(1, s, orientation=(0.0, 0.0, 0.0, 0.0)),
            'rejected pose: orientation quaternion is not normalised',
        ),
    ],
)
def test_unusable_pose_is_rejected_with_a_logged_reason_and_the_node_keeps_serving(
    fresh: Harness, make_pose, reason: str
) -> None:  # type: ignore[no-untyped-def]
    fresh.send_pose(pose_msg(0, fresh.stamp()))
    fresh.send_pose(make_pose(fresh.stamp()), expect_image=False)
    fresh.wait_log(reason)
    assert fresh.send_pose(pose_msg(2, fresh.stamp())) is not None


def test_out_of_order_and_duplicate_stamps_are_rejected(fresh: Harness) -> None:
    first, second = fresh.stamp(), fresh.stamp()
    fresh.send_pose(pose_msg(0, second))
    fresh.send_pose(pose_msg(1, first), expect_image=False)
    fresh.wait_log(f'is out of order (last frame {second // 10**9}.{second % 10**9:09d})')
    fresh.send_pose(pose_msg(2, second), expect_image=False)
    fresh.wait_log('is duplicate')
    assert fresh.send_pose(pose_msg(3, fresh.stamp())) is not None


@pytest.mark.parametrize(
    ('joints', 'reason'),
    [
        (joints_msg([0.1] * 6, KUKA_IIWA_JOINTS[:6]), "rejected joint_states: action lacks ['lbr_iiwa_joint_7']"),
        (joints_msg([0.1] * 6), 'rejected joint_states: JointState has 7 names but 6 position values'),
    ],
)
def test_action_of_the_wrong_length_is_rejected_and_the_last_valid_one_is_kept(
    fresh: Harness, joints: JointState, reason: str
) -> None:
    fresh.client.joint_pub.publish(joints)
    fresh.wait_log(reason)
    fresh.send_pose(pose_msg(0, fresh.stamp()))
    assert fresh.send_pose(pose_msg(1, fresh.stamp())) is not None


@pytest.mark.parametrize(
    ('image', 'reason'),
    [
        (
            array_to_image_msg(np.zeros((HEIGHT * 2, WIDTH, 3), np.uint8), 'rgb8'),
            f'rejected start_image: size {WIDTH}x{HEIGHT * 2}, the model needs {WIDTH}x{HEIGHT}',
        ),
        (array_to_image_msg(np.zeros((HEIGHT, WIDTH), np.uint16), '16UC1'), 'rejected start_image:'),
    ],
)
def test_start_image_of_the_wrong_size_or_encoding_is_rejected(fresh: Harness, image: Image, reason: str) -> None:
    fresh.client.start_image_pub.publish(image)
    fresh.wait_log(reason)
    first = fresh.send_pose(pose_msg(0, fresh.stamp()))
    assert first is not None  # the stream starts from the model's own start frame instead


def test_unknown_encoding_start_image_is_rejected(fresh: Harness) -> None:
    msg = array_to_image_msg(np.zeros((HEIGHT, WIDTH, 3), np.uint8), 'rgb8')
    msg.encoding = 'yuv422'
    fresh.client.start_image_pub.publish(msg)
    fresh.wait_log("rejected start_image: Unsupported image encoding 'yuv422'")
    assert fresh.send_pose(pose_msg(0, fresh.stamp())) is not None


def test_compressed_images_and_diagnostics_are_published(fresh: Harness) -> None:
    from sensor_msgs.msg import CompressedImage

    compressed: list[CompressedImage] = []
    sub = fresh.client.create_subscription(CompressedImage, 'image_raw/compressed', compressed.append, 10)
    fresh.client.spin_until(lambda: sub.get_publisher_count() > 0, TIMEOUT, 'compressed publisher')
    for i in range(3):
        fresh.send_pose(pose_msg(i, fresh.stamp()))
    fresh.client.spin_until(lambda: len(compressed) >= 1, TIMEOUT, 'compressed image')
    assert compressed[-1].format == 'rgb8; jpeg compressed bgr8'
    count = len(fresh.client.diagnostics)
    fresh.client.spin_until(lambda: len(fresh.client.diagnostics) > count, TIMEOUT, 'diagnostics')
    values = {kv.key: kv.value for kv in fresh.client.diagnostics[-1].msg.status[0].values}
    assert {'rate_hz', 'latency_p50_ms', 'latency_p99_ms', 'window_fill', 'window_size', 'decoder'} <= set(values)
    assert values['decoder'] == 'full'  # the tiny model has no light decoder
    assert int(values['window_size']) == 4 and 1 <= int(values['window_fill']) <= 4
    fresh.client.destroy_subscription(sub)


def test_timer_mode_stamps_images_with_sim_time(tiny_model: Path, tmp_path: Path, ros_context: None) -> None:
    with start_harness(
        tiny_model, tmp_path, '/cam_timer', trigger_mode='timer', frame_rate=20.0, use_sim_time=True
    ) as h:
        clock_pub = h.client.create_publisher(Clock, '/clock', 10)
        sim_start, tick = 5000 * 10**9, 0
        deadline = time.monotonic() + TIMEOUT
        # Sim time advances in 50 ms steps until five images came; on a loaded machine the node may
        # subscribe late, so its inputs are sent again now and then (timer mode uses the latest).
        while len(h.client.images) < 5 and time.monotonic() < deadline:
            if tick % 20 == 0:
                h.client.joint_pub.publish(joints_msg())
                h.client.pose_pub.publish(pose_msg(0))
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(sim_start + tick * 50_000_000, 10**9)
            clock_pub.publish(clock)
            tick += 1
            h.spin(0.03)
        stamps = [stamp_to_ns(r.msg.header.stamp) for r in h.client.images]
        assert len(stamps) >= 5
        assert all(sim_start <= s <= sim_start + tick * 50_000_000 for s in stamps)  # the sim clock, not the wall
        assert stamps == sorted(stamps)


def test_twist_stamped_actions_drive_a_velocity_model(tmp_path: Path, ros_context: None) -> None:
    model = save_tiny_model(tmp_path / 'twist_model', action_names=TWIST_FIELDS)
    with start_harness(model, tmp_path, '/cam_twist', action_source='twist_stamped') as h:
        twist_pub = h.client.create_publisher(TwistStamped, 'cmd_vel', 10)
        h.client.spin_until(lambda: twist_pub.get_subscription_count() > 0, TIMEOUT, 'cmd_vel subscriber', h.node)
        command = TwistStamped()
        command.twist.linear.x = 0.3
        twist_pub.publish(command)
        h.spin(0.2)
        for i in range(3):
            assert h.send_pose(pose_msg(i, h.stamp())) is not None
        assert 'actions from twist_stamped' in h.node.log_text()
        assert 'rejected' not in h.node.log_text()


def _run_node_expecting_failure(params: dict[str, object], tmp_path: Path) -> str:
    with NodeProcess(params, log_path=tmp_path / 'fail.log') as node:
        code = node.process.wait(TIMEOUT)
        log = node.log_text()
    assert code != 0, log
    return log


def test_missing_model_refuses_to_start_and_names_the_path(tmp_path: Path) -> None:
    log = _run_node_expecting_failure({'model_path': str(tmp_path / 'no_model')}, tmp_path)
    assert f'cannot start: model folder not found: {tmp_path / "no_model"}' in log


def test_corrupt_model_refuses_to_start_and_names_the_file(tiny_model: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tiny_model, tmp_path / 'model'))
    (model / 'generator.safetensors').write_bytes(b'not a safetensors file')
    log = _run_node_expecting_failure({'model_path': str(model)}, tmp_path)
    assert f'cannot start: model file {model / "generator.safetensors"} is not a readable safetensors file' in log


def test_invalid_parameter_refuses_to_start_with_the_valid_choices(tiny_model: Path, tmp_path: Path) -> None:
    log = _run_node_expecting_failure({'model_path': str(tiny_model), 'trigger_mode': 'sometimes'}, tmp_path)
    assert "parameter trigger_mode='sometimes' is invalid; valid: ['on_pose', 'timer']" in log


def test_out_of_range_parameter_refuses_to_start_with_the_range(tiny_model: Path, tmp_path: Path) -> None:
    log = _run_node_expecting_failure({'model_path': str(tiny_model), 'image_depth': 5000}, tmp_path)
    assert 'cannot start:' in log and 'image_depth out of range' in log and 'Traceback' not in log


def test_twist_actions_for_a_joint_model_refuse_to_start(tiny_model: Path, tmp_path: Path) -> None:
    log = _run_node_expecting_failure({'model_path': str(tiny_model), 'action_source': 'twist'}, tmp_path)
    assert "action_source 'twist' provides" in log


def test_an_arm_model_takes_its_base_pose_as_a_parameter_and_warns_without_it(
    tmp_path: Path, ros_context: None
) -> None:
    model = save_tiny_model(tmp_path / 'arm_model', sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    base = [-0.4, 0.1, 0.625, 0.0, 0.0, 0.0, 1.0]
    with start_harness(model, tmp_path, '/cam_arm', arm_base_pose=base) as h:
        h.client.joint_pub.publish(joints_msg())
        h.spin(0.1)
        for i in range(3):
            assert h.send_pose(pose_msg(i, h.stamp())) is not None
        assert 'arm_base_pose is not set' not in h.node.log_text() and 'rejected' not in h.node.log_text()
    (tmp_path / 'unset').mkdir()
    with start_harness(model, tmp_path / 'unset', '/cam_arm_unset') as h:
        assert h.send_pose(pose_msg(0, h.stamp())) is not None  # the documented fallback: no arm channels
        assert 'arm_base_pose is not set' in h.node.log_text()


def test_an_arm_base_pose_of_the_wrong_length_refuses_to_start(tiny_model: Path, tmp_path: Path) -> None:
    log = _run_node_expecting_failure({'model_path': str(tiny_model), 'arm_base_pose': [0.0] * 6}, tmp_path)
    assert 'parameter arm_base_pose: needs 7 values' in log and 'Traceback' not in log
