"""aapt-demo end to end: node process, trajectory replay over ROS 2, MP4 and rosbag2 outputs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from aapt_ros.data.bags import read_messages
from aapt_ros.eval.demo import DEFAULT_BAG, arm_base_pose, main


def test_demo_writes_video_bag_and_summary_and_prints_the_rate(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'run'
    assert main(['--model', str(tiny_model), '--output-dir', str(out), '--device', 'cpu', '--max-frames', '20']) == 0
    printed = capsys.readouterr().out
    assert '20 frames for 20 poses on cpu' in printed and 'frames/s' in printed and 'latency' in printed
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['frames'] == 20 and summary['fps'] > 0 and summary['latency_p99_ms'] >= summary['latency_p50_ms']
    video = cv2.VideoCapture(str(out / 'generated.mp4'))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (48, 32)
    images = [
        deserialize_message(m.data, Image) for m in read_messages(out / 'generated_bag', ['/aapt_demo/image_raw'])
    ]
    assert len(images) == 20
    poses = list(read_messages(out / 'generated_bag', ['/aapt_demo/pose']))
    assert len(poses) == 20


def test_demo_refuses_to_overwrite_an_earlier_run(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'summary.json').write_text('{}')
    assert main(['--model', str(tiny_model), '--output-dir', str(tmp_path / 'run')]) == 1
    assert 'refusing to overwrite' in capsys.readouterr().err


def test_demo_reports_a_model_that_cannot_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ['--model', str(tmp_path / 'missing'), '--output-dir', str(tmp_path / 'run'), '--timeout', '60']
    assert main(args) == 1
    assert f'model config not found: {tmp_path / "missing"}' in capsys.readouterr().err


def test_the_node_gets_the_arm_base_of_the_bag_and_nothing_from_a_bag_without_it(tmp_path: Path) -> None:
    from tests.data.synthetic_bags import sim_messages, write_bag

    base = arm_base_pose(DEFAULT_BAG)  # the sample bag, recorded by aapt-record-sim
    assert len(base) == 7 and base[2] == pytest.approx(0.625)  # the link frame sits on the table top
    assert abs(sum(q * q for q in base[3:]) - 1) < 1e-9
    assert arm_base_pose(write_bag(tmp_path / 'old', sim_messages(3, arm_base=None))) == []
