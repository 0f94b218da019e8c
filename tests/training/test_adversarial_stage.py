"""Stage ``adversarial``: the rollout the engine runs, its one-pass re-forward by segments, the
discriminator, and the stage end to end on the tiny config (a short vae -> ... -> distill chain)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aapt_ros.model.camera import Pose, relative_motion
from aapt_ros.model.checkpoint import CARD_FILE, load_checkpoint, save_checkpoint
from aapt_ros.model.config import ConfigError
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.streaming.engine import StreamEngine
from aapt_ros.streaming.session import StreamingSession
from aapt_ros.training import cli
from aapt_ros.training.adversarial_stage import (
    DISCRIMINATOR,
    GENERATOR,
    Sample,
    Trainer,
    generate,
    generator_loss,
    judge,
    load_discriminator_start,
    rollout,
    segments,
    sequence,
)
from aapt_ros.training.checkpoints import MODEL_STATE, OPTIMIZER_STATE, STATE_DIR, STATE_JSON, with_sink_rays
from aapt_ros.training.config import AdversarialConfig, TrainError, load_train_config
from aapt_ros.training.data import arm_bases_in_sink, batch, load_splits, relative_motions
from aapt_ros.training.discriminator import Discriminator
from aapt_ros.training.rollout_graphs import RolloutGraphs
from tests.conftest import tiny_config
from tests.tool_scripts import load_tool

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'config' / 'train_tiny.yaml'
FAST = ['optim.batch_size=2', 'val_batches=1']


def random_generator(window_frames: int) -> CausalGenerator:
    torch.manual_seed(0)
    generator = CausalGenerator(tiny_config(window_frames=window_frames))
    with torch.no_grad():  # leave adaLN-Zero's zeros: every path must contribute
        for p in generator.parameters():
            p.normal_(std=0.2)
    return generator.eval()


def random_sample(generator: CausalGenerator, batch: int, frames: int, *, teacher: bool) -> Sample:
    """Recorded latents and conditions drawn at random, rolled out by the engine's step."""
    config = generator.config
    c, h, w = config.vae.latent_channels, config.latent_height, config.latent_width
    g = torch.Generator().manual_seed(1)
    real = torch.randn(batch, frames, c, h, w, generator=g)
    noisy = torch.cat([real[:, :1], torch.randn(batch, frames - 1, c, h, w, generator=g)], dim=1)
    rays = torch.randn(batch, frames, 6, h, w, generator=g)
    actions = torch.randn(batch, frames, config.generator.action_dim, generator=g)
    t = torch.ones(batch, frames)
    t[:, 0] = 0.0
    fake = rollout(generator, noisy, real, rays, actions, t, teacher=teacher, cache_dtype=torch.float32)
    recycled = torch.cat([real[:, :1], (real if teacher else fake)[:, :-1]], dim=1)
    return Sample(real, fake, noisy, recycled, t, rays, actions)


def test_forward_segment_chained_over_a_clip_equals_forward_train() -> None:
    generator = random_generator(window_frames=3)
    sample = random_sample(generator, batch=2, frames=9, teacher=True)
    inputs = (sample.noisy, sample.recycled, sample.rays, sample.actions, sample.t)
    with torch.no_grad():
        whole = generator.forward_train(*inputs)
        parts, prefix = [], None
        for a, b in ((0, 4), (4, 5), (5, 9)):  # the window (3) slides across every boundary
            velocity, prefix = generator.forward_segment(*(x[:, a:b] for x in inputs), prefix)
            parts.append(velocity)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=1e-5)
    assert prefix is not None and (prefix.first, prefix.end) == (7, 9)
    assert prefix.keys[0].shape[1] == 3 * generator.config.tokens_per_frame  # the sink and 2 frames


def test_segments_judge_every_generated_frame_once_with_context() -> None:
    assert segments(6, 3, 1) == [(1, 1, 4), (3, 4, 6)]
    assert segments(6, 10, 2) == [(1, 1, 6)]
    plan = segments(40, 7, 3)
    assert [f for s in plan for f in range(s.start, s.end)] == list(range(1, 40))
    assert all(s.end - s.context <= 7 and s.start - s.context == 3 for s in plan[1:])


