"""aapt-train under torchrun: two gloo ranks on the CPU train as one process with the same global batch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aapt_ros.model.checkpoint import CARD_FILE
from aapt_ros.training import cli
from aapt_ros.training.checkpoints import MODEL_STATE, STATE_DIR, STATE_JSON
from aapt_ros.training.config import TrainError, load_train_config
from aapt_ros.training.data import rank_share

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'config' / 'train_tiny.yaml'
MODEL = REPO / 'config' / 'train_tiny_model.yaml'
# 6 steps of the global batch of 4 clips (2 per rank); state every 3 steps, so --stop-after 3 resumes.
COMMON = ['optim.steps=6', 'state_every=3', 'val_batches=1', 'vae.scale_batches=1', f'model={MODEL}']


def torchrun(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_PORT')}
    env['OMP_NUM_THREADS'] = '1'
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--standalone']
    command += ['-m', 'aapt_ros.training.cli', 'vae', '--config', str(TINY), f'data.cache_dir={tmp / "cache"}']
    return subprocess.run([*command, *COMMON, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


def test_two_ranks_resume_and_match_one_process(tmp_path: Path) -> None:
    out = tmp_path / 'ddp'
    first = torchrun(tmp_path, f'output={out}', '--stop-after', '3')
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (out / CARD_FILE).exists()  # stopped early: state only
    second = torchrun(tmp_path, f'output={out}', '--resume')
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count('aapt-train vae:') == 1  # only rank 0 reports
    assert sorted(p.name for p in out.glob('*.yaml')) == ['config.yaml', 'train_config.yaml']
    assert (out / 'vae.safetensors').is_file() and (out / CARD_FILE).is_file()
    losses = json.loads((out / STATE_DIR / STATE_JSON).read_text())['scalars']['losses']
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]

    # The same run in one process: the weights agree up to float summation order (6e-6 when written).
    overrides = [f'data.cache_dir={tmp_path / "cache"}', *COMMON, f'output={tmp_path / "one"}']
    cli.run('vae', load_train_config(TINY, 'vae', overrides))
    single = json.loads((tmp_path / 'one' / STATE_DIR / STATE_JSON).read_text())['scalars']['losses']
    assert losses == pytest.approx(single, rel=1e-4)  # the logged loss is the mean over the ranks
    a = load_file(str(out / STATE_DIR / MODEL_STATE))
    b = load_file(str(tmp_path / 'one' / STATE_DIR / MODEL_STATE))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=0)


def test_a_global_batch_that_does_not_split_evenly_is_refused(tmp_path: Path) -> None:
    result = torchrun(tmp_path, f'output={tmp_path / "odd"}', 'optim.batch_size=3')
    assert result.returncode != 0
    assert 'optim.batch_size 3 is not divisible by the 2 processes of torchrun' in result.stderr
    assert not (tmp_path / 'odd').exists()


def test_one_process_keeps_the_whole_batch_and_adversarial_refuses_torchrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rank_share(4) == slice(0, 4)
    monkeypatch.setenv('WORLD_SIZE', '2')
    config = load_train_config(
        TINY,
        'adversarial',
        [f'model={tmp_path}', f'output={tmp_path / "adv"}', f'adversarial.discriminator_init={tmp_path}'],
    )
    with pytest.raises(TrainError, match='adversarial stage runs in one process'):
        cli.run('adversarial', config)
