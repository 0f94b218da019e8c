"""Stage ``adversarial``: autoregressive adversarial post-training (BRIEF section 2, step 3; AAPT sec. 3.3-3.4).

Generator: the ``distill`` student, trained to make each frame in ONE pass from noise at t = 1,
as the engine runs at ``sampling_steps`` 1. Discriminator: the ``adapt`` network with a per-frame
logit (``discriminator.py``). Per step, on recorded clips of data.clip_length frames (frame 0 is
the recorded sink, fed clean at t = 0 as ``StreamEngine.start`` does):

1. Rollout, no gradient, exactly as the engine runs: frame by frame with ``step`` and a KV
   cache; frame i's recycled input is the generator's own output for frame i - 1 (student
   forcing) or the recorded latent (teacher forcing: ``adversarial.forcing``, the ablation).
2. Discriminator update: relativistic pairing per frame (R3GAN), softplus(D(fake) - D(real)),
   real and generated frames paired under the same poses and actions, plus the approximated
   R1 and R2, lambda (D(x) - D(x + sigma n))^2 on real and on generated frames.
3. Generator update: softplus(D(real) - D(fake)). With the recycled inputs fixed by step 1 and
   detached, the sequential rollout equals ONE block-causal pass over the clip, since frame i's
   keys and values depend only on frames <= i: back-propagating through that pass is
   back-propagating through the KV cache (tested against the rollout).

Our addition, not the paper's: ``regression_weight`` adds to step 3 the float32 latent MSE
between each generated frame and the recorded frame of the same poses and actions. Our measured
loss is compounding error (one step is at 26-28 dB teacher-forced, but each model's own rollout
loses about 6 dB within 4 frames: docs/training); regressing the student-forced rollout, whose
recycled inputs are the model's own outputs, trains that drift away directly, as DAgger or
scheduled sampling do. ``adversarial_weight`` 0 leaves the discriminator out (step 2 and the
judging in step 3): a cheaper, pure regression stage.

Long rollouts go by segments in steps 2 and 3: segment k shows the discriminator
``segment_frames`` frames, of which the first ``segment_overlap`` repeat the end of segment k - 1
as context (judged once, in the earlier segment). The generator recomputes only the new frames,
attending to the detached keys and values of earlier ones (``KVPrefix``), and each segment is
back-propagated before the next, so memory is bounded by the segment, not the rollout.

Both nets use RMSProp (alpha 0.9, paper) through one optimiser with a generator and a
discriminator param group: a phase's backward fills only its own net's gradients and RMSProp
skips parameters without one, so each phase's step moves one net, and the resumable state is
the pickle-free ``train_state/`` of the other stages.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from aapt_ros.data.clips import ACTIONS, FRAMES
from aapt_ros.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from aapt_ros.model.config import ModelConfig
from aapt_ros.model.generator import CausalGenerator, KVPrefix
from aapt_ros.model.kv_cache import KVCache
from aapt_ros.model.sampling import velocity_to_x0
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.checkpoints import generator_checkpoint, load_state, save_state, write_outputs
from aapt_ros.training.config import AdversarialConfig, TrainConfig, TrainError
from aapt_ros.training.data import Clip, Splits, batch, load_splits, step_generator
from aapt_ros.training.discriminator import Discriminator
from aapt_ros.training.flow_stage import VAL_SEED_OFFSET, clip_latents, clip_times, latent_shape, load_start, noised
from aapt_ros.training.loop import learning_rate, make_logger, mean_first_last, resolve_device
from aapt_ros.training.rollout_graphs import RolloutGraphs

GENERATOR, DISCRIMINATOR = 'generator', 'discriminator'  # module names, and the optimiser's group order
# Per step, in Trainer.step's order. g_loss is the generator's adversarial loss alone, g_regression
# the latent MSE to the recorded frames, each before its weight; values not measured are NaN.
LOGGED = ('d_loss', 'r1', 'r2', 'd_grad_norm', 'g_loss', 'g_regression', 'g_grad_norm')


class Segment(NamedTuple):
    context: int  # first frame the discriminator sees after the sink
    start: int  # first frame judged and generated with gradient
    end: int  # one past the last frame


def segments(num_frames: int, length: int, overlap: int) -> list[Segment]:
    """Segments covering frames 1 .. num_frames - 1 (frame 0 is the sink): each shows the
    discriminator ``length`` frames (fewer at the end), the first ``overlap`` of them repeated
    from the segment before."""
    plan, start = [], 1
    while start < num_frames:
        context = max(1, start - overlap)
        end = min(context + length, num_frames)
        plan.append(Segment(context, start, end))
        start = end
    return plan


class Sample(NamedTuple):
    """A batch of recorded clips and the generator's rollout on them; latents (B, F, C, h, w)."""

    real: torch.Tensor  # encoded recorded frames; frame 0 is the sink
    fake: torch.Tensor  # the rollout (no gradient); frame 0 is the recorded sink
    noisy: torch.Tensor  # the generator's input: noise at t = 1, the clean sink at t = 0
    recycled: torch.Tensor  # each frame's recycled input: fake or real frame i - 1 (frame 0: itself)
    t: torch.Tensor  # (B, F) 1, and 0 for the sink
    rays: torch.Tensor  # (B, F, R, h, w)
    actions: torch.Tensor  # (B, F, A)


