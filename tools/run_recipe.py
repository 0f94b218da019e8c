#!/usr/bin/env python3
"""Run a model's recipe (``config/recipe_default.yaml``: every training stage, grown checkpoint and
paste from the recordings to the shipped model), or time it on this machine with ``--pace``.

A step whose output already holds a checkpoint is skipped, so a run cut off (``--deadline``, a
machine taken back) goes on where it stopped when started again with the same ``--runs``.

``--pace K`` trains each stage for K steps only (the checkpoints it leaves are worthless), with a
validation every K // 3 + 1 steps, and reads back the wall time at the end of each step
(``train_state/state.json``, ``step_ends``). Per stage it measures

- the pace: the median step after the first ``WARM_STEPS``, validations left out;
- a validation: what the step after the last one takes beyond the pace (and the first one's extra
  time: it may set up what the later ones reuse);
- the first steps' extra time (compilation, caches), and the process's time outside its steps
  (start-up, loading, the validations before and after training, writing);

and projects the stage at the recipe's step count and validation interval: overhead + first
steps + first validation's extra + steps x pace + validations x validation. Grows and pastes are timed as they run. The
report (``--report``, JSON) is written after every step.

Usage::

    python3 tools/run_recipe.py config/recipe_default.yaml --runs runs/recipe        # the whole recipe
    python3 tools/run_recipe.py config/recipe_default.yaml --runs runs/pace --pace 20 \\
        --report docs/benchmarks/recipe_pace.json -- data.cache_dir=runs/cache      # its time here
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RUN_CONFIGS = REPO / 'config' / 'train_sim'
KINDS = ('train', 'grow', 'paste')
TOOLS = {'grow': REPO / 'tools' / 'grow_generator.py', 'paste': REPO / 'tools' / 'add_arm_paste.py'}
WARM_STEPS = 5  # a stage's first steps compile and fill caches: timed apart from the pace
MIN_PACE_STEPS = 12  # enough for WARM_STEPS, two validations and steps between them


class RecipeError(ValueError):
    """The recipe file is malformed; the message names the step and the fix."""


@dataclass(frozen=True)
class RecipeStep:
    kind: str  # 'train', 'grow' or 'paste'
    name: str  # the run config's name (train) and the output folder's
    source: str = ''  # the folder it starts from ('' only for a stage that starts from a config)
    overrides: tuple[str, ...] = ()  # train: aapt-train key=value overrides
    args: tuple[str, ...] = ()  # grow, paste: the tool's arguments after its two folders


@dataclass(frozen=True)
class StagePace:
    """What one timed run of a stage measured, in seconds."""

    steps: int
    val_every: int
    process_s: float  # the whole aapt-train process
    loop_s: float  # its training loop (steps and the validations between them)
    step_s: float  # the pace
    validation_s: float  # a validation, from the last one (the first may set up what the others reuse)
    first_validation_extra_s: float  # the first validation's time beyond the others'
    warm_extra_s: float  # the first WARM_STEPS steps beyond the pace
    step_ends: tuple[float, ...] = ()  # as read back, for looking again

    @property
    def overhead_s(self) -> float:
        return self.process_s - self.loop_s


@dataclass
class StepReport:
    name: str
    kind: str
    seconds: float  # train with --pace: projected at the recipe's steps; else as run
    process_s: float
    steps: int = 0  # train: the recipe's
    validations: int = 0
    pace: dict[str, float] = field(default_factory=dict)


def load_recipe(path: Path, configs: Path = RUN_CONFIGS) -> list[RecipeStep]:
    """The recipe's steps, checked: known keys, every ``from`` made by an earlier step, every train
    step's run config present in ``configs``."""
    data = yaml.safe_load(path.read_text()) or {}
    if set(data) != {'steps'} or not isinstance(data['steps'], list):
        raise RecipeError(f'{path}: expected one key, steps: [a list of steps]')
    steps: list[RecipeStep] = []
    made: set[str] = set()
    for index, item in enumerate(data['steps']):
        where = f'{path}: step {index + 1}'
        kinds = [k for k in KINDS if k in item]
        if len(kinds) != 1:
            raise RecipeError(f'{where}: name exactly one of {list(KINDS)}')
        unknown = set(item) - {*KINDS, 'from', 'overrides', 'args'}
        if unknown:
            raise RecipeError(f'{where}: unknown key(s) {sorted(unknown)}')
        kind = kinds[0]
        step = RecipeStep(
            kind,
            str(item[kind]),
            str(item.get('from', '')),
            tuple(str(o) for o in item.get('overrides', ())),
            tuple(str(a) for a in item.get('args', ())),
        )
        if step.kind == 'train' and not (configs / f'{step.name}.yaml').is_file():
            raise RecipeError(f'{where}: no run config {configs / step.name}.yaml')
        if step.kind != 'train' and (step.overrides or not step.source):
            raise RecipeError(f'{where}: a {kind} step takes from: and args:, not overrides:')
        if step.source and step.source not in made:
            raise RecipeError(f'{where}: from {step.source!r}, which no earlier step makes')
        if step.name in made:
            raise RecipeError(f'{where}: {step.name!r} is made twice')
        made.add(step.name)
        steps.append(step)
    return steps


