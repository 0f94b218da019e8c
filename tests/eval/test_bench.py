"""aapt-bench runs every measurement and writes JSON (timings are not asserted: machines differ)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aapt_ros.eval.bench import main


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
        'rollout_length',
        'batches',
    ):
        assert key in results, key
    assert results['end_to_end_batch1']['p99_ms'] >= results['end_to_end_batch1']['p50_ms'] > 0
    assert set(results['batches']) == {'1', '2'}


def test_bench_refuses_unknown_configs_and_existing_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['--configs', 'huge', '--output', str(tmp_path / 'x.json')]) == 1
    (tmp_path / 'y.json').write_text('{}')
    assert main(['--configs', 'small', '--output', str(tmp_path / 'y.json')]) == 1
    err = capsys.readouterr().err
    assert "unknown config(s) ['huge']" in err and 'refusing to overwrite' in err
