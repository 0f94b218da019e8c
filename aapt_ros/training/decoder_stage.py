"""Stage ``decoder``: add a light per-frame decoder (``model/fast_decoder.py``) to a finished checkpoint.

Everything of the checkpoint ``model=`` is kept as it is: the generator, the full autoencoder, the
start frame and ``stage`` (so also the sampling steps it streams with). Only a ``FastDecoder`` of
width ``decoder.channels`` is added (``vae.fast_decoder_channels``) and trained, on the frozen
encoder's latents of recorded frames, each frame on its own:

- latents = vae.encode(frames) + decoder.latent_noise * n, n ~ N(0, 1), no gradient to the encoder;
- loss = L1 (or MSE, ``decoder.pixel_loss``) + decoder.ssim_weight * (1 - SSIM) of
  vae.decode_fast(latents) against the frames.

The card scores both decoders on the same held-out frames, so the quality given up for speed is
visible. A checkpoint that already has a fast decoder of this width continues training it.

With ``decoder.latents: rollout`` (our addition) the latents are instead the generator's own: the
checkpoint's generator rolls each recorded clip out from its frame 0, one pass per frame on its
own outputs, exactly as the engine streams (``adversarial_stage.draw_sample``, no gradient), and
the decoder learns to turn generated frames 1.. into the recorded ones. A decoder fitted to the
encoder's latents decodes the generator's blurred, off-manifold latents as if they were exact;
fitted to the rollout it learns the image each generated latent stands for, which is what the
held-out metrics score. The card then also scores the decoder on held-out rollouts before and
after. The rollouts cost most of each step. A fixed pool of rollouts made once (1024-4096 clips,
reused for 500-2000 steps) was tried instead and lost its gain on held-out rollouts
(docs/training), so every step rolls out afresh.

With ``decoder.arm`` (our addition) the decoder also reads, per frame, the arm the checkpoint's
generator draws from the frame's joints and base pose (``CausalGenerator.arm_image``) at 4 x the
latent resolution, as the engine hands it over when it streams; its inputs for it start at zero.
With ``decoder.warps`` (also ours) it reads the generator's plane warps in pixels
(``CausalGenerator.sink_plane_images``: the clip's frame 0 where each pixel's ray meets the table
top and the ground) and learns how much of them to copy; these inputs start at zero too.
With ``decoder.arm_warp`` (also ours) the arm as frame 0 shows it is one more such warp
(``CausalGenerator.sink_arm_warp``). With ``decoder.ground_tile`` (ours) the floor's texture
repeats every that many metres, and the ground as frame 0 shows it whole periods away is one more
(``CausalGenerator.ground_tile_image``). With ``decoder.arm_paste`` (ours) each drawn link is moved
toward its colour in frame 0 after the decoder, while it trains and after
(``CausalGenerator.paste_arm``), the links drawn with ``decoder.arm_paste_chain``'s shapes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aapt_ros.data.clips import FRAMES
from aapt_ros.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from aapt_ros.model.config import ConfigError, ModelConfig
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.adversarial_stage import draw_sample
from aapt_ros.training.checkpoints import autoencoder_with_light_parts, parameter_count, write_outputs
from aapt_ros.training.config import DecoderConfig, TrainConfig, TrainError
from aapt_ros.training.data import Clip, batch, load_splits, rank_share, step_generator
from aapt_ros.training.flow_stage import (
    VAL_SEED_OFFSET,
    DecoderInputs,
    clip_decoder_inputs,
    decode_clips,
    latent_shape,
)
from aapt_ros.training.loop import mean_first_last, resolve_device, train, writes_outputs
from aapt_ros.training.losses import reconstruction_loss
from aapt_ros.training.rollout_graphs import RolloutGraphs
from aapt_ros.training.vae_stage import add_frame_scores, reconstruction_metrics


def _load_start(path: Path, options: DecoderConfig) -> Checkpoint:
    """The checkpoint that gets a fast decoder of width ``options.channels``: of any stage for
    recorded latents, of stage adversarial (a generator that streams one pass per frame) for its
    rollouts; with a generator that draws the arm for ``arm``, one that warps the first image in
    pixels for ``warps``; for ``arm_warp``, ``ground_tile`` and ``static_boxes`` a decoder that reads
    no warps yet or reads those too; for ``ground_tile`` and ``outside_view_weight``, a generator that warps to the
    ground."""
    channels, latents, arm, warps = options.channels, options.latents, options.arm, options.warps
    arm_warp, ground_tile, outside_view_weight = options.arm_warp, options.ground_tile, options.outside_view_weight
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
    if latents == 'rollout' and start.config.stage != 'adversarial':
        raise TrainError(
            f"decoder.latents: rollout decodes the generator's one-pass rollouts, so it needs an 'adversarial' "
            f'checkpoint; {path} is {start.config.stage!r}'
        )
    if arm and not start.config.generator.arm_chain:
        raise TrainError(
            f"decoder.arm: the decoder reads the arm the generator draws, but {path}'s generator draws none "
            '(generator.arm_chain is empty)'
        )
    if vae.fast_decoder_arm_channels and not arm:
        raise TrainError(
            f"model: {path}'s fast decoder reads the arm drawing; set decoder.arm=true to continue training it"
        )
    if warps and not start.config.generator.sink_warp_pixels:
        raise TrainError(
            f"decoder.warps: the decoder reads the plane warps the generator makes in pixels, but {path}'s "
            'generator makes none (generator.sink_warp_pixels is off)'
        )
    if vae.fast_decoder_warp_planes and not warps:
        raise TrainError(
            f"model: {path}'s fast decoder reads the plane warps; set decoder.warps=true to continue training it"
        )
    if vae.fast_decoder_warp_planes and vae.fast_decoder_arm_warp != arm_warp:
        raise TrainError(
            f"model: {path}'s fast decoder {'reads' if vae.fast_decoder_arm_warp else 'does not read'} the arm's "
            f'warp, and its warp inputs have that shape; set decoder.arm_warp={str(vae.fast_decoder_arm_warp).lower()} '
            'to continue training it, or start from a checkpoint whose decoder reads no warps'
        )
    if vae.fast_decoder_warp_planes and vae.fast_decoder_ground_tile != ground_tile:
        raise TrainError(
            f"model: {path}'s fast decoder reads the ground tile of a {vae.fast_decoder_ground_tile:g} m period "
            f'(0: none), and its warp inputs have that shape; set decoder.ground_tile={vae.fast_decoder_ground_tile:g} '
            'to continue training it, or start from a checkpoint whose decoder reads no warps'
        )
    if vae.fast_decoder_warp_planes and vae.fast_decoder_static_boxes != options.static_boxes:
        raise TrainError(
            f"model: {path}'s fast decoder reads {len(vae.fast_decoder_static_boxes)} static boxes "
            f'{[list(box) for box in vae.fast_decoder_static_boxes]} (their colour is one more copied image); '
            'set decoder.static_boxes to the same to continue training it, or start from a checkpoint whose '
            'decoder reads no warps'
        )
    if (ground_tile or outside_view_weight != 1) and not start.config.generator.sink_warp_ground_below_base:
        raise TrainError(
            f"decoder.ground_tile and outside_view_weight read the ground the generator warps to, but {path}'s "
            'generator warps to none (generator.sink_warp_ground_below_base is 0)'
        )
    return start


@torch.no_grad()
def rollout_latents(
    net: CausalGenerator,
    vae: VideoAutoencoder,
    model_config: ModelConfig,
    clips: Clip,
    noise: torch.Tensor,
    graphs: RolloutGraphs | None = None,
) -> torch.Tensor:
    """(B, F - 1, C, h, w): the generator's one-pass rollout of frames 1.. of each clip, started
    from the recorded frame 0; noise (B, F, C, h, w) on the CPU. Under CUDA autocast the KV cache
    is bfloat16, as the engine keeps it there. ``graphs``: ``net``'s captured frame steps (CUDA)."""
    device = clips[FRAMES].device
    bf16 = device.type == 'cuda' and torch.is_autocast_enabled(device.type)
    cache_dtype = torch.bfloat16 if bf16 else torch.float32
    sample = draw_sample(net, vae, clips, noise.to(device), teacher=False, cache_dtype=cache_dtype, graphs=graphs)
    return sample.fake[:, 1:]


