"""aapt-train's configuration and command line: strict keys, overrides, refusing to overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from aapt_ros.model.config import ConfigError
from aapt_ros.training import cli
from aapt_ros.training.config import load_train_config, stage_of_run
from aapt_ros.training.losses import ssim

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'config' / 'train_tiny.yaml'


def test_tiny_config_loads_with_paths_relative_to_the_file() -> None:
    config = load_train_config(TINY, 'vae', ['optim.steps=7', 'device=cpu'])
    assert config.stage == 'vae' and config.optim.steps == 7
    assert Path(config.model) == REPO / 'config' / 'train_tiny_model.yaml'
    assert Path(config.data.bags[0]) == REPO / 'aapt_ros' / 'data' / 'samples' / 'sim_episode'


@pytest.mark.parametrize('path', sorted((REPO / 'config' / 'train_sim').glob('*.yaml')), ids=lambda p: p.stem)
def test_every_run_config_of_the_shipped_chain_is_valid(path: Path) -> None:
    stage = stage_of_run(path.stem)  # as tools/train_budgeted.py runs them
    config = load_train_config(path, stage)
    assert config.stage == stage and Path(config.model).is_absolute()


def test_unknown_keys_and_bad_values_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\]"):
        load_train_config(TINY, 'vae', ['optim.stepz=3'])
    with pytest.raises(ConfigError, match='expected int'):
        load_train_config(TINY, 'vae', ['optim.steps=many'])
    with pytest.raises(ConfigError, match='not key=value'):
        load_train_config(TINY, 'vae', ['optim.steps'])
    with pytest.raises(ConfigError, match='t_sampling must be one of'):
        load_train_config(TINY, 'adapt', ['flow.t_sampling=cosine'])
    path = tmp_path / 'cfg.yaml'
    path.write_text('stage: adapt\nmodel: m\noutput: o\ndata: {bags: [b]}\n')
    with pytest.raises(ConfigError, match='aapt-train vae'):
        load_train_config(path, 'vae')


def test_cli_refuses_to_overwrite_and_to_resume_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'file').write_text('x')
    assert cli.main(['vae', '--config', str(TINY), f'output={tmp_path / "out"}']) == 1
    assert 'not empty' in capsys.readouterr().err
    assert cli.main(['vae', '--config', str(TINY), f'output={tmp_path / "new"}', '--resume']) == 1
    assert 'no train_state' in capsys.readouterr().err
    assert cli.main(['vae', '--config', str(TINY), 'data.bags=[/nonexistent/*]', f'output={tmp_path / "n2"}']) == 1
    assert 'no bag matches' in capsys.readouterr().err


def test_ssim_is_one_for_equal_images_and_lower_for_noise() -> None:
    import torch

    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1))) < 0.9


def test_runtime_never_imports_training() -> None:
    for package in ('model', 'streaming', 'node', 'data', 'eval'):
        for source in (REPO / 'aapt_ros' / package).rglob('*.py'):
            assert 'aapt_ros.training' not in source.read_text(), source


def test_a_run_config_names_its_stage_or_a_variant_of_it() -> None:
    assert stage_of_run('adapt') == 'adapt' and stage_of_run('adapt_context_noise') == 'adapt'
    assert stage_of_run('adversarial_regression_sink_rays_96') == 'adversarial'
    with pytest.raises(ConfigError, match="'adaptive' names no stage"):
        stage_of_run('adaptive')
