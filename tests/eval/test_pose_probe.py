"""The pose-following probe: targets, training CLI, and its use in aapt-eval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aapt_ros.eval.pose_probe import load_probe, main, rotation_vector
from aapt_ros.eval.replay import main as eval_main
from aapt_ros.model.camera import Pose

SAMPLE = Path(__file__).resolve().parents[2] / 'aapt_ros' / 'data' / 'samples' / 'sim_episode'


@pytest.mark.parametrize('angle', [0.0, 1e-4, 0.3, 2.5])
def test_rotation_vector_inverts_an_axis_angle_rotation(angle: float) -> None:
    axis = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    half = angle / 2
    pose = Pose((0.0, 0.0, 0.0), (*(axis * math.sin(half)), math.cos(half)))  # type: ignore[arg-type]
    np.testing.assert_allclose(rotation_vector(pose.rotation()), axis * angle, atol=1e-9)


@pytest.fixture(scope='module')
def probe_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp('probe') / 'probe'
    args = [str(SAMPLE), '--val', str(SAMPLE), '--output', str(folder), '--steps', '20', '--image-size', '32']
    assert main(args) == 0
    return folder


def test_training_writes_a_loadable_probe_with_a_card(probe_folder: Path) -> None:
    assert load_probe(probe_folder).config.image_size == 32
    assert 'Own error on 1 held-out recording' in (probe_folder / 'PROBE_CARD.md').read_text()


def test_with_a_perfect_generator_the_probe_error_is_the_probes_own(probe_folder: Path, tmp_path: Path) -> None:
    args = [
        str(SAMPLE),
        '--probe',
        str(probe_folder),
        '--oracle',
        '--output-dir',
        str(tmp_path / 'out'),
        '--device',
        'cpu',
        '--max-seconds',
        '3',
    ]
    assert eval_main(args) == 0
    errors = json.loads((tmp_path / 'out' / 'summary.json').read_text())['pose_probe']
    assert errors['generated'] == errors['recorded (probe floor)']


def test_training_refuses_to_overwrite_and_a_broken_probe_is_named(
    probe_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(SAMPLE), '--val', str(SAMPLE), '--output', str(probe_folder)]) == 1
    assert 'refusing to overwrite' in capsys.readouterr().err
    with pytest.raises(ValueError, match=f'cannot load the pose probe in {tmp_path}'):
        load_probe(tmp_path)
