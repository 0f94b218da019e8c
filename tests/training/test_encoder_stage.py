"""Stage ``encoder`` on the tiny config and the sample bag, on the CPU: a light encoder for the plane
warps, added to a checkpoint that otherwise stays bit for bit the same."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from aapt_ros.model.checkpoint import CARD_FILE, Checkpoint, load_checkpoint, load_config, save_checkpoint
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training import cli
from aapt_ros.training.config import TrainError, load_train_config
from tests.conftest import PLANE_WARPS_IN_PIXELS

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'config' / 'train_tiny.yaml'
TINY_MODEL = REPO / 'config' / 'train_tiny_model.yaml'
QUICK = ('val_batches=1', 'data.clip_length=4')


def run_stage(stage: str, tmp: Path, *overrides: str, **kwargs: Any) -> dict[str, Any]:
    config = load_train_config(TINY, stage, [f'data.cache_dir={tmp / "cache"}', *QUICK, *overrides])
    return cli.run(stage, config, **kwargs)


def _save_start(folder: Path, **generator: object) -> Checkpoint:
    config = load_config(TINY_MODEL).with_generator(**generator)
    torch.manual_seed(0)
    start_frame = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8)
    start = Checkpoint(config, VideoAutoencoder(config.vae), CausalGenerator(config), start_frame)
    save_checkpoint(start, folder, weight_dtype=torch.float32)
    return start


@pytest.fixture(scope='module')
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An untrained tiny checkpoint that warps its first image in pixels, then stage encoder."""
    tmp = tmp_path_factory.mktemp('encoder')
    _save_start(tmp / 'start', **PLANE_WARPS_IN_PIXELS)
    summary = run_stage('encoder', tmp, f'model={tmp / "start"}', f'output={tmp / "encoder"}', 'optim.steps=120')
    return {'tmp': tmp, 'summary': summary}


def light_weights(folder: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(folder).vae.state_dict()
    return {k: t for k, t in state.items() if k.startswith('fast_encoder.')}


def test_encoder_stage_learns_the_warps_and_keeps_the_rest_of_the_checkpoint(runs: dict[str, Any]) -> None:
    summary, tmp = runs['summary'], runs['tmp']
    assert summary['loss_last'] < 0.5 * summary['loss_first']
    assert summary['relative_error'] < 0.7 * summary['relative_error_before']  # held out
    start, out = load_checkpoint(tmp / 'start'), load_checkpoint(tmp / 'encoder')
    assert out.config.vae == dataclasses.replace(start.config.vae, fast_encoder_channels=16)  # train_tiny.yaml
    assert out.config == dataclasses.replace(start.config, vae=out.config.vae)  # stage, generator, camera
    assert torch.equal(out.start_frame, start.start_frame)
    for name, tensor in start.generator.state_dict().items():
        assert torch.equal(out.generator.state_dict()[name], tensor), name
    for name, tensor in start.vae.state_dict().items():
        assert torch.equal(out.vae.state_dict()[name], tensor), name
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    assert out.vae.encode_warped(images).shape == (3, 4, 8, 8)  # the light encoder's, at spatial factor 4
    assert not torch.allclose(out.vae.encode_warped(images), out.vae.encode(images[:, None])[:, 0])
    card = (tmp / 'encoder' / CARD_FILE).read_text()
    assert '## Stage `encoder`' in card and 'light encoder parameters' in card
    before, after = summary['relative_error_before'], summary['relative_error']
    assert (
        f"held-out relative squared error of the generator's warp inputs, before -> after: {before:.4f} -> {after:.4f}"
        in card
    )


def test_encoder_stage_continues_a_light_encoder_of_the_same_width_and_refuses_another(runs: dict[str, Any]) -> None:
    tmp = runs['tmp']
    tiny_lr = ('optim.steps=1', 'optim.warmup_steps=0', 'optim.lr=1.0e-12')
    summary = run_stage('encoder', tmp, f'model={tmp / "encoder"}', f'output={tmp / "again"}', *tiny_lr)
    before, after = light_weights(tmp / 'encoder'), light_weights(tmp / 'again')
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, atol=1e-8, rtol=0)
    assert summary['relative_error_before'] == pytest.approx(runs['summary']['relative_error'], rel=1e-5)
    with pytest.raises(TrainError, match=r'already has a light encoder of width 16, but encoder\.channels is 32'):
        run_stage('encoder', tmp, f'model={tmp / "encoder"}', f'output={tmp / "wider"}', 'encoder.channels=32')


def test_encoder_stage_needs_a_generator_that_encodes_plane_warps(tmp_path: Path) -> None:
    _save_start(tmp_path / 'latent_warps', **{**PLANE_WARPS_IN_PIXELS, 'sink_warp_pixels': False})
    with pytest.raises(TrainError, match=r'encodes no plane warps .* --sink-warp-pixels first'):
        run_stage('encoder', tmp_path, f'model={tmp_path / "latent_warps"}', f'output={tmp_path / "out"}')


def test_vae_stage_drops_a_light_encoder_its_new_autoencoder_would_invalidate(runs: dict[str, Any]) -> None:
    tmp = runs['tmp']
    short = ('optim.steps=2', 'optim.batch_size=2', 'vae.scale_batches=1')
    run_stage('vae', tmp, f'model={tmp / "encoder"}', f'output={tmp / "vae-again"}', *short)
    checkpoint = load_checkpoint(tmp / 'vae-again')
    assert checkpoint.config.vae.fast_encoder_channels == 0 and checkpoint.vae.fast_encoder is None