@pytest.mark.parametrize('teacher', [False, True])
@pytest.mark.parametrize(('length', 'overlap'), [(100, 0), (3, 1), (4, 0)])
def test_one_pass_by_segments_reproduces_the_sequential_rollout(teacher: bool, length: int, overlap: int) -> None:
    # 11 frames with a window of 4: the rollout evicts frames, and short segments carry the window over.
    generator = random_generator(window_frames=4)
    sample = random_sample(generator, batch=2, frames=11, teacher=teacher)
    with torch.no_grad():
        outputs = [new for _, new in generate(generator, sample, segments(11, length, overlap))]
    torch.testing.assert_close(torch.cat(outputs, dim=1), sample.fake[:, 1:], atol=2e-5, rtol=1e-5)
    if not teacher:  # student forcing: each frame's recycled input is the frame generated before it
        torch.testing.assert_close(sample.recycled[:, 2:], sample.fake[:, 1:-1])


def test_gradients_stop_at_segment_boundaries_and_reach_each_segment() -> None:
    generator = random_generator(window_frames=4)
    sample = random_sample(generator, batch=1, frames=8, teacher=False)
    first_layer = generator.patch_embed.weight
    grads = []
    for _, new in generate(generator.train(), sample, segments(8, 3, 1)):
        (grad,) = torch.autograd.grad(new.square().sum(), first_layer)
        grads.append(grad)
    assert len(grads) == 3 and all(g.abs().sum() > 0 for g in grads)
    _, prefix = generator.forward_segment(
        sample.noisy[:, :3], sample.recycled[:, :3], sample.rays[:, :3], sample.actions[:, :3], sample.t[:, :3], None
    )
    assert not any(k.requires_grad for k in prefix.keys + prefix.values)
    assert (prefix.first, prefix.end) == (1, 3)


PLANE_WARPS_IN_PIXELS = {
    'sink_ray_origin_scale': 0.5,
    'sink_warp_depths': (1.0,),
    'arm_chain': 'kuka_iiwa',
    'sink_warp_base_plane': True,
    'sink_warp_ground_below_base': 0.5,
    'sink_warp_pixels': True,
}