@torch.no_grad()
def rollout(
    net: CausalGenerator,
    noisy: torch.Tensor,
    recorded: torch.Tensor,
    rays: torch.Tensor,
    actions: torch.Tensor,
    t: torch.Tensor,
    *,
    teacher: bool,
    cache_dtype: torch.dtype,
    graphs: RolloutGraphs | None = None,
) -> torch.Tensor:
    """The engine's rollout at one pass per frame: x0 of every frame, (B, F, C, h, w) float32.

    Frame 0 (noisy = the recorded sink, t = 0) enters the KV cache as in ``StreamEngine.start``;
    frame i >= 1 is x0 = noise - v(noise, recycled, t = 1). recorded: (B, F, C, h, w) recorded
    latents, the recycled inputs under teacher forcing (frame i - 1's; the sink's for frame 0).
    With ``graphs`` (``net``'s), on CUDA each frame replays a captured step instead of running it.
    """
    b, f = noisy.shape[:2]
    step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    if graphs is not None and noisy.is_cuda:
        step = graphs.frame_step(noisy, rays, actions, t, cache_dtype)
    else:
        cache = KVCache.allocate(net.config, b, noisy.device, cache_dtype)
        every = torch.ones(b, dtype=torch.bool, device=noisy.device)

        def step(
            frame: torch.Tensor,
            previous: torch.Tensor,
            frame_rays: torch.Tensor,
            action: torch.Tensor,
            time: torch.Tensor,
        ) -> torch.Tensor:
            velocity = net.step(frame, previous, frame_rays, action, time, cache, commit=every)
            return velocity_to_x0(frame, velocity, time)  # the sink: t = 0 gives it back exactly

    frames: list[torch.Tensor] = []
    for i in range(f):
        previous = recorded[:, max(i - 1, 0)] if teacher or i == 0 else frames[-1]
        frames.append(step(noisy[:, i], previous, rays[:, i], actions[:, i], t[:, i]))
    return torch.stack(frames, dim=1)


def draw_sample(
    net: CausalGenerator,
    vae: VideoAutoencoder,
    clips: Clip,
    noise: torch.Tensor,
    *,
    teacher: bool,
    cache_dtype: torch.dtype,
    graphs: RolloutGraphs | None = None,
) -> Sample:
    """Encode the clips and roll the generator out on them; noise (B, F, C, h, w) on their device."""
    real, recorded_previous, rays = clip_latents(net, vae, clips, recycle=True)
    b, f = real.shape[:2]
    t = clip_times(torch.ones(b), f, real.device)
    noisy = noised(real, noise, t)
    actions = clips[ACTIONS]
    fake = rollout(net, noisy, real, rays, actions, t, teacher=teacher, cache_dtype=cache_dtype, graphs=graphs)
    recycled = recorded_previous if teacher else torch.cat([real[:, :1], fake[:, :-1]], dim=1)
    return Sample(real, fake, noisy, recycled, t, rays, actions)