def rollout_metrics(
    vae: VideoAutoencoder,
    net: CausalGenerator,
    model_config: ModelConfig,
    config: TrainConfig,
    splits_val: torch.utils.data.Dataset[Clip],
    device: torch.device,
    graphs: RolloutGraphs | None = None,
) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of the fast decoder's images of held-out rollouts (frames 1..)
    against the recorded frames (given the arm drawing when the decoder reads it); the clips and
    the noise depend on the seed only."""
    psnrs: list[float] = []
    ssims: list[float] = []
    for k in range(config.val_batches):
        generator = step_generator(config.optim.seed, VAL_SEED_OFFSET - k)
        clips = batch(splits_val, config.optim.batch_size, generator, device)
        noise = torch.randn(latent_shape(model_config, *clips[FRAMES].shape[:2]), generator=generator)
        with torch.no_grad():
            inputs = clip_decoder_inputs(net, clips, device, vae.config).after_first()
            images = decode_clips(vae, net, rollout_latents(net, vae, model_config, clips, noise, graphs), inputs)
        add_frame_scores(images.flatten(0, 1), clips[FRAMES][:, 1:].flatten(0, 1), psnrs, ssims)
    return {'rollout_psnr': float(np.mean(psnrs)), 'rollout_ssim': float(np.mean(ssims))}


def run(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train the fast decoder, then write the checkpoint and card to ``config.output``; returns the card's values."""
    folder = Path(config.output)
    options = config.decoder
    on_rollouts = options.latents == 'rollout'
    start = _load_start(Path(config.model), options)
    arm_channels = start.generator.arm.num_channels if options.arm and start.generator.arm is not None else 0
    arm_chain = start.config.generator.arm_chain
    warp_planes = start.config.generator.pixel_warp_planes if options.warps else 0
    vae_config = dataclasses.replace(
        start.config.vae,
        fast_decoder_channels=options.channels,
        fast_decoder_arm_channels=arm_channels,
        fast_decoder_warp_planes=warp_planes,
        fast_decoder_arm_warp=options.arm_warp,
        fast_decoder_ground_tile=options.ground_tile,
        fast_decoder_ground_tile_depth=options.ground_tile_depth,
        fast_decoder_static_boxes=options.static_boxes,
        fast_decoder_paste_unseen=options.paste_unseen,
        fast_decoder_arm_paste=options.arm_paste,
        fast_decoder_arm_paste_chain=options.arm_paste_chain,
        # The start's rules around the decoder that this stage's options allow; the box faces, the
        # sky and the objects are not pasted while training, nor the arm drawn from its meshes
        # (tools/add_arm_paste.py sets them after; the mesh points are not weights).
        fast_decoder_arm_paste_previous_action=start.config.vae.fast_decoder_arm_paste_previous_action
        and bool(options.arm_paste),
        fast_decoder_arm_paste_upsampling=start.config.vae.fast_decoder_arm_paste_upsampling
        if options.arm_paste
        else 1,
        fast_decoder_ground_tile_nearest=start.config.vae.fast_decoder_ground_tile_nearest
        if options.ground_tile and options.static_boxes
        else 0,
        fast_decoder_paste_under_arm=start.config.vae.fast_decoder_paste_under_arm and options.paste_unseen,
        fast_decoder_ground_tile_snap=start.config.vae.fast_decoder_ground_tile_snap and bool(options.ground_tile),
        fast_decoder_paste_box_faces=False,
        fast_decoder_paste_sky=False,
        fast_decoder_paste_objects=False,
        fast_decoder_arm_paste_surface=(),
        fast_decoder_arm_paste_shading=False,
    )
    try:
        model_config = dataclasses.replace(start.config, vae=vae_config)  # stage and sampling steps: the start's
        generator = CausalGenerator(model_config)  # the start's weights, with what the new config draws for the paste
    except ConfigError as err:
        raise TrainError(f'decoder: {err}') from None
    generator.load_state_dict(start.generator.state_dict())
    device = resolve_device(config.device)
    splits = load_splits(config.data, model_config)
    torch.manual_seed(config.optim.seed)
    vae = autoencoder_with_light_parts(start.vae, vae_config, device)  # a fresh fast decoder, or the start's
    fast = vae.fast_decoder
    assert fast is not None  # vae_config.fast_decoder_channels >= 16
    fast.requires_grad_(True)
    reads_generator = on_rollouts or options.arm or options.warps
    net = generator.to(device).eval().requires_grad_(False) if reads_generator else None
    graphed = on_rollouts and config.cuda_graph_rollout and device.type == 'cuda'
    graphs = RolloutGraphs(net) if graphed and net is not None else None

    def inputs_of(clips: Clip) -> DecoderInputs:
        """What the decoder reads beside each frame's latent (``clip_decoder_inputs``)."""
        if net is None:
            return DecoderInputs(None, None, None)
        return clip_decoder_inputs(net, clips, device, vae_config)

    def loss_fn(clips: Clip, generator: torch.Generator) -> torch.Tensor:
        frames = clips[FRAMES]  # (b, F, 3, H, W) in [-1, 1], this rank's share of the batch
        size = config.optim.batch_size
        noise = torch.randn(latent_shape(model_config, size, frames.shape[1]), generator=generator)[rank_share(size)]
        inputs = inputs_of(clips)
        if on_rollouts:
            assert net is not None
            latents = rollout_latents(net, vae, model_config, clips, noise, graphs)  # (b, F - 1, C, h, w)
            frames = frames[:, 1:]  # frame 0 is the recorded start, not generated
            inputs = inputs.after_first()
        else:
            with torch.no_grad():
                latents = vae.encode(frames) + options.latent_noise * noise.to(device)  # about unit std
        recon = decode_clips(vae, net, latents, inputs)  # (b, F or F - 1, 3, H, W)
        weights = None
        if options.outside_view_weight != 1:
            assert inputs.planes is not None  # the config checks that the decoder reads the warps
            ground = inputs.planes[:, :, warp_planes - 1].flatten(0, 1)  # (N, 6, H, W): the ground's, the planes' last
            outside = ground[:, 3:4] * (1 - ground[:, 4:5])  # the ray meets the ground, frame 0 does not show it
            weights = 1 + (options.outside_view_weight - 1) * outside
        return reconstruction_loss(
            recon.flatten(0, 1), frames.flatten(0, 1), options.ssim_weight, options.pixel_loss, weights
        )

    def validate() -> dict[str, float]:
        scores = reconstruction_metrics(
            vae,
            splits.val,
            config,
            device,
            decode=lambda latents, clips: decode_clips(vae, net, latents, inputs_of(clips)),
        )
        if on_rollouts:
            assert net is not None
            scores |= rollout_metrics(vae, net, model_config, config, splits.val, device, graphs)
        return scores

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
    before: dict[str, float] = {}
    if on_rollouts and net is not None and start.vae.fast_decoder is not None:  # the decoder it continues
        start_net = start.generator.to(device).eval()  # the same weights, as the start streams them
        before = rollout_metrics(start.vae.to(device), start_net, start.config, config, splits.val, device)
        start.vae.cpu()
    checkpoint = Checkpoint(model_config, vae.cpu(), generator.cpu(), start.start_frame)
    loss_first, loss_last = mean_first_last(stats.losses)
    ssim_term = f' + {options.ssim_weight:g} (1 - SSIM)' if options.ssim_weight else ''
    loss_name = f'loss ({options.pixel_loss.upper()}{ssim_term}), first -> last 5 steps'
    noise = f'latent noise std {options.latent_noise:g}' if not on_rollouts else "on the generator's rollouts"
    card = {
        'steps': f'{stats.step} x batch {config.optim.batch_size}',
        'wall time': f'{stats.wall_s:.1f} s on {device}',
        'latents decoded while training': (
            f"the generator's one-pass rollouts of {config.data.clip_length}-frame recorded clips (frames 1..)"
            if on_rollouts
            else "the encoder's, of recorded frames"
        ),
        loss_name: f'{loss_first:.4f} -> {loss_last:.4f}',
        'fast decoder width': f'{options.channels}, {noise} while training',
        'loss weight where frame 0 does not have the ground in view': f'{options.outside_view_weight:g}',
        'arm drawing read by the fast decoder': f'{arm_channels} channels' if arm_channels else 'no',
        'plane warps read by the fast decoder': f'{warp_planes} planes, in pixels' if warp_planes else 'no',
        "the arm's warp from the first image read by the fast decoder": 'yes' if options.arm_warp else 'no',
        "the ground's tile folded from the first image read by the fast decoder": (
            f'a {options.ground_tile:g} m period'
            + (f', up to {options.ground_tile_depth:g} m ahead' if options.ground_tile_depth else '')
            if options.ground_tile
            else 'no'
        ),
        'unseen ground and table top pasted from the copies': 'yes' if options.paste_unseen else 'no',
        'each drawn link moved toward its colour in the first image': (
            f'{options.arm_paste:g} of the way, links drawn as {vae_config.fast_decoder_arm_paste_chain or arm_chain}'
            if options.arm_paste
            else 'no'
        ),
        "the scene's static boxes told to the fast decoder": (
            f'{len(options.static_boxes)} (their colour from the first image copied too)'
            if options.static_boxes
            else 'no'
        ),
        'fast decoder parameters': f'{parameter_count(fast)} (full decoder {parameter_count(vae.decoder)})',
        'held-out reconstruction PSNR, fast decoder': f'{fast_val["psnr"]:.2f} dB',
        'held-out reconstruction PSNR, full decoder': f'{full_val["psnr"]:.2f} dB',
        'held-out reconstruction SSIM, fast decoder': f'{fast_val["ssim"]:.4f}',
        'held-out reconstruction SSIM, full decoder': f'{full_val["ssim"]:.4f}',
    }
    if on_rollouts:
        for name, unit, digits in (('PSNR', ' dB', 2), ('SSIM', '', 4)):
            value = fast_val[f'rollout_{name.lower()}']
            was = f'{before[f"rollout_{name.lower()}"]:.{digits}f} -> ' if before else ''
            card[f"held-out rollout {name}, fast decoder (the start's ->) trained"] = f'{was}{value:.{digits}f}{unit}'
    write_outputs(folder, checkpoint, config, card, splits.bags)
    return {
        'steps': stats.step,
        'loss_first': loss_first,
        'loss_last': loss_last,
        **fast_val,
        'full_psnr': full_val['psnr'],
        'full_ssim': full_val['ssim'],
        **{f'{name}_before': value for name, value in before.items()},
    }