@pytest.mark.parametrize(
    ('inputs', 'light_encoder'),
    [
        ({}, False),
        ({'sink_ray_origin_scale': 0.5}, False),
        ({'sink_ray_origin_scale': 0.5, 'sink_warp_depths': (0.5, 2.0), 'previous_warp_depths': (1.0,)}, False),
        ({'sink_ray_origin_scale': 0.5, 'arm_chain': 'kuka_iiwa'}, False),
        (PLANE_WARPS_IN_PIXELS, False),
        (PLANE_WARPS_IN_PIXELS, True),
    ],
    ids=[
        'previous_frame_rays',
        'sink_rays_too',
        'warps_too',
        'arm_too',
        'plane_warps_in_pixels',
        'plane_warps_by_the_light_encoder',
    ],
)
def test_the_rollout_is_what_the_engine_streams(tmp_path: Path, inputs: dict[str, object], light_encoder: bool) -> None:
    """Also checks that the engine's chained camera-in-the-sink-frame (and the sink latent it
    warps, the arm it draws and the encoder its plane warps pass) equals training's direct one."""
    from tests.conftest import save_tiny_model

    vae = {'fast_encoder_channels': 16} if light_encoder else None
    checkpoint = load_checkpoint(save_tiny_model(tmp_path / 'tiny', vae=vae, **inputs))
    engine = StreamEngine(checkpoint, device='cpu', dtype='float32', decode=False, seed=0)
    start = checkpoint.start_frame.numpy()[None]
    # A camera turning about its y axis while it moves: the chained rotations do not commute.
    angles = 0.3 * np.arange(5)
    positions = np.array([[0.1 * i, 0.02 * i * i, 0.05 * i] for i in range(5)])
    orientations = np.stack([np.zeros(5), np.sin(angles / 2), 0.1 * np.sin(angles), np.cos(angles / 2)], axis=1)
    orientations /= np.linalg.norm(orientations, axis=1, keepdims=True)
    poses = [Pose(tuple(p), tuple(q)) for p, q in zip(positions, orientations, strict=True)]
    actions = np.linspace(-1, 1, 5 * 7).reshape(5, 1, 7)
    arm_base = torch.tensor([[0.3, -0.2, 1.5, 0.0, 0.0, math.sin(0.2), math.cos(0.2)]])  # in the world, (1, 7)
    bases = arm_bases_in_sink(torch.from_numpy(positions)[None], torch.from_numpy(orientations)[None], arm_base)
    engine.start(np.ones(1, dtype=bool), start, actions[0], bases.numpy())
    sink = engine.previous.clone()  # (1, C, h, w): the encoded start image
    streamed = []
    for i in range(1, 5):  # frame to frame, as StreamingSession passes them
        rotation, translation = relative_motion(poses[i - 1], poses[i])
        # copied: with float32 latents the engine returns a view of its reused host buffer
        streamed.append(torch.from_numpy(engine.step(rotation[None], translation[None], actions[i]).copy()))
    # The same run through the training rollout: the engine's noise comes from its seeded generator.
    g = torch.Generator().manual_seed(0)
    noise = [torch.empty_like(sink).normal_(generator=g) for _ in range(4)]
    net = checkpoint.generator
    motions = relative_motions(torch.from_numpy(positions)[None], torch.from_numpy(orientations)[None])
    action = torch.tensor(actions, dtype=torch.float32).transpose(0, 1)  # (1, 5, 7)
    start_image = torch.from_numpy(start).permute(0, 3, 1, 2).float() / 127.5 - 1  # (1, 3, H, W)
    rays = net.conditioning(
        *(m[0].float() for m in motions),
        sink_latent=sink.expand(5, -1, -1, -1),
        action=action[0],
        arm_base=bases.float().expand(5, -1, -1),
        sink_image=start_image.expand(5, -1, -1, -1),
        encode=checkpoint.vae.encode_warped,
    )[None]
    c = checkpoint.config.vae.latent_channels
    expected = {0: 6, 1: 12, 3: 12 + 2 * (c + 1)}[len(inputs)] if 'arm_chain' not in inputs else 12 + 9
    if inputs.get('sink_warp_pixels'):  # the sweep at one depth, the arm, the base plane and the ground
        expected = 12 + (c + 1) + 9 + 2 * (c + 1)
        assert rays[0, 1:, -(c + 1) :].abs().sum() > 0  # the ground is in view: the sink image seen there
    assert rays.shape[2] == expected  # (1, 5, R, h, w)
    if 'arm_chain' in inputs:
        assert rays[0, :, 12:].abs().sum() > 0  # the arm is in view
    noisy = torch.stack([sink, *noise], dim=1)
    t = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0]])
    fake = rollout(net, noisy, noisy, rays, action, t, teacher=False, cache_dtype=torch.float32)
    torch.testing.assert_close(fake[0, 1:], torch.cat(streamed), atol=1e-5, rtol=1e-5)


def test_the_discriminator_must_read_the_rays_as_the_generator_makes_them(tmp_path: Path) -> None:
    from tests.conftest import save_tiny_model

    tiny = load_checkpoint(save_tiny_model(tmp_path / 'tiny'))
    adapt = save_checkpoint(
        dataclasses.replace(tiny, config=dataclasses.replace(tiny.config, stage='adapt')), tmp_path / 'adapt'
    )
    assert load_discriminator_start(adapt, tiny.config).config.stage == 'adapt'
    with pytest.raises(TrainError, match='ray input'):
        load_discriminator_start(adapt, tiny_config(sink_ray_origin_scale=1.0))
    with pytest.raises(TrainError, match='ray input'):
        load_discriminator_start(adapt, tiny_config(sink_ray_origin_scale=1.0, sink_warp_depths=(1.0,)))


def test_discriminator_gives_one_causal_logit_per_frame_after_the_sink() -> None:
    body = random_generator(window_frames=4)
    disc = Discriminator(body)
    torch.nn.init.normal_(disc.head.weight)
    config = body.config
    c, h, w, a = config.vae.latent_channels, config.latent_height, config.latent_width, config.generator.action_dim
    g = torch.Generator().manual_seed(2)
    frames, before, sink = torch.randn(2, 5, c, h, w, generator=g), torch.randn(2, c, h, w), torch.randn(2, c, h, w)
    rays, action = torch.randn(2, 6, 6, h, w, generator=g), torch.randn(2, 6, a, generator=g)
    with torch.no_grad():
        logits = disc(frames, before, sink, rays, action)
        changed = frames.clone()
        changed[:, 3] += 1.0
        after = disc(changed, before, sink, rays, action)
    assert logits.shape == (2, 5) and logits.dtype == torch.float32
    torch.testing.assert_close(after[:, :3], logits[:, :3])  # frames before 3 never see it
    assert not torch.allclose(after[:, 3:], logits[:, 3:])
    assert torch.equal(Discriminator(body)(frames, before, sink, rays, action), torch.zeros(2, 5))  # zero head


