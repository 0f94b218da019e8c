"""The training and data packages run where ROS is not installed (a GPU box with plain PyTorch)."""

from __future__ import annotations

import subprocess
import sys

BLOCK_ROS = """
import sys
for name in ('rclpy', 'sensor_msgs', 'sensor_msgs.msg', 'std_msgs', 'std_msgs.msg', 'geometry_msgs'):
    sys.modules[name] = None  # importing any of them now raises ImportError
import aapt_ros.training.cli, aapt_ros.data.clips, aapt_ros.data.episodes, aapt_ros.streaming.session
print('ok')
"""


def test_training_and_data_import_without_ros() -> None:
    result = subprocess.run([sys.executable, '-c', BLOCK_ROS], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'
