"""Stage ``decoder`` on the tiny config and the sample bag, on the CPU: a fast decoder added to a
checkpoint that otherwise stays bit for bit the same."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from aapt_ros.model.arm import chain_named
from aapt_ros.model.checkpoint import CARD_FILE, Checkpoint, load_checkpoint, load_config, save_checkpoint
from aapt_ros.model.config import ConfigError
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training import cli
from aapt_ros.training.checkpoints import MODEL_STATE, STATE_DIR
from aapt_ros.training.config import TrainError, load_train_config
from tests.conftest import PLANE_WARPS_IN_PIXELS

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'config' / 'train_tiny.yaml'
TINY_MODEL = REPO / 'config' / 'train_tiny_model.yaml'
QUICK = ('val_batches=1', 'vae.scale_batches=1')
SMALL = ('data.clip_length=2', 'optim.batch_size=2')  # for runs whose learning is not checked


def run_stage(stage: str, tmp: Path, *overrides: str, **kwargs: Any) -> dict[str, Any]:
    config = load_train_config(TINY, stage, [f'data.cache_dir={tmp / "cache"}', *QUICK, *overrides])
    return cli.run(stage, config, **kwargs)


@pytest.fixture(scope='module')
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An untrained tiny checkpoint (any stage's will do, and training one is slow), then stage decoder."""
    tmp = tmp_path_factory.mktemp('decoder')
    config = load_config(TINY_MODEL)
    torch.manual_seed(0)
    start_frame = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8)
    start = Checkpoint(config, VideoAutoencoder(config.vae), CausalGenerator(config), start_frame)
    save_checkpoint(start, tmp / 'start', weight_dtype=torch.float32)
    quick = ('optim.steps=40', 'optim.lr=0.01')  # 1.07 -> 0.60 when written
    summary = run_stage('decoder', tmp, f'model={tmp / "start"}', f'output={tmp / "decoder"}', *quick)
    return {'tmp': tmp, 'summary': summary}


def fast_weights(folder: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(folder).vae.state_dict()
    return {k: t for k, t in state.items() if k.startswith('fast_decoder.')}


def test_decoder_stage_learns_and_keeps_the_rest_of_the_checkpoint(runs: dict[str, Any]) -> None:
    summary, tmp = runs['summary'], runs['tmp']
    assert summary['loss_last'] < 0.7 * summary['loss_first']
    assert summary['psnr'] > summary['full_psnr']  # the untrained full decoder is the baseline here
    start, out = load_checkpoint(tmp / 'start'), load_checkpoint(tmp / 'decoder')
    assert out.config.vae.fast_decoder_channels == 16  # train_tiny.yaml's decoder.channels
    assert out.config == dataclasses.replace(start.config, vae=out.config.vae)  # stage, generator, camera
    assert out.config.stage == 'untrained'
    assert out.config.vae == dataclasses.replace(start.config.vae, fast_decoder_channels=16)
    assert torch.equal(out.start_frame, start.start_frame)
    for name, tensor in start.generator.state_dict().items():
        assert torch.equal(out.generator.state_dict()[name], tensor), name
    for name, tensor in start.vae.state_dict().items():
        assert torch.equal(out.vae.state_dict()[name], tensor), name
    latents = torch.randn(2, 3, 4, 8, 8)  # (B, L, C, h, w) of the 32x32 tiny model
    assert out.vae.decode_fast(latents).shape == (2, 3, 3, 32, 32)
    card = (tmp / 'decoder' / CARD_FILE).read_text()
    assert '## Stage `decoder`' in card and 'fast decoder parameters' in card
    assert f'held-out reconstruction PSNR, fast decoder: {summary["psnr"]:.2f} dB' in card
    assert f'held-out reconstruction PSNR, full decoder: {summary["full_psnr"]:.2f} dB' in card


def test_decoder_stage_continues_a_fast_decoder_of_the_same_width_and_refuses_another(runs: dict[str, Any]) -> None:
    tmp = runs['tmp']
    tiny_lr = ('optim.steps=1', 'optim.warmup_steps=0', 'optim.lr=1.0e-12')  # the weights stay where they start
    run_stage('decoder', tmp, f'model={tmp / "decoder"}', f'output={tmp / "again"}', *SMALL, *tiny_lr)
    before, after = fast_weights(tmp / 'decoder'), fast_weights(tmp / 'again')
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, atol=1e-8, rtol=0)
    with pytest.raises(TrainError, match=r'already has a fast decoder of width 16, but decoder\.channels is 32'):
        run_stage('decoder', tmp, f'model={tmp / "decoder"}', f'output={tmp / "wider"}', 'decoder.channels=32')


