"""aapt-bench runs every measurement and writes JSON (timings are not asserted: machines differ)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aapt_ros.eval.bench import ConfigReport, bench_config, main, step_split
from aapt_ros.model.checkpoint import load_checkpoint


def test_bench_writes_every_measurement_for_the_small_config_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / 'bench.json'
    assert main(['--device', 'cpu', '--configs', 'small', '--batches', '1,2', '--quick', '--output', str(out)]) == 0
    report = json.loads(out.read_text())['configs'][0]
    results = report['results']
    for key in (
        'end_to_end_batch1',
        'generator_only_batch1',
        'steps_4_batch1',
        'steps_50_batch1',
        'recompute_without_cache_batch1',
        'end_to_end_fast_decoder_batch1',
        'steps_4_fast_decoder_batch1',
        'rollout_length',
        'batches',
    ):
        assert key in results, key
    assert results['end_to_end_batch1']['p99_ms'] >= results['end_to_end_batch1']['p50_ms'] > 0
    assert set(results['batches']) == {'1', '2'}
    assert set(results['step_split_batch1']) == {'full_decoder', 'fast_decoder', 'generator_only'}


def test_bench_hands_out_the_report_after_every_measurement() -> None:
    """What a run cut short (a GPU session's time limit) leaves on disk: the finished measurements."""
    snapshots: list[tuple[list[str], bool]] = []

    def saved(report: ConfigReport) -> None:
        timed = [key for key, value in report.results.items() if isinstance(value, dict) and 'p50_ms' in value]
        snapshots.append((timed, report.complete))

    only = {'end_to_end_engine_batch1', 'steps_4_batch1'}
    bench_config('small', torch.device('cpu'), [], quick=True, compile=False, only=only, saved=saved)
    assert snapshots == [
        (['end_to_end_engine_batch1'], False),
        (['end_to_end_engine_batch1', 'steps_4_batch1'], False),
        (['end_to_end_engine_batch1', 'steps_4_batch1'], True),
    ]


def test_a_batch_that_does_not_fit_ends_the_sweep_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device without the memory for the larger batch sizes (an H100 at 1024 streams): the sweep
    keeps the sizes that ran and marks the first that did not, instead of crashing. No CPU of CI's
    runs out, so the allocation failure is raised where the engine would raise it."""
    from aapt_ros.eval import bench

    real = bench.bench_engine

    def bench_engine(checkpoint: object, device: torch.device, batch: int, *args: object, **kwargs: object) -> object:
        if batch > 2:
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 5.81 GiB.')
        return real(checkpoint, device, batch, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bench, 'bench_engine', bench_engine)
    report = bench_config('small', torch.device('cpu'), [1, 4, 8], quick=True, compile=False, only={'batches'})
    assert set(report.results['batches']) == {'1', '4'}
    assert report.results['batches']['4'] == {'out_of_memory': True}
    assert report.results['max_streams_at_30hz'] is not None and report.complete


def test_step_split_recovers_the_pass_and_the_per_frame_work() -> None:
    split = step_split(one_step_ms=0.6, four_steps_ms=2.1)  # G = 0.5, F = 0.1
    assert split == pytest.approx({'pass_ms': 0.5, 'per_frame_ms': 0.1, 'per_frame_ms_for_3_5x': 0.1})


def test_bench_refuses_unknown_configs_and_existing_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['--configs', 'huge', '--output', str(tmp_path / 'x.json')]) == 1
    (tmp_path / 'y.json').write_text('{}')
    assert main(['--configs', 'small', '--output', str(tmp_path / 'y.json')]) == 1
    err = capsys.readouterr().err
    assert "unknown config(s) ['huge']" in err and 'refusing to overwrite' in err


def test_bench_runs_only_the_named_measurements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'some.json'
    only = 'end_to_end_engine_batch1,steps_4_batch1'
    args = ['--device', 'cpu', '--configs', 'small', '--quick', '--only', only, '--window-frames', '7']
    assert main([*args, '--output', str(out)]) == 0
    report = json.loads(out.read_text())['configs'][0]
    assert report['window_frames'] == 7
    results = report['results']
    timed = {key for key, value in results.items() if isinstance(value, dict) and 'p50_ms' in value}
    assert timed == set(only.split(','))
    assert results['one_step_speedup_over_4_steps'] > 0  # both sides ran
    assert results['one_step_speedup_over_4_steps_fast_decoder'] is None and results['batches'] == {}
    assert set(results['step_split_batch1']) == {'full_decoder'}
    unknown = ['--device', 'cpu', '--configs', 'small', '--only', 'fastest', '--output', str(tmp_path / 'x.json')]
    assert main(unknown) == 1
    assert "unknown measurement(s) ['fastest']" in capsys.readouterr().err


def test_bench_times_a_checkpoint_folder_as_it_is(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'model.json'
    args = ['--device', 'cpu', '--configs', '', '--models', str(tiny_model), '--quick', '--only']
    assert main([*args, 'end_to_end_engine_batch1', '--output', str(out)]) == 0
    (report,) = json.loads(out.read_text())['configs']
    assert report['config'] == str(tiny_model) and report['complete']
    assert report['generator_parameters'] == sum(p.numel() for p in load_checkpoint(tiny_model).generator.parameters())
    assert report['results']['end_to_end_engine_batch1']['p50_ms'] > 0
    assert main([*args, 'end_to_end_engine_batch1', '--window-frames', '4', '--output', str(tmp_path / 'w.json')]) == 1
    assert main(['--configs', '', '--models', str(tmp_path), '--output', str(tmp_path / 'none.json')]) == 1
    err = capsys.readouterr().err
    assert 'not to --models' in err and 'config.yaml' in err
