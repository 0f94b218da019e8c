"""Stage ``vae``: train the video autoencoder on the recordings' frames.

Loss: pixel L1 + (1 - SSIM). Afterwards ``vae.latent_scale`` is set from the latent std measured
on training frames, so the generator sees latents of about unit std, and held-out PSNR/SSIM are
measured with the evaluation package's own metrics. The checkpoint also holds an untrained
generator (so the runtime can load it) and, as start frame, the first training frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from aapt_ros.data.clips import FRAMES
from aapt_ros.eval import metrics
from aapt_ros.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_config
from aapt_ros.model.config import ModelConfig
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.checkpoints import write_outputs
from aapt_ros.training.config import TrainConfig, TrainError
from aapt_ros.training.data import Clip, batch, load_splits, step_generator
from aapt_ros.training.loop import mean_first_last, resolve_device, train, writes_outputs
from aapt_ros.training.losses import reconstruction_loss

VAL_SEED_OFFSET = -(2**20)  # validation batches use steps no training step reaches
LIGHT_PREFIXES = ('fast_decoder.', 'fast_encoder.')  # their weights' keys in VideoAutoencoder.state_dict()


def _start_config(path: Path) -> ModelConfig:
    """The model config from a ModelConfig YAML or from a checkpoint folder's config."""
    try:
        return load_config(path / 'config.yaml' if path.is_dir() else path)
    except CheckpointError as err:
        raise TrainError(f'model: {err}') from None


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, as the runtime publishes frames."""
    scaled = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(scaled, 'n c h w -> n h w c').cpu().numpy()


@torch.no_grad()
def reconstruction_metrics(
    vae: VideoAutoencoder,
    dataset: torch.utils.data.Dataset[Clip],
    config: TrainConfig,
    device: torch.device,
    *,
    decode: Callable[[torch.Tensor, Clip], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of held-out frames passed through ``vae.encode`` and ``decode``.

    decode: (B, L, C, h, w) latents and their clips -> (B, F, 3, H, W) images in [-1, 1];
    ``vae.decode`` if None (stage decoder passes the light decoder, which may also read the clips'
    arm). The frames depend on the seed only, so two decoders are scored on the same ones.
    """
    decode = decode or (lambda latents, _: vae.decode(latents))
    vae.eval()
    psnrs: list[float] = []
    ssims: list[float] = []
    for k in range(config.val_batches):
        generator = step_generator(config.optim.seed, VAL_SEED_OFFSET - k)
        clips = batch(dataset, config.optim.batch_size, generator, device)
        frames = clips[FRAMES]  # (B, F, 3, H, W)
        recon = decode(vae.encode(frames), clips)
        add_frame_scores(recon.flatten(0, 1), frames.flatten(0, 1), psnrs, ssims)
    return {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims))}


def add_frame_scores(got: torch.Tensor, want: torch.Tensor, psnrs: list[float], ssims: list[float]) -> None:
    """Append the PSNR (dB) and SSIM of each pair of images (N, 3, H, W) in [-1, 1], scored as the
    uint8 frames the runtime publishes."""
    for a, b in zip(to_uint8(got), to_uint8(want), strict=True):
        psnrs.append(min(metrics.psnr(a, b), 100.0))  # an exact frame would be inf
        ssims.append(metrics.ssim(a, b))


@torch.no_grad()
def measure_latent_scale(
    vae: VideoAutoencoder, dataset: torch.utils.data.Dataset[Clip], config: TrainConfig, device: torch.device
) -> float:
    """1 / std of the unscaled latents of training frames."""
    values = []
    for k in range(config.vae.scale_batches):
        generator = step_generator(config.optim.seed, VAL_SEED_OFFSET - 1000 - k)
        frames = batch(dataset, config.optim.batch_size, generator, device)[FRAMES]  # (B, F, 3, H, W)
        values.append(vae.encode(frames).float().flatten() / vae.config.latent_scale)
    return float(1 / torch.cat(values).std().clamp_min(1e-6))


def run(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train, then write the checkpoint and card to ``config.output``; returns the card's values."""
    folder = Path(config.output)
    model_path = Path(config.model)
    start = _start_config(model_path)
    device = resolve_device(config.device)
    splits = load_splits(config.data, start)
    # A light decoder (stage decoder) or encoder (stage encoder) fits the current autoencoder's
    # latents, which this stage moves: both are dropped, and their stages must run again on the result.
    without_light = dataclasses.replace(start.vae.without_light_decoder(), fast_encoder_channels=0)
    start = dataclasses.replace(start, vae=without_light)
    torch.manual_seed(config.optim.seed)
    vae = VideoAutoencoder(start.vae)
    if model_path.is_dir():  # continue from a checkpoint's autoencoder
        weights = load_checkpoint(model_path).vae.state_dict()
        vae.load_state_dict({k: t for k, t in weights.items() if not k.startswith(LIGHT_PREFIXES)})
    vae.to(device)
    ssim_weight = config.vae.ssim_weight

    def loss_fn(clips: Clip, _: torch.Generator) -> torch.Tensor:
        frames = clips[FRAMES]  # (B, F, 3, H, W) in [-1, 1]
        recon = vae.decode(vae.encode(frames))
        return reconstruction_loss(recon.flatten(0, 1), frames.flatten(0, 1), ssim_weight)

    def validate() -> dict[str, float]:
        return reconstruction_metrics(vae, splits.val, config, device)

    stats = train(
        config,
        vae,
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
    scale = measure_latent_scale(vae, splits.train, config, device)  # absolute: std of unscaled latents
    model_config = dataclasses.replace(start, stage='vae', vae=dataclasses.replace(start.vae, latent_scale=scale))
    final = VideoAutoencoder(model_config.vae)
    final.load_state_dict(vae.state_dict())  # same weights; latent_scale lives in the config
    final.to(device)
    val = reconstruction_metrics(final, splits.val, config, device)
    torch.manual_seed(config.optim.seed)
    first = splits.train[0][FRAMES][0]  # (3, H, W) uint8, the default start image of the runtime
    start_frame = rearrange(first, 'c h w -> h w c').contiguous()  # (H, W, 3) uint8
    checkpoint = Checkpoint(model_config, final.cpu(), CausalGenerator(model_config), start_frame)
    loss_first, loss_last = mean_first_last(stats.losses)
    card = {
        'steps': f'{stats.step} x batch {config.optim.batch_size}',
        'wall time': f'{stats.wall_s:.1f} s on {device}',
        'loss (L1 + (1 - SSIM)), first -> last 5 steps': f'{loss_first:.4f} -> {loss_last:.4f}',
        'held-out reconstruction PSNR': f'{val["psnr"]:.2f} dB',
        'held-out reconstruction SSIM': f'{val["ssim"]:.4f}',
        'latent_scale': f'{scale:.4g}',
    }
    write_outputs(folder, checkpoint, config, card, splits.bags)
    return {'steps': stats.step, 'loss_first': loss_first, 'loss_last': loss_last, 'latent_scale': scale, **val}