def test_vae_stage_drops_a_fast_decoder_its_new_encoder_would_invalidate(runs: dict[str, Any]) -> None:
    tmp = runs['tmp']
    run_stage('vae', tmp, f'model={tmp / "decoder"}', f'output={tmp / "vae-again"}', *SMALL, 'optim.steps=2')
    checkpoint = load_checkpoint(tmp / 'vae-again')
    assert checkpoint.config.vae.fast_decoder_channels == 0 and checkpoint.vae.fast_decoder is None


def test_decoder_stage_resume_repeats_an_uninterrupted_run(runs: dict[str, Any]) -> None:
    tmp = runs['tmp']
    common = [f'model={tmp / "start"}', *SMALL, 'optim.steps=6', 'state_every=2']
    whole, split = tmp / 'whole', tmp / 'split'
    run_stage('decoder', tmp, f'output={whole}', *common)
    assert run_stage('decoder', tmp, f'output={split}', *common, stop_after=3) == {'steps': 3}
    run_stage('decoder', tmp, f'output={split}', *common, resume=True)
    a = load_file(str(whole / STATE_DIR / MODEL_STATE))
    b = load_file(str(split / STATE_DIR / MODEL_STATE))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ('override', 'match'),
    [
        ('decoder.channels=8', 'decoder.channels must be >= 16'),
        ('decoder.latent_noise=-0.1', r'decoder.latent_noise must be in \[0, 1\)'),
        ('decoder.ssim_weight=-1', 'decoder.ssim_weight >= 0'),
        ('decoder.width=64', r"unknown key\(s\) \['width'\]"),
        ('decoder.latents=generated', r"decoder.latents must be one of \('recorded', 'rollout'\)"),
        ('decoder.pixel_loss=l2', r"decoder.pixel_loss one of \('l1', 'mse'\)"),
    ],
)
def test_bad_decoder_values_are_config_errors(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_train_config(TINY, 'decoder', [override])


@pytest.fixture(scope='module')
def rollout_runs(runs: dict[str, Any]) -> dict[str, Any]:
    """Stage decoder on the rollouts of an (untrained) one-pass generator: first a fresh fast
    decoder, then that one continued, both with the PSNR loss."""
    tmp = runs['tmp']
    start = load_checkpoint(tmp / 'start')
    one_pass = dataclasses.replace(start, config=dataclasses.replace(start.config, stage='adversarial'))
    save_checkpoint(one_pass, tmp / 'one_pass', weight_dtype=torch.float32)
    common = ('decoder.latents=rollout', 'decoder.pixel_loss=mse', 'decoder.ssim_weight=0.1', 'optim.lr=0.01')
    first = run_stage('decoder', tmp, f'model={tmp / "one_pass"}', f'output={tmp / "on_rollouts"}', *common)
    again = run_stage(
        'decoder', tmp, f'model={tmp / "on_rollouts"}', f'output={tmp / "on_rollouts_again"}', *common, 'optim.steps=2'
    )
    return {'tmp': tmp, 'first': first, 'again': again}


def test_decoder_stage_learns_the_frames_of_the_generators_rollouts(rollout_runs: dict[str, Any]) -> None:
    tmp, first, again = rollout_runs['tmp'], rollout_runs['first'], rollout_runs['again']
    assert first['loss_last'] < 0.7 * first['loss_first']
    assert 'rollout_psnr_before' not in first  # a fresh decoder has no "before"
    start, out = load_checkpoint(tmp / 'one_pass'), load_checkpoint(tmp / 'on_rollouts')
    assert out.config == dataclasses.replace(start.config, vae=out.config.vae)
    for name, tensor in start.generator.state_dict().items():
        assert torch.equal(out.generator.state_dict()[name], tensor), name
    card = (tmp / 'on_rollouts' / CARD_FILE).read_text()
    assert "the generator's one-pass rollouts of 6-frame recorded clips" in card
    assert 'loss (MSE + 0.1 (1 - SSIM))' in card
    assert f"held-out rollout PSNR, fast decoder (the start's ->) trained: {first['rollout_psnr']:.2f} dB" in card
    # Continuing it scores the decoder it starts from on the same held-out rollouts.
    assert again['rollout_psnr_before'] == pytest.approx(first['rollout_psnr'])
    card = (tmp / 'on_rollouts_again' / CARD_FILE).read_text()
    assert f'{again["rollout_psnr_before"]:.2f} -> {again["rollout_psnr"]:.2f} dB' in card


def test_decoder_stage_on_rollouts_needs_a_one_pass_generator(runs: dict[str, Any]) -> None:
    tmp = runs['tmp']
    with pytest.raises(TrainError, match=r"needs an 'adversarial' checkpoint; .* is 'untrained'"):
        run_stage('decoder', tmp, f'model={tmp / "start"}', f'output={tmp / "out"}', 'decoder.latents=rollout')


def test_decoder_stage_needs_a_checkpoint_folder(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match='the decoder stage starts from a checkpoint folder'):
        run_stage('decoder', tmp_path, f'model={TINY_MODEL}', f'output={tmp_path / "out"}')


@pytest.fixture(scope='module')
def arm_runs(runs: dict[str, Any]) -> dict[str, Any]:
    """Stage decoder with decoder.arm on the rollouts of an (untrained) one-pass generator that draws
    the arm; the sample bag has the arm base on /tf_static."""
    tmp = runs['tmp']
    start = load_checkpoint(tmp / 'start')
    config = start.config.with_generator(sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    config = dataclasses.replace(config, stage='adversarial')
    torch.manual_seed(0)
    arm = Checkpoint(config, start.vae, CausalGenerator(config), start.start_frame)
    save_checkpoint(arm, tmp / 'arm_one_pass', weight_dtype=torch.float32)
    common = ('decoder.latents=rollout', 'decoder.pixel_loss=mse', 'decoder.arm=true', 'optim.lr=0.01')
    summary = run_stage('decoder', tmp, f'model={tmp / "arm_one_pass"}', f'output={tmp / "arm_decoder"}', *common)
    return {'tmp': tmp, 'summary': summary}


def test_decoder_stage_can_teach_the_decoder_to_read_the_arm_drawing(arm_runs: dict[str, Any]) -> None:
    tmp, summary = arm_runs['tmp'], arm_runs['summary']
    assert summary['loss_last'] < 0.7 * summary['loss_first']
    out = load_checkpoint(tmp / 'arm_decoder')
    assert out.config.vae.fast_decoder_arm_channels == out.generator.arm.num_channels == 9  # 8 links + depth
    weights = fast_weights(tmp / 'arm_decoder')
    assert all(
        weights[f'fast_decoder.arm_in.{level}.weight'].abs().sum() > 0 for level in range(2)
    )  # learnt to read it
    assert 'arm drawing read by the fast decoder: 9 channels' in (tmp / 'arm_decoder' / CARD_FILE).read_text()
    # What it reads: the drawing decides the image where the arm is, and only there.
    latents = torch.randn(1, 1, 4, 8, 8)  # (B, L, C, h, w) of the 32x32 tiny model
    drawing = torch.zeros(1, 1, 9, 32, 32)  # (B, L, A, 4h, 4w): the drawing's resolution in the tiny model
    none_in_view = out.vae.decode_fast(latents, drawing)
    torch.testing.assert_close(out.vae.decode_fast(latents), none_in_view)  # None: no arm in view
    drawing[..., 2, 12:20, 12:20], drawing[..., 8, 12:20, 12:20] = 1.0, 1 / 1.5  # link 2, 1.5 m away
    assert not torch.allclose(out.vae.decode_fast(latents, drawing), none_in_view)


def test_decoder_stage_reads_the_arm_only_from_a_generator_that_draws_it(
    runs: dict[str, Any], arm_runs: dict[str, Any]
) -> None:
    tmp = runs['tmp']
    with pytest.raises(TrainError, match=r'decoder.arm: .* generator draws none \(generator.arm_chain is empty\)'):
        run_stage('decoder', tmp, f'model={tmp / "start"}', f'output={tmp / "out"}', 'decoder.arm=true')
    with pytest.raises(TrainError, match=r'fast decoder reads the arm drawing; set decoder\.arm=true'):
        run_stage('decoder', tmp, f'model={tmp / "arm_decoder"}', f'output={tmp / "out"}')


@pytest.fixture(scope='module')
def warp_runs(runs: dict[str, Any]) -> dict[str, Any]:
    """Stage decoder with decoder.warps on the rollouts of an (untrained) one-pass generator that warps
    its first image to the table top and the ground in pixels."""
    tmp = runs['tmp']
    start = load_checkpoint(tmp / 'start')
    config = dataclasses.replace(start.config.with_generator(**PLANE_WARPS_IN_PIXELS), stage='adversarial')
    torch.manual_seed(0)
    warping = Checkpoint(config, start.vae, CausalGenerator(config), start.start_frame)
    save_checkpoint(warping, tmp / 'warping_one_pass', weight_dtype=torch.float32)
    common = ('decoder.latents=rollout', 'decoder.pixel_loss=mse', 'decoder.warps=true', 'optim.lr=0.01')
    model = f'model={tmp / "warping_one_pass"}'
    summary = run_stage('decoder', tmp, model, f'output={tmp / "warp_decoder"}', *common)
    return {'tmp': tmp, 'summary': summary, 'model': model}


def test_decoder_stage_can_teach_the_decoder_to_copy_the_plane_warps(warp_runs: dict[str, Any]) -> None:
    tmp, summary = warp_runs['tmp'], warp_runs['summary']
    assert summary['loss_last'] < 0.7 * summary['loss_first']
    out = load_checkpoint(tmp / 'warp_decoder')
    assert out.config.vae.fast_decoder_warp_planes == 2 and not out.config.vae.fast_decoder_arm_channels
    weights = fast_weights(tmp / 'warp_decoder')
    assert weights['fast_decoder.blend.weight'].abs().sum() > 0  # learnt how much of them to take
    assert all(weights[f'fast_decoder.warp_in.{level}.weight'].abs().sum() > 0 for level in range(2))
    card = (tmp / 'warp_decoder' / CARD_FILE).read_text()
    assert 'plane warps read by the fast decoder: 2 planes, in pixels' in card
    # What it reads: the warps change the image where they were sampled.
    latents = torch.randn(1, 1, 4, 8, 8)  # (B, L, C, h, w) of the 32x32 tiny model
    planes = torch.zeros(1, 1, 2, 6, 32, 32)  # (B, L, P, 6, H, W): nothing sampled
    nothing = out.vae.decode_fast(latents, planes=planes)
    torch.testing.assert_close(out.vae.decode_fast(latents), nothing)  # None: nothing warped
    planes[:, :, 1, :3], planes[:, :, 1, 3:5] = 0.5, 1.0  # the ground, seen everywhere
    assert not torch.allclose(out.vae.decode_fast(latents, planes=planes), nothing)


def test_decoder_stage_reads_plane_warps_only_from_a_generator_that_makes_them(
    runs: dict[str, Any], warp_runs: dict[str, Any]
) -> None:
    tmp = runs['tmp']
    with pytest.raises(TrainError, match=r'decoder.warps: .* generator makes none \(generator.sink_warp_pixels'):
        run_stage('decoder', tmp, f'model={tmp / "start"}', f'output={tmp / "out"}', 'decoder.warps=true')
    with pytest.raises(TrainError, match=r'fast decoder reads the plane warps; set decoder\.warps=true'):
        run_stage('decoder', tmp, f'model={tmp / "warp_decoder"}', f'output={tmp / "out"}')
    # Continued with the warps, a decoder that had none starts as it was: its rollout score is the start's.
    plain = run_stage(
        'decoder',
        tmp,
        warp_runs['model'],
        f'output={tmp / "plain_decoder"}',
        'decoder.latents=rollout',
        'optim.steps=2',
    )
    again = run_stage(
        'decoder',
        tmp,
        f'model={tmp / "plain_decoder"}',
        f'output={tmp / "plain_then_warps"}',
        'decoder.latents=rollout',
        'decoder.warps=true',
        'optim.steps=1',
        'optim.lr=1.0e-9',
    )
    assert again['rollout_psnr_before'] == pytest.approx(plain['rollout_psnr'])


def test_decoder_stage_can_teach_the_decoder_to_copy_the_arm_and_keeps_its_warp_inputs_apart(
    runs: dict[str, Any], warp_runs: dict[str, Any]
) -> None:
    tmp = warp_runs['tmp']
    arm_warp = ('decoder.arm=true', 'decoder.warps=true', 'decoder.arm_warp=true')
    rollout = ('decoder.latents=rollout', 'decoder.pixel_loss=mse', 'optim.lr=0.01', 'optim.steps=3')
    summary = run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "arm_warp_decoder"}', *rollout, *arm_warp)
    assert summary['loss_last'] < summary['loss_first']
    out = load_checkpoint(tmp / 'arm_warp_decoder')
    assert out.config.vae.fast_decoder_arm_warp and out.config.vae.fast_decoder_copied_images == 3
    weights = fast_weights(tmp / 'arm_warp_decoder')
    assert weights['fast_decoder.blend.weight'].shape[0] == 4 * 3  # per pixel of a 2x2 shuffle: two planes, the arm
    assert weights['fast_decoder.blend.weight'].abs().sum() > 0
    card = (tmp / 'arm_warp_decoder' / CARD_FILE).read_text()
    assert "the arm's warp from the first image read by the fast decoder: yes" in card
    # The warp inputs' shapes differ with and without the arm's: a decoder continues only as it was.
    with pytest.raises(TrainError, match=r"does not read the arm's warp.*set decoder\.arm_warp=false"):
        run_stage('decoder', tmp, f'model={tmp / "warp_decoder"}', f'output={tmp / "out"}', *arm_warp)
    with pytest.raises(TrainError, match=r"reads the arm's warp.*set decoder\.arm_warp=true"):
        run_stage('decoder', tmp, f'model={tmp / "arm_warp_decoder"}', f'output={tmp / "out"}', *arm_warp[:2])
    with pytest.raises(ConfigError, match=r'decoder\.arm_warp needs decoder\.arm and decoder\.warps'):
        run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "out"}', 'decoder.arm_warp=true')


