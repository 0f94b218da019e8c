#!/usr/bin/env python3
"""Where a student-forced regression step's time goes: loading the batch, the no-grad rollout
(one generator step per frame, as the engine streams), and the segments' forward, backward and
update, each timed between device synchronisations; then one step under ``torch.profiler`` for the
number of kernels, the device's busy time and the host's costliest operations (milliseconds).
Writes JSON.

The stage's own code is what is timed (``Trainer.draw`` and ``Trainer.generator_update``); the
checkpoint only has to have the architecture, so a shipped model stands in for the stage's start.

Usage::

    python3 tools/profile_train_step.py --model models/default --output profile.json \\
        config/train_sim/adversarial_regression_v14.yaml config/train_sim/adversarial_regression_v14_96.yaml \\
        --set 'data.bags=[recordings/sim/train/train/*]' --set 'data.val_bags=[recordings/sim/val/val/*]'
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from aapt_ros.training.adversarial_stage import make_trainer
from aapt_ros.training.config import load_train_config
from aapt_ros.training.data import batch, step_generator

PARTS = ('batch', 'rollout', 'segments', 'step')


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def profile_config(path: Path, model: Path, overrides: list[str], steps: int, warm: int) -> dict[str, Any]:
    """Median seconds of each part over ``steps`` steps after ``warm``, and one profiled step."""
    config = load_train_config(path, 'adversarial', [f'model={model}', 'output=unused', *overrides])
    if config.adversarial.adversarial_weight:
        raise SystemExit(f'{path}: adversarial.adversarial_weight is not 0; this times regression stages only')
    trainer, _ = make_trainer(config)
    splits, device = trainer.splits, trainer.device
    times: dict[str, list[float]] = {part: [] for part in PARTS}
    for step in range(warm + steps):
        generator = step_generator(config.optim.seed, step)
        marks = [time.perf_counter()]
        clips = batch(splits.train, config.optim.batch_size, generator, device)
        synchronize(device)
        marks.append(time.perf_counter())
        sample = trainer.draw(clips, generator, teacher=False)
        synchronize(device)
        marks.append(time.perf_counter())
        trainer.generator_update(sample)
        synchronize(device)
        marks.append(time.perf_counter())
        if step >= warm:
            durations = [b - a for a, b in itertools.pairwise(marks)] + [marks[-1] - marks[0]]
            for part, seconds in zip(PARTS, durations, strict=True):
                times[part].append(seconds)
    result: dict[str, Any] = {part: round(statistics.median(values), 4) for part, values in times.items()}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        generator = step_generator(config.optim.seed, warm + steps)
        trainer.generator_update(
            trainer.draw(batch(splits.train, config.optim.batch_size, generator, device), generator, teacher=False)
        )
        synchronize(device)
    averages = profiler.key_averages()
    events = [e for e in averages if e.device_type.name != 'CPU']
    by_host_time = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:10]
    result['top_host_ops'] = [(e.key[:60], e.count, round(e.self_cpu_time_total / 1e3, 1)) for e in by_host_time]
    result['device_kernels_per_step'] = sum(e.count for e in events)
    result['device_busy_s_per_step'] = round(sum(e.self_device_time_total for e in events) / 1e6, 4)
    result |= {'clip_length': config.data.clip_length, 'batch_size': config.optim.batch_size, 'device': str(device)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', type=Path, nargs='+', help='run configs of adversarial (regression) stages')
    parser.add_argument('--model', type=Path, required=True, help="checkpoint with the stages' architecture")
    parser.add_argument('--output', type=Path, required=True, help='JSON to write')
    parser.add_argument('--steps', type=int, default=10, help='timed steps per config')
    parser.add_argument('--warm', type=int, default=4, help='steps run first and not timed')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='aapt-train override')
    args = parser.parse_args(argv)
    report: dict[str, Any] = {'torch': torch.__version__}
    if torch.cuda.is_available():
        report['gpu'] = torch.cuda.get_device_name()
    for path in args.configs:
        report[path.stem] = result = profile_config(path, args.model, args.set, args.steps, args.warm)
        print(path.stem, {part: result[part] for part in PARTS}, file=sys.stderr)
    args.output.write_text(json.dumps(report, indent=1))
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