def generate(net: CausalGenerator, sample: Sample, plan: list[Segment]) -> Iterator[tuple[Segment, torch.Tensor]]:
    """Recompute the rollout segment by segment (with gradient when enabled): yields each
    segment and the x0 of its new frames ``start .. end - 1``, (B, end - start, C, h, w).

    The first pass also runs the sink. Only the detached keys and values of earlier frames
    carry over, so back-propagating a segment before taking the next keeps memory bounded.
    """
    prefix: KVPrefix | None = None
    for segment in plan:
        first = 0 if prefix is None else segment.start
        assert prefix is None or prefix.end == segment.start, 'segments must be contiguous'
        window = slice(first, segment.end)
        noisy, t = sample.noisy[:, window], sample.t[:, window]
        velocity, prefix = net.forward_segment(
            noisy, sample.recycled[:, window], sample.rays[:, window], sample.actions[:, window], t, prefix
        )
        new = segment.start - first
        yield segment, velocity_to_x0(noisy[:, new:], velocity[:, new:], t[:, -1])


def judge(
    disc: Discriminator, sample: Sample, segment: Segment, sequences: list[tuple[torch.Tensor, torch.Tensor]]
) -> list[torch.Tensor]:
    """Logits (B, end - start) of the new frames of each sequence, all in one discriminator pass.

    sequences: (frames context .. end - 1 (B, end - context, C, h, w), frame context - 1 (B, C, h, w)).
    """
    k = len(sequences)
    conditions = [
        torch.cat([x[:, :1], x[:, segment.context : segment.end]], dim=1) for x in (sample.rays, sample.actions)
    ]
    rays, actions = (c.repeat(k, *([1] * (c.dim() - 1))) for c in conditions)  # (k B, 1 + S, ...)
    frames = torch.cat([s[0] for s in sequences])  # (k B, S, C, h, w)
    before = torch.cat([s[1] for s in sequences])  # (k B, C, h, w)
    sink = sample.real[:, 0].repeat(k, 1, 1, 1)
    logits = disc(frames, before, sink, rays, actions)[:, segment.start - segment.context :]
    return list(logits.chunk(k))


def sequence(latents: torch.Tensor, segment: Segment) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames the discriminator sees in ``segment`` and the one before them."""
    return latents[:, segment.context : segment.end], latents[:, segment.context - 1]


def discriminator_loss(
    disc: Discriminator, sample: Sample, segment: Segment, perturbation: torch.Tensor, adv: AdversarialConfig
) -> torch.Tensor:
    """(3,) the pairing loss, the approximated R1 and R2 of one segment; perturbation (2, B, F, C, h, w) ~ N(0, 1)."""
    (real, before_real), (fake, before_fake) = sequence(sample.real, segment), sequence(sample.fake, segment)
    n_real, n_fake = (adv.sigma * n[:, segment.context : segment.end] for n in perturbation)
    d_real, d_fake, d_real_n, d_fake_n = judge(
        disc,
        sample,
        segment,
        [(real, before_real), (fake, before_fake), (real + n_real, before_real), (fake + n_fake, before_fake)],
    )
    pairing = F.softplus(d_fake - d_real).mean()
    return torch.stack([pairing, (d_real - d_real_n).square().mean(), (d_fake - d_fake_n).square().mean()])


def generator_loss(disc: Discriminator, sample: Sample, segment: Segment, new: torch.Tensor) -> torch.Tensor:
    """softplus(D(real) - D(fake)) of one segment's new frames ``new`` (B, end - start, C, h, w)."""
    with torch.no_grad():
        (d_real,) = judge(disc, sample, segment, [sequence(sample.real, segment)])
    context, before = sequence(sample.fake, segment)
    frames = torch.cat([context[:, : segment.start - segment.context], new], dim=1)
    (d_fake,) = judge(disc, sample, segment, [(frames, before)])
    return F.softplus(d_real - d_fake).mean()