def test_decoder_stage_can_teach_the_decoder_to_copy_the_ground_tile_and_keeps_its_warp_inputs_apart(
    runs: dict[str, Any], warp_runs: dict[str, Any]
) -> None:
    tmp = warp_runs['tmp']
    tile = (
        'decoder.arm=true',
        'decoder.warps=true',
        'decoder.arm_warp=true',
        'decoder.ground_tile=2.0',
        'decoder.ground_tile_depth=10',
    )
    rollout = ('decoder.latents=rollout', 'decoder.pixel_loss=mse', 'optim.lr=0.01', 'optim.steps=3')
    weighted = 'decoder.outside_view_weight=3'  # the loss weighted where frame 0 has no ground in view
    summary = run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "tile_decoder"}', *rollout, *tile, weighted)
    assert summary['loss_last'] < summary['loss_first']
    out = load_checkpoint(tmp / 'tile_decoder')
    assert out.config.vae.fast_decoder_ground_tile == 2.0 and out.config.vae.fast_decoder_copied_images == 4
    assert out.config.vae.fast_decoder_ground_tile_depth == 10.0
    weights = fast_weights(tmp / 'tile_decoder')
    assert weights['fast_decoder.blend.weight'].shape[0] == 4 * 4  # two planes, the arm, the ground's tile
    card = (tmp / 'tile_decoder' / CARD_FILE).read_text()
    assert "the ground's tile folded from the first image read by the fast decoder: a 2 m period, up to 10 m" in card
    assert 'loss weight where frame 0 does not have the ground in view: 3' in card
    with pytest.raises(TrainError, match=r'reads the ground tile of a 2 m period.*set decoder\.ground_tile=2'):
        run_stage('decoder', tmp, f'model={tmp / "tile_decoder"}', f'output={tmp / "out"}', *tile[:3])
    with pytest.raises(TrainError, match=r'reads the ground tile of a 0 m period.*set decoder\.ground_tile=0'):
        run_stage('decoder', tmp, f'model={tmp / "warp_decoder"}', f'output={tmp / "out"}', *tile[1:2], *tile[3:])
    with pytest.raises(ConfigError, match=r'decoder\.ground_tile must be >= 0 metres and needs decoder\.warps'):
        run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "out"}', 'decoder.ground_tile=2.0')
    with pytest.raises(
        ConfigError, match=r'decoder\.outside_view_weight must be >= 1 and, above 1, needs decoder\.warps'
    ):
        run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "out"}', weighted)