def run_stage(stage: str, tmp: Path, *overrides: str, **kwargs: Any) -> dict[str, Any]:
    config = load_train_config(TINY, stage, [f'data.cache_dir={tmp / "cache"}', *FAST, *overrides])
    return cli.run(stage, config, **kwargs)


@pytest.fixture(scope='module')
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vae -> base -> adapt -> distill in a few steps each: checkpoints of the right stages, quickly."""
    tmp = tmp_path_factory.mktemp('adversarial')
    run_stage('vae', tmp, f'output={tmp / "vae"}', 'optim.steps=2', 'vae.scale_batches=1')
    for stage, previous in (('base', 'vae'), ('adapt', 'base'), ('distill', 'adapt')):
        run_stage(stage, tmp, f'model={tmp / previous}', f'output={tmp / stage}', 'optim.steps=2')
    return tmp


def adversarial(tmp: Path, output: str, *overrides: str, **kwargs: Any) -> dict[str, Any]:
    common = [f'model={tmp / "distill"}', f'adversarial.discriminator_init={tmp / "adapt"}']
    return run_stage('adversarial', tmp, f'output={tmp / output}', *common, *overrides, **kwargs)


def test_adversarial_stage_trains_and_its_checkpoint_streams_at_one_step(chain: Path) -> None:
    summary = adversarial(chain, 'adversarial', 'optim.steps=6', 'optim.warmup_steps=1')
    values = [v for k, v in summary.items() if k != 'steps']
    assert summary['steps'] == 6 and all(np.isfinite(values))
    assert summary['d_loss_last'] != summary['d_loss_first']  # the discriminator learns
    folder = chain / 'adversarial'
    checkpoint = load_checkpoint(folder)
    assert checkpoint.config.stage == 'adversarial' and checkpoint.config.generator.sampling_steps == 1
    card = (folder / CARD_FILE).read_text()
    assert 'student forcing' in card and 'discriminator pairing loss' in card and 'wall time' in card
    session = StreamingSession(checkpoint, seed=0)
    assert session.engine.sampling_steps == 1
    frames = [session.start(Pose.identity(), np.zeros(7))]
    frames += [session.step(Pose((0.01 * i, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)), np.zeros(7)) for i in range(1, 4)]
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)
    engine = StreamEngine(checkpoint, batch_size=2, device='cpu')
    engine.start(np.ones(2, dtype=bool), np.repeat(checkpoint.start_frame.numpy()[None], 2, axis=0))
    assert engine.step(np.tile(np.eye(3), (2, 1, 1)), np.zeros((2, 3))).shape == (2, 32, 32, 3)


def test_the_chain_trains_with_sink_rays_from_the_autoencoder_on(chain: Path) -> None:
    """The path of a chain with sink rays: the vae checkpoint widened, then every generator stage."""
    save_checkpoint(with_sink_rays(load_checkpoint(chain / 'vae'), 1.0), chain / 'vae_sink', weight_dtype=torch.float32)
    previous = chain / 'vae_sink'
    for stage in ('base', 'adapt', 'distill'):
        run_stage(stage, chain, f'model={previous}', f'output={chain / f"{stage}_sink"}', 'optim.steps=2')
        previous = chain / f'{stage}_sink'
    init = f'adversarial.discriminator_init={chain / "adapt_sink"}'
    summary = run_stage(
        'adversarial', chain, f'model={previous}', init, f'output={chain / "adv_sink"}', 'optim.steps=2'
    )
    assert summary['steps'] == 2 and np.isfinite(summary['g_loss_last'])
    checkpoint = load_checkpoint(chain / 'adv_sink')
    assert checkpoint.config.generator.sink_ray_origin_scale == 1.0 and checkpoint.generator.rays.num_channels == 12
    session = StreamingSession(checkpoint, seed=0)
    session.start(Pose.identity(), np.zeros(7))
    window = checkpoint.config.generator.window_frames
    for i in range(1, window + 3):  # past the window, where only the sink rays still relate the view to the sink
        frame = session.step(Pose((0.05 * i, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)), np.zeros(7))
    assert frame.shape == (32, 32, 3) and session.window_fill == window


def test_teacher_forcing_runs_for_the_ablation(chain: Path) -> None:
    summary = adversarial(chain, 'teacher', 'optim.steps=2', 'adversarial.forcing=teacher')
    assert summary['steps'] == 2 and np.isfinite(summary['g_loss_last'])
    assert 'teacher forcing' in (chain / 'teacher' / CARD_FILE).read_text()


def test_resume_repeats_an_uninterrupted_run(chain: Path) -> None:
    common = ['optim.steps=4', 'state_every=1', 'adversarial.d_steps=2']
    adversarial(chain, 'whole', *common)
    assert adversarial(chain, 'split', *common, stop_after=2) == {'steps': 2}
    adversarial(chain, 'split', *common, resume=True)
    for name in (MODEL_STATE, OPTIMIZER_STATE):  # both nets' weights, and RMSProp's averages of both
        a = load_file(str(chain / 'whole' / STATE_DIR / name))
        b = load_file(str(chain / 'split' / STATE_DIR / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    weights = load_file(str(chain / 'split' / STATE_DIR / MODEL_STATE))
    assert {key.split('.')[0] for key in weights} == {'generator', 'discriminator'}
    ends = json.loads((chain / 'split' / STATE_DIR / STATE_JSON).read_text())['scalars']['step_ends']
    assert len(ends) == 4 and ends == sorted(ends)  # one a step; the resumed steps' times go on


def test_the_discriminator_must_start_from_an_adapt_checkpoint(chain: Path) -> None:
    with pytest.raises(TrainError, match="is a 'distill' checkpoint; the discriminator starts from an 'adapt'"):
        adversarial(chain, 'bad-init', f'adversarial.discriminator_init={chain / "distill"}')
    with pytest.raises(TrainError, match="is a 'adapt' checkpoint; the adversarial stage starts from 'distill'"):
        adversarial(chain, 'bad-start', f'model={chain / "adapt"}')
    with pytest.raises(ConfigError, match=r'adversarial\.discriminator_init must be set'):
        load_train_config(TINY, 'adversarial', [f'model={chain / "distill"}', 'output=out'])
    with pytest.raises(ConfigError, match='segment_overlap must be in'):
        load_train_config(TINY, 'adversarial', ['adversarial.segment_overlap=3'])


def make_trainer(chain: Path, *overrides: str) -> Trainer:
    """A CPU trainer of the chain's distill generator and adapt discriminator, at its full rates."""
    config = load_train_config(
        TINY,
        'adversarial',
        [
            f'data.cache_dir={chain / "cache"}',
            *FAST,
            f'model={chain / "distill"}',
            f'output={chain / "unused"}',
            f'adversarial.discriminator_init={chain / "adapt"}',
            *overrides,
        ],
    )
    start = load_checkpoint(chain / 'distill')
    trainer = Trainer(
        config,
        start.config,
        start.generator,
        Discriminator(load_checkpoint(chain / 'adapt').generator),
        start.vae.requires_grad_(False),
        load_splits(config.data, start.config),
        torch.device('cpu'),
    )
    adv = config.adversarial
    for group, lr in zip(trainer.optimizer.param_groups, (adv.g_lr, adv.d_lr, adv.d_head_lr), strict=True):
        group['lr'] = lr
    return trainer