def regression_loss(sample: Sample, segment: Segment, new: torch.Tensor) -> torch.Tensor:
    """Latent MSE of one segment's new frames ``new`` (B, end - start, C, h, w) to the recorded
    frames, in float32: bfloat16 would round away the small errors it is there to reduce."""
    return F.mse_loss(new.float(), sample.real[:, segment.start : segment.end].float())


def load_discriminator_start(path: Path, generator_config: ModelConfig) -> Checkpoint:
    """The ``adapt`` checkpoint the discriminator starts from, checked against the generator's."""
    what = 'adversarial.discriminator_init'
    try:
        start = load_checkpoint(path)
    except CheckpointError as err:
        raise TrainError(f'{what}: the discriminator starts from an adapt checkpoint: {err}') from None
    if start.config.stage != 'adapt':
        raise TrainError(
            f"{what}: {path} is a {start.config.stage!r} checkpoint; the discriminator starts from an 'adapt' "
            'checkpoint (the stage-1 weights, AAPT sec. 3.3): give the folder aapt-train adapt wrote'
        )

    def inputs(config: ModelConfig) -> tuple[Any, ...]:  # what the discriminator reads must mean the same
        # A light decoder (stage decoder) leaves the latents as they are.
        vae = config.vae.without_light_decoder()
        g = config.generator
        geometry = (
            g.sink_warp_depths,
            g.arm_chain,
            g.arm_base_plane,
            g.sink_warp_base_plane,
            g.sink_warp_ground_below_base,
            g.sink_warp_pixels,
        )
        rays = (g.ray_origin_scale, g.sink_ray_origin_scale, *geometry)
        return config.camera, vae, g.action_names, rays

    if inputs(start.config) != inputs(generator_config):
        raise TrainError(
            f'{what}: {path} has another camera, ray input, autoencoder or action list than the generator '
            f'{generator_config.name!r}; use the adapt checkpoint of the same chain'
        )
    return start