def test_decoder_stage_can_tell_the_decoder_the_scenes_static_boxes_and_keeps_its_warp_inputs_apart(
    runs: dict[str, Any], warp_runs: dict[str, Any]
) -> None:
    tmp = warp_runs['tmp']
    warps = ('decoder.warps=true', 'decoder.ground_tile=2.0')
    boxes = 'decoder.static_boxes=[[0, 0, 0.6, 0.75, 0.5, 0.025], [0.65, 0.4, 0.29, 0.05, 0.05, 0.29]]'
    rollout = ('decoder.latents=rollout', 'decoder.pixel_loss=mse', 'optim.lr=0.01', 'optim.steps=3')
    summary = run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "box_decoder"}', *rollout, *warps, boxes)
    assert summary['loss_last'] < summary['loss_first']
    out = load_checkpoint(tmp / 'box_decoder')
    assert out.config.vae.fast_decoder_static_boxes == (
        (0, 0, 0.6, 0.75, 0.5, 0.025),
        (0.65, 0.4, 0.29, 0.05, 0.05, 0.29),
    )
    assert out.config.vae.fast_decoder_copied_images == 4  # two planes, the ground's tile, the boxes' colour
    assert fast_weights(tmp / 'box_decoder')['fast_decoder.blend.weight'].shape[0] == 4 * 4
    card = (tmp / 'box_decoder' / CARD_FILE).read_text()
    assert "the scene's static boxes told to the fast decoder: 2 (their colour from the first image copied too)" in card
    with pytest.raises(TrainError, match=r'reads 2 static boxes.*set decoder\.static_boxes to the same'):
        run_stage('decoder', tmp, f'model={tmp / "box_decoder"}', f'output={tmp / "out"}', *warps)
    with pytest.raises(TrainError, match=r'reads 0 static boxes.*set decoder\.static_boxes to the same'):
        run_stage('decoder', tmp, f'model={tmp / "warp_decoder"}', f'output={tmp / "out"}', warps[0], boxes)
    with pytest.raises(ConfigError, match=r'decoder\.static_boxes needs decoder\.warps'):
        run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "out"}', boxes)
    # Pasting what frame 0 never showed, while training too.
    pasted = ('decoder.arm=true', 'decoder.paste_unseen=true')
    run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "paste_decoder"}', *rollout, *warps, boxes, *pasted)
    assert load_checkpoint(tmp / 'paste_decoder').config.vae.fast_decoder_paste_unseen
    assert 'unseen ground and table top pasted from the copies: yes' in (tmp / 'paste_decoder' / CARD_FILE).read_text()
    # A start whose objects are pasted after it (tools/add_arm_paste.py) trains without them, pasting or not.
    start = load_checkpoint(tmp / 'paste_decoder')
    # So does one whose arm paste is drawn from the links' meshes and lit.
    start = load_checkpoint(tmp / 'paste_decoder')
    links = chain_named(start.config.generator.arm_chain).num_links
    vae = dataclasses.replace(
        start.config.vae,
        fast_decoder_paste_objects=True,
        fast_decoder_arm_paste=0.5,
        fast_decoder_arm_paste_surface=(64,) * links,
        fast_decoder_arm_paste_shading=True,
    )
    config = dataclasses.replace(start.config, vae=vae)
    generator = CausalGenerator(config)
    generator.load_state_dict(start.generator.state_dict())
    save_checkpoint(
        dataclasses.replace(start, config=config, generator=generator),
        tmp / 'objects_start',
        weight_dtype=torch.float32,
    )
    trained = tmp / 'objects_trained_decoder'
    run_stage('decoder', tmp, f'model={tmp / "objects_start"}', f'output={trained}', *rollout, *warps, boxes, pasted[0])
    trained_vae = load_checkpoint(trained).config.vae
    assert not trained_vae.fast_decoder_paste_objects and not trained_vae.fast_decoder_arm_paste_surface
    with pytest.raises(ConfigError, match=r'decoder\.paste_unseen needs decoder\.static_boxes, decoder\.ground_tile'):
        run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "out"}', *warps, *pasted)
    with pytest.raises(ConfigError, match=r'static_boxes\[0\] must be \(x, y, z, half x, half y, half z\)'):
        run_stage(
            'decoder', tmp, warp_runs['model'], f'output={tmp / "out"}', warps[0], 'decoder.static_boxes=[[0, 0, 1]]'
        )


