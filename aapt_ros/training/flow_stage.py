"""Stage ``adapt``: block-causal teacher forcing with the flow-matching loss (BRIEF section 2, step 1).

Per clip of F latent frames (VAE frozen):

- x0 = vae.encode(frames); noise ~ N(0, 1); one t per clip, the SAME for all its frames,
  t = s u / (1 + (s - 1) u) with u uniform or logit-normal and s = generator.timestep_shift;
- x_t = (1 - t) x0 + t noise; frame 0 is the sink: its input is the clean x0 with t = 0, no loss;
- the recycled input of frame i is the ground-truth x0 of frame i - 1 (frame 0: itself);
- rays from the camera motion between consecutive poses (identity for frame 0), actions per frame;
- loss = MSE(v_pred, noise - x0) over frames 1 .. F - 1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch.nn import functional as F

from aapt_ros.data.clips import ACTIONS, FRAMES, ORIENTATIONS, POSITIONS
from aapt_ros.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.checkpoints import write_outputs
from aapt_ros.training.config import TrainConfig, TrainError
from aapt_ros.training.data import Clip, batch, load_splits, relative_motions, step_generator
from aapt_ros.training.loop import mean_first_last, resolve_device, train

VAL_T = (0.25, 0.5, 0.75)  # fixed times of the held-out loss, so it is comparable across runs
VAL_SEED_OFFSET = -(2**20)


def sample_t(batch_size: int, shift: float, how: str, generator: torch.Generator) -> torch.Tensor:
    """(B,) float32 shifted flow times in (0, 1): t = shift u / (1 + (shift - 1) u)."""
    if how == 'uniform':
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    else:  # logit-normal: concentrates u around 0.5, where the velocity is hardest to predict
        u = torch.sigmoid(torch.randn(batch_size, generator=generator, dtype=torch.float64))
    return (shift * u / (1 + (shift - 1) * u)).float()


def flow_inputs(
    generator_net: CausalGenerator, vae: VideoAutoencoder, clips: Clip, t_clip: torch.Tensor, noise: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The arguments of ``forward_train`` and the target velocity of a batch of clips.

    t_clip: (B,) one time per clip; noise: (B, F, C, h, w) on the clips' device.
    """
    with torch.no_grad():
        x0 = vae.encode(clips[FRAMES]).float()  # (B, F, C, h, w), about unit std
    b, f = x0.shape[:2]
    t = t_clip.to(x0.device)[:, None].expand(b, f).clone()  # (B, F): the same t for every frame
    t[:, 0] = 0.0  # the sink is given clean
    t5 = t[:, :, None, None, None]
    noisy = (1 - t5) * x0 + t5 * noise  # (B, F, C, h, w); frame 0 equals x0 since t = 0
    previous = torch.cat([x0[:, :1], x0[:, :-1]], dim=1)  # ground-truth recycled input
    rotation, translation = relative_motions(clips[POSITIONS], clips[ORIENTATIONS])  # (B, F, 3, 3), (B, F, 3)
    rays = generator_net.rays(rotation.flatten(0, 1).to(x0.device), translation.flatten(0, 1).to(x0.device))
    rays = rearrange(rays, '(b f) c h w -> b f c h w', b=b)  # from [(B F), 6, h, w] to [B, F, 6, h, w]
    return (noisy, previous, rays, clips[ACTIONS], t), noise - x0


def flow_loss(generator_net: CausalGenerator, inputs: tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
    velocity = generator_net.forward_train(*inputs)  # (B, F, C, h, w)
    return F.mse_loss(velocity[:, 1:].float(), target[:, 1:])  # no loss on the sink


def _load_start(path: Path) -> Checkpoint:
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        raise TrainError(f'model: the adapt stage starts from a checkpoint folder (vae or base): {err}') from None


def run(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train the generator with teacher forcing; write the checkpoint and card to ``config.output``."""
    folder = Path(config.output)
    start = _load_start(Path(config.model))
    model_config = dataclasses.replace(start.config, stage='adapt')
    if model_config.vae.temporal_factor != 1:
        raise TrainError('the adapt stage supports vae.temporal_factor 1 only for now (poses per latent frame)')
    device = resolve_device(config.device)
    splits = load_splits(config.data, model_config)
    vae = start.vae.to(device).eval().requires_grad_(False)
    net = start.generator.to(device)
    g = model_config.generator

    def loss_fn(clips: Clip, generator: torch.Generator) -> torch.Tensor:
        b, f = clips[FRAMES].shape[:2]
        t = sample_t(b, g.timestep_shift, config.flow.t_sampling, generator)
        shape = (b, f, model_config.vae.latent_channels, model_config.latent_height, model_config.latent_width)
        noise = torch.randn(shape, generator=generator).to(device)  # drawn on the CPU: same on every device
        return flow_loss(net, *flow_inputs(net, vae, clips, t, noise))

    @torch.no_grad()
    def validate() -> dict[str, float]:
        net.eval()
        losses = []
        for k in range(config.val_batches):
            generator = step_generator(config.optim.seed, VAL_SEED_OFFSET - k)
            clips = batch(splits.val, config.optim.batch_size, generator, device)
            b, f = clips[FRAMES].shape[:2]
            for value in VAL_T:
                shape = (b, f, model_config.vae.latent_channels, model_config.latent_height, model_config.latent_width)
                noise = torch.randn(shape, generator=generator).to(device)
                losses.append(float(flow_loss(net, *flow_inputs(net, vae, clips, torch.full((b,), value), noise))))
        return {'flow_loss': sum(losses) / len(losses)}

    stats = train(
        config,
        net,
        loss_fn,
        splits.train,
        folder,
        device=device,
        resume=resume,
        stop_after=stop_after,
        validate=validate,
    )
    if stats.step < config.optim.steps:  # stopped early (--stop-after): the state is saved, no checkpoint yet
        return {'steps': stats.step}
    val = validate()
    generator_out = CausalGenerator(model_config)
    generator_out.load_state_dict(net.state_dict())
    checkpoint = Checkpoint(model_config, start.vae.cpu(), generator_out, start.start_frame)
    loss_first, loss_last = mean_first_last(stats.losses)
    card = {
        'steps': f'{stats.step} x batch {config.optim.batch_size}',
        'wall time': f'{stats.wall_s:.1f} s on {device}',
        'flow-matching loss, first -> last 5 steps': f'{loss_first:.4f} -> {loss_last:.4f}',
        f'held-out flow loss at t in {list(VAL_T)}': f'{val["flow_loss"]:.4f}',
        't sampling': f'{config.flow.t_sampling}, shift {g.timestep_shift:g}',
    }
    write_outputs(folder, checkpoint, config, card, splits.bags)
    return {'steps': stats.step, 'loss_first': loss_first, 'loss_last': loss_last, 'val_flow_loss': val['flow_loss']}