@dataclass
class AdversarialStats:
    step: int = 0
    wall_s: float = 0.0
    start_rollout_mse: float = math.nan  # held-out rollout error of the starting generator
    values: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in LOGGED})  # one per step
    step_ends: list[float] = field(default_factory=list)  # wall_s at the end of each step (as RunStats')

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Trainer:
    """The generator, the discriminator, their optimiser and one training step of each."""

    def __init__(
        self,
        config: TrainConfig,
        model_config: ModelConfig,
        net: CausalGenerator,
        disc: Discriminator | None,
        vae: VideoAutoencoder,
        splits: Splits,
        device: torch.device,
    ):
        """``disc`` None (at adversarial_weight 0): the generator alone, a pure regression stage."""
        adv = self.adv = config.adversarial
        self.config, self.model_config, self.device = config, model_config, device
        self.net, self.disc, self.vae, self.splits = net, disc, vae, splits
        nets: dict[str, nn.Module] = {GENERATOR: net} if disc is None else {GENERATOR: net, DISCRIMINATOR: disc}
        self.nets = nn.ModuleDict(nets)  # one state dict for train_state/
        self.params = {name: list(module.parameters()) for name, module in self.nets.items()}
        groups: list[dict[str, Any]] = [{'params': self.params[GENERATOR], 'lr': adv.g_lr}]
        rates = [adv.g_lr]
        if adv.g_input_lr:  # the input projection apart, at its own rate
            projection = {id(p) for p in net.patch_embed.parameters()}
            groups = [
                {'params': [p for p in self.params[GENERATOR] if id(p) not in projection], 'lr': adv.g_lr},
                {'params': list(net.patch_embed.parameters()), 'lr': adv.g_input_lr},
            ]
            rates.append(adv.g_input_lr)
        if disc is not None:
            head = {id(p) for p in disc.head_parameters()}
            groups += [
                {'params': [p for p in self.params[DISCRIMINATOR] if id(p) not in head], 'lr': adv.d_lr},
                {'params': disc.head_parameters(), 'lr': adv.d_head_lr},
            ]
        self.optimizer = torch.optim.RMSprop(groups, alpha=adv.rmsprop_alpha)
        self.rates = (*rates, adv.d_lr, adv.d_head_lr)[: len(groups)]  # per group, before the schedule
        self.use_bf16 = config.bf16 and device.type == 'cuda'
        self.cache_dtype = torch.bfloat16 if self.use_bf16 else torch.float32
        self.plan = segments(config.data.clip_length, adv.segment_frames, adv.segment_overlap)
        self.graphs = RolloutGraphs(net) if config.cuda_graph_rollout and device.type == 'cuda' else None

    @property
    def judged(self) -> bool:
        """Whether a discriminator runs (adversarial_weight > 0); without one only the generator trains."""
        return self.disc is not None

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def weight(self, segment: Segment) -> float:
        """The segment's share of the generated frames: segment losses add up to the per-frame mean."""
        return (segment.end - segment.start) / (self.config.data.clip_length - 1)

    def noise(self, generator: torch.Generator, b: int, copies: int) -> torch.Tensor:
        """(copies, B, F, C, h, w) ~ N(0, 1), drawn on the CPU: the same on every device."""
        shape = latent_shape(self.model_config, b, self.config.data.clip_length)
        return torch.randn(copies, *shape, generator=generator).to(self.device)

    def draw(self, clips: Clip, generator: torch.Generator, *, teacher: bool) -> Sample:
        noise = self.noise(generator, clips[FRAMES].shape[0], copies=1)[0]
        with self.autocast():
            return draw_sample(
                self.net, self.vae, clips, noise, teacher=teacher, cache_dtype=self.cache_dtype, graphs=self.graphs
            )

    def update(self, name: str) -> torch.Tensor:
        """Clip and apply the gradients of one net; returns () its gradient norm."""
        norm = torch.nn.utils.clip_grad_norm_(self.params[name], self.config.optim.grad_clip or math.inf)
        self.optimizer.step()  # moves only the parameters that have a gradient: this net's
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def discriminator_update(self, sample: Sample, generator: torch.Generator) -> torch.Tensor:
        """(4,) the pairing loss, R1, R2 (before lambda) and the gradient norm, detached."""
        adv, disc = self.adv, self.disc
        assert disc is not None, 'no discriminator at adversarial_weight 0'
        perturbation = self.noise(generator, sample.real.shape[0], copies=2)
        total = torch.zeros(3, device=self.device)
        for segment in self.plan:
            with self.autocast():
                terms = discriminator_loss(disc, sample, segment, perturbation, adv) * self.weight(segment)
                loss = terms[0] + adv.r1_lambda * terms[1] + adv.r2_lambda * terms[2]
            loss.backward(inputs=self.params[DISCRIMINATOR])  # type: ignore[no-untyped-call]
            total += terms.detach()
        return torch.cat([total, self.update(DISCRIMINATOR)[None]])

    def generator_update(self, sample: Sample) -> torch.Tensor:
        """(3,) the adversarial loss (NaN without the discriminator), the regression loss and the
        gradient norm, detached; back-propagates segment by segment. The regression loss is
        measured at any weight: at 0 it still shows the student-forced error, nearly for free."""
        adv = self.adv
        total = torch.tensor([0.0 if self.judged else math.nan, 0.0], device=self.device)
        passes = generate(self.net, sample, self.plan)
        for _ in self.plan:
            with self.autocast():  # a segment's generator pass runs when the iterator advances
                segment, new = next(passes)
                regression = regression_loss(sample, segment, new) * self.weight(segment)
                loss = adv.regression_weight * regression
                if self.disc is not None:
                    adversarial = generator_loss(self.disc, sample, segment, new) * self.weight(segment)
                    loss = loss + adv.adversarial_weight * adversarial
                    total[0] += adversarial.detach()
            loss.backward(inputs=self.params[GENERATOR])  # type: ignore[no-untyped-call]
            total[1] += regression.detach()
        return torch.cat([total, self.update(GENERATOR)[None]])

    def step(self, step: int) -> torch.Tensor:
        """Training step ``step``: ``d_steps`` discriminator updates (none at adversarial_weight 0),
        then a generator update on the last rollout (the generator has not changed since). Returns
        the ``LOGGED`` values."""
        optim, adv = self.config.optim, self.adv
        for group, lr in zip(self.optimizer.param_groups, self.rates, strict=True):
            group['lr'] = learning_rate(dataclasses.replace(optim, lr=lr), step)
        generator = step_generator(optim.seed, step)
        # Without a discriminator its values are NaN, not 0, which would read as a perfect one.
        d_values = torch.full((4,), math.nan, device=self.device)
        for _ in range(adv.d_steps if self.judged else 1):  # without one, only the generator's batch
            clips = batch(self.splits.train, optim.batch_size, generator, self.device)
            sample = self.draw(clips, generator, teacher=adv.forcing == 'teacher')
            if self.judged:
                d_values = self.discriminator_update(sample, generator)
        return torch.cat([d_values, self.generator_update(sample)])

    @torch.no_grad()
    def rollout_error(self) -> float:
        """Held-out latent MSE of student-forced rollouts (as at inference) against the recorded frames."""
        errors = []
        for k in range(self.config.val_batches):
            generator = step_generator(self.config.optim.seed, VAL_SEED_OFFSET - k)
            clips = batch(self.splits.val, self.config.optim.batch_size, generator, self.device)
            sample = self.draw(clips, generator, teacher=False)
            errors.append(F.mse_loss(sample.fake[:, 1:], sample.real[:, 1:]))
        return float(torch.stack(errors).mean())


