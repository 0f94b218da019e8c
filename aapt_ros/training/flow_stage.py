"""Stages ``base`` and ``adapt``: latent flow matching on clips (BRIEF section 2, steps 0 and 1).

Per clip of F latent frames (VAE frozen):

- x0 = vae.encode(frames); noise ~ N(0, 1); one t per clip, the SAME for all its frames,
  t = s u / (1 + (s - 1) u) with u uniform or logit-normal and s = generator.timestep_shift;
- x_t = (1 - t) x0 + t noise; frame 0 is the sink: its input is the clean x0 with t = 0, no loss;
- rays from the camera motion between consecutive poses (identity for frame 0), actions per frame;
- loss = MSE(v_pred, noise - x0) over frames 1 .. F - 1.

The two stages differ in the attention mask and the recycled input:

- ``base`` (the "pretrained" bidirectional model AAPT starts from): every frame attends to every
  frame of the clip; the recycled input is zero. Recycling ground truth under bidirectional
  attention would leak the answer: frame i + 1's recycled input is frame i's clean x0, which
  frame i could read. The paper's pretrained model has no recycled input either; ``adapt`` learns it.
- ``adapt`` (teacher forcing): the block-causal window mask of the engine, and the recycled input
  of frame i is the ground-truth x0 of frame i - 1 (frame 0: itself). Starts from ``base``.
  With ``flow.context_noise`` (our addition) that input is mixed with noise of a random strength
  per frame: at inference it is the model's own, imperfect output, and the sink frame and the
  rays are then the only clean source of what the scene looks like.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import torch
from einops import rearrange
from torch.nn import functional as F

from aapt_ros.data.clips import ACTIONS, ARM_BASE, FRAMES, ORIENTATIONS, POSITIONS
from aapt_ros.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from aapt_ros.model.config import ModelConfig, VAEConfig
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.masks import bidirectional_attention_mask
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.checkpoints import generator_checkpoint, write_outputs
from aapt_ros.training.config import TrainConfig, TrainError
from aapt_ros.training.data import (
    Clip,
    arm_bases_in_sink,
    batch,
    load_splits,
    pose_frames_in_sink,
    rank_share,
    relative_motions,
    step_generator,
)
from aapt_ros.training.loop import mean_first_last, resolve_device, train, writes_outputs

VAL_T = (0.25, 0.5, 0.75)  # fixed times of the held-out loss, so it is comparable across runs
VAL_SEED_OFFSET = -(2**20)
# The checkpoint stages each stage may start from (a stage may also continue its own checkpoints).
START_STAGES = {
    'base': ('vae', 'base'),
    'adapt': ('base', 'adapt'),
    'distill': ('adapt',),
    'adversarial': ('distill', 'adversarial'),
    # Student-forced regression alone (adversarial_weight 0) needs only a generator whose one pass
    # predicts the frame, which a flow model's pass from pure noise does: it can skip distill.
    'adversarial_regression': ('distill', 'adversarial', 'adapt'),
}


def sample_t(batch_size: int, shift: float, how: str, generator: torch.Generator) -> torch.Tensor:
    """(B,) float32 shifted flow times in (0, 1): t = shift u / (1 + (shift - 1) u)."""
    if how == 'uniform':
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    else:  # logit-normal: concentrates u around 0.5, where the velocity is hardest to predict
        u = torch.sigmoid(torch.randn(batch_size, generator=generator, dtype=torch.float64))
    return (shift * u / (1 + (shift - 1) * u)).float()


def clip_latents(
    generator_net: CausalGenerator, vae: VideoAutoencoder, clips: Clip, *, recycle: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x0 (B, F, C, h, w), the recycled input (B, F, C, h, w) and rays (B, F, R, h, w) of a batch.

    recycle: the ground-truth x0 of frame i - 1 (frame 0: itself) when True, zeros when False.
    """
    with torch.no_grad():
        x0 = vae.encode(clips[FRAMES]).float()  # (B, F, C, h, w), about unit std
    b, f = x0.shape[:2]
    previous = torch.cat([x0[:, :1], x0[:, :-1]], dim=1) if recycle else torch.zeros_like(x0)
    motions = relative_motions(clips[POSITIONS], clips[ORIENTATIONS])  # (B, F, 3, 3) and (B, F, 3) each
    # Every frame's sink is the clip's frame 0; only a generator with a sink warp reads its latent.
    sink = x0[:, :1].expand_as(x0).flatten(0, 1) if generator_net.sink_warp is not None else None
    rotation, translation, sink_rotation, sink_translation = (m.flatten(0, 1).to(x0.device) for m in motions)
    action, arm_base = _arm_inputs(generator_net, clips, x0.device) if generator_net.arm is not None else (None, None)
    sink_image = None
    if generator_net.sink_image_warp is not None:
        sink_image = clips[FRAMES][:, :1].expand(-1, f, -1, -1, -1).flatten(0, 1)  # ((B F), 3, H, W)

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return vae.encode_warped(images)

    rays = generator_net.conditioning(
        rotation,
        translation,
        sink_rotation,
        sink_translation,
        sink,
        action,
        arm_base,
        sink_image=sink_image,
        encode=encode,
    )
    rays = rearrange(rays, '(b f) c h w -> b f c h w', b=b)  # from [(B F), R, h, w] to [B, F, R, h, w]
    return x0, previous, rays


