"""aapt-eval offline: a recorded bag drives the engine; outputs and metrics are written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import pytest

from aapt_ros.data.bags import TYPESTORE, read_messages
from aapt_ros.eval import compare
from aapt_ros.eval.replay import GENERATED_TOPIC, RECORDED_TOPIC, main
from aapt_ros.model.checkpoint import CARD_FILE
from tests.data.synthetic_bags import sim_messages, write_bag


@pytest.fixture(scope='module')
def held_out_bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp('bags')
    # 2.2 s at 30 Hz: resampled to the tiny model's 15 Hz, reaches the 1 s horizon
    return [write_bag(folder / f'episode_{i}', sim_messages(n=66, rate_hz=30.0, size=(64, 48))) for i in range(2)]


def _run(tiny_model: Path, bags: list[Path], out: Path, *extra: str) -> int:
    return main([*map(str, bags), '--model', str(tiny_model), '--output-dir', str(out), '--device', 'cpu', *extra])


def test_oracle_replay_scores_infinite_psnr_and_unit_ssim(
    tiny_model: Path, held_out_bags: list[Path], tmp_path: Path
) -> None:
    assert _run(tiny_model, held_out_bags, tmp_path / 'out', '--oracle') == 0
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())['summary']
    assert summary['1s']['psnr_mean'] == math.inf and summary['1s']['ssim_mean'] == pytest.approx(1.0)
    assert summary['1s']['bags'] == 2


def test_hold_first_frame_scores_the_start_image_repeated_and_modes_exclude_each_other(
    tiny_model: Path, held_out_bags: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tiny_model, held_out_bags[:1], tmp_path / 'held', '--hold-first-frame') == 0
    report = json.loads((tmp_path / 'held' / 'summary.json').read_text())
    assert report['hold_first_frame'] and 0 < report['summary']['1s']['psnr_mean'] < math.inf
    published = read_messages(tmp_path / 'held' / held_out_bags[0].name / 'replay_bag', [GENERATED_TOPIC])
    images = {TYPESTORE.deserialize_cdr(m.data, m.msgtype).data.tobytes() for m in published}
    assert len(images) == 1  # the same image at every step
    assert _run(tiny_model, held_out_bags[:1], tmp_path / 'both', '--hold-first-frame', '--oracle') == 1
    assert '--oracle and --hold-first-frame' in capsys.readouterr().err
    assert not (tmp_path / 'both').exists()


def test_append_card_adds_the_scores_to_the_model_card_and_keeps_what_was_there(
    tiny_model: Path, held_out_bags: list[Path], tmp_path: Path
) -> None:
    model = tmp_path / 'model'
    shutil.copytree(tiny_model, model)
    (model / CARD_FILE).write_text('## Stage `distill`\n')
    assert _run(model, held_out_bags[:1], tmp_path / 'out', '--append-card') == 0
    card = (model / CARD_FILE).read_text()
    assert card.startswith('## Stage `distill`\n')
    assert 'Held-out evaluation (aapt-eval, 1 sampling step(s) per frame, full decoder, seed 0)' in card
    assert f'`{held_out_bags[0].name}`' in card and '| 1s | 1 |' in card


def test_autoencode_scores_the_reconstruction_and_steps_reach_the_engine(
    tiny_model: Path, held_out_bags: list[Path], tmp_path: Path
) -> None:
    assert _run(tiny_model, held_out_bags[:1], tmp_path / 'ae', '--autoencode') == 0
    report = json.loads((tmp_path / 'ae' / 'summary.json').read_text())
    assert report['autoencode'] and 0 < report['summary']['1s']['psnr_mean'] < math.inf
    assert _run(tiny_model, held_out_bags[:1], tmp_path / 'steps', '--steps', '3') == 0
    assert json.loads((tmp_path / 'steps' / 'summary.json').read_text())['sampling_steps'] == 3


def test_replay_writes_bag_video_metrics_plot_and_summary(
    tiny_model: Path, held_out_bags: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'out'
    assert _run(tiny_model, held_out_bags, out) == 0
    assert '| 1s | 2 |' in capsys.readouterr().out
    folder = out / held_out_bags[0].name
    frames = len(json.loads((folder / 'metrics.json').read_text())) + 1  # frame 0 is the given start frame
    assert (folder / 'metrics.csv').read_text().count('\n') == frames  # header + one row per scored frame
    recorded = list(read_messages(folder / 'replay_bag', [RECORDED_TOPIC]))
    generated = list(read_messages(folder / 'replay_bag', [GENERATED_TOPIC]))
    assert len(recorded) == len(generated) == frames
    video = cv2.VideoCapture(str(folder / 'side_by_side.mp4'))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    assert int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 3 * 48  # recorded | generated | difference
    assert (out / 'metrics.png').stat().st_size > 0 and (out / 'summary.md').is_file()
    summary = json.loads((out / 'summary.json').read_text())['summary']
    assert 0 < summary['1s']['psnr_mean'] < math.inf


def test_replay_is_deterministic_by_seed(tiny_model: Path, held_out_bags: list[Path], tmp_path: Path) -> None:
    for name in ('a', 'b'):
        assert _run(tiny_model, held_out_bags[:1], tmp_path / name, '--seed', '4') == 0
    a, b = ((tmp_path / n / held_out_bags[0].name / 'metrics.json').read_text() for n in ('a', 'b'))
    assert a == b


def test_replay_refuses_to_overwrite_and_reports_missing_topics(
    tiny_model: Path, held_out_bags: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'x').write_text('keep')
    assert _run(tiny_model, held_out_bags, tmp_path / 'out') == 1
    assert 'refusing to overwrite' in capsys.readouterr().err
    other = write_bag(tmp_path / 'other', [m for m in sim_messages(n=10) if m[0] != '/camera/pose'])
    assert _run(tiny_model, [other], tmp_path / 'out2') == 1
    assert '/camera/pose' in capsys.readouterr().err


def test_live_replay_over_ros_equals_the_offline_rollout(
    tiny_model: Path, held_out_bags: list[Path], tmp_path: Path
) -> None:
    # A window other than the trained one (4): the node must receive it to give the same frames.
    for mode, extra in (('offline', ()), ('live', ('--live', 'recorded'))):
        assert _run(tiny_model, held_out_bags[:1], tmp_path / mode, '--seed', '2', '--window-frames', '2', *extra) == 0
    report = json.loads((tmp_path / 'offline' / 'summary.json').read_text())
    assert (report['window_frames'], report['trained_window_frames']) == (2, 4)
    folder = held_out_bags[0].name
    assert (tmp_path / 'live' / folder / 'node.log').is_file()
    offline, live = (json.loads((tmp_path / m / folder / 'metrics.json').read_text()) for m in ('offline', 'live'))
    assert offline == live


def test_compare_tabulates_and_plots_several_evaluations(
    tiny_model: Path, held_out_bags: list[Path], tmp_path: Path
) -> None:
    assert _run(tiny_model, held_out_bags, tmp_path / 'generated') == 0
    assert _run(tiny_model, held_out_bags, tmp_path / 'autoencoded', '--autoencode') == 0
    out = tmp_path / 'compare'
    assert compare.main([f'model={tmp_path / "generated"}', str(tmp_path / 'autoencoded'), '--output', str(out)]) == 0
    rows = (out / 'compare.md').read_text().splitlines()
    assert rows[0].startswith('| run | bags | 1s PSNR / SSIM')
    assert rows[2].startswith('| model | 2 |') and rows[3].startswith('| autoencoded | 2 |')
    assert (out / 'compare.png').stat().st_size > 0
    assert compare.main([str(tmp_path), '--output', str(tmp_path / 'other')]) == 1  # not an aapt-eval folder


def test_fast_decoder_on_a_model_without_one_is_a_clear_error(
    tiny_model: Path, held_out_bags: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tiny_model, held_out_bags[:1], tmp_path / 'fast', '--decoder', 'fast') == 1
    assert 'has no fast decoder' in capsys.readouterr().err


def test_an_arm_model_reads_the_base_from_the_bag_and_refuses_a_bag_without_it(
    tmp_path: Path, held_out_bags: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import save_tiny_model

    model = save_tiny_model(tmp_path / 'arm', sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    assert _run(model, held_out_bags[:1], tmp_path / 'with_base') == 0  # sim_messages writes /tf_static
    old = write_bag(tmp_path / 'old', sim_messages(n=66, rate_hz=30.0, size=(64, 48), arm_base=None))
    assert _run(model, [old], tmp_path / 'without_base') == 1
    assert 'the model draws the arm from its base pose, which this episode lacks' in capsys.readouterr().err


def test_a_light_decoder_that_reads_the_arm_is_scored_and_its_ceiling_asked_of_the_full_decoder(
    tmp_path: Path, held_out_bags: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    import torch

    from aapt_ros.model.checkpoint import save_checkpoint
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from tests.conftest import tiny_config

    config = tiny_config(sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    vae = dataclasses.replace(config.vae, fast_decoder_channels=16, fast_decoder_arm_channels=9)
    model = save_checkpoint(
        untrained_checkpoint(dataclasses.replace(config, vae=vae), seed=0), tmp_path / 'arm', weight_dtype=torch.float32
    )
    assert _run(model, held_out_bags[:1], tmp_path / 'generated') == 0
    assert _run(model, held_out_bags[:1], tmp_path / 'ae', '--autoencode') == 1
    assert "this checkpoint's light decoder also reads what the" in capsys.readouterr().err
    assert _run(model, held_out_bags[:1], tmp_path / 'ae_full', '--autoencode', '--decoder', 'full') == 0