def make_trainer(config: TrainConfig) -> tuple[Trainer, Checkpoint]:
    """The stage's trainer on ``config.model``, and that start checkpoint (the result's card and
    checkpoint read it); the data loaded, the nets on ``config.device``."""
    adv = config.adversarial
    start = load_start(Path(config.model), 'adversarial' if adv.adversarial_weight else 'adversarial_regression')
    model_config = dataclasses.replace(start.config, stage='adversarial')  # streams at 1 step: STAGE_SAMPLING_STEPS
    # At adversarial_weight 0 no discriminator is built, so no adapt checkpoint is needed.
    disc_start = (
        load_discriminator_start(Path(adv.discriminator_init), start.config) if adv.adversarial_weight else None
    )
    device = resolve_device(config.device)
    splits = load_splits(config.data, model_config)
    vae = start.vae.to(device).eval().requires_grad_(False)
    trainer = Trainer(
        config,
        model_config,
        start.generator.to(device),
        None if disc_start is None else Discriminator(disc_start.generator).to(device),
        vae,
        splits,
        device,
    )
    return trainer, start


def run(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Post-train the distilled generator adversarially; write the checkpoint and card to ``config.output``."""
    adv, optim = config.adversarial, config.optim
    folder = Path(config.output)
    trainer, start = make_trainer(config)
    model_config, device, splits = trainer.model_config, trainer.device, trainer.splits
    stats = AdversarialStats()
    if resume:
        stats.step, scalars = load_state(folder, trainer.nets, trainer.optimizer)
        stats.wall_s, stats.start_rollout_mse = float(scalars['wall_s']), float(scalars['start_rollout_mse'])
        stats.values = {name: list(scalars['values'][name]) for name in LOGGED}
        stats.step_ends = list(scalars.get('step_ends', []))
    else:
        stats.start_rollout_mse = trainer.rollout_error()
    end = min(optim.steps, stop_after) if stop_after is not None else optim.steps
    logger = make_logger(folder)
    started = time.perf_counter() - stats.wall_s
    try:
        with tqdm(total=end, initial=stats.step, desc='aapt-train adversarial', dynamic_ncols=True) as bar:
            while stats.step < end:
                values = dict(zip(LOGGED, trainer.step(stats.step).tolist(), strict=True))  # the one host sync
                for name, value in values.items():
                    stats.values[name].append(value)
                stats.step += 1
                stats.wall_s = time.perf_counter() - started
                stats.step_ends.append(stats.wall_s)
                bar.update(1)
                if stats.step % config.log_every == 0 or stats.step == end:
                    bar.set_postfix(
                        d=f'{values["d_loss"]:.3f}', g=f'{values["g_loss"]:.3f}', reg=f'{values["g_regression"]:.4f}'
                    )
                    for name, value in values.items():
                        logger.scalar(f'train/{name}', value, stats.step)
                    logger.scalar('train/g_lr', trainer.optimizer.param_groups[0]['lr'], stats.step)
                if config.val_every and stats.step % config.val_every == 0:
                    logger.scalar('val/rollout_mse', trainer.rollout_error(), stats.step)
                if stats.step % config.state_every == 0 or stats.step == end:
                    save_state(folder, trainer.nets, trainer.optimizer, stats.step, stats.as_dict())
    finally:
        logger.close()
    trainer.nets.eval()
    if stats.step < optim.steps:  # stopped early (--stop-after): the state is saved, no checkpoint yet
        return {'steps': stats.step}
    val = trainer.rollout_error()
    checkpoint = generator_checkpoint(model_config, trainer.net, start)
    (d_first, d_last), (g_first, g_last), (r_first, r_last) = (
        mean_first_last(stats.values[name]) for name in ('d_loss', 'g_loss', 'g_regression')
    )
    objective = [f'{adv.adversarial_weight:g} x adversarial'] if trainer.judged else []
    objective += [f'{adv.regression_weight:g} x latent MSE to the recorded frames'] if adv.regression_weight > 0 else []
    card = {
        'method': (
            f'{"adversarial" if trainer.judged else "regression"} post-training, {adv.forcing} forcing, one pass '
            f'per frame from noise; generator loss {" + ".join(objective)}'
        ),
        'steps': f'{stats.step} x batch {optim.batch_size}, {adv.d_steps if trainer.judged else 0} discriminator '
        'update(s) per step',
        'wall time': f'{stats.wall_s:.1f} s on {device}',
        'segments': f'{adv.segment_frames} frames with {adv.segment_overlap} of overlap ({len(trainer.plan)} per clip)',
    }
    if adv.regression_weight > 0:
        card['regression loss (latent MSE of the rollout), first -> last 5 steps'] = f'{r_first:.4f} -> {r_last:.4f}'
    if trainer.judged:
        card |= {
            'discriminator': f'from `{adv.discriminator_init}`',
            'discriminator pairing loss, first -> last 5 steps': f'{d_first:.4f} -> {d_last:.4f}',
            'generator adversarial loss, first -> last 5 steps': f'{g_first:.4f} -> {g_last:.4f}',
            'approximated R1 / R2': f'lambda {adv.r1_lambda:g} / {adv.r2_lambda:g}, sigma {adv.sigma:g}',
        }
    rates = (
        f'{adv.g_lr:g} (generator)'
        + (f' / {adv.g_input_lr:g} (its input projection)' if adv.g_input_lr else '')
        + (f' / {adv.d_lr:g} (discriminator) / {adv.d_head_lr:g} (its head)' if trainer.judged else '')
    )
    card['optimiser'] = f'RMSProp alpha {adv.rmsprop_alpha:g}, lr {rates}'
    card['held-out rollout latent MSE, start -> end (drift)'] = f'{stats.start_rollout_mse:.4f} -> {val:.4f}'
    write_outputs(folder, checkpoint, config, card, splits.bags)
    return {
        'steps': stats.step,
        'd_loss_first': d_first,
        'd_loss_last': d_last,
        'g_loss_first': g_first,
        'g_loss_last': g_last,
        'regression_first': r_first,
        'regression_last': r_last,
        'start_rollout_mse': stats.start_rollout_mse,
        'rollout_mse': val,
    }
