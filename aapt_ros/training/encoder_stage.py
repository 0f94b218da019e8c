"""Stage ``encoder``: add a light encoder for the plane warps (``model/fast_encoder.py``) to a checkpoint.

A generator with ``generator.sink_warp_pixels`` reads, every frame, the stream's first image seen
at the arm base's plane and at the ground, each through the autoencoder's encoder: two encoder
passes a frame, which on two CPU cores cost more than the generator itself. This stage distils a
``FastEncoder`` of width ``encoder.channels`` (``vae.fast_encoder_channels``) from the frozen
full encoder, on exactly the images the warps hand it: the frame 0 of each recorded clip, sampled
where every later frame's rays meet the planes (``CausalGenerator.encoded_sink_at_planes``).

- full = the warp latents the generator reads (each cell's latent times the share of its pixels
  the warp samples, ``encoded_sink_at_planes``) with the full encoder (no gradient);
- light = the same with the light encoder;
- loss = sum (light - full)^2 / sum full^2: the squared error of what the generator reads,
  relative to what the warps add to it (the rest of its input is the same either way).

Everything else of the checkpoint ``model=`` is kept: the generator, the autoencoder, the start
frame and ``stage``. From then on the plane warps pass through the light encoder, in training and
in the engine; the generator was fitted to the full encoder's warps, so the stages that train it
should run after this one (the card gives the light encoder's error to judge how much it moves).
A checkpoint that already has a light encoder of this width continues training it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from aapt_ros.data.clips import FRAMES
from aapt_ros.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.checkpoints import autoencoder_with_light_parts, parameter_count, write_outputs
from aapt_ros.training.config import TrainConfig, TrainError
from aapt_ros.training.data import Clip, batch, load_splits, step_generator
from aapt_ros.training.flow_stage import VAL_SEED_OFFSET, clip_plane_images
from aapt_ros.training.loop import mean_first_last, resolve_device, train, writes_outputs


def _load_start(path: Path, channels: int) -> Checkpoint:
    """The checkpoint that gets a light encoder of width ``channels``: one whose generator warps
    the first image in pixels, since the warps are all the light encoder is for."""
    try:
        start = load_checkpoint(path)
    except CheckpointError as err:
        raise TrainError(f'model: the encoder stage starts from a checkpoint folder: {err}') from None
    if not start.config.generator.sink_warp_pixels:
        raise TrainError(
            f"model: {path}'s generator encodes no plane warps (generator.sink_warp_pixels is false), the only "
            'images the light encoder encodes; grow it with tools/grow_generator.py --sink-warp-pixels first'
        )
    vae = start.config.vae
    if vae.fast_encoder_channels not in (0, channels):
        raise TrainError(
            f'model: {path} already has a light encoder of width {vae.fast_encoder_channels}, but '
            f'encoder.channels is {channels}; set encoder.channels={vae.fast_encoder_channels} to continue '
            'training it, or start from a checkpoint without one'
        )
    return start


def relative_error(net: CausalGenerator, vae: VideoAutoencoder, clips: Clip) -> torch.Tensor:
    """sum (light - full)^2 / sum full^2 over a batch of clips: the error of the warp latents the
    generator reads when its plane warps pass through ``vae``'s light encoder, not its full one,
    relative to their size. Gradient flows to the light encoder only."""
    planes = clip_plane_images(net, clips, clips[FRAMES].device).flatten(0, 1)  # ((B F), P, 6, H, W)
    channels = net.config.vae.latent_channels

    def warp_latents(encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """((B F), P C, h, w): each plane's warp latent as the generator reads it, without the shown share."""
        per_plane = net.encoded_sink_at_planes(planes, encode, planes.dtype)
        return torch.cat([warp[:, :channels] for warp in per_plane], dim=1)

    with torch.no_grad():
        full = warp_latents(lambda images: vae.encode(images[:, None])[:, 0])
    light = warp_latents(vae.encode_warped)
    return (light - full).square().sum() / full.square().sum().clamp_min(1e-12)


def validation_error(
    net: CausalGenerator,
    vae: VideoAutoencoder,
    config: TrainConfig,
    splits_val: torch.utils.data.Dataset[Clip],
    device: torch.device,
) -> float:
    """Mean ``relative_error`` over ``config.val_batches`` held-out batches; the clips depend on the seed only."""
    errors = []
    for k in range(config.val_batches):
        clips = batch(
            splits_val, config.optim.batch_size, step_generator(config.optim.seed, VAL_SEED_OFFSET - k), device
        )
        with torch.no_grad():
            errors.append(float(relative_error(net, vae, clips)))
    return sum(errors) / len(errors)


def run(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Distil the light encoder, then write the checkpoint and card to ``config.output``; returns the card's values."""
    folder = Path(config.output)
    channels = config.encoder.channels
    start = _load_start(Path(config.model), channels)
    vae_config = dataclasses.replace(start.config.vae, fast_encoder_channels=channels)
    model_config = dataclasses.replace(start.config, vae=vae_config)  # stage and sampling steps: the start's
    device = resolve_device(config.device)
    splits = load_splits(config.data, model_config)
    torch.manual_seed(config.optim.seed)
    light = autoencoder_with_light_parts(start.vae, vae_config, device)  # a fresh light encoder, or the start's
    encoder = light.fast_encoder
    assert encoder is not None  # vae_config.fast_encoder_channels >= 16
    encoder.requires_grad_(True)
    net = start.generator.to(device).eval().requires_grad_(False)
    before = validation_error(net, light, config, splits.val, device)  # fresh, or the start's

    def loss_fn(clips: Clip, _: torch.Generator) -> torch.Tensor:
        return relative_error(net, light, clips)

    def validate() -> dict[str, float]:
        return {'relative_error': validation_error(net, light, config, splits.val, device)}

    stats = train(
        config,
        encoder,
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
    error = validate()['relative_error']
    checkpoint = Checkpoint(model_config, light.cpu(), net.cpu(), start.start_frame)
    loss_first, loss_last = mean_first_last(stats.losses)
    card = {
        'steps': f'{stats.step} x batch {config.optim.batch_size}',
        'wall time': f'{stats.wall_s:.1f} s on {device}',
        'images encoded while training': "each clip's frame 0 sampled at the plane warps of its frames",
        "loss (squared error of the warp inputs relative to the full encoder's), first -> last 5 steps": (
            f'{loss_first:.4f} -> {loss_last:.4f}'
        ),
        'light encoder width': f'{channels}',
        'light encoder parameters': f'{parameter_count(encoder)} (full encoder {parameter_count(light.encoder)})',
        "held-out relative squared error of the generator's warp inputs, before -> after": (
            f'{before:.4f} -> {error:.4f}'
        ),
    }
    write_outputs(folder, checkpoint, config, card, splits.bags)
    return {
        'steps': stats.step,
        'loss_first': loss_first,
        'loss_last': loss_last,
        'relative_error_before': before,
        'relative_error': error,
    }
