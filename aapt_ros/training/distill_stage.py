"""Stage ``distill``: consistency distillation of the ``adapt`` model (BRIEF section 2, step 2).

Teacher: the ``adapt`` generator, frozen. Student: a copy of it, trained. No classifier-free
guidance, no EMA target (the target is the student itself under stop-gradient). Per clip, with
teacher forcing as in ``adapt`` (block-causal mask, ground-truth recycled previous frame, clean
sink frame 0 at t = 0, the same t for all other frames):

- grid 1 = t_0 > t_1 > ... > t_N = 0: ``shifted_timesteps(N, generator.timestep_shift)``,
  N = ``distill.schedule_steps``; k ~ U{0, ..., N - 1}, t = t_k, t' = t_{k+1};
- x_t = (1 - t) x0 + t noise;
- teacher Euler step: x_t' = x_t + (t' - t) v_teacher(x_t, t);
- the student's x0 prediction (its consistency function) f(x, t) = x - t v_student(x, t);
- loss = MSE(f(x_t, t), stopgrad f(x_t', t')) over frames 1 .. F - 1.

At t' = 0, f(x_t', 0) = x_t' = x_t - t v_teacher(x_t, t): the target is the teacher's x0, which
anchors the chain. A student that is consistent along the teacher's trajectories maps noise to
x0 in one pass, so its checkpoint streams at ``sampling_steps=1`` (and more).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from aapt_ros.data.clips import ACTIONS, FRAMES
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.sampling import shifted_timesteps, velocity_to_x0
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.checkpoints import generator_checkpoint, write_outputs
from aapt_ros.training.config import TrainConfig
from aapt_ros.training.data import Clip, batch, load_splits, rank_share, step_generator
from aapt_ros.training.flow_stage import VAL_SEED_OFFSET, clip_latents, clip_times, latent_shape, load_start, noised
from aapt_ros.training.loop import mean_first_last, resolve_device, train, writes_outputs


def x0_prediction(net: CausalGenerator, inputs: tuple[torch.Tensor, ...], t_clip: torch.Tensor) -> torch.Tensor:
    """f(x_t, t) = x_t - t v(x_t, t) of frames 1 .. F - 1: (B, F - 1, C, h, w), float32 (float64 inside)."""
    noisy = inputs[0]
    velocity = net.forward_train(*inputs)  # (B, F, C, h, w), block-causal
    return velocity_to_x0(noisy[:, 1:].float(), velocity[:, 1:].float(), t_clip)


def distill_loss(
    student: CausalGenerator,
    teacher: CausalGenerator,
    vae: VideoAutoencoder,
    clips: Clip,
    k: torch.Tensor,
    grid: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """The consistency loss of the module docstring for grid indices k (B,) and noise (B, F, C, h, w)."""
    x0, previous, rays = clip_latents(student, vae, clips, recycle=True)
    f = x0.shape[1]
    t_clip, t_next = grid[k].to(x0.device), grid[k + 1].to(x0.device)  # (B,) float64
    t = clip_times(t_clip.float(), f, x0.device)  # (B, F), sink at 0
    x_t = noised(x0, noise, t)
    with torch.no_grad():
        v_teacher = teacher.forward_train(x_t, previous, rays, clips[ACTIONS], t)  # (B, F, C, h, w)
        step = (t_next - t_clip)[:, None, None, None, None]  # (B, 1, 1, 1, 1), negative
        x_next = (x_t.double() + step * v_teacher.double()).float()
        x_next[:, 0] = x0[:, 0]  # the sink is clean at every t
        t_prime = clip_times(t_next.float(), f, x0.device)
        target = x0_prediction(student, (x_next, previous, rays, clips[ACTIONS], t_prime), t_next)
    prediction = x0_prediction(student, (x_t, previous, rays, clips[ACTIONS], t), t_clip)
    return F.mse_loss(prediction, target)


def one_step_x0_error(net: CausalGenerator, vae: VideoAutoencoder, clips: Clip, noise: torch.Tensor) -> float:
    """MSE between x0 predicted in one pass from pure noise (t = 1, teacher-forced) and the true x0."""
    x0, previous, rays = clip_latents(net, vae, clips, recycle=True)
    t_clip = torch.ones(x0.shape[0], device=x0.device)
    t = clip_times(t_clip, x0.shape[1], x0.device)
    prediction = x0_prediction(net, (noised(x0, noise, t), previous, rays, clips[ACTIONS], t), t_clip)
    return float(F.mse_loss(prediction, x0[:, 1:]))


def run(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Distill the adapt generator into a few-step student; write the checkpoint and card to ``config.output``."""
    folder = Path(config.output)
    start = load_start(Path(config.model), 'distill')
    model_config = dataclasses.replace(start.config, stage='distill')
    device = resolve_device(config.device)
    splits = load_splits(config.data, model_config)
    vae = start.vae.to(device).eval().requires_grad_(False)
    teacher = start.generator.to(device).eval().requires_grad_(False)
    student = CausalGenerator(model_config).to(device)
    student.load_state_dict(teacher.state_dict())
    n = config.distill.schedule_steps
    grid = shifted_timesteps(n, model_config.generator.timestep_shift)  # (N + 1,) float64, 1 -> 0

    def loss_fn(clips: Clip, generator: torch.Generator) -> torch.Tensor:
        f = clips[FRAMES].shape[1]
        b, share = config.optim.batch_size, rank_share(config.optim.batch_size)  # DDP: this rank's part
        k = torch.randint(n, (b,), generator=generator)[share]
        noise = torch.randn(latent_shape(model_config, b, f), generator=generator)[share].to(device)
        return distill_loss(student, teacher, vae, clips, k, grid, noise)

    @torch.no_grad()
    def validate() -> dict[str, float]:
        student.eval()
        losses, student_err, teacher_err = [], [], []
        for j in range(config.val_batches):
            generator = step_generator(config.optim.seed, VAL_SEED_OFFSET - j)
            clips = batch(splits.val, config.optim.batch_size, generator, device)
            b, f = clips[FRAMES].shape[:2]
            noise = torch.randn(latent_shape(model_config, b, f), generator=generator).to(device)
            for k in sorted({0, n // 2, n - 1}):  # fixed grid points: comparable across runs
                losses.append(float(distill_loss(student, teacher, vae, clips, torch.full((b,), k), grid, noise)))
            student_err.append(one_step_x0_error(student, vae, clips, noise))
            teacher_err.append(one_step_x0_error(teacher, vae, clips, noise))
        return {
            'distill_loss': sum(losses) / len(losses),
            'x0_mse_1step': sum(student_err) / len(student_err),
            'teacher_x0_mse_1step': sum(teacher_err) / len(teacher_err),
        }

    stats = train(
        config,
        student,
        loss_fn,
        splits.train,
        folder,
        device=device,
        resume=resume,
        stop_after=stop_after,
        validate=validate,
    )
    if not writes_outputs(stats, config):
        return {'steps': stats.step}
    val = validate()
    checkpoint = generator_checkpoint(model_config, student, start)
    loss_first, loss_last = mean_first_last(stats.losses)
    card = {
        'method': f'consistency distillation from the adapt teacher, {n}-step shifted grid, no CFG, no EMA target',
        'steps': f'{stats.step} x batch {config.optim.batch_size}',
        'wall time': f'{stats.wall_s:.1f} s on {device}',
        'consistency loss, first -> last 5 steps': f'{loss_first:.4f} -> {loss_last:.4f}',
        'held-out consistency loss': f'{val["distill_loss"]:.4f}',
        'held-out one-step x0 MSE, student vs teacher': (
            f'{val["x0_mse_1step"]:.4f} vs {val["teacher_x0_mse_1step"]:.4f}'
        ),
    }
    write_outputs(folder, checkpoint, config, card, splits.bags)
    return {'steps': stats.step, 'loss_first': loss_first, 'loss_last': loss_last, **val}
