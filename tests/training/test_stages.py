"""Every aapt-train stage end to end on the tiny config and the sample bag, on the CPU."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aapt_ros.model.camera import Pose
from aapt_ros.model.checkpoint import CARD_FILE, Checkpoint, load_checkpoint, save_checkpoint
from aapt_ros.streaming.session import StreamingSession
from aapt_ros.training import cli, flow_stage
from aapt_ros.training.checkpoints import (
    MODEL_STATE,
    STATE_DIR,
    STATE_JSON,
    deepened,
    with_arm,
    with_arm_base_plane,
    with_sink_rays,
    with_sink_warp,
    with_sink_warp_base_plane,
    with_sink_warp_ground,
    with_sink_warp_pixels,
)
from aapt_ros.training.config import TrainError, load_train_config
from tests.tool_scripts import load_tool

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'config' / 'train_tiny.yaml'


def run_stage(stage: str, tmp: Path, *overrides: str, **kwargs: Any) -> dict[str, Any]:
    config = load_train_config(TINY, stage, [f'data.cache_dir={tmp / "cache"}', *overrides])
    return cli.run(stage, config, **kwargs)


@pytest.fixture(scope='module')
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp('train')
    vae = run_stage('vae', tmp, f'output={tmp / "vae"}', 'optim.steps=150')
    base = run_stage('base', tmp, f'model={tmp / "vae"}', f'output={tmp / "base"}')
    adapt = run_stage('adapt', tmp, f'model={tmp / "base"}', f'output={tmp / "adapt"}')
    distill = run_stage('distill', tmp, f'model={tmp / "adapt"}', f'output={tmp / "distill"}', 'optim.steps=30')
    return {'tmp': tmp, 'vae': vae, 'base': base, 'adapt': adapt, 'distill': distill}


def stream(folder: Path, sampling_steps: int | None = None) -> list[np.ndarray]:
    session = StreamingSession(load_checkpoint(folder), seed=0, sampling_steps=sampling_steps)
    frames = [session.start(Pose.identity(), np.zeros(7))]
    for i in range(1, 4):
        frames.append(session.step(Pose((0.01 * i, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)), np.zeros(7)))
    return frames


def test_vae_stage_learns_and_streams(runs: dict[str, Any]) -> None:
    summary, folder = runs['vae'], runs['tmp'] / 'vae'
    assert summary['loss_last'] < 0.6 * summary['loss_first']
    assert summary['psnr'] > 18.0 and 0 < summary['ssim'] <= 1
    checkpoint = load_checkpoint(folder)
    assert checkpoint.config.stage == 'vae'
    assert checkpoint.config.vae.latent_scale == pytest.approx(summary['latent_scale'])
    card = (folder / CARD_FILE).read_text()
    assert 'held-out reconstruction PSNR' in card and 'wall time' in card
    frames = stream(folder)
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)


def test_base_stage_learns_and_streams_multistep(runs: dict[str, Any]) -> None:
    summary, folder = runs['base'], runs['tmp'] / 'base'
    assert summary['loss_last'] < 0.7 * summary['loss_first']  # 1.97 -> 0.98 when written
    assert load_checkpoint(folder).config.stage == 'base'
    assert load_checkpoint(folder).config.generator.sampling_steps == 8  # a flow model streams multi-step
    assert 'bidirectional' in (folder / CARD_FILE).read_text()
    frames = stream(folder, sampling_steps=4)
    assert len(frames) == 4 and all(f.shape == (32, 32, 3) for f in frames)


def test_adapt_stage_starts_from_base_keeps_the_vae_and_streams_multistep(runs: dict[str, Any]) -> None:
    summary, tmp = runs['adapt'], runs['tmp']
    assert summary['loss_last'] < 0.7 * summary['loss_first']
    adapt, vae = load_checkpoint(tmp / 'adapt'), load_checkpoint(tmp / 'vae')
    assert adapt.config.stage == 'adapt'
    assert f'started from: `{tmp / "base"}`' in (tmp / 'adapt' / CARD_FILE).read_text()
    assert adapt.config.vae == vae.config.vae
    assert torch.equal(adapt.start_frame, vae.start_frame)
    for name, tensor in vae.vae.state_dict().items():
        assert torch.equal(adapt.vae.state_dict()[name], tensor), name
    frames = stream(tmp / 'adapt', sampling_steps=4)
    assert len(frames) == 4 and all(f.shape == (32, 32, 3) for f in frames)
    logs = tmp / 'adapt' / 'logs'
    assert any(logs.glob('events.*')) or (logs / 'scalars.csv').read_text().startswith('step,name,value')


def test_chain_ends_in_a_distilled_model_that_streams_at_one_step_and_more(runs: dict[str, Any]) -> None:
    summary, folder = runs['distill'], runs['tmp'] / 'distill'
    losses = [summary['loss_first'], summary['loss_last'], summary['distill_loss'], summary['x0_mse_1step']]
    assert all(np.isfinite(losses))
    assert summary['loss_last'] < 2 * summary['loss_first']  # bounded: the target moves with the student
    assert load_checkpoint(folder).config.stage == 'distill'
    assert load_checkpoint(folder).config.generator.sampling_steps == 1
    assert 'no CFG, no EMA target' in (folder / CARD_FILE).read_text()
    for steps in (1, 2):
        frames = stream(folder, sampling_steps=steps)
        assert len(frames) == 4 and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)


@pytest.mark.parametrize(('stage', 'wrong'), [('base', 'adapt'), ('adapt', 'vae'), ('distill', 'base')])
def test_a_stage_refuses_the_wrong_previous_checkpoint(runs: dict[str, Any], stage: str, wrong: str) -> None:
    tmp = runs['tmp']
    with pytest.raises(TrainError, match=f"is a '{wrong}' checkpoint; the {stage} stage starts from"):
        run_stage(stage, tmp, f'model={tmp / wrong}', f'output={tmp / f"{stage}-from-{wrong}"}')


PREVIOUS = {'base': 'vae', 'adapt': 'base', 'distill': 'adapt'}


@pytest.mark.parametrize('stage', ['vae', 'base', 'adapt', 'distill'])
def test_resume_repeats_an_uninterrupted_run(runs: dict[str, Any], stage: str) -> None:
    tmp = runs['tmp']
    model = tmp / PREVIOUS[stage] if stage in PREVIOUS else TINY.parent / 'train_tiny_model.yaml'
    common = [f'model={model}', 'optim.steps=6', 'optim.batch_size=2', 'state_every=2', 'val_batches=1']
    common.append('vae.scale_batches=1')
    whole, split = tmp / f'{stage}-whole', tmp / f'{stage}-split'
    run_stage(stage, tmp, f'output={whole}', *common)
    assert run_stage(stage, tmp, f'output={split}', *common, stop_after=3) == {'steps': 3}
    run_stage(stage, tmp, f'output={split}', *common, resume=True)
    a = load_file(str(whole / STATE_DIR / MODEL_STATE))
    b = load_file(str(split / STATE_DIR / MODEL_STATE))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    ends = json.loads((split / STATE_DIR / STATE_JSON).read_text())['scalars']['step_ends']
    assert len(ends) == 6 and ends == sorted(ends)  # one a step; the resumed steps' times go on


def _assert_stream_alike(first: Checkpoint, second: Checkpoint) -> None:
    runs = []
    for checkpoint in (first, second):
        session = StreamingSession(checkpoint, dtype='float32')
        session.start(Pose.identity())
        runs.append([session.step(Pose((0.1 * i, 0.0, 0.02 * i), (0.0, 0.0, 0.0, 1.0))) for i in range(1, 6)])
    for before, after in zip(*runs, strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.fixture(scope='module')
def grow_tool() -> ModuleType:
    return load_tool('grow_generator')


def test_a_checkpoint_given_sink_rays_streams_as_before_until_trained(
    grow_tool: ModuleType, tiny_model: Path, tmp_path: Path
) -> None:
    assert grow_tool.main([str(tiny_model), str(tmp_path / 'sink'), '--sink-rays', '0.5']) == 0
    widened = load_checkpoint(tmp_path / 'sink')
    assert widened.config.generator.sink_ray_origin_scale == 0.5
    assert widened.generator.rays.num_channels == 12
    _assert_stream_alike(load_checkpoint(tiny_model), widened)
    with pytest.raises(TrainError, match='already has sink rays'):
        with_sink_rays(widened, 1.0)


def test_a_checkpoint_given_warps_streams_as_before_until_trained(
    grow_tool: ModuleType, tiny_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):  # the warp follows the rays into the sink frame
        grow_tool.main([str(tiny_model), str(tmp_path / 'bad'), '--sink-warp', '1,-2'])
    with pytest.raises(TrainError, match='no sink rays'):
        with_sink_warp(load_checkpoint(tiny_model), (1.0,))
    assert grow_tool.main([str(tiny_model), str(tmp_path / 'prev'), '--sink-rays', '0.5', '--previous-warp', '1']) == 0
    # The sink warp's channels go before the previous warp's, whichever was added first.
    assert grow_tool.main([str(tmp_path / 'prev'), str(tmp_path / 'warp'), '--sink-warp', '0.5,2']) == 0
    widened = load_checkpoint(tmp_path / 'warp')  # the depths survive the YAML config
    assert widened.config.generator.sink_warp_depths == (0.5, 2.0)
    assert widened.config.generator.previous_warp_depths == (1.0,)
    _assert_stream_alike(load_checkpoint(tiny_model), widened)
    with pytest.raises(TrainError, match='already has a sink warp'):
        with_sink_warp(widened, (1.0,))


def test_a_checkpoint_given_the_arm_streams_as_before_until_trained(
    grow_tool: ModuleType, tiny_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(TrainError, match='no sink rays'):
        with_arm(load_checkpoint(tiny_model), 'kuka_iiwa')
    with pytest.raises(SystemExit):  # not a known chain
        grow_tool.main([str(tiny_model), str(tmp_path / 'bad'), '--sink-rays', '0.5', '--arm', 'ur5'])
    assert grow_tool.main([str(tiny_model), str(tmp_path / 'warp'), '--sink-rays', '0.5', '--sink-warp', '1']) == 0
    warp = load_checkpoint(tmp_path / 'warp')
    c = warp.config.vae.latent_channels
    first = 2 * c + warp.generator.rays.num_channels  # the sink warp's channels: [first, first + c + 1)
    with torch.no_grad():
        warp.generator.patch_embed.weight[:, first : first + c + 1] = 1.0  # as if trained
    save_checkpoint(warp, tmp_path / 'trained_warp', weight_dtype=torch.float32)
    assert grow_tool.main([str(tmp_path / 'trained_warp'), str(tmp_path / 'arm'), '--arm', 'kuka_iiwa']) == 0
    widened = load_checkpoint(tmp_path / 'arm')
    assert widened.config.generator.arm_chain == 'kuka_iiwa'
    # [noisy, previous, rays, sink warp, arm]: the arm's zero weights come after the warp's
    weights = widened.generator.patch_embed.weight
    assert (weights[:, first : first + c + 1] == 1).all() and weights[:, first + c + 1 :].abs().sum() == 0
    _assert_stream_alike(load_checkpoint(tmp_path / 'trained_warp'), widened)
    with pytest.raises(TrainError, match='already draws the arm'):
        with_arm(widened, 'kuka_iiwa')


def test_a_checkpoint_given_the_arm_base_plane_streams_as_before_until_trained(
    grow_tool: ModuleType, tmp_path: Path
) -> None:
    """The plane's channels follow the arm's, at zero weight in the generator and in a light decoder
    that reads the drawing: with the arm's base known and in view, every frame is unchanged."""
    import dataclasses

    from aapt_ros.model.arm import BASE_PLANE_CHANNELS
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from aapt_ros.streaming.engine import StreamEngine
    from tests.conftest import tiny_config

    config = tiny_config(sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    with pytest.raises(TrainError, match='draws no arm'):
        with_arm_base_plane(untrained_checkpoint(tiny_config(sink_ray_origin_scale=0.5), seed=0))
    vae = dataclasses.replace(config.vae, fast_decoder_channels=16, fast_decoder_arm_channels=9)
    arm = untrained_checkpoint(dataclasses.replace(config, vae=vae), seed=0)
    with torch.no_grad():  # as if trained: the arm inputs read in the generator and the decoder
        arm.generator.patch_embed.weight.normal_(0.0, 0.1)
        arm.generator.final_proj.weight.normal_(0.0, 0.1)
        for conv in arm.vae.fast_decoder.arm_in:  # type: ignore[union-attr]
            conv.weight.normal_(0.0, 0.5)
    save_checkpoint(arm, tmp_path / 'arm', weight_dtype=torch.float32)
    assert grow_tool.main([str(tmp_path / 'arm'), str(tmp_path / 'plane'), '--arm-base-plane']) == 0
    plane = load_checkpoint(tmp_path / 'plane')
    assert plane.config.generator.arm_base_plane
    assert plane.config.vae.fast_decoder_arm_channels == 9 + BASE_PLANE_CHANNELS
    arm_part = plane.generator.input_slice('arm')
    assert arm_part.stop - arm_part.start == 9 + BASE_PLANE_CHANNELS
    new = plane.generator.patch_embed.weight[:, arm_part.stop - BASE_PLANE_CHANNELS : arm_part.stop]
    assert new.abs().sum() == 0
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    base = np.concatenate([np.eye(3), [[0.0], [0.3], [1.5]]], axis=1)[None]  # 1.5 m ahead of the first camera
    streams = []
    for checkpoint in (load_checkpoint(tmp_path / 'arm'), plane):
        engine = StreamEngine(checkpoint, batch_size=1, dtype='float32')
        assert engine.decoder_reads_arm
        engine.start(np.ones(1, bool), start, np.full((1, 7), 0.3), base)
        motion = (np.eye(3)[None], np.array([[0.02, 0.0, 0.01]]))
        streams.append([engine.step(*motion) for _ in range(4)])
    g = engine.generator
    drawn = g.arm_image(engine.actions, engine.arm_bases, engine.sink_rotations, engine.sink_translations)
    assert drawn[:, 9:].abs().sum() > 0  # the plane is drawn, and read at zero weight
    for before, after in zip(*streams, strict=True):
        np.testing.assert_allclose(before.astype(float), after.astype(float), atol=1)  # uint8 rounding only
    with pytest.raises(TrainError, match='already draws its arm base plane'):
        with_arm_base_plane(plane)


def _assert_engine_alike_with_the_base_below(first: Checkpoint, second: Checkpoint) -> None:
    """Both stream the same frames (up to uint8 rounding) with the arm base's plane 0.5 m below the
    camera, in view of most rays below the horizon."""
    from aapt_ros.streaming.engine import StreamEngine

    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    below = np.array([[[1.0, 0, 0, 0], [0, 0, -1, 0.5], [0, 1, 0, 1.0]]])
    streams = []
    for checkpoint in (first, second):
        engine = StreamEngine(checkpoint, batch_size=1, dtype='float32')
        engine.start(np.ones(1, bool), start, np.full((1, 7), 0.3), below)
        motion = (np.eye(3)[None], np.array([[0.02, 0.0, 0.01]]))
        streams.append([engine.step(*motion) for _ in range(4)])
    for before, after in zip(*streams, strict=True):
        np.testing.assert_allclose(before.astype(float), after.astype(float), atol=1)  # uint8 rounding only


def test_a_checkpoint_given_the_sink_warp_at_the_base_plane_streams_as_before_until_trained(
    grow_tool: ModuleType, tmp_path: Path
) -> None:
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from tests.conftest import tiny_config

    with pytest.raises(TrainError, match='needs a sink warp and an arm'):
        with_sink_warp_base_plane(untrained_checkpoint(tiny_config(sink_ray_origin_scale=0.5), seed=0))
    config = tiny_config(sink_ray_origin_scale=0.5, sink_warp_depths=(1.0, 3.0), arm_chain='kuka_iiwa')
    warp = untrained_checkpoint(config, seed=0)
    with torch.no_grad():  # as if trained
        warp.generator.patch_embed.weight.normal_(0.0, 0.1)
        warp.generator.final_proj.weight.normal_(0.0, 0.1)
    save_checkpoint(warp, tmp_path / 'warp', weight_dtype=torch.float32)
    assert grow_tool.main([str(tmp_path / 'warp'), str(tmp_path / 'plane'), '--sink-warp-base-plane']) == 0
    plane = load_checkpoint(tmp_path / 'plane')
    assert plane.config.generator.sink_warp_base_plane
    new = plane.generator.patch_embed.weight[:, plane.generator.input_slice('sink_plane_warp')]
    assert new.shape[1] == config.vae.latent_channels + 1 and new.abs().sum() == 0
    _assert_engine_alike_with_the_base_below(load_checkpoint(tmp_path / 'warp'), plane)
    with pytest.raises(TrainError, match='already warps the sink at its arm base plane'):
        with_sink_warp_base_plane(plane)


def _saved_base_plane_checkpoint(folder: Path) -> Checkpoint:
    """A tiny checkpoint with the sink warped at its arm base's plane, its input and output weights
    random as if trained, saved to ``folder``."""
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from tests.conftest import tiny_config

    config = tiny_config(
        sink_ray_origin_scale=0.5, sink_warp_depths=(1.0, 3.0), arm_chain='kuka_iiwa', sink_warp_base_plane=True
    )
    plane = untrained_checkpoint(config, seed=0)
    with torch.no_grad():
        plane.generator.patch_embed.weight.normal_(0.0, 0.1)
        plane.generator.final_proj.weight.normal_(0.0, 0.1)
    save_checkpoint(plane, folder, weight_dtype=torch.float32)
    return plane


def test_a_checkpoint_given_the_sink_warp_at_the_ground_streams_as_before_until_trained(
    grow_tool: ModuleType, tmp_path: Path
) -> None:
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from tests.conftest import tiny_config

    with pytest.raises(TrainError, match='needs a sink warp and an arm'):
        with_sink_warp_ground(untrained_checkpoint(tiny_config(sink_ray_origin_scale=0.5), seed=0), 0.6)
    plane = _saved_base_plane_checkpoint(tmp_path / 'plane')
    config = plane.config
    assert grow_tool.main([str(tmp_path / 'plane'), str(tmp_path / 'ground'), '--sink-warp-ground', '0.6']) == 0
    ground = load_checkpoint(tmp_path / 'ground')
    assert ground.config.generator.sink_warp_ground_below_base == 0.6
    assert list(ground.generator.input_parts)[-1] == 'sink_ground_warp'
    new = ground.generator.patch_embed.weight[:, ground.generator.input_slice('sink_ground_warp')]
    assert new.shape[1] == config.vae.latent_channels + 1 and new.abs().sum() == 0
    _assert_engine_alike_with_the_base_below(load_checkpoint(tmp_path / 'plane'), ground)
    with pytest.raises(TrainError, match='already warps the sink at the ground'):
        with_sink_warp_ground(ground, 0.6)
    with pytest.raises(SystemExit):
        grow_tool.main([str(tmp_path / 'plane'), str(tmp_path / 'bad'), '--sink-warp-ground', '0'])


def test_the_plane_warps_can_be_switched_to_the_sink_image_keeping_the_weights(
    grow_tool: ModuleType, tmp_path: Path
) -> None:
    """--sink-warp-pixels keeps every weight and changes what streams (sharper content in the same
    channels); it needs a plane warp and is given once."""
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from aapt_ros.streaming.engine import StreamEngine
    from tests.conftest import tiny_config

    plane = _saved_base_plane_checkpoint(tmp_path / 'plane')
    assert grow_tool.main([str(tmp_path / 'plane'), str(tmp_path / 'pixels'), '--sink-warp-pixels']) == 0
    pixels = load_checkpoint(tmp_path / 'pixels')
    assert pixels.config.generator.sink_warp_pixels
    for name, weight in plane.generator.state_dict().items():
        torch.testing.assert_close(pixels.generator.state_dict()[name], weight, atol=0, rtol=0)
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    below = np.array([[[1.0, 0, 0, 0], [0, 0, -1, 0.5], [0, 1, 0, 1.0]]])  # the base plane in view
    latents = []
    for checkpoint in (plane, pixels):
        engine = StreamEngine(checkpoint, batch_size=1, dtype='float32', decode=False)
        engine.start(np.ones(1, bool), start, np.full((1, 7), 0.3), below)
        latents.append(engine.step(np.eye(3)[None], np.array([[0.02, 0.0, 0.01]])).copy())
    assert np.abs(latents[0] - latents[1]).max() > 1e-4
    with pytest.raises(TrainError, match='already warps the sink image'):
        with_sink_warp_pixels(pixels)
    with pytest.raises(TrainError, match='warps the sink at no plane'):
        with_sink_warp_pixels(untrained_checkpoint(tiny_config(sink_ray_origin_scale=0.5), seed=0))


def test_a_deepened_checkpoint_streams_as_before_until_trained_and_loads_from_shards(
    grow_tool: ModuleType, tiny_model: Path, tmp_path: Path
) -> None:
    original = load_checkpoint(tiny_model)
    depth = original.config.generator.depth
    with pytest.raises(SystemExit):  # nothing to add
        grow_tool.main([str(tiny_model), str(tmp_path / 'same')])
    assert grow_tool.main([str(tiny_model), str(tmp_path / 'deep'), '--depth', str(2 * depth + 1)]) == 0
    deep = load_checkpoint(tmp_path / 'deep')
    assert len(deep.generator.blocks) == 2 * depth + 1
    for name, tensor in deepened(original, 2 * depth + 1).generator.state_dict().items():
        assert torch.equal(tensor, deep.generator.state_dict()[name]), name  # reproducible
    save_checkpoint(deep, tmp_path / 'sharded', weight_dtype=torch.float32, max_file_bytes=20_000)
    shards = sorted(p.name for p in (tmp_path / 'sharded').glob('generator*'))
    assert len(shards) > 2 and shards[0] == f'generator-00001-of-{len(shards):05d}.safetensors'
    runs = []
    for checkpoint in (original, load_checkpoint(tmp_path / 'sharded')):
        session = StreamingSession(checkpoint, dtype='float32')
        session.start(Pose.identity())
        runs.append([session.step(Pose((0.1 * i, 0.0, 0.02 * i), (0.0, 0.0, 0.0, 1.0))) for i in range(1, 6)])
    for before, after in zip(*runs, strict=True):
        np.testing.assert_array_equal(before, after)
    with pytest.raises(TrainError, match=f'depth {depth} must exceed the {depth} blocks'):
        deepened(original, depth)


def test_context_noise_corrupts_the_recycled_input_of_adapt_only(runs: dict[str, Any]) -> None:
    previous, noise = torch.ones(2, 3, 1, 2, 2), torch.zeros(2, 3, 1, 2, 2)
    mixed = flow_stage.with_context_noise(previous, torch.tensor([[0.5, 0.5, 0.25], [1.0, 0.0, 1.0]]), noise)
    assert mixed[:, 0].eq(1).all()  # the sink's own input stays clean
    assert (
        mixed[0, 1].eq(0.5).all() and mixed[0, 2].eq(0.75).all() and mixed[1, 1].eq(1).all() and mixed[1, 2].eq(0).all()
    )
    tmp = runs['tmp']
    noisy = run_stage(
        'adapt',
        tmp,
        f'model={tmp / "base"}',
        f'output={tmp / "adapt_noisy"}',
        'flow.context_noise=0.5',
        'optim.steps=20',
    )
    assert noisy['steps'] == 20 and np.isfinite(noisy['loss_last'])
    assert 'U(0, 0.5)' in (tmp / 'adapt_noisy' / CARD_FILE).read_text()
    stream(tmp / 'adapt_noisy', sampling_steps=2)
    with pytest.raises(TrainError, match='base stage has no recycled input'):
        run_stage('base', tmp, f'model={tmp / "vae"}', f'output={tmp / "base_noisy"}', 'flow.context_noise=0.5')