def test_decoder_stage_can_paste_each_links_colour_while_it_trains(warp_runs: dict[str, Any]) -> None:
    tmp = warp_runs['tmp']
    rollout = ('decoder.latents=rollout', 'decoder.pixel_loss=mse', 'optim.lr=0.01', 'optim.steps=2')
    pasting = ('decoder.arm=true', 'decoder.arm_paste=0.6', 'decoder.arm_paste_chain=kuka_iiwa_meshes')
    run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "arm_paste_decoder"}', *rollout, *pasting)
    out = load_checkpoint(tmp / 'arm_paste_decoder')
    assert (out.config.vae.fast_decoder_arm_paste, out.config.vae.fast_decoder_arm_paste_chain) == (
        0.6,
        'kuka_iiwa_meshes',
    )
    assert out.generator.paste_drawing is not None
    card = (tmp / 'arm_paste_decoder' / CARD_FILE).read_text()
    assert (
        'each drawn link moved toward its colour in the first image: 0.6 of the way, links drawn as kuka_iiwa_meshes'
        in card
    )
    with pytest.raises(ConfigError, match=r'decoder\.arm_paste must be in \[0, 1\] and needs decoder\.arm'):
        run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "out"}', 'decoder.arm_paste=0.5')
    with pytest.raises(ConfigError, match=r'decoder\.arm_paste_chain is the chain drawn for the arm paste'):
        run_stage('decoder', tmp, warp_runs['model'], f'output={tmp / "out"}', 'decoder.arm_paste_chain=kuka_iiwa')
    with pytest.raises(TrainError, match=r'decoder: .*unknown generator\.arm_chain'):
        run_stage(
            'decoder', tmp, warp_runs['model'], f'output={tmp / "out"}', *pasting[:2], 'decoder.arm_paste_chain=ur5'
        )
