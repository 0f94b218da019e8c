"""The colcon-built interfaces: the installed executable driven by aapt_ros/Control messages.

Needs ``tools/build_interfaces.sh`` and the environment of ``tools/colcon_env.sh`` (``make test``
provides both and sets AAPT_ROS_REQUIRE_INTERFACES=1, so there a missing build fails, not skips).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aapt_ros.eval.live import CameraClient, NodeProcess
from aapt_ros.model.config import KUKA_IIWA_JOINTS
from aapt_ros.node.conversions import stamp_to_ns

try:
    from aapt_ros.msg import Control, GeneratorStatus
except ImportError:
    if os.environ.get('AAPT_ROS_REQUIRE_INTERFACES') == '1':
        raise
    pytest.skip(
        'aapt_ros.msg not built: run tools/build_interfaces.sh and tools/colcon_env.sh', allow_module_level=True
    )

from ament_index_python.packages import get_package_prefix

TIMEOUT = 60.0


def control_msg(i: int, names: tuple[str, ...] = KUKA_IIWA_JOINTS, values: list[float] | None = None) -> Control:
    msg = Control()
    msg.header.frame_id = 'world'
    msg.header.stamp.sec, msg.header.stamp.nanosec = 7, 1000 + i * 50_000_000
    msg.pose.position.x = 0.01 * i
    msg.pose.orientation.w = 1.0
    msg.action_names = list(names)
    msg.action = values if values is not None else [0.05 * i] * len(names)
    return msg


@pytest.fixture(scope='module')
def control_node(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, ros_context: None
) -> Iterator[tuple[NodeProcess, CameraClient]]:
    # The executable `ros2 run aapt_ros generator_node` would start, found through the ament index.
    executable = Path(get_package_prefix('aapt_ros')) / 'lib' / 'aapt_ros' / 'generator_node'
    assert os.access(executable, os.X_OK), executable
    log = tmp_path_factory.mktemp('control') / 'node.log'
    params = {'model_path': str(tiny_model), 'diagnostics_period': 0.2}
    with NodeProcess(params, namespace='/cam_control', log_path=log, executable=[str(executable)]) as node:
        client = CameraClient('/cam_control', control_type=Control, name='control_client')
        client.wait_connected(TIMEOUT, node)
        yield node, client
        client.destroy_node()


def test_one_image_per_control_message_with_its_stamp(control_node: tuple[NodeProcess, CameraClient]) -> None:
    node, client = control_node
    messages = [control_msg(i) for i in range(8)]
    for msg in messages:
        client.control_pub.publish(msg)  # type: ignore[union-attr]
    client.spin_until(lambda: len(client.images) >= 8, TIMEOUT, '8 images', node)
    assert [stamp_to_ns(r.msg.header.stamp) for r in client.images[:8]] == [
        stamp_to_ns(m.header.stamp) for m in messages
    ]


def test_control_with_a_wrong_action_is_rejected_and_serving_goes_on(
    control_node: tuple[NodeProcess, CameraClient],
) -> None:
    node, client = control_node
    assert client.reset().success
    before = len(client.images)
    client.control_pub.publish(control_msg(20, values=[0.0] * 3))  # type: ignore[union-attr]
    client.control_pub.publish(control_msg(21, names=('a',) * 7))  # type: ignore[union-attr]
    client.control_pub.publish(control_msg(22))  # type: ignore[union-attr]
    client.spin_until(lambda: len(client.images) > before, TIMEOUT, 'an image after bad controls', node)
    client.spin_until(lambda: "action lacks ['lbr_iiwa_joint_1'" in node.log_text(), TIMEOUT, 'log')
    assert [stamp_to_ns(r.msg.header.stamp) for r in client.images[before:]] == [
        stamp_to_ns(control_msg(22).header.stamp)
    ]
    assert 'rejected control: action has 3 values for 7 names' in node.log_text()


def test_generator_status_reports_the_window(control_node: tuple[NodeProcess, CameraClient]) -> None:
    node, client = control_node
    statuses: list[GeneratorStatus] = []
    client.create_subscription(GeneratorStatus, 'status', statuses.append, 10)
    client.spin_until(lambda: any(s.window_fill > 0 for s in statuses), TIMEOUT, 'a status message', node)
    status = statuses[-1]
    assert status.window_size == 4 and status.model_name == 'tiny-test' and status.device == 'cpu'
