"""Stage ``decoder``: add a light per-frame decoder (``model/fast_decoder.py``) to a finished checkpoint.

Everything of the checkpoint ``model=`` is kept as it is: the generator, the full autoencoder, the
start frame and ``stage`` (so also the sampling steps it streams with). Only a ``FastDecoder`` of
width ``decoder.channels`` is added (``vae.fast_decoder_channels``) and trained, on the frozen
encoder's latents of recorded frames, each frame on its own:

- latents = vae.encode(frames) + decoder.latent_noise * n, n ~ N(0, 1), no gradient to the encoder;
- loss = L1 + decoder.ssim_weight * (1 - SSIM) of vae.decode_fast(latents) against the frames.

The card scores both decoders on the same held-out frames, so the quality given up for speed is
visible. A checkpoint that already has a fast decoder of this width continues training it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from aapt_ros.data.clips import FRAMES
from aapt_ros.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.checkpoints import write_outputs
from aapt_ros.training.config import TrainConfig, TrainError
from aapt_ros.training.data import Clip, load_splits, rank_share
from aapt_ros.training.loop import mean_first_last, resolve_device, train, writes_outputs
from aapt_ros.training.losses import reconstruction_loss
from aapt_ros.training.vae_stage import reconstruction_metrics


def _load_start(path: Path, channels: int) -> Checkpoint:
    """The checkpoint (of any stage) that gets a fast decoder of width ``channels``."""
    try:
        start = load_checkpoint(path)
    except CheckpointError as err:
        raise TrainError(f'model: the decoder stage starts from a checkpoint folder: {err}') from None
    vae = start.config.vae
    if vae.temporal_factor != 1:
        raise TrainError(
            f'model: {path} has vae.temporal_factor {vae.temporal_factor}; the fast decoder decodes each '
            'latent frame on its own and needs 1'
        )
    if vae.fast_decoder_channels not in (0, channels):
        raise TrainError(
            f'model: {path} already has a fast decoder of width {vae.fast_decoder_channels}, but '
            f'decoder.channels is {channels}; set decoder.channels={vae.fast_decoder_channels} to continue '
            'training it, or start from a checkpoint without one'
        )
    return start


def _millions(module: torch.nn.Module) -> str:
    return f'{sum(p.numel() for p in module.parameters()) / 1e6:.3f} M'


def run(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train the fast decoder, then write the checkpoint and card to ``config.output``; returns the card's values."""
    folder = Path(config.output)
    options = config.decoder
    start = _load_start(Path(config.model), options.channels)
    vae_config = dataclasses.replace(start.config.vae, fast_decoder_channels=options.channels)
    model_config = dataclasses.replace(start.config, vae=vae_config)  # stage and sampling steps: the start's
    device = resolve_device(config.device)
    splits = load_splits(config.data, model_config)
    torch.manual_seed(config.optim.seed)
    vae = VideoAutoencoder(vae_config)
    # The start's weights over a freshly initialised fast decoder, or over all of it when the start
    # has one (strict: the start's keys are a subset of the new autoencoder's).
    vae.load_state_dict({**vae.state_dict(), **start.vae.state_dict()})
    vae.to(device).eval().requires_grad_(False)
    fast = vae.fast_decoder
    assert fast is not None  # vae_config.fast_decoder_channels >= 16
    fast.requires_grad_(True)

    def loss_fn(clips: Clip, generator: torch.Generator) -> torch.Tensor:
        frames = clips[FRAMES]  # (b, F, 3, H, W) in [-1, 1], this rank's share of the batch
        with torch.no_grad():
            latents = vae.encode(frames)  # (b, F, C, h, w), about unit std
        size = config.optim.batch_size
        noise = torch.randn((size, *latents.shape[1:]), generator=generator)[rank_share(size)].to(device)
        recon = vae.decode_fast(latents + options.latent_noise * noise)  # (b, F, 3, H, W)
        return reconstruction_loss(recon.flatten(0, 1), frames.flatten(0, 1), options.ssim_weight)

    def validate() -> dict[str, float]:
        return reconstruction_metrics(vae, splits.val, config, device, decode=vae.decode_fast)

    stats = train(
        config,
        fast,
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
    fast_val = validate()
    full_val = reconstruction_metrics(vae, splits.val, config, device)  # the same frames
    checkpoint = Checkpoint(model_config, vae.cpu(), start.generator, start.start_frame)
    loss_first, loss_last = mean_first_last(stats.losses)
    loss_name = f'loss (L1 + {options.ssim_weight:g} (1 - SSIM)), first -> last 5 steps'
    card = {
        'steps': f'{stats.step} x batch {config.optim.batch_size}',
        'wall time': f'{stats.wall_s:.1f} s on {device}',
        loss_name: f'{loss_first:.4f} -> {loss_last:.4f}',
        'fast decoder width': f'{options.channels}, latent noise std {options.latent_noise:g} while training',
        'fast decoder parameters': f'{_millions(fast)} (full decoder {_millions(vae.decoder)})',
        'held-out reconstruction PSNR, fast decoder': f'{fast_val["psnr"]:.2f} dB',
        'held-out reconstruction PSNR, full decoder': f'{full_val["psnr"]:.2f} dB',
        'held-out reconstruction SSIM, fast decoder': f'{fast_val["ssim"]:.4f}',
        'held-out reconstruction SSIM, full decoder': f'{full_val["ssim"]:.4f}',
    }
    write_outputs(folder, checkpoint, config, card, splits.bags)
    return {
        'steps': stats.step,
        'loss_first': loss_first,
        'loss_last': loss_last,
        **fast_val,
        'full_psnr': full_val['psnr'],
        'full_ssim': full_val['ssim'],
    }