def pace_validation_interval(steps: int) -> int:
    """Validations during a timed run of ``steps`` steps: two, each followed by a timed step."""
    if steps < MIN_PACE_STEPS:
        raise RecipeError(f'--pace {steps}: at least {MIN_PACE_STEPS} steps are needed to time a stage')
    return steps // 3 + 1


def measure_pace(step_ends: list[float], val_every: int, process_s: float) -> StagePace:
    """The pace of a timed run from its step end times (``val_every``: its validation interval,
    each validation falling into the step after it)."""
    steps = len(step_ends)
    durations = [b - a for a, b in zip([0.0, *step_ends], step_ends, strict=False)]
    after_validation = [i for i in range(WARM_STEPS, steps) if i % val_every == 0]
    plain = [durations[i] for i in range(WARM_STEPS, steps) if i % val_every != 0]
    if not plain or not after_validation:
        raise RecipeError(f'{steps} timed steps with a validation every {val_every}: too few to time')
    step_s = statistics.median(plain)
    validation_s = durations[after_validation[-1]] - step_s
    return StagePace(
        steps=steps,
        val_every=val_every,
        process_s=process_s,
        loop_s=step_ends[-1],
        step_s=step_s,
        validation_s=validation_s,
        first_validation_extra_s=durations[after_validation[0]] - step_s - validation_s,
        warm_extra_s=step_ends[WARM_STEPS - 1] - WARM_STEPS * step_s,
        step_ends=tuple(step_ends),
    )


def project_seconds(pace: StagePace, steps: int, val_every: int) -> float:
    """The process time of the stage at ``steps`` steps with a validation every ``val_every``."""
    validations = steps // val_every if val_every else 0
    first_validation = pace.first_validation_extra_s if validations else 0.0
    fixed = pace.overhead_s + pace.warm_extra_s + first_validation
    return fixed + steps * pace.step_s + validations * pace.validation_s


def has_checkpoint(folder: Path) -> bool:
    return (folder / 'config.yaml').is_file()


def tool_arguments(step: RecipeStep) -> list[str]:
    if not any('{pybullet_data}' in a for a in step.args):
        return list(step.args)
    try:
        import pybullet_data  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise RecipeError(f'{step.name}: its arguments name {{pybullet_data}}: pip install pybullet') from None
    return [a.replace('{pybullet_data}', pybullet_data.getDataPath()) for a in step.args]


def run(argv: list[str]) -> float:
    """Run a process, its output passed through; returns its wall time. Exits on failure."""
    started = time.perf_counter()
    if subprocess.run(argv).returncode:
        raise SystemExit(f'failed: {" ".join(argv)}')
    return time.perf_counter() - started


