"""tools/run_recipe.py: the shipped recipe file, its checks, and timing a recipe by its pace."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from aapt_ros.training.config import load_train_config, stage_of_run
from tests.tool_scripts import load_tool

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / 'config' / 'recipe_default.yaml'


@pytest.fixture(scope='module')
def tool() -> ModuleType:
    return load_tool('run_recipe')


def test_the_shipped_recipe_chains_every_step_from_the_recordings_to_the_default_model(tool: ModuleType) -> None:
    steps = tool.load_recipe(RECIPE)
    assert (steps[0].kind, steps[0].name, steps[0].source) == ('train', 'vae', '')
    assert (steps[-1].kind, steps[-1].name) == ('paste', 'default')
    trained = {}
    for step in steps:
        if step.kind == 'train':
            overrides = ['model=/m', 'output=/o', *step.overrides]
            config = load_train_config(
                REPO / 'config' / 'train_sim' / f'{step.name}.yaml', stage_of_run(step.name), overrides
            )
            trained[step.name] = config.optim.steps
    # the shipped run's step counts (model card, "How it was made"), not the configs' defaults
    assert (trained['vae'], trained['base'], trained['adapt_context_noise'], trained['decoder']) == (
        1986,
        1952,
        1129,
        3000,
    )
    assert len(trained) == 19 and sum(trained.values()) == 16937


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        ('steps:\n  - {train: vae, grow: x}\n', 'exactly one of'),
        ('steps:\n  - {train: vae, form: x}\n', r"unknown key\(s\) \['form'\]"),
        ('steps:\n  - {train: no_such_run}\n', 'no run config'),
        ('steps:\n  - {train: vae}\n  - {train: base, from: vea}\n', "from 'vea', which no earlier step makes"),
        ('steps:\n  - {train: vae}\n  - {grow: g, from: vae, overrides: [a=1]}\n', 'takes from: and args:'),
        ('steps:\n  - {train: vae}\n  - {train: vae, from: vae}\n', 'made twice'),
        ('stages: []\n', 'expected one key, steps'),
    ],
)
def test_a_malformed_recipe_is_refused_naming_the_step(
    tool: ModuleType, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / 'recipe.yaml'
    path.write_text(text)
    with pytest.raises(tool.RecipeError, match=message):
        tool.load_recipe(path)


def test_the_pace_leaves_out_the_first_steps_and_the_validations(tool: ModuleType) -> None:
    val_every = tool.pace_validation_interval(20)
    assert val_every == 7  # validations after steps 7 and 14, each followed by a timed step
    durations = [1.0] * 5 + [0.1] * 15
    durations[7] += 3.0  # the first validation sets up what the second reuses
    durations[14] += 2.0
    ends = [sum(durations[: i + 1]) for i in range(20)]
    pace = tool.measure_pace(ends, val_every, process_s=ends[-1] + 30.0)
    assert pace.step_s == pytest.approx(0.1) and pace.validation_s == pytest.approx(2.0)
    assert pace.first_validation_extra_s == pytest.approx(1.0)
    assert pace.warm_extra_s == pytest.approx(4.5) and pace.overhead_s == pytest.approx(30.0)
    # 1000 steps, a validation every 250: 30 + 4.5 + 1 + 100 + 4 x 2; without validations 30 + 4.5 + 100
    assert tool.project_seconds(pace, 1000, 250) == pytest.approx(143.5)
    assert tool.project_seconds(pace, 1000, 0) == pytest.approx(134.5)
    with pytest.raises(tool.RecipeError, match='at least 12 steps'):
        tool.pace_validation_interval(8)


def test_a_tiny_recipe_is_timed_by_its_pace_and_resumed_where_it_stopped(tool: ModuleType, tmp_path: Path) -> None:
    configs = tmp_path / 'configs'
    configs.mkdir()
    tiny = (REPO / 'config' / 'train_tiny.yaml').read_text()
    tiny = tiny.replace('train_tiny_model.yaml', str(REPO / 'config' / 'train_tiny_model.yaml'))
    tiny = tiny.replace('../aapt_ros/', f'{REPO}/aapt_ros/')
    for name in ('vae', 'base'):
        (configs / f'{name}.yaml').write_text(tiny)
    recipe = tmp_path / 'recipe.yaml'
    recipe.write_text(
        'steps:\n'
        '  - {train: vae, overrides: [optim.steps=100, val_every=25]}\n'
        '  - {train: base, from: vae}\n'
        "  - {grow: base_sink, from: base, args: [--sink-rays, '1.0']}\n"
    )
    report = tmp_path / 'pace.json'
    argv = [str(recipe), '--configs', str(configs), '--runs', str(tmp_path / 'runs'), '--pace', '12']
    argv += [
        '--report',
        str(report),
        '--',
        f'data.cache_dir={tmp_path / "cache"}',
        'optim.batch_size=2',
        'val_batches=1',
    ]
    assert tool.main(argv) == 0
    timed = json.loads(report.read_text())
    assert [s['name'] for s in timed['steps']] == ['vae', 'base', 'base_sink']
    vae, base, grow = timed['steps']
    assert (vae['steps'], vae['validations'], base['steps'], base['validations']) == (100, 4, 60, 0)
    for stage in (vae, base):
        pace = tool.StagePace(**stage['pace'])
        assert pace.steps == 12 and pace.step_s > 0 and pace.overhead_s > 0
        assert stage['seconds'] == pytest.approx(
            tool.project_seconds(pace, stage['steps'], stage['validations'] and 25)
        )
    assert grow['kind'] == 'grow' and (tmp_path / 'runs' / 'base_sink' / 'config.yaml').is_file()
    assert timed['seconds'] == pytest.approx(sum(s['seconds'] for s in timed['steps']), abs=0.2)
    assert tool.main(argv) == 0  # all done: every step skipped, the report keeps their times
    assert json.loads(report.read_text())['steps'] == timed['steps']
    plot = tmp_path / 'pace.png'
    assert (
        load_tool('plot_recipe_time').main([str(report), str(report), '--output', str(plot), '--budget-min', '1']) == 0
    )
    assert plot.stat().st_size > 0
