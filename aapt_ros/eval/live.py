"""Drive a running generator_node over ROS 2 topics and collect what it publishes.

``NodeProcess`` starts the node as a separate process (as ``ros2 run`` would); ``CameraClient``
is the other side of the wire: it publishes poses, actions, controls and start images, and
records every image, CameraInfo and diagnostics message it receives with its receive time.
The demo and the cross-process tests both use these, so the tests exercise the real tool.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger

from aapt_ros.node.conversions import stamp_to_ns


class ReplayError(RuntimeError):
    """The node could not be started or did not answer; the message includes its log tail."""


class NodeProcess:
    """generator_node in a subprocess; its output goes to ``log_path``."""

    def __init__(
        self,
        parameters: Mapping[str, Any],
        *,
        namespace: str = '/',
        log_path: Path,
        env: Mapping[str, str] | None = None,
        executable: list[str] | None = None,
        params_file: Path | None = None,
    ):
        self.log_path = log_path
        args = ['--ros-args', '-r', f'__ns:={namespace}']
        if params_file is not None:
            args += ['--params-file', str(params_file)]
        for name, value in parameters.items():
            args += ['-p', f'{name}:={_param_text(value)}']
        command = (executable or [sys.executable, '-m', 'aapt_ros.node.generator_node']) + args
        self._log = open(log_path, 'w')  # noqa: SIM115 (closed by stop(), the process outlives this call)
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})},
        )

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def log_tail(self, lines: int = 30) -> str:
        return '\n'.join(self.log_text().splitlines()[-lines:])

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        if self.running():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        # Fixed point: the parameter parser reads '1e-17' (no dot) as a string, not a double.
        return '[' + ', '.join(f'{v:.9f}' for v in value) + ']'
    return str(value)


@dataclass(frozen=True)
class Received:
    msg: Any
    receive_time: float  # time.perf_counter() at arrival


class CameraClient(Node):
    """The user's side: publishes inputs to a generator_node namespace, records its outputs."""

    def __init__(
        self,
        namespace: str = '/',
        *,
        control_type: type | None = None,
        name: str = 'aapt_camera_client',
        context: Context | None = None,
    ):
        super().__init__(name, namespace=namespace, context=context)
        # An executor of its own: the client works in any rclpy context, the default one or not.
        self._spin_executor = SingleThreadedExecutor(context=self.context)
        self._spin_executor.add_node(self)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pose_pub = self.create_publisher(PoseStamped, 'pose', qos)
        self.joint_pub = self.create_publisher(JointState, 'joint_states', qos)
        self.start_image_pub = self.create_publisher(Image, 'start_image', qos)
        self.control_pub = self.create_publisher(control_type, 'control', qos) if control_type else None
        self.images: list[Received] = []
        self.camera_infos: list[Received] = []
        self.diagnostics: list[Received] = []
        self.create_subscription(
            Image, 'image_raw', lambda m: self.images.append(Received(m, time.perf_counter())), qos
        )
        self.create_subscription(
            CameraInfo, 'camera_info', lambda m: self.camera_infos.append(Received(m, time.perf_counter())), qos
        )
        self.create_subscription(
            DiagnosticArray, '/diagnostics', lambda m: self.diagnostics.append(Received(m, time.perf_counter())), 10
        )
        self.reset_client = self.create_client(Trigger, 'reset')

    def spin_until(
        self, condition: Callable[[], bool], timeout: float, what: str, node: NodeProcess | None = None
    ) -> None:
        """Spin until ``condition()`` holds; ReplayError after ``timeout`` s or if ``node`` died."""
        deadline = time.monotonic() + timeout
        while not condition():
            if node is not None and not node.running():
                raise ReplayError(
                    f'generator_node exited ({node.process.returncode}) while waiting for {what}:\n{node.log_tail()}'
                )
            if time.monotonic() > deadline:
                tail = f':\n{node.log_tail()}' if node is not None else ''
                raise ReplayError(f'timed out after {timeout:.0f} s waiting for {what}{tail}')
            self._spin_executor.spin_once(timeout_sec=0.02)

    def wait_connected(self, timeout: float, node: NodeProcess | None = None, *, joint_states: bool = True) -> None:
        """Wait until the node subscribes to our poses (and joint states) and publishes images to us."""

        def connected() -> bool:
            return (
                self.pose_pub.get_subscription_count() > 0
                and (not joint_states or self.joint_pub.get_subscription_count() > 0)
                and self.count_publishers(self.resolve_topic_name('image_raw')) > 0
            )

        self.spin_until(connected, timeout, 'the node to connect', node)
        if self.control_pub is not None:
            self.spin_until(
                lambda: self.control_pub.get_subscription_count() > 0,
                timeout,  # type: ignore[union-attr]
                'the node to subscribe to control',
                node,
            )

    def image_with_stamp(self, stamp_ns: int) -> Received | None:
        for received in reversed(self.images):
            if stamp_to_ns(received.msg.header.stamp) == stamp_ns:
                return received
        return None

    def reset(self, timeout: float = 10.0) -> Trigger.Response:
        """Call the node's reset service. The request is sent again every 2 s until the timeout: a
        service can report ready to the client before its reply path has matched (a DDS discovery
        race), and that first reply is then lost; a reset is idempotent, so repeating it is safe."""
        deadline = time.monotonic() + timeout
        self.spin_until(lambda: self.reset_client.service_is_ready(), timeout, 'the reset service')
        while True:
            future = self.reset_client.call_async(Trigger.Request())
            remaining = deadline - time.monotonic()
            try:
                self.spin_until(future.done, min(2.0, max(remaining, 0.0)), 'the reset response')
                return future.result()
            except ReplayError:
                self.reset_client.remove_pending_request(future)
                if time.monotonic() >= deadline:
                    raise ReplayError(f'timed out after {timeout:.0f} s waiting for the reset response') from None