def train_step(step: RecipeStep, configs: Path, runs: Path, extra: list[str], pace_steps: int) -> StepReport:
    from aapt_ros.training.checkpoints import STATE_DIR, STATE_JSON
    from aapt_ros.training.config import load_train_config, stage_of_run

    stage = stage_of_run(step.name)
    config_path = configs / f'{step.name}.yaml'
    places = [f'output={runs / step.name}'] + ([f'model={runs / step.source}'] if step.source else [])
    overrides = [*places, *step.overrides, *extra]
    recipe = load_train_config(config_path, stage, overrides)
    timed: list[str] = []
    if pace_steps:
        interval = pace_validation_interval(pace_steps)
        timed = [
            f'optim.steps={pace_steps}',
            'optim.warmup_steps=1',
            f'val_every={interval}',
            f'state_every={pace_steps}',
        ]
    argv = [sys.executable, '-m', 'aapt_ros.training.cli', stage, '--config', str(config_path), *overrides, *timed]
    process_s = run(argv)
    steps, val_every = recipe.optim.steps, recipe.val_every
    validations = steps // val_every if val_every else 0
    if not pace_steps:
        return StepReport(step.name, 'train', process_s, process_s, steps, validations)
    state = json.loads((runs / step.name / STATE_DIR / STATE_JSON).read_text())
    pace = measure_pace(list(state['scalars']['step_ends']), interval, process_s)
    projected = project_seconds(pace, steps, val_every)
    return StepReport(step.name, 'train', projected, process_s, steps, validations, asdict(pace))


def machine() -> dict[str, str]:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'
    return {'gpu': gpu, 'torch': torch.__version__, 'python': platform.python_version(), 'host': platform.node()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('recipe', type=Path, help='recipe YAML (config/recipe_default.yaml)')
    parser.add_argument('--runs', type=Path, default=Path('runs/recipe'), help="folder of the steps' outputs")
    parser.add_argument('--configs', type=Path, default=RUN_CONFIGS, help="folder of the train steps' NAME.yaml")
    parser.add_argument('--pace', type=int, default=0, help='time each stage on K steps instead of training it')
    parser.add_argument('--report', type=Path, help='JSON report, written after every step')
    parser.add_argument('--deadline', type=float, default=1e9, help='seconds from now after which no step starts')
    parser.add_argument('--reserve', type=float, default=120.0, help='seconds a step needs before the deadline')
    parser.add_argument('--until', default='', help='stop after this step (default: run to the end)')
    args, extra = parser.parse_known_args(argv)
    extra = [o for o in extra if o != '--']
    try:
        steps = load_recipe(args.recipe, args.configs)
        if args.pace:
            pace_validation_interval(args.pace)
        if args.until:
            names = [step.name for step in steps]
            if args.until not in names:
                raise RecipeError(f'--until {args.until}: no such step in {args.recipe}')
            steps = steps[: names.index(args.until) + 1]
    except RecipeError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    deadline = time.time() + args.deadline
    earlier: dict[str, dict[str, Any]] = {}
    if args.report and args.report.is_file():  # the same recipe cut off before: keep its steps' times
        earlier = {s['name']: s for s in json.loads(args.report.read_text())['steps']}
    reports: list[dict[str, Any]] = []
    host = machine() if args.report else {}
    args.runs.mkdir(parents=True, exist_ok=True)
    for step in steps:
        output = args.runs / step.name
        if has_checkpoint(output):
            print(f'{step.name}: done before, skipped', flush=True)
            if step.name in earlier:
                reports.append(earlier[step.name])
            continue
        if time.time() > deadline - args.reserve:
            print(f'{step.name}: too close to the deadline, stopping', flush=True)
            break
        print(f'== {step.kind} {step.name}', flush=True)
        try:
            if step.kind == 'train':
                report = train_step(step, args.configs, args.runs, extra, args.pace)
            else:
                source = args.runs / step.source
                seconds = run([sys.executable, str(TOOLS[step.kind]), str(source), str(output), *tool_arguments(step)])
                report = StepReport(step.name, step.kind, seconds, seconds)
        except RecipeError as err:
            print(f'error: {err}', file=sys.stderr)
            return 1
        reports.append(asdict(report))
        print(f'{step.name}: {report.seconds:.1f} s' + (' projected' if args.pace and step.kind == 'train' else ''))
        if args.report:
            write_report(args.report, args, host, reports, len(steps))
    return 0


def write_report(
    path: Path, args: argparse.Namespace, host: dict[str, str], reports: list[dict[str, Any]], recipe_steps: int
) -> None:
    seconds = sum(r['seconds'] for r in reports)
    summary = {
        'recipe': str(args.recipe),
        'pace_steps': args.pace,
        'machine': host,
        'date': time.strftime('%Y-%m-%d %H:%M'),
        'steps_reported': f'{len(reports)} of {recipe_steps}',
        'seconds': round(seconds, 1),
        'minutes': round(seconds / 60, 2),
        'steps': reports,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))


if __name__ == '__main__':
    raise SystemExit(main())