def _arm_inputs(generator_net: CausalGenerator, clips: Clip, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame's actions ((B F), A) and arm base in the clip's sink camera ((B F), 3, 4)."""
    if clips[ARM_BASE].shape[-1] != 7:
        raise TrainError(
            'the generator draws the arm (generator.arm_chain) but the clips have no arm base pose: '
            'set arm_base_frame in the topic mapping (aapt-record-sim bags have it on /tf_static)'
        )
    frames = clips[ACTIONS].shape[1]
    bases = arm_bases_in_sink(clips[POSITIONS], clips[ORIENTATIONS], clips[ARM_BASE])  # (B, 3, 4)
    arm_base = bases[:, None].expand(-1, frames, -1, -1).flatten(0, 1).to(device)
    return clips[ACTIONS].flatten(0, 1).to(device), arm_base


def _clip_arm_images(
    generator_net: CausalGenerator, clips: Clip, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The arm each frame's joints draw (``CausalGenerator.arm_image_and_links``): float32
    (B, F, A, h s, w s), and the nearest link at each sample (B, F, h s, w s)."""
    motions = relative_motions(clips[POSITIONS], clips[ORIENTATIONS])
    sink_rotation, sink_translation = (m.flatten(0, 1).to(device) for m in motions[2:])
    action, arm_base = _arm_inputs(generator_net, clips, device)
    drawn, links = generator_net.arm_image_and_links(action, arm_base, sink_rotation, sink_translation)
    b, f = clips[ACTIONS].shape[:2]
    return drawn.view(b, f, *drawn.shape[1:]), links.view(b, f, *links.shape[1:])


def clip_plane_images(
    generator_net: CausalGenerator,
    clips: Clip,
    device: torch.device,
    arm_drawing: tuple[torch.Tensor, torch.Tensor] | None = None,
    ground_tile: float = 0.0,
    ground_tile_depth: float = 0.0,
    static_boxes: tuple[tuple[float, ...], ...] = (),
) -> torch.Tensor:
    """Every frame's plane warps in pixels with the clip's frame 0 as the sink
    (``CausalGenerator.sink_plane_images``, with frame 0's arm masked), float32 (B, F, P, 6, H, W):
    what the light decoder reads beside the frame's latent (``vae.fast_decoder_warp_planes``), and
    the warped images the encoder stage distils the light encoder on. Given the frames' arm
    drawings and links (B, F, A, h s, w s), (B, F, h s, w s), the arm as frame 0 shows it follows
    the planes (``CausalGenerator.sink_arm_warp``, one image more); with ``ground_tile`` > 0 (the
    floor's period, metres), the ground as frame 0 shows it whole periods away comes last
    (``CausalGenerator.ground_tile_image``, one more; within ground_tile_depth metres, 0: no limit);
    told the scene's static boxes, each copy is kept where it shows what the camera sees and the
    boxes' colour comes last (``CausalGenerator.copies_among_boxes``, one more)."""
    b, f = clips[FRAMES].shape[:2]
    motions = relative_motions(clips[POSITIONS], clips[ORIENTATIONS])
    sink_rotation, sink_translation = (m.flatten(0, 1).to(device) for m in motions[2:])
    action, arm_base = _arm_inputs(generator_net, clips, device)
    sink_image = clips[FRAMES][:, :1].expand(-1, f, -1, -1, -1).flatten(0, 1).to(device)  # ((B F), 3, H, W)
    first = torch.arange(b, device=device) * f  # each clip's frame 0 in the flattened frames

    def per_frame(sink: torch.Tensor) -> torch.Tensor:  # (B, ...) -> ((B F), ...): frame 0's for every frame
        return sink[:, None].expand(-1, f, *sink.shape[1:]).flatten(0, 1)

    first_arm = generator_net.sink_arm_mask(action[first], arm_base[first])  # (B, 1, H, W)
    sink_arm = per_frame(first_arm)
    images = generator_net.sink_plane_images(sink_image, arm_base, sink_rotation, sink_translation, sink_arm)
    if arm_drawing is not None:
        drawing, links = (x.flatten(0, 1) for x in arm_drawing)
        sink_links = per_frame(generator_net.sink_arm_links(action[first], arm_base[first]))
        arm = generator_net.sink_arm_warp(
            sink_image,
            per_frame(action[first]),
            sink_links,
            action,
            arm_base,
            sink_rotation,
            sink_translation,
            drawing,
            links,
        )
        images = torch.cat([images, arm[:, None]], dim=1)
    pose_frames = pose_frames_in_sink(clips[POSITIONS], clips[ORIENTATIONS]).to(device)  # (B, 3, 4)
    if ground_tile:
        tile, axes = generator_net.sink_ground_tile(
            sink_image[first], first_arm, arm_base[first], pose_frames, ground_tile
        )
        ground = generator_net.ground_tile_image(
            per_frame(tile), per_frame(axes), ground_tile, arm_base, sink_rotation, sink_translation, ground_tile_depth
        )
        images = torch.cat([images, ground[:, None]], dim=1)
    if static_boxes:
        boxes = torch.tensor(static_boxes, device=device)
        colour = generator_net.sink_box_colour(sink_image[first], first_arm, pose_frames, boxes)
        images = generator_net.copies_among_boxes(
            images,
            per_frame(colour),
            boxes,
            per_frame(pose_frames),
            arm_base,
            sink_rotation,
            sink_translation,
            tile_last=bool(ground_tile),
        )
    return images.view(b, f, *images.shape[1:])


class DecoderInputs(NamedTuple):
    """What the light decoder reads beside each frame's latent, each None when it reads none."""

    arm: torch.Tensor | None  # (B, F, A, h s, w s): the arm drawing
    planes: torch.Tensor | None  # (B, F, P, 6, H, W): the warped first images it may copy
    links: torch.Tensor | None  # (B, F, h s, w s) long: the nearest link drawn at each sample (-1: none)
    arm_colours: torch.Tensor | None = None  # (B, F, 4, H, W): the arm paste's (``arm_colour_image``)

    def after_first(self) -> DecoderInputs:
        """Frames 1.., those a rollout generates."""
        return DecoderInputs(*(x[:, 1:] if x is not None else None for x in self))


def clip_decoder_inputs(
    generator_net: CausalGenerator, clips: Clip, device: torch.device, vae: VAEConfig
) -> DecoderInputs:
    """What the light decoder of ``vae`` reads beside each frame's latent, as the engine hands it
    over; the arm is drawn once for both."""
    drawn = _clip_arm_images(generator_net, clips, device) if vae.fast_decoder_arm_channels else None
    planes = None
    if vae.fast_decoder_warp_planes:
        arm_warp = drawn if vae.fast_decoder_arm_warp else None
        planes = clip_plane_images(
            generator_net,
            clips,
            device,
            arm_warp,
            vae.fast_decoder_ground_tile,
            vae.fast_decoder_ground_tile_depth,
            vae.fast_decoder_static_boxes,
        )
    arm, links = drawn if drawn is not None else (None, None)
    return DecoderInputs(
        arm, planes, links, _clip_arm_colours(generator_net, clips, device) if vae.fast_decoder_arm_paste else None
    )


def _clip_arm_colours(generator_net: CausalGenerator, clips: Clip, device: torch.device) -> torch.Tensor:
    """Every frame's arm painted with each link's colour in the clip's frame 0, for the arm paste
    (``CausalGenerator.arm_colour_image``), drawn at the previous frame's action with
    ``vae.fast_decoder_arm_paste_previous_action``: float32 (B, F, 4, H, W)."""
    b, f = clips[FRAMES].shape[:2]
    motions = relative_motions(clips[POSITIONS], clips[ORIENTATIONS])
    sink_rotation, sink_translation = (m.flatten(0, 1).to(device) for m in motions[2:])
    action, arm_base = _arm_inputs(generator_net, clips, device)
    first = torch.arange(b, device=device) * f  # each clip's frame 0 in the flattened frames
    colours = generator_net.sink_link_colours(clips[FRAMES][:, 0].to(device), action[first], arm_base[first])
    per_frame = colours[:, None].expand(-1, f, -1, -1).flatten(0, 1)  # ((B F), L, 4)
    if generator_net.config.vae.fast_decoder_arm_paste_previous_action:
        # As the engine draws it: frame 0's action, then each frame the last one's.
        clip_actions = action.view(b, f, -1)
        action = torch.cat([clip_actions[:, :1], clip_actions[:, :-1]], dim=1).flatten(0, 1)
    image = generator_net.arm_colour_image(per_frame, action, arm_base, sink_rotation, sink_translation)
    return image.view(b, f, *image.shape[1:])


def decode_clips(
    vae: VideoAutoencoder, generator_net: CausalGenerator | None, latents: torch.Tensor, inputs: DecoderInputs
) -> torch.Tensor:
    """(B, F, C, h, w) latents -> (B, F, 3, H, W) images by the light decoder, as the engine makes
    them: given ``inputs``, and with the unseen surfaces and the arm pasted (``vae.fast_decoder_paste_unseen``,
    ``vae.fast_decoder_arm_paste``)."""
    images = vae.decode_fast(latents, inputs.arm, inputs.planes)
    flat = images.flatten(0, 1)
    if vae.config.fast_decoder_paste_unseen:
        assert generator_net is not None and inputs.planes is not None and inputs.links is not None
        flat = generator_net.paste_unseen(flat, inputs.planes.flatten(0, 1), inputs.links.flatten(0, 1))
    if vae.config.fast_decoder_arm_paste:
        assert generator_net is not None and inputs.arm_colours is not None
        flat = generator_net.paste_arm(flat, inputs.arm_colours.flatten(0, 1))
    return flat.view(images.shape)


def clip_times(t_clip: torch.Tensor, num_frames: int, device: torch.device) -> torch.Tensor:
    """(B,) one time per clip -> (B, F): the same t for every frame, 0 for the clean sink frame 0."""
    t = t_clip.to(device)[:, None].expand(-1, num_frames).clone()
    t[:, 0] = 0.0
    return t


def noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise with t (B, F) per frame; frame 0 stays x0 where t = 0."""
    t5 = t[:, :, None, None, None]
    return (1 - t5) * x0 + t5 * noise


def flow_inputs(
    generator_net: CausalGenerator,
    vae: VideoAutoencoder,
    clips: Clip,
    t_clip: torch.Tensor,
    noise: torch.Tensor,
    *,
    recycle: bool,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The positional arguments of ``forward_train`` and the target velocity of a batch of clips.

    t_clip: (B,) one time per clip; noise: (B, F, C, h, w) on the clips' device.
    """
    x0, previous, rays = clip_latents(generator_net, vae, clips, recycle=recycle)
    t = clip_times(t_clip, x0.shape[1], x0.device)
    return (noised(x0, noise, t), previous, rays, clips[ACTIONS], t), noise - x0


def with_context_noise(previous: torch.Tensor, strength: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(1 - s) previous + s noise per frame: previous, noise (B, F, C, h, w), strength s (B, F).
    Frame 0's recycled input (the sink's own latent, which has no loss) stays clean."""
    s = strength.to(previous.device)[:, :, None, None, None].clone()
    s[:, 0] = 0.0
    return (1 - s) * previous + s * noise


def flow_loss(
    generator_net: CausalGenerator,
    inputs: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    velocity = generator_net.forward_train(*inputs, mask=mask)  # (B, F, C, h, w)
    return F.mse_loss(velocity[:, 1:].float(), target[:, 1:])  # no loss on the sink


def load_start(path: Path, stage: str) -> Checkpoint:
    """The checkpoint ``stage`` starts from, checked against ``START_STAGES``."""
    allowed = START_STAGES[stage]
    try:
        start = load_checkpoint(path)
    except CheckpointError as err:
        raise TrainError(f'model: the {stage} stage starts from a {" or ".join(allowed)} checkpoint: {err}') from None
    if start.config.stage not in allowed:
        raise TrainError(
            f'model: {path} is a {start.config.stage!r} checkpoint; the {stage} stage starts from '
            f'{" or ".join(repr(s) for s in allowed)} (run aapt-train {allowed[0]} first)'
        )
    if start.config.vae.temporal_factor != 1:
        raise TrainError(f'the {stage} stage supports vae.temporal_factor 1 only for now (poses per latent frame)')
    return start


def latent_shape(model_config: ModelConfig, b: int, f: int) -> tuple[int, ...]:
    return (b, f, model_config.vae.latent_channels, model_config.latent_height, model_config.latent_width)


def run(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train the generator (``base`` or ``adapt``); write the checkpoint and card to ``config.output``."""
    stage = config.stage
    folder = Path(config.output)
    start = load_start(Path(config.model), stage)
    model_config = dataclasses.replace(start.config, stage=stage)
    device = resolve_device(config.device)
    splits = load_splits(config.data, model_config)
    vae = start.vae.to(device).eval().requires_grad_(False)
    net = start.generator.to(device)
    g = model_config.generator
    recycle = stage == 'adapt'
    context_noise = config.flow.context_noise
    if context_noise > 0 and not recycle:
        raise TrainError(f'flow.context_noise: the {stage} stage has no recycled input to add noise to (adapt has)')

    def mask_of(num_frames: int) -> torch.Tensor | None:
        if stage == 'base':
            return bidirectional_attention_mask(num_frames, model_config.tokens_per_frame, device)
        return None  # forward_train's block-causal window mask

    def loss_fn(clips: Clip, generator: torch.Generator) -> torch.Tensor:
        f = clips[FRAMES].shape[1]
        b, share = config.optim.batch_size, rank_share(config.optim.batch_size)  # DDP: this rank's part
        t = sample_t(b, g.timestep_shift, config.flow.t_sampling, generator)[share]
        # drawn on the CPU: the same on every device
        noise = torch.randn(latent_shape(model_config, b, f), generator=generator)[share].to(device)
        inputs, target = flow_inputs(net, vae, clips, t, noise, recycle=recycle)
        if context_noise > 0:  # drawn only when on, so runs without it keep their random numbers
            strength = context_noise * torch.rand(b, f, generator=generator)[share]
            corruption = torch.randn(latent_shape(model_config, b, f), generator=generator)[share].to(device)
            inputs = (inputs[0], with_context_noise(inputs[1], strength, corruption), *inputs[2:])
        return flow_loss(net, inputs, target, mask_of(f))

    @torch.no_grad()
    def validate() -> dict[str, float]:
        net.eval()
        losses = []
        for k in range(config.val_batches):
            generator = step_generator(config.optim.seed, VAL_SEED_OFFSET - k)
            clips = batch(splits.val, config.optim.batch_size, generator, device)
            b, f = clips[FRAMES].shape[:2]
            for value in VAL_T:
                noise = torch.randn(latent_shape(model_config, b, f), generator=generator).to(device)
                inputs = flow_inputs(net, vae, clips, torch.full((b,), value), noise, recycle=recycle)
                losses.append(float(flow_loss(net, *inputs, mask_of(f))))
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
    if not writes_outputs(stats, config):
        return {'steps': stats.step}
    val = validate()
    checkpoint = generator_checkpoint(model_config, net, start)
    loss_first, loss_last = mean_first_last(stats.losses)
    card = {
        'attention': 'bidirectional over the clip, no recycled input'
        if stage == 'base'
        else 'block-causal window, ground-truth recycled previous frame (teacher forcing)',
        'steps': f'{stats.step} x batch {config.optim.batch_size}',
        'wall time': f'{stats.wall_s:.1f} s on {device}',
        'flow-matching loss, first -> last 5 steps': f'{loss_first:.4f} -> {loss_last:.4f}',
        f'held-out flow loss at t in {list(VAL_T)}': f'{val["flow_loss"]:.4f}',
        't sampling': f'{config.flow.t_sampling}, shift {g.timestep_shift:g}',
    }
    if context_noise > 0:
        card['recycled input'] = f'mixed with noise of strength U(0, {context_noise:g}) per frame; held-out: clean'

    write_outputs(folder, checkpoint, config, card, splits.bags)
    return {'steps': stats.step, 'loss_first': loss_first, 'loss_last': loss_last, 'val_flow_loss': val['flow_loss']}