def test_the_discriminator_separates_noise_from_recorded_frames_within_a_few_steps(chain: Path) -> None:
    # The first GPU runs' pairing loss stayed at ln 2 for hundreds of steps: RMSProp moves each weight
    # by about lr per step, too little for the zero-initialised head at the trunk's fine-tuning rate;
    # the head has a rate of its own. With the generator frozen and its frames replaced by noise, a
    # working discriminator learns within steps.
    trainer = make_trainer(chain)
    device = trainer.device
    g = torch.Generator().manual_seed(0)
    sample = trainer.draw(batch(trainer.splits.train, 2, g, device), g, teacher=False)
    noise = torch.randn(sample.real[:, 1:].shape, generator=g)
    sample = sample._replace(fake=torch.cat([sample.real[:, :1], noise], dim=1))
    losses = [float(trainer.discriminator_update(sample, g)[0]) for _ in range(8)]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)  # the zero head: no opinion at first
    assert all(later < earlier for earlier, later in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.6, losses
    with torch.no_grad():
        for segment in trainer.plan:
            d_real, d_fake = judge(
                trainer.disc, sample, segment, [sequence(sample.real, segment), sequence(sample.fake, segment)]
            )
            assert (d_real > d_fake).all()


def test_without_regression_the_generator_update_is_the_papers(chain: Path) -> None:
    # The default weights (regression 0, adversarial 1) must leave the paper's recipe bit for bit:
    # the same loss and the same generator step as softplus(D(real) - D(fake)) alone.
    trainer, reference = make_trainer(chain), make_trainer(chain)
    g = torch.Generator().manual_seed(0)
    sample = trainer.draw(batch(trainer.splits.train, 2, g, trainer.device), g, teacher=False)
    adversarial, regression, _ = trainer.generator_update(sample).tolist()
    total = 0.0
    for segment, new in generate(reference.net, sample, reference.plan):
        loss = generator_loss(reference.disc, sample, segment, new) * reference.weight(segment)
        loss.backward(inputs=reference.params[GENERATOR])
        total += float(loss.detach())
    reference.update(GENERATOR)
    assert adversarial == pytest.approx(total, rel=1e-6) and regression > 0  # the regression loss is still measured
    for ours, theirs in zip(trainer.params[GENERATOR], reference.params[GENERATOR], strict=True):
        assert torch.equal(ours, theirs)


def test_pure_regression_reduces_the_rollout_error_without_a_discriminator(chain: Path) -> None:
    overrides = ['adversarial.adversarial_weight=0', 'adversarial.regression_weight=1', 'adversarial.g_lr=1.0e-3']
    # No discriminator_init: without the adversarial loss no discriminator is built.
    common = [f'model={chain / "distill"}', f'output={chain / "regression"}']
    summary = run_stage('adversarial', chain, *common, 'optim.steps=3', 'optim.warmup_steps=0', *overrides)
    assert summary['rollout_mse'] < 0.95 * summary['start_rollout_mse'], summary  # the held-out student-forced error
    assert all(math.isnan(summary[k]) for k in ('d_loss_first', 'd_loss_last', 'g_loss_first', 'g_loss_last'))
    weights = load_file(str(chain / 'regression' / STATE_DIR / MODEL_STATE))
    assert weights and not any(key.startswith(f'{DISCRIMINATOR}.') for key in weights)
    card = (chain / 'regression' / CARD_FILE).read_text()
    assert 'regression post-training, student forcing' in card and 'regression loss' in card
    assert 'discriminator pairing loss' not in card


def test_the_input_projection_can_train_at_its_own_rate(chain: Path) -> None:
    """At g_lr ~ 0 and g_input_lr 1e-3 only patch_embed (where grown inputs start at zero) moves."""
    overrides = ['adversarial.adversarial_weight=0', 'adversarial.regression_weight=1', 'adversarial.g_lr=1.0e-12']
    common = [f'model={chain / "distill"}', f'output={chain / "input_rate"}', 'adversarial.g_input_lr=1.0e-3']
    run_stage('adversarial', chain, *common, 'optim.steps=2', 'optim.warmup_steps=0', *overrides)
    before = load_checkpoint(chain / 'distill').generator.state_dict()
    after = load_checkpoint(chain / 'input_rate').generator.state_dict()
    moved = {name for name, tensor in before.items() if (after[name] - tensor).abs().max() > 1e-7}
    assert moved == {'patch_embed.weight', 'patch_embed.bias'}
    card = (chain / 'input_rate' / CARD_FILE).read_text()
    assert 'lr 1e-12 (generator) / 0.001 (its input projection)' in card


def test_pure_regression_can_start_from_the_flow_model(chain: Path) -> None:
    """Without a discriminator, the adapt model's one pass from noise is a generator to regress."""
    overrides = ['adversarial.adversarial_weight=0', 'adversarial.regression_weight=1', 'optim.steps=1']
    run_stage('adversarial', chain, f'model={chain / "adapt"}', f'output={chain / "from-adapt"}', *overrides)
    streamed = load_checkpoint(chain / 'from-adapt').config
    assert streamed.stage == 'adversarial' and streamed.generator.sampling_steps == 1


@pytest.mark.parametrize(('regression', 'adversarial'), [(-1.0, 1.0), (1.0, -0.5), (0.0, 0.0)])
def test_the_loss_weights_must_be_non_negative_and_not_both_zero(regression: float, adversarial: float) -> None:
    message = rf'regression_weight and adversarial_weight must be >= 0 and not both 0 .* got {regression} and'
    with pytest.raises(ConfigError, match=message):
        AdversarialConfig(regression_weight=regression, adversarial_weight=adversarial)


def test_forcing_gap_tool_scores_both_rollouts_per_frame(chain: Path, tmp_path: Path) -> None:
    tool = load_tool('forcing_gap')
    output = tmp_path / 'gap.json'
    bag = str(REPO / 'aapt_ros' / 'data' / 'samples' / 'sim_episode')
    argv = ['--model', str(chain / 'distill'), '--bags', bag, '--clip-length', '5', '--clips', '2']
    assert tool.main([*argv, '--cache-dir', str(chain / 'cache'), '--output', str(output)]) == 0
    gap = json.loads(output.read_text())
    assert len(gap['teacher_forced']) == len(gap['student_forced']) == 4  # the frames after the sink
    # The first generated frame recycles the sink either way; later ones differ in what they recycle.
    assert gap['teacher_forced'][0] == pytest.approx(gap['student_forced'][0])
    assert all(math.isfinite(x) for x in gap['teacher_forced'] + gap['student_forced'])
    with pytest.raises(SystemExit):  # never overwrites a result
        tool.main([*argv, '--output', str(output)])


def test_the_step_profiler_times_the_stages_own_rollout_and_update(chain: Path, tmp_path: Path) -> None:
    output = tmp_path / 'profile.json'
    argv = [str(TINY), '--model', str(chain / 'distill'), '--output', str(output), '--steps', '2', '--warm', '1']
    regression = ['adversarial.adversarial_weight=0', 'adversarial.regression_weight=1']
    overrides = [f'data.cache_dir={chain / "cache"}', *FAST, *regression]
    assert load_tool('profile_train_step').main([*argv, *(f'--set={o}' for o in overrides)]) == 0
    parts = json.loads(output.read_text())[TINY.stem]
    assert all(parts[part] > 0 for part in ('batch', 'rollout', 'segments'))
    assert parts['step'] >= parts['rollout'] + parts['segments'] and parts['clip_length'] == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a GPU')
def test_the_graphed_rollout_is_the_eager_one_again_and_after_an_update(tmp_path: Path) -> None:
    from tests.conftest import save_tiny_model

    net = load_checkpoint(save_tiny_model(tmp_path / 'tiny')).generator.cuda()
    graphs = RolloutGraphs(net)
    g = torch.Generator().manual_seed(0)
    c, h, w = net.config.vae.latent_channels, net.config.latent_height, net.config.latent_width
    rays = net.conditioning(torch.eye(3).expand(6, 3, 3), torch.zeros(6, 3)).cuda()  # (6, R, h, w): no motion
    actions = torch.zeros(3, 6, len(net.config.generator.action_names), device='cuda')
    t = torch.tensor([[0.0] + [1.0] * 5] * 3, device='cuda')
    for teacher in (False, True, False):
        noisy = torch.randn(3, 6, c, h, w, generator=g).cuda()
        inputs = (noisy, noisy, rays.expand(3, -1, -1, -1, -1), actions, t)
        graphed = rollout(net, *inputs, teacher=teacher, cache_dtype=torch.float32, graphs=graphs)
        torch.cuda.synchronize()  # eager allocations between replays must not land in what the graph reads
        eager = rollout(net, *inputs, teacher=teacher, cache_dtype=torch.float32)
        torch.testing.assert_close(graphed, eager)
        with torch.no_grad():  # an optimiser updates weights in place: the graph reads the new ones
            next(net.parameters()).mul_(1.01)
