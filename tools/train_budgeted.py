#!/usr/bin/env python3
"""Run aapt-train stages one after another, each for a fixed time instead of a fixed step count.

Made for rented GPU time: per stage, a short calibration (10 steps, then 30 more resumed) measures
seconds per step, and the real run gets ``budget / (s/step)`` steps, its warm-up and validation
scaled to match. A stage whose checkpoint already exists is skipped, and nothing starts once
``--deadline`` is too close. After each stage the results are packed into ``--pack``, so a run
that is cut off keeps the stages it finished:

- ``<stage>_generator.safetensors``: the generator in bfloat16 (in shards where over 16 MiB);
- ``meta.tar``: every stage folder without its generator and train_state, with the autoencoder of
  the vae and decoder stages only (the others keep the one they start from);
- ``summary.json`` and ``chain.log``.

Usage (``config/train_sim/<stage>.yaml`` per stage; a variant ``<stage>_<name>`` runs ``aapt-train
<stage>``)::

    python3 tools/train_budgeted.py vae=110 base=170 adapt=170 --runs runs/sim --pack out \\
        --deadline 570 -- data.bags=[recordings/carry*/*] data.cache_dir=runs/cache
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from aapt_ros.model.checkpoint import CARD_FILE, GENERATOR_FILE, VAE_FILE, load_weights_file, save_sharded, shard_paths
from aapt_ros.model.config import ConfigError
from aapt_ros.training.checkpoints import STATE_DIR, STATE_JSON
from aapt_ros.training.config import stage_of_run

CALIBRATION_STEPS = (10, 40)  # the first steps (compilation, caches) are timed apart
STAGE_OVERHEAD_S = 60  # kept free for a stage's calibration before it starts
VALIDATIONS = 6  # per run, plus the final one
VALIDATION_STEPS = 2  # a validation's time in training steps (forward passes only; a rough guess)
AUTOENCODER_STAGES = ('vae', 'decoder')  # the stages (and their variants) that train the autoencoder


def train(stage: str, output: Path, overrides: list[str], *extra: str) -> float:
    """Run one ``aapt-train`` process; returns its wall time. Exits with its output on failure."""
    command = stage_of_run(stage)
    argv = [sys.executable, '-m', 'aapt_ros.training.cli', command, '--config', f'config/train_sim/{stage}.yaml']
    started = time.time()
    result = subprocess.run([*argv, f'output={output}', *overrides, *extra], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f'{stage} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}')
    return time.time() - started


def changes_autoencoder(run: str) -> bool:
    """Whether the run folder ``run`` is of a stage that trains the autoencoder (a grown or copied
    checkpoint's folder is of none)."""
    try:
        return stage_of_run(run) in AUTOENCODER_STAGES
    except ConfigError:
        return False


def trained_seconds(folder: Path) -> float:
    return float(json.loads((folder / STATE_DIR / STATE_JSON).read_text())['scalars']['wall_s'])


def pack(runs: Path, out: Path, summary: dict[str, dict[str, float]]) -> None:
    with tarfile.open(out / 'meta.tar', 'w') as tar:
        for folder in sorted(p for p in runs.iterdir() if p.is_dir()):
            generator_files = {p.name for p in shard_paths(folder / GENERATOR_FILE)}  # packed apart, in bf16
            for path in sorted(folder.rglob('*')):
                skip = STATE_DIR in path.parts or path.name in generator_files
                if path.is_file() and not skip and (path.name != VAE_FILE or changes_autoencoder(folder.name)):
                    tar.add(path, arcname=str(path.relative_to(runs.parent)))
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('stages', nargs='+', help='STAGE=SECONDS, in order')
    parser.add_argument('--runs', type=Path, default=Path('runs/sim'), help='folder of the stage outputs')
    parser.add_argument('--pack', type=Path, required=True, help='folder for the packed results')
    parser.add_argument('--deadline', type=float, default=1e9, help='seconds from now by which to be done')
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != '--']
    import torch

    deadline = time.time() + args.deadline
    args.pack.mkdir(parents=True, exist_ok=True)
    log = (args.pack / 'chain.log').open('a')
    summary: dict[str, dict[str, float]] = {}

    def say(message: str) -> None:
        print(message, flush=True)
        log.write(message + '\n')
        log.flush()

    for item in args.stages:
        stage, _, seconds = item.partition('=')
        output = args.runs / stage
        if shard_paths(output / GENERATOR_FILE)[0].exists():
            say(f'{stage}: already trained, skipped')
            continue
        budget = min(float(seconds), deadline - time.time() - STAGE_OVERHEAD_S)
        if budget < 20:
            say(f'{stage}: {budget:.0f} s left, stopping')
            break
        # Per --runs folder: budgeted runs side by side must not calibrate in each other's folder.
        calibration = args.runs.with_name(f'{args.runs.name}_calibration') / stage
        shutil.rmtree(calibration, ignore_errors=True)
        first, last = CALIBRATION_STEPS
        train(stage, calibration, overrides, 'optim.steps=100000', 'val_every=0', '--stop-after', str(first))
        before = trained_seconds(calibration)
        wall = train(
            stage, calibration, overrides, 'optim.steps=100000', 'val_every=0', '--resume', '--stop-after', str(last)
        )
        per_step = (trained_seconds(calibration) - before) / (last - first)
        # What the real run spends besides its steps: what the resumed calibration spent besides
        # its steps (start-up, caches, saving), and its validations, each about VALIDATION_STEPS
        # steps' time. Long rollouts make both large: a 96-frame run overran its call by that much.
        fixed = wall - (last - first) * per_step + (VALIDATIONS + 1) * VALIDATION_STEPS * per_step
        budget = min(budget, deadline - time.time() - fixed)
        if budget < 20:
            say(f'{stage}: {budget:.0f} s left after calibration, stopping')
            break
        steps = max(50, int(budget / per_step))
        say(f'{stage}: {per_step * 1e3:.1f} ms/step -> {steps} steps in {budget:.0f} s')
        wall = train(
            stage,
            output,
            overrides,
            f'optim.steps={steps}',
            f'optim.warmup_steps={max(10, steps // 20)}',
            f'val_every={max(1, steps // VALIDATIONS)}',
        )
        say(f'{stage}: done in {wall:.0f} s\n' + (output / CARD_FILE).read_text())
        summary[stage] = {'ms_per_step': per_step * 1e3, 'steps': steps, 'seconds': wall}
        if not changes_autoencoder(stage):
            weights = load_weights_file(output / GENERATOR_FILE)
            bf16 = {k: v.to(torch.bfloat16) for k, v in weights.items()}
            save_sharded(bf16, args.pack / f'{stage}_generator.safetensors')
        pack(args.runs, args.pack, summary)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
