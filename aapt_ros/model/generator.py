"""The block-causal latent transformer (a DiT with adaLN conditioning per latent frame).

Per frame the input tokens are patches of [noisy latent, recycled previous latent, camera rays]
concatenated on channels (AAPT sec. 3: the previous generated frame is "recycled" as input;
with ``sink_warp_depths`` the per-pixel camera input also holds the sink latent seen along the
rays, see ``conditioning``, and with ``previous_warp_depths`` the recycled latent is also given
seen along the rays, see ``plane_sweep``, and with ``arm_chain`` it also holds the robot arm
drawn from the joint positions, and with ``arm_base_plane`` the plane its base stands on, see ``arm``;
with ``sink_warp_base_plane`` and ``sink_warp_ground_below_base`` the sink latent seen where the rays
meet that plane and the ground, see ``conditioning``, or with ``sink_warp_pixels`` the sink image
seen there and encoded, see ``encoded_sink_at_planes``);
the timestep and the action vector modulate every block through adaLN. Tokens of frame i attend
to frames i-window+1 .. i and to the sink (frame 0). The output is the flow-matching velocity
v = noise - x0, so the same network samples in one step or many.

Two entry points, never mixed: ``forward_train`` runs whole clips under the block-causal mask
(or an explicit one: the bidirectional base model);
``step`` runs one frame against a KVCache. Both compute the same function (tested).
``forward_segment`` is ``forward_train`` for one segment of a long training rollout: it also
attends to the detached keys and values of earlier frames (a ``KVPrefix``), so a rollout can be
back-propagated segment by segment in bounded memory (AAPT sec. 3.4, long-video training).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from aapt_ros.model import ground_tile, static_boxes, table_objects
from aapt_ros.model.arm import SUPERSAMPLING, ArmDrawing, chain_moving_like, chain_named
from aapt_ros.model.arm_surface import ArmSurface, fit_shading
from aapt_ros.model.attention import Attention
from aapt_ros.model.camera import RayEncoder, directions_in_frame, frame_given, points_in_frame
from aapt_ros.model.config import ConfigError, ModelConfig
from aapt_ros.model.kv_cache import KVCache
from aapt_ros.model.masks import frame_attention_mask, token_attention_mask
from aapt_ros.model.plane_sweep import PLANE_IMAGE_CHANNELS, PlaneSweep, image_grid

TILE_FOLD_STREAMS = 4  # streams whose first image ``sink_ground_tile`` folds at once


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of flow times t in [0, 1], shape (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[..., None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate='tanh'), nn.Linear(hidden, dim))
        self.modulation = nn.Linear(dim, 6 * dim)  # adaLN-Zero: shift, scale, gate for attn and mlp
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def _mods(self, c: torch.Tensor) -> list[torch.Tensor]:
        """c (B, F, dim) -> six (B, F, 1, dim) tensors broadcast over a frame's tokens."""
        return [m[:, :, None, :] for m in self.modulation(c).chunk(6, dim=-1)]

    def forward_train(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, F, T, dim), c (B, F, dim)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self._mods(c)
        f = x.shape[1]
        h = rearrange(modulate(self.norm1(x), shift1, scale1), 'b f t d -> b (f t) d')
        x = x + gate1 * rearrange(self.attn.forward_train(h, mask), 'b (f t) d -> b f t d', f=f)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))

    def forward_segment(
        self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, F, T, dim), c (B, F, dim); prefix keys and values (B, P*T, H, D) or None;
        mask (F*T, P*T + F*T). Returns x and the keys and values attended, (B, P*T + F*T, H, D)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self._mods(c)
        f = x.shape[1]
        h = rearrange(modulate(self.norm1(x), shift1, scale1), 'b f t d -> b (f t) d')
        out, k, v = self.attn.forward_segment(h, mask, prefix)
        x = x + gate1 * rearrange(out, 'b (f t) d -> b f t d', f=f)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2)), k, v

    def step(
        self, x: torch.Tensor, c: torch.Tensor, cache: KVCache, layer: int, slots: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """x (B, 1, T, dim), c (B, 1, dim): one frame per stream."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self._mods(c)
        h = modulate(self.norm1(x), shift1, scale1)[:, 0]
        x = x + gate1 * self.attn.step(h, cache, layer, slots, mask)[:, None]
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class KVPrefix(NamedTuple):
    """Detached keys and values of the earlier frames of a rollout, attended by ``forward_segment``.

    Holds what a KVCache holds before frame ``end``: the sink (frame 0) and frames ``first .. end - 1``
    (the last ``window_frames - 1``), in frame order. Training only: ``step``'s cache is a ring.
    """

    keys: tuple[torch.Tensor, ...]  # per layer (B, P*T, H, D), P = 1 + end - first frames
    values: tuple[torch.Tensor, ...]  # per layer (B, P*T, H, D)
    first: int  # rollout index of the oldest non-sink frame held
    end: int  # rollout index of the next frame: one past the newest held


# Frame 0 must show a link on this many drawing samples (away from its rim) for its colour to be pasted.
MIN_LINK_SAMPLES = 4
# vae.fast_decoder_paste_under_arm: a copy whose sample is more than this share frame 0's arm (its
# capsules grown by a pixel, bilinearly sampled) shows no surface; its rims count too, as the
# capsules only approximate the links.
UNDER_ARM_SHARE = 0.1
# Frame 0 must show a box face's orientation (or the background) on this many pixels for its colour to be pasted.
MIN_FACE_PIXELS = 8


def _median_colours(image: torch.Tensor, masks: torch.Tensor, least: int) -> torch.Tensor:
    """image (B, 3, H, W) and masks (B, M, H, W) bool -> float32 (B, M, 4): per mask the median
    colour of its pixels and 1, or all zero where it holds fewer than ``least``."""
    pixels = image.float().flatten(2)[:, None]  # (B, 1, 3, H W)
    on = masks.flatten(2)[:, :, None]  # (B, M, 1, H W)
    median = torch.where(on, pixels, torch.full_like(pixels, torch.nan)).nanmedian(dim=-1).values  # (B, M, 3)
    enough = (masks.flatten(2).sum(-1) >= least)[..., None]  # (B, M, 1)
    return torch.cat([torch.where(enough, median, torch.zeros_like(median)), enough.float()], dim=-1)


def _sink_camera(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sink camera in its own frame, for each of like's B streams: rotation (B, 3, 3), translation (B, 3)."""
    b = like.shape[0]
    return torch.eye(3, device=like.device).expand(b, 3, 3), torch.zeros(b, 3, device=like.device)


class CausalGenerator(nn.Module):
    """Block-causal transformer over latent frames; predicts flow velocity per frame."""

    arm_joint_indices: torch.Tensor  # (J,) long, with an arm: where the chain's joints sit in the actions

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        g, v = config.generator, config.vae
        self.rays = RayEncoder(
            config.camera, config.latent_height, config.latent_width, g.ray_origin_scale, g.sink_ray_origin_scale
        )

        def sweep(depths: tuple[float, ...]) -> PlaneSweep | None:
            return PlaneSweep(config.camera, config.latent_height, config.latent_width, depths) if depths else None

        self.sink_warp, self.previous_warp = sweep(g.sink_warp_depths), sweep(g.previous_warp_depths)
        # The plane warps in pixels (sink_warp_pixels): the same geometry at the image's resolution.
        self.sink_image_warp = (
            PlaneSweep(config.camera, config.camera.height, config.camera.width, (1.0,)) if g.sink_warp_pixels else None
        )
        self.arm: ArmDrawing | None = None
        if g.arm_chain:
            chain = chain_named(g.arm_chain)
            self.arm = ArmDrawing(config.camera, config.latent_height, config.latent_width, chain, g.arm_base_plane)
            indices = torch.tensor([g.action_names.index(n) for n in chain.joint_names])
            self.register_buffer('arm_joint_indices', indices, persistent=False)  # the chain's joints in the actions
        # The arm drawn for the light decoder's arm paste (vae.fast_decoder_arm_paste), with its own
        # shapes if vae.fast_decoder_arm_paste_chain names some.
        self.paste_drawing: ArmDrawing | None = None
        if v.fast_decoder_arm_paste and g.arm_chain:
            chain = chain_moving_like(v.fast_decoder_arm_paste_chain or g.arm_chain, g.arm_chain)
            self.paste_drawing = ArmDrawing(config.camera, config.latent_height, config.latent_width, chain)
        # Or the paste's links drawn from points on their meshes (vae.fast_decoder_arm_paste_surface).
        self.arm_surface: ArmSurface | None = None
        if v.fast_decoder_arm_paste_surface and self.paste_drawing is not None:
            links = self.paste_drawing.chain.num_links
            if len(v.fast_decoder_arm_paste_surface) != links:
                raise ConfigError(
                    f'vae.fast_decoder_arm_paste_surface gives points for {len(v.fast_decoder_arm_paste_surface)} '
                    f'links; the chain drawn for the paste has {links}'
                )
            self.arm_surface = ArmSurface(v.fast_decoder_arm_paste_surface)
        # The parts of the input on channels, in order, and their widths (the ones this config has).
        parts = {
            'noisy': v.latent_channels,
            'previous': v.latent_channels,
            'rays': self.rays.num_channels,
            'sink_warp': self.sink_warp.num_channels(v.latent_channels) if self.sink_warp else 0,
            'arm': self.arm.num_channels if self.arm else 0,
            'sink_plane_warp': v.latent_channels + 1 if g.sink_warp_base_plane else 0,
            'sink_ground_warp': v.latent_channels + 1 if g.sink_warp_ground_below_base else 0,
            'previous_warp': self.previous_warp.num_channels(v.latent_channels) if self.previous_warp else 0,
        }
        self.input_parts = {name: width for name, width in parts.items() if width}
        in_channels = sum(self.input_parts.values())
        self.patch_embed = nn.Conv2d(in_channels, g.dim, g.patch_size, stride=g.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(config.tokens_per_frame, g.dim) * 0.02)
        # The sink frame is the user's image, not a generated one: a learned marker tells them apart.
        self.sink_embed = nn.Parameter(torch.zeros(g.dim))
        self.time_embed = nn.Sequential(nn.Linear(g.dim, g.dim), nn.SiLU(), nn.Linear(g.dim, g.dim))
        self.action_embed = nn.Linear(g.action_dim, g.dim)
        self.blocks = nn.ModuleList(Block(g.dim, g.heads, g.mlp_ratio) for _ in range(g.depth))
        self.final_norm = nn.LayerNorm(g.dim, elementwise_affine=False)
        self.final_modulation = nn.Linear(g.dim, 2 * g.dim)
        self.final_proj = nn.Linear(g.dim, g.patch_size**2 * v.latent_channels)
        for layer in (self.final_modulation, self.final_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def input_slice(self, part: str) -> slice:
        """The channels of ``part`` (a key of ``input_parts``) in the input of ``patch_embed``."""
        start = 0
        for name, width in self.input_parts.items():
            if name == part:
                return slice(start, start + width)
            start += width
        raise KeyError(f'this generator has no input part {part!r}; it has {list(self.input_parts)}')

    def conditioning(
        self,
        rotation: torch.Tensor,
        translation: torch.Tensor,
        sink_rotation: torch.Tensor | None = None,
        sink_translation: torch.Tensor | None = None,
        sink_latent: torch.Tensor | None = None,
        action: torch.Tensor | None = None,
        arm_base: torch.Tensor | None = None,
        *,
        arm_drawing: torch.Tensor | None = None,
        sink_image: torch.Tensor | None = None,
        encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
        plane_images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The per-pixel camera input of a frame, the ``rays`` of ``forward_train`` and ``step``:
        float32 (B, R, h, w). rotation, translation (B, 3, 3), (B, 3): the motion since the previous
        frame; sink_rotation, sink_translation: the camera in the sink frame (with sink rays);
        sink_latent (B, C, h, w): the stream's first latent (with a sink warp); action (B, A) and
        arm_base (B, 3, 4), the arm's base link [R | t] in the sink camera frame (with an arm; all zeros:
        unknown, the arm channels are zero); arm_drawing: ``arm_image`` of these inputs, when the
        caller has drawn it already (the engine draws it once for the generator and the light decoder);
        sink_image (B, 3, H, W) in [-1, 1], the stream's first image, and encode, the autoencoder's
        (N, 3, H, W) images -> (N, C, h, w) latents (with ``sink_warp_pixels``); plane_images:
        ``sink_plane_images`` of these inputs, when the caller has them already (the engine makes them
        once for the generator and a light decoder that reads them)."""
        rays = self.rays(rotation, translation, sink_rotation, sink_translation)
        inputs = [rays]
        if self.sink_warp is not None:
            if sink_latent is None or sink_rotation is None or sink_translation is None:
                raise ValueError('this generator also takes the sink latent seen along its rays: pass sink_latent')
            inputs.append(self.sink_warp.along_motion(sink_latent, sink_rotation, sink_translation))
        if self.arm is not None:
            if action is None or arm_base is None or sink_rotation is None or sink_translation is None:
                raise ValueError('this generator also draws the arm: pass action and arm_base')
            if arm_drawing is None:
                arm_drawing = self.arm_image(action, arm_base, sink_rotation, sink_translation)
            inputs.append(F.avg_pool2d(arm_drawing, SUPERSAMPLING))
        g = self.config.generator
        if self.sink_image_warp is not None:
            if sink_image is None or encode is None:
                raise ValueError('this generator warps the sink image (sink_warp_pixels): pass sink_image and encode')
            if plane_images is None:
                assert arm_base is not None and sink_rotation is not None and sink_translation is not None  # above
                plane_images = self.sink_plane_images(sink_image, arm_base, sink_rotation, sink_translation)
            inputs += self.encoded_sink_at_planes(plane_images, encode, sink_image.dtype)
        elif g.sink_warp_base_plane or g.sink_warp_ground_below_base:
            assert self.sink_warp is not None and sink_latent is not None and arm_base is not None  # config, above
            assert sink_rotation is not None and sink_translation is not None
            planes, known = self._warp_planes(arm_base, sink_rotation, sink_translation)
            for plane, beyond_edges in planes:
                lengths, meets = self.sink_warp.plane_lengths(plane)
                inputs.append(
                    self.sink_warp.along_motion(
                        sink_latent, sink_rotation, sink_translation, lengths, meets & known, beyond_edges
                    )
                )
        return torch.cat(inputs, dim=1) if len(inputs) > 1 else rays

    def _warp_planes(
        self, arm_base: torch.Tensor, sink_rotation: torch.Tensor, sink_translation: torch.Tensor
    ) -> tuple[list[tuple[torch.Tensor, bool]], torch.Tensor]:
        """The planes the sink is warped to: per plane its frame in the current camera's (B, 3, 4)
        and whether points beyond frame 0's edges take its nearest edge; and (B, 1, 1, 1) bool,
        the streams whose base is given (an unknown base: nothing sampled)."""
        g = self.config.generator
        base = self.base_in_camera(arm_base, sink_rotation, sink_translation)
        planes = []
        if g.sink_warp_base_plane:
            planes.append((base, False))
        if g.sink_warp_ground_below_base:
            planes.append((self._ground(base), True))
        return planes, frame_given(arm_base)[:, None, None, None]

    def _ground(self, base: torch.Tensor) -> torch.Tensor:
        """The ground's frame (B, 3, 4) from the arm base's in the same camera frame: the base's,
        moved down its own z axis (x_cam = R x + t - d R e_z)."""
        down = base[:, :, 3:] - self.config.generator.sink_warp_ground_below_base * base[:, :, 2:3]
        return torch.cat([base[:, :, :3], down], dim=2)

    def sink_ground_tile(
        self,
        sink_image: torch.Tensor,
        sink_arm: torch.Tensor,
        arm_base: torch.Tensor,
        pose_frame: torch.Tensor,
        period: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first image (B, 3, H, W) in [-1, 1] folded into one period of the floor
        (``ground_tile.fold_first_image``; period: ``vae.fast_decoder_ground_tile``, metres): the
        padded tile (B, 4, T + 2, T + 2) and its axes (B, 3, 3), kept per stream for ``ground_tile_image``. sink_arm
        (B, 1, H, W): ``sink_arm_mask``; arm_base and pose_frame (B, 3, 4): the arm's base link and
        the frame the camera poses are given in, in the sink camera frame (all zeros: unknown).
        With ``vae.fast_decoder_ground_tile_nearest``, the nearest copies no static box hides; with
        ``vae.fast_decoder_ground_tile_snap``, the floor's one or two colours."""
        if not self.config.generator.sink_warp_ground_below_base:
            raise ValueError('this generator warps to no ground (generator.sink_warp_ground_below_base is 0)')
        vae = self.config.vae
        boxes = None
        if vae.fast_decoder_static_boxes:
            boxes = torch.tensor(vae.fast_decoder_static_boxes, device=sink_image.device, dtype=torch.float32)
        ground = self._ground(arm_base.float())
        # A few streams at a time: the fold holds every copy of the tile at once, about 350 MiB a
        # stream for our 128 x 128 model, so starting 256 streams together ran an H100 out of memory.
        folds = [
            ground_tile.fold_first_image(
                sink_image[i : i + TILE_FOLD_STREAMS],
                sink_arm[i : i + TILE_FOLD_STREAMS],
                ground[i : i + TILE_FOLD_STREAMS],
                pose_frame[i : i + TILE_FOLD_STREAMS],
                self.config.camera,
                period,
                boxes,
                vae.fast_decoder_ground_tile_nearest,
                vae.fast_decoder_ground_tile_snap,
            )
            for i in range(0, sink_image.shape[0], TILE_FOLD_STREAMS)
        ]
        return torch.cat([tile for tile, _ in folds]), torch.cat([axes for _, axes in folds])

    def ground_tile_image(
        self,
        tile: torch.Tensor,
        axes: torch.Tensor,
        period: float,
        arm_base: torch.Tensor,
        sink_rotation: torch.Tensor,
        sink_translation: torch.Tensor,
        max_depth: float = 0.0,
    ) -> torch.Tensor:
        """The ground as ``sink_ground_tile``'s tile, axes and period show it where each pixel's ray meets it:
        float32 (B, PLANE_IMAGE_CHANNELS, H, W) in ``sink_plane_images``' layout, for a light decoder
        with ``vae.fast_decoder_ground_tile``; not sampled where the ground lies farther than
        max_depth metres along this camera's axis (``vae.fast_decoder_ground_tile_depth``; 0: no
        limit). arm_base, the camera: as ``sink_plane_images``'."""
        lengths, on_ground = self._ground_hits(arm_base, sink_rotation, sink_translation, max_depth)
        directions = self._pixel_warp().rotated_directions(sink_rotation)  # (B, 3, H, W) in the sink frame
        points = lengths[:, 0] * directions + sink_translation.float()[:, :, None, None]  # (B, 3, H, W) there
        return ground_tile.tile_image(tile, axes, period, points, on_ground)

    def _ground_hits(
        self, arm_base: torch.Tensor, sink_rotation: torch.Tensor, sink_translation: torch.Tensor, max_depth: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Metres along each pixel's ray to the ground (B, 1, 1, H, W), and (B, 1, H, W) bool where it
        meets it ahead, the base is known and (max_depth > 0) no farther than max_depth along the
        camera's axis: farther, a rendered scene shows its background."""
        warp = self._pixel_warp()
        ground = self._ground(self.base_in_camera(arm_base, sink_rotation, sink_translation))
        lengths, meets = warp.plane_lengths(ground)  # (B, 1, 1, H, W), (B, 1, H, W)
        on_ground = meets & frame_given(arm_base)[:, None, None, None]
        if max_depth:
            on_ground = on_ground & (lengths[:, 0] * warp.camera_directions.float()[2] <= max_depth)
        return lengths, on_ground

    def _pixel_warp(self) -> PlaneSweep:
        if self.sink_image_warp is None:
            raise ValueError('this generator warps no image in pixels (generator.sink_warp_pixels is off)')
        return self.sink_image_warp

    def sink_box_colour(
        self, sink_image: torch.Tensor, sink_arm: torch.Tensor, pose_frame: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        """The median colour of the first image (B, 3, H, W) in [-1, 1] where its rays first meet one
        of the scene's static boxes (K, 6) (``vae.fast_decoder_static_boxes``, in the pose frame),
        not on its arm (sink_arm (B, 1, H, W), ``sink_arm_mask``): float32 (B, 4), the colour and
        whether frame 0 shows any box (all zero where it shows none or pose_frame (B, 3, 4), the
        pose frame in the sink camera frame, is unknown)."""
        warp = self._pixel_warp()
        b = sink_image.shape[0]
        directions = warp.camera_directions.float()[None].expand(b, -1, -1, -1)  # frame 0's rays, (B, 3, H, W)
        camera = points_in_frame(pose_frame, torch.zeros(b, 3, device=sink_image.device))  # (B, 3)
        entries = static_boxes.first_entries(
            camera[:, :, None, None], directions_in_frame(pose_frame, directions), boxes
        )
        shows = entries.isfinite() & (sink_arm[:, 0] < 0.5) & frame_given(pose_frame)[:, None, None]  # (B, H, W)
        return _median_colours(sink_image, shows[:, None], 1)[:, 0]

    def copies_among_boxes(
        self,
        copied: torch.Tensor,
        box_colour: torch.Tensor,
        boxes: torch.Tensor,
        pose_frame: torch.Tensor,
        arm_base: torch.Tensor,
        sink_rotation: torch.Tensor,
        sink_translation: torch.Tensor,
        tile_last: bool,
        entries: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The light decoder's copied images (B, C, PLANE_IMAGE_CHANNELS, H, W) (``sink_plane_images``'
        planes first, the ground tile last if tile_last) told the scene's static boxes (K, 6)
        (``model/static_boxes.py``): each plane warp kept only where it shows what this camera sees
        and frame 0 saw, the tile only where the ground comes before any box, and the boxes' colour
        (box_colour (B, 4), ``sink_box_colour``) appended where a box comes first: (B, C + 1, ...).
        Streams whose pose frame (B, 3, 4, in the sink camera frame) is unknown keep their copies
        and get no box image. arm_base, the camera: as ``sink_plane_images``'. entries: ``box_entries``
        of this camera, where the caller needs them too (computed here otherwise)."""
        warp = self._pixel_warp()
        b = copied.shape[0]
        given = frame_given(pose_frame)[:, None, None]  # (B, 1, 1)
        directions = directions_in_frame(pose_frame, warp.rotated_directions(sink_rotation))
        camera = points_in_frame(pose_frame, sink_translation)[:, :, None, None]  # (B, 3, 1, 1)
        sink_camera = points_in_frame(pose_frame, torch.zeros(b, 3, device=copied.device))
        first_box = static_boxes.first_entries(camera, directions, boxes) if entries is None else entries[0]
        planes, _ = self._warp_planes(arm_base, sink_rotation, sink_translation)
        has_ground = bool(self.config.generator.sink_warp_ground_below_base)
        seen, ground_first = [], torch.zeros_like(first_box, dtype=torch.bool)  # no ground plane: never met
        for index, (plane, _) in enumerate(planes):
            lengths, meets = warp.plane_lengths(plane)
            length = lengths[:, 0, 0]  # (B, H, W) metres
            if has_ground and index == len(planes) - 1:  # the ground: seen unless a box stands in front
                ground_first = meets[:, 0] & (length <= first_box)
                seen_now = ground_first
            else:  # the table top's plane: only on a box's face that lies in it
                seen_now = meets[:, 0] & ((length - first_box).abs() <= static_boxes.FACE_TOLERANCE * length)
            points = camera + length[:, None] * directions  # (B, 3, H, W) in the pose frame
            seen.append(seen_now & ~static_boxes.hidden_from(sink_camera, points, boxes))
        keep = [torch.where(given, s, True)[:, None, None].float() for s in seen]  # (B, 1, 1, H, W) each
        # The decoder's config says whether it reads the tile, not this generator's: a decoder stage
        # adds the tile to a checkpoint whose config has none.
        if tile_last:
            keep += [torch.ones_like(keep[0])] * (copied.shape[1] - len(keep) - 1)  # the arm's warp: as it is
            keep.append(torch.where(given, ground_first, True)[:, None, None].float())
        else:
            keep += [torch.ones_like(keep[0])] * (copied.shape[1] - len(keep))
        on_box = first_box.isfinite() & given & ~ground_first
        shown = on_box[:, None].float() * box_colour[:, 3:, None, None]  # (B, 1, H, W)
        box_image = torch.cat(
            [box_colour[:, :3, None, None] * shown, shown, shown, torch.zeros_like(shown)], dim=1
        )  # (B, 6, H, W)
        return torch.cat([copied * torch.cat(keep, dim=1), box_image[:, None]], dim=1)

    def paste_unseen(self, image: torch.Tensor, copies: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
        """The light decoder's image (B, 3, H, W) with the copies told the static boxes (B, C, 6, H, W)
        (``copies_among_boxes``: the plane warps first, the ground tile and the boxes' colour last)
        taken as they are where frame 0 never showed what the camera sees and the arm drawing
        (links (B, h s, w s) long, ``arm_image_and_links``; -1: no link) covers no sample within a
        pixel: the tile where the ray meets the ground first and the ground's warp has nothing frame
        0 shows, the boxes' colour on the table top's face outside frame 0's view
        (``vae.fast_decoder_paste_unseen``); with ``vae.fast_decoder_paste_under_arm`` also where
        frame 0 showed its arm in front of that surface (more than UNDER_ARM_SHARE of the sample)."""
        free = self._arm_in_pixels(links) < 0.5  # (B, 1, H, W): no arm within a pixel
        table = copies[:, 0] if self.config.generator.sink_warp_base_plane else None
        ground, tile, boxes = copies[:, self.config.generator.pixel_warp_planes - 1], copies[:, -2], copies[:, -1]
        unseen_ground = free & (tile[:, 3:4] > 0.5) & self._not_shown(ground)
        image = torch.where(unseen_ground, tile[:, :3].to(image.dtype), image)
        if table is not None:
            unseen_top = free & (boxes[:, 3:4] > 0.5) & (table[:, 3:4] > 0.5) & self._not_shown(table)
            image = torch.where(unseen_top, boxes[:, :3].to(image.dtype), image)
        return image

    def _not_shown(self, copy: torch.Tensor) -> torch.Tensor:
        """A plane warp's copy (B, PLANE_IMAGE_CHANNELS, H, W) -> (B, 1, H, W) bool: frame 0 shows no
        surface there (with ``vae.fast_decoder_paste_under_arm``, its arm in front counts as none)."""
        hidden = copy[:, 4:5] < 0.5
        if self.config.vae.fast_decoder_paste_under_arm:  # the last channel: how much of the sample is frame 0's arm
            return hidden | (copy[:, 5:6] > UNDER_ARM_SHARE)
        return hidden

    def box_entries(
        self, pose_frame: torch.Tensor, boxes: torch.Tensor, sink_rotation: torch.Tensor, sink_translation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each pixel's ray of the camera (sink_rotation, sink_translation in the sink frame)
        first enters one of the static boxes (K, 6), in metres (B, H, W), inf where none, and through
        which face (``static_boxes.FACES``), long (B, H, W), -1 where none: once a frame for both
        ``copies_among_boxes`` and ``paste_boxes_and_sky``."""
        directions = directions_in_frame(pose_frame, self._pixel_warp().rotated_directions(sink_rotation))
        camera = points_in_frame(pose_frame, sink_translation)[:, :, None, None]  # (B, 3, 1, 1)
        return static_boxes.first_entry_faces(camera, directions, boxes)

    def sink_face_colours(
        self, sink_image: torch.Tensor, sink_arm: torch.Tensor, pose_frame: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        """Per box face orientation (``static_boxes.FACES``), the median colour of the first image
        (B, 3, H, W) in [-1, 1] where its rays enter the static boxes (K, 6) through such a face, off
        its arm (sink_arm (B, 1, H, W)), on at least MIN_FACE_PIXELS pixels: float32 (B, FACES, 4),
        the colour and whether there is one (all zero where not, or pose_frame is unknown), kept per
        stream for ``paste_boxes_and_sky``."""
        faces = self.box_entries(pose_frame, boxes, *_sink_camera(sink_image))[1]  # (B, H, W)
        usable = (sink_arm[:, 0] < 0.5) & frame_given(pose_frame)[:, None, None]
        orientations = torch.arange(static_boxes.FACES, device=faces.device)[None, :, None, None]
        shows = (faces[:, None] == orientations) & usable[:, None]  # (B, FACES, H, W)
        return _median_colours(sink_image, shows, MIN_FACE_PIXELS)

    def sink_sky_colour(
        self,
        sink_image: torch.Tensor,
        sink_arm: torch.Tensor,
        arm_base: torch.Tensor,
        pose_frame: torch.Tensor,
        boxes: torch.Tensor,
    ) -> torch.Tensor:
        """The median colour of the first image (B, 3, H, W) in [-1, 1] where its rays meet neither a
        static box (K, 6) nor the ground within ``vae.fast_decoder_ground_tile_depth``, off its arm
        (sink_arm (B, 1, H, W)), on at least MIN_FACE_PIXELS pixels: float32 (B, 4), the colour and
        whether there is one (zero where not, or the base or pose frame (B, 3, 4) is unknown)."""
        camera = _sink_camera(sink_image)
        faces = self.box_entries(pose_frame, boxes, *camera)[1]
        sky = self._sky(arm_base, pose_frame, *camera, faces) & (sink_arm < 0.5)  # (B, 1, H, W)
        return _median_colours(sink_image, sky, MIN_FACE_PIXELS)[:, 0]

    def _sky(
        self,
        arm_base: torch.Tensor,
        pose_frame: torch.Tensor,
        sink_rotation: torch.Tensor,
        sink_translation: torch.Tensor,
        faces: torch.Tensor,
    ) -> torch.Tensor:
        """(B, 1, H, W) bool: the camera's rays that meet neither a box (faces: ``box_entries``' for
        this camera) nor the ground within ``vae.fast_decoder_ground_tile_depth`` (none where the
        base or the pose frame is unknown)."""
        depth = self.config.vae.fast_decoder_ground_tile_depth
        _, on_ground = self._ground_hits(arm_base, sink_rotation, sink_translation, depth)
        no_box = faces[:, None] < 0
        known = (frame_given(arm_base) & frame_given(pose_frame))[:, None, None, None]
        return no_box & ~on_ground & known

    def paste_boxes_and_sky(
        self,
        image: torch.Tensor,
        links: torch.Tensor,
        table: torch.Tensor | None,
        faces: torch.Tensor,
        face_colours: torch.Tensor | None,
        sky_colour: torch.Tensor | None,
        pose_frame: torch.Tensor,
        arm_base: torch.Tensor,
        sink_rotation: torch.Tensor,
        sink_translation: torch.Tensor,
    ) -> torch.Tensor:
        """The light decoder's image (B, 3, H, W), after ``paste_unseen``, where no arm is drawn
        within a pixel (links as there): with face_colours (B, FACES, 4) (``sink_face_colours``,
        ``vae.fast_decoder_paste_box_faces``) a pixel whose ray first enters a static box (faces
        (B, H, W), ``box_entries``' for this camera) takes the colour of that face's orientation in
        frame 0, except where the table top's warp (table (B, PLANE_IMAGE_CHANNELS, H, W),
        ``copies_among_boxes``' first copy; None: no such warp) shows the top; with sky_colour (B, 4)
        (``sink_sky_colour``, ``vae.fast_decoder_paste_sky``) a pixel whose ray meets neither a box
        nor the ground takes frame 0's background colour. pose_frame, arm_base (B, 3, 4) and the
        camera: as ``copies_among_boxes``'."""
        free = self._arm_in_pixels(links) < 0.5  # (B, 1, H, W)
        if face_colours is not None:
            b, h, w = faces.shape
            picked = torch.gather(face_colours.float(), 1, faces.clamp(min=0).view(b, -1, 1).expand(-1, -1, 4))
            colour = picked.transpose(1, 2).reshape(b, 4, h, w)  # (B, 4, H, W)
            face = faces[:, None]  # (B, 1, H, W)
            on_face = free & (face >= 0) & (colour[:, 3:] > 0.5)
            if table is not None:  # the top's warp, where it shows the top, is the decoder's to copy
                on_face = on_face & ~((face == static_boxes.TOP_FACE) & ~self._not_shown(table))
            image = torch.where(on_face, colour[:, :3].to(image.dtype), image)
        if sky_colour is not None:
            sky = free & self._sky(arm_base, pose_frame, sink_rotation, sink_translation, faces)
            sky = sky & (sky_colour[:, 3] > 0.5)[:, None, None, None]
            image = torch.where(sky, sky_colour[:, :3, None, None].to(image.dtype), image)
        return image

    def sink_table_objects(
        self, sink_image: torch.Tensor, sink_arm: torch.Tensor, pose_frame: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the first image (B, 3, H, W) in [-1, 1] shows standing on the static boxes' (K, 6) tops,
        off its arm (sink_arm (B, 1, H, W)), as points (B, 3, N) in its camera frame and colours
        (B, 4, N) (``table_objects.first_image_objects``; none where pose_frame (B, 3, 4) is unknown),
        kept per stream for ``paste_table_objects`` (``vae.fast_decoder_paste_objects``)."""
        return table_objects.first_image_objects(sink_image, sink_arm, pose_frame, boxes, self.config.camera)

    def paste_table_objects(
        self,
        image: torch.Tensor,
        links: torch.Tensor,
        points: torch.Tensor,
        colours: torch.Tensor,
        sink_rotation: torch.Tensor,
        sink_translation: torch.Tensor,
    ) -> torch.Tensor:
        """The light decoder's image (B, 3, H, W), after ``paste_boxes_and_sky``, with frame 0's objects
        (``sink_table_objects``' points and colours) drawn where this camera (in the sink frame)
        sees them and no arm is drawn within a pixel (links as ``paste_boxes_and_sky``'s)."""
        drawn = table_objects.splat(points, colours, sink_rotation, sink_translation, self.config.camera)
        on_object = (drawn[:, 3:] > 0.5) & (self._arm_in_pixels(links) < 0.5)
        return torch.where(on_object, drawn[:, :3].to(image.dtype), image)

    def sink_plane_images(
        self,
        sink_image: torch.Tensor,
        arm_base: torch.Tensor,
        sink_rotation: torch.Tensor,
        sink_translation: torch.Tensor,
        sink_arm: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The sink image (B, 3, H, W) in [-1, 1] sampled where each pixel's ray meets each plane
        (with ``sink_warp_pixels``): float32 (B, P, PLANE_IMAGE_CHANNELS, H, W), per plane the colour
        there (zero where nothing is sampled: no ray meets the plane, or the base is unknown), whether
        it was sampled, whether frame 0 shows the point (the ground beyond frame 0's edges is
        sampled at its nearest edge, but not shown), and how much of the sample is the arm
        (``sink_arm_mask`` sampled alike; zero without sink_arm). arm_base (B, 3, 4) in the sink
        camera frame, the camera in that frame (B, 3, 3), (B, 3). ``conditioning`` encodes the
        colours; a light decoder with ``vae.fast_decoder_warp_planes`` reads all of it."""
        warp = self._pixel_warp()
        planes, known = self._warp_planes(arm_base, sink_rotation, sink_translation)
        directions = warp.rotated_directions(sink_rotation)  # the same rays for every plane
        # The arm mask is sampled with the image, in one pass.
        source = sink_image.float() if sink_arm is None else torch.cat([sink_image.float(), sink_arm.float()], dim=1)
        per_plane = []
        for plane, beyond_edges in planes:
            lengths, meets = warp.plane_lengths(plane)
            grid, seen = warp.sample_grid(directions, sink_translation, lengths, meets & known, beyond_edges)
            grid = grid[:, 0]  # one plane: (B, H, W, 2)
            # Points not sampled carry grid 2, so zero padding gives them zero.
            sampled_source = F.grid_sample(source, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
            colour, arm = sampled_source[:, :3], sampled_source[:, 3:]
            if sink_arm is None:
                arm = torch.zeros_like(colour[:, :1])
            sampled = (grid.abs() <= 1).all(dim=-1)[:, None].float()  # (B, 1, H, W)
            per_plane.append(torch.cat([colour, sampled, seen[:, :1].float(), arm], dim=1))
        images = torch.stack(per_plane, dim=1)
        assert images.shape[2] == PLANE_IMAGE_CHANNELS
        return images

    def sink_arm_mask(self, action: torch.Tensor, arm_base: torch.Tensor) -> torch.Tensor:
        """Where the first image shows the arm: float32 (B, 1, H, W), 1 on the arm drawn with the
        first frame's joints action (B, A) from its base arm_base (B, 3, 4) in the sink camera
        (zero for an unknown base), at the image's resolution and grown by one pixel, since the
        drawing's capsules only approximate the links. The plane warps sample it with the image:
        what frame 0 shows there is the arm, not the table or the ground behind it, and a decoder
        that copied it would paint the arm where it no longer is."""
        return self._arm_in_pixels(self._links_in_sink(action, arm_base)[:, 0])

    def _arm_in_pixels(self, links: torch.Tensor) -> torch.Tensor:
        """The drawing's links (B, h s, w s) long (-1: none) -> float32 (B, 1, H, W), 1 where any
        link covers a pixel, grown by one pixel, since the capsules only approximate the links."""
        camera = self.config.camera
        full = F.interpolate((links[:, None] >= 0).float(), size=(camera.height, camera.width), mode='nearest')
        return F.max_pool2d(full, 3, stride=1, padding=1)

    def encoded_sink_at_planes(
        self, plane_images: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype
    ) -> list[torch.Tensor]:
        """``sink_plane_images`` (B, P, PLANE_IMAGE_CHANNELS, H, W) encoded, in ``dtype``, by ``encode``, the
        autoencoder's (N, 3, H, W) images -> (N, C, h, w) latents. -> per plane (B, C + 1, h, w)
        float32: the latent of what the sink shows there (zero where no ray meets the plane, partly
        zero in latent cells that are partly off it) and the share of each latent cell that frame 0 shows."""
        num_planes = plane_images.shape[1]
        # One encoder pass over every plane's image, not one per plane: 0.1-1 ms less a frame on two CPU cores.
        # Zero, mid-grey, where nothing is sampled; the sampled share masks what the encoder makes of it.
        images = plane_images[:, :, :3].transpose(0, 1).flatten(0, 1)  # (P B, 3, H, W), plane by plane
        latents = encode(images.to(dtype)).float().chunk(num_planes)
        factor = self.config.vae.spatial_factor
        return [
            torch.cat(
                [latent * F.avg_pool2d(plane_images[:, p, 3:4], factor), F.avg_pool2d(plane_images[:, p, 4:5], factor)],
                dim=1,
            )
            for p, latent in enumerate(latents)
        ]

    def arm_image(
        self, action: torch.Tensor, arm_base: torch.Tensor, sink_rotation: torch.Tensor, sink_translation: torch.Tensor
    ) -> torch.Tensor:
        """The arm drawn at SUPERSAMPLING x the latent resolution (``ArmDrawing.image``): float32
        (B, L + 1, h s, w s), zero for streams whose arm_base is all zeros (unknown). action (B, A),
        arm_base (B, 3, 4) in the sink camera frame, the camera in that frame (B, 3, 3), (B, 3).
        ``conditioning`` averages it over each latent pixel; the light decoder can read it as it is."""
        return self.arm_image_and_links(action, arm_base, sink_rotation, sink_translation)[0]

    def arm_image_and_links(
        self, action: torch.Tensor, arm_base: torch.Tensor, sink_rotation: torch.Tensor, sink_translation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``arm_image``, and (B, h s, w s) long the nearest link at each of its samples (-1: none),
        what ``sink_arm_warp`` needs of the drawing."""
        if self.arm is None:
            raise ValueError('this generator draws no arm (generator.arm_chain is empty)')
        return self._drawn(self.arm, action, arm_base, sink_rotation, sink_translation)

    def _drawn(
        self,
        drawing: ArmDrawing,
        action: torch.Tensor,
        arm_base: torch.Tensor,
        sink_rotation: torch.Tensor,
        sink_translation: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.base_in_camera(arm_base, sink_rotation, sink_translation)
        drawn, links = drawing.image_and_links(action[:, self.arm_joint_indices], base)
        known = frame_given(arm_base)[:, None, None]  # (B, 1, 1): an unknown base, no arm drawn
        return drawn * known[:, None].to(drawn.dtype), torch.where(known, links, torch.full_like(links, -1))

    def _links_in_sink(
        self, action: torch.Tensor, arm_base: torch.Tensor, drawing: ArmDrawing | None = None
    ) -> torch.Tensor:
        """The nearest link at each drawing sample (B, 1, h s, w s) long (-1: none) of the arm at the
        first frame's joints action (B, A), drawn in the sink camera from arm_base (B, 3, 4) there,
        by ``drawing`` (default: the generator's)."""
        camera = _sink_camera(arm_base)
        if drawing is None:
            return self.arm_image_and_links(action, arm_base, *camera)[1][:, None]
        return self._drawn(drawing, action, arm_base, *camera)[1][:, None]

    @staticmethod
    def _interiors(links: torch.Tensor) -> torch.Tensor:
        """Links (B, 1, h s, w s) long (-1: none) -> float32 1 + the link at each sample whose 3x3
        neighbours show the same link, 0 elsewhere: the drawn shapes are a little wider than the
        links, and their rims would hand over the background behind the arm."""
        links = (links + 1).float()
        interior = F.max_pool2d(links, 3, stride=1, padding=1) == -F.max_pool2d(-links, 3, stride=1, padding=1)
        return links * interior

    def sink_arm_links(self, action: torch.Tensor, arm_base: torch.Tensor) -> torch.Tensor:
        """The arm at the first frame's joints action (B, A), its base arm_base (B, 3, 4) in the sink
        camera: float32 (B, 1, h s, w s), 1 + the nearest link at each drawing sample (0: none, and
        on each link's rim), kept per stream for ``sink_arm_warp``."""
        return self._interiors(self._links_in_sink(action, arm_base))

    def sink_arm_warp(
        self,
        sink_image: torch.Tensor,
        sink_action: torch.Tensor,
        sink_links: torch.Tensor,
        action: torch.Tensor,
        arm_base: torch.Tensor,
        sink_rotation: torch.Tensor,
        sink_translation: torch.Tensor,
        drawing: torch.Tensor,
        links: torch.Tensor,
    ) -> torch.Tensor:
        """The arm as frame 0 shows it, moved to where this frame's joints put it: float32
        (B, PLANE_IMAGE_CHANNELS, H, W) in ``sink_plane_images``' layout (colour, sampled, shown,
        and a zero arm channel), for a light decoder with ``vae.fast_decoder_arm_warp``.

        Each drawing sample on a link (``drawing`` and ``links`` from ``arm_image_and_links`` for
        this frame) is the point on its ray nearest that link's centre line; moved rigidly with the
        link from this frame's joints action (B, A) to frame 0's sink_action (B, A), it lands in the
        sink image (B, 3, H, W), which is sampled there where frame 0 shows that very link
        (sink_links, ``sink_arm_links``): a point of the link, not what hides it. arm_base, the
        camera: as ``arm_image``'s."""
        arm = self.arm
        if arm is None:
            raise ValueError('this generator draws no arm (generator.arm_chain is empty)')
        camera = self.config.camera
        joints, sink_joints = action[:, self.arm_joint_indices], sink_action[:, self.arm_joint_indices]
        base = self.base_in_camera(arm_base, sink_rotation, sink_translation)
        transfer = arm.transfer(joints, base, sink_joints, arm_base.float())  # (B, L, 3, 4)
        b, size = links.shape[0], links.shape[1:]
        on_link = links.flatten(1) >= 0  # (B, S)
        link = links.flatten(1).clamp(min=0)
        depth = 1 / drawing[:, arm.chain.num_links].flatten(1).float().clamp(min=1e-6)  # (B, S) metres
        points = arm.sample_directions.float()[None] * depth[:, None]  # (B, 3, S), this camera's frame
        moved = torch.gather(transfer.flatten(2), 1, link[..., None].expand(-1, -1, 12)).view(b, -1, 3, 4)
        there = (moved[..., :3] @ points.transpose(1, 2)[..., None])[..., 0] + moved[..., 3]  # (B, S, 3) sink frame
        grid, in_front = image_grid(there[..., 0], there[..., 1], there[..., 2], camera)  # (B, S, 2) in the sink image
        grid = grid.view(b, *size, 2)
        frame0_link = F.grid_sample(sink_links.float(), grid, mode='nearest', padding_mode='zeros', align_corners=False)
        shown = on_link & in_front & (frame0_link.flatten(1) == link + 1)  # (B, S)
        # To the image's resolution: the coordinates blended between samples, the mask taken as it is.
        full = (camera.height, camera.width)
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=full, mode='bilinear', align_corners=False)
        shown = F.interpolate(shown.view(b, 1, *size).float(), size=full, mode='nearest')
        colour = F.grid_sample(
            sink_image.float(), grid.permute(0, 2, 3, 1), mode='bilinear', padding_mode='zeros', align_corners=False
        )
        return torch.cat([colour * shown, shown, shown, torch.zeros_like(shown)], dim=1)

    @property
    def link_colour_channels(self) -> int:
        """Channels per link of ``sink_link_colours``: 4, and 10 with the shading (``fit_shading``'s)."""
        return 10 if self.config.vae.fast_decoder_arm_paste_shading else 4

    def _surface_drawing(
        self, action: torch.Tensor, base: torch.Tensor, normals: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The arm drawn from its meshes at joints action (B, A), its base (B, 3, 4) in the camera:
        the link each pixel shows (B, H, W) and, with ``normals``, the surface's normal there in the
        base's frame (B, 3, H, W)."""
        assert self.arm_surface is not None
        poses = self._paste_drawing().link_poses(action[:, self.arm_joint_indices], base)
        links, in_camera = self.arm_surface.draw(poses, self.config.camera, normals=normals)
        if in_camera is None:
            return links, None
        return links, torch.einsum('bji,bjhw->bihw', base[:, :, :3].float(), in_camera)  # R^T n

    def sink_link_colours(self, sink_image: torch.Tensor, action: torch.Tensor, arm_base: torch.Tensor) -> torch.Tensor:
        """Each link's median colour in the first image (B, 3, H, W) in [-1, 1], where the paste's
        drawing (``vae.fast_decoder_arm_paste_chain``) of the first frame's joints action (B, A) from
        its base arm_base (B, 3, 4) in the sink camera shows that link away from its rim, on at
        least MIN_LINK_SAMPLES drawing samples; for a link frame 0 does not show so, that of the
        link of the same material (``ArmChain.materials``) it shows most: float32 (B, L, 4), the
        colour and whether there is one (all zero where not, or the base is unknown), kept per
        stream for ``paste_arm``. A fifth of the arm v21's rollouts drew was a link frame 0 did not
        show (docs/training, "Each link's colour pasted"). With ``vae.fast_decoder_arm_paste_shading``
        instead each material's ambient and diffuse colour and the stream's light, fitted on the
        arm drawn from its meshes (``arm_surface.fit_shading``): (B, L, 10)."""
        drawing = self._paste_drawing()
        if self.config.vae.fast_decoder_arm_paste_shading:
            links, normals = self._surface_drawing(action, arm_base, normals=True)
            assert normals is not None
            interiors = self._interiors(links[:, None])[:, 0].long() - 1  # away from the rims
            materials = drawing.same_material.float().argmax(dim=1)  # (L,) each link's first link of its material
            return fit_shading(sink_image, interiors, normals, materials) * frame_given(arm_base)[:, None, None]
        links = self._interiors(self._links_in_sink(action, arm_base, drawing)).flatten(1).long() - 1  # (B, S)
        image = F.adaptive_avg_pool2d(sink_image.float(), drawing.sample_size).flatten(2)  # (B, 3, S)
        on = links[:, None] == torch.arange(drawing.chain.num_links, device=links.device)[None, :, None]  # (B, L, S)
        values = torch.where(on[:, :, None], image[:, None], torch.full_like(image[:, None], torch.nan))
        median = values.nanmedian(dim=-1).values  # (B, L, 3), NaN for a link frame 0 does not show
        samples = on.sum(dim=-1)  # (B, L)
        own = samples >= MIN_LINK_SAMPLES
        # For each link, how much frame 0 shows of each link of its material (itself included).
        alike = torch.where(
            drawing.same_material[None], (samples * own)[:, None, :], torch.zeros_like(samples[:, None])
        )
        ids = torch.arange(own.shape[1], device=samples.device).expand_as(own)
        source = torch.where(own, ids, alike.argmax(dim=-1))  # (B, L): itself, or the link of its material shown most
        shown = (own | (alike.amax(dim=-1) > 0))[..., None]  # (B, L, 1)
        colour = torch.gather(median, 1, source[..., None].expand(-1, -1, 3))
        return torch.cat([torch.where(shown, colour, torch.zeros_like(colour)), shown.float()], dim=-1)

    def arm_colour_image(
        self,
        link_colours: torch.Tensor,
        action: torch.Tensor,
        arm_base: torch.Tensor,
        sink_rotation: torch.Tensor,
        sink_translation: torch.Tensor,
    ) -> torch.Tensor:
        """The arm drawn for the paste at this frame's joints action (B, A) (arm_base, the camera: as
        ``arm_image``'s), each link in its colour as frame 0 shows it (link_colours (B, L, 4),
        ``sink_link_colours``; shaded by the surface's normals with ``vae.fast_decoder_arm_paste_shading``):
        float32 (B, 4, H, W), the colour and 1 where a link is drawn that
        frame 0 shows (colour and flag zero elsewhere); finer with ``vae.fast_decoder_arm_paste_upsampling``,
        from the links' meshes with ``vae.fast_decoder_arm_paste_surface``."""
        drawing, upsampling = self._paste_drawing(), self.config.vae.fast_decoder_arm_paste_upsampling
        normals = None
        if self.arm_surface is not None or upsampling > 1:
            base = self.base_in_camera(arm_base, sink_rotation, sink_translation)
            if self.arm_surface is not None:
                links, normals = self._surface_drawing(action, base, self.config.vae.fast_decoder_arm_paste_shading)
            else:
                links = drawing.fine_links(action[:, self.arm_joint_indices], base, upsampling)
            links = torch.where(frame_given(arm_base)[:, None, None], links, torch.full_like(links, -1))
        else:
            _, links = self._drawn(drawing, action, arm_base, sink_rotation, sink_translation)
        b, size = links.shape[0], links.shape[1:]
        drawn = links.flatten(1)  # (B, S)
        channels = link_colours.shape[-1]
        rows = torch.gather(
            link_colours.float(), 1, drawn.clamp(min=0)[..., None].expand(-1, -1, channels)
        )  # (B, S, C)
        if normals is not None:  # shaded: ambient + diffuse max(0, n . light)
            lit = (normals.flatten(2).transpose(1, 2) * rows[..., 7:10]).sum(-1, keepdim=True).clamp(min=0)
            rows = torch.cat([rows[..., :3] + lit * rows[..., 4:7], rows[..., 3:4]], -1)
        painted = (rows * (drawn >= 0)[..., None].float()).transpose(1, 2).reshape(b, 4, *size)
        camera = self.config.camera
        return F.interpolate(painted, size=(camera.height, camera.width), mode='nearest')

    def paste_arm(self, image: torch.Tensor, colour_image: torch.Tensor) -> torch.Tensor:
        """The light decoder's image (B, 3, H, W) moved ``vae.fast_decoder_arm_paste`` of the way toward
        each drawn link's colour in frame 0 (colour_image (B, 4, H, W), ``arm_colour_image``) where
        frame 0 shows that link. Not all the way: the flat colour lacks the links' shading, and at
        1 s the rollout still has some of it (docs/training, "Each link's colour pasted")."""
        weight = self.config.vae.fast_decoder_arm_paste * colour_image[:, 3:4].to(image.dtype)
        return image + weight * (colour_image[:, :3].to(image.dtype) - image)

    def _paste_drawing(self) -> ArmDrawing:
        if self.paste_drawing is None:
            raise ValueError('this generator pastes no arm (vae.fast_decoder_arm_paste is 0 or no arm is drawn)')
        return self.paste_drawing

    @staticmethod
    def base_in_camera(
        arm_base: torch.Tensor, sink_rotation: torch.Tensor, sink_translation: torch.Tensor
    ) -> torch.Tensor:
        """arm_base (B, 3, 4) in the sink camera frame, the camera in that frame -> (B, 3, 4) float32
        in the current camera frame: x_sink = R_s x_cam + t_s, so x_cam = R_s^T (x_sink - t_s)."""
        to_camera = sink_rotation.float().transpose(1, 2)
        return torch.cat(
            [
                to_camera @ arm_base[:, :, :3].float(),
                to_camera @ (arm_base[:, :, 3:].float() - sink_translation.float()[:, :, None]),
            ],
            dim=2,
        )

    def _blocks(self) -> list[Block]:
        return [typing.cast(Block, b) for b in self.blocks]

    def _embed(
        self,
        noisy: torch.Tensor,
        previous: torch.Tensor,
        rays: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        is_sink: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, F, ...) -> tokens (B, F, T, dim) and conditioning (B, F, dim)."""
        inputs = [noisy, previous, rays.to(noisy.dtype)]  # (B, F, 2C+R, h, w), R ray channels
        if self.previous_warp is not None:
            # The motion since the previous frame, from its rays: origins (scaled) then directions.
            origin = rays[:, :, 0:3, 0, 0].flatten(0, 1) * self.config.generator.ray_origin_scale
            warped = self.previous_warp(previous.flatten(0, 1), rays[:, :, 3:6].flatten(0, 1), origin)
            inputs.append(warped.unflatten(0, noisy.shape[:2]).to(noisy.dtype))
        x = torch.cat(inputs, dim=2)
        # The stride-p convolution as one matrix product over flattened patches: the same numbers,
        # but cuDNN's kernel for so few input channels took 8 us per pass at batch 1 on an H100.
        p = self.config.generator.patch_size
        patches = rearrange(x, 'b f c (hp p1) (wp p2) -> b f (hp wp) (c p1 p2)', p1=p, p2=p)
        x = F.linear(patches, self.patch_embed.weight.flatten(1), self.patch_embed.bias) + self.pos_embed
        x = x + is_sink[:, :, None, None].to(x.dtype) * self.sink_embed
        dim = self.config.generator.dim
        c = self.time_embed(timestep_embedding(t, dim).to(x.dtype)) + self.action_embed(action.to(x.dtype))
        return x, c

    def _unpatchify(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """tokens (B, F, T, dim) -> velocity (B, F, C, h, w)."""
        shift, scale = (m[:, :, None, :] for m in self.final_modulation(c).chunk(2, dim=-1))
        out = self.final_proj(modulate(self.final_norm(x), shift, scale))
        p = self.config.generator.patch_size
        return rearrange(
            out, 'b f (hp wp) (p1 p2 c) -> b f c (hp p1) (wp p2)', hp=self.config.latent_height // p, p1=p, p2=p
        )

    def forward_train(
        self,
        noisy: torch.Tensor,
        previous: torch.Tensor,
        rays: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Whole clips in one pass; frame 0 of each clip is the sink.

        noisy, previous: (B, F, C, h, w) latents; rays: (B, F, R, h, w); action: (B, F, A);
        t: (B, F) flow times in [0, 1]; mask: (F*T, F*T) bool, True where a query token may attend
        to a key token; None is the block-causal window mask of ``step`` (``token_attention_mask``),
        ``masks.bidirectional_attention_mask`` the all-to-all one of the base model.
        Returns the velocity (B, F, C, h, w).
        """
        b, f = noisy.shape[:2]
        is_sink = torch.zeros(b, f, dtype=torch.bool, device=noisy.device)
        is_sink[:, 0] = True
        x, c = self._embed(noisy, previous, rays, action, t, is_sink)
        if mask is None:
            window = self.config.generator.window_frames
            mask = token_attention_mask(f, self.config.tokens_per_frame, window, noisy.device)
        for block in self._blocks():
            x = block.forward_train(x, c, mask)
        return self._unpatchify(x, c)

    def forward_segment(
        self,
        noisy: torch.Tensor,
        previous: torch.Tensor,
        rays: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        prefix: KVPrefix | None,
    ) -> tuple[torch.Tensor, KVPrefix]:
        """Frames ``prefix.end .. prefix.end + F - 1`` of a rollout whose earlier frames ``prefix`` holds.

        Without a prefix these are frames 0 .. F - 1, frame 0 the sink, and the velocity equals
        ``forward_train``'s. Inputs as ``forward_train``'s. Returns the velocity (B, F, C, h, w) and
        the prefix of the next segment (detached: gradients stop at segment boundaries). Feeding
        each segment the prefix the last one returned reproduces one ``forward_train`` over the
        whole rollout (tested), with memory bounded by the segment and the window.
        """
        x, c, following = self.segment_features(noisy, previous, rays, action, t, prefix)
        return self._unpatchify(x, c), following

    def segment_features(
        self,
        noisy: torch.Tensor,
        previous: torch.Tensor,
        rays: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        prefix: KVPrefix | None,
    ) -> tuple[torch.Tensor, torch.Tensor, KVPrefix]:
        """``forward_segment`` up to the last block: its tokens (B, F, T, dim), the conditioning
        (B, F, dim) and the next prefix (a discriminator reads the tokens)."""
        b, f = noisy.shape[:2]
        first, end = (prefix.first, prefix.end) if prefix is not None else (1, 0)
        is_sink = torch.zeros(b, f, dtype=torch.bool, device=noisy.device)
        if prefix is None:
            is_sink[:, 0] = True
        x, c = self._embed(noisy, previous, rays, action, t, is_sink)
        mask = self._segment_mask(first, end, f, noisy.device)
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for layer, block in enumerate(self._blocks()):
            layer_prefix = (prefix.keys[layer], prefix.values[layer]) if prefix is not None else None
            x, k, v = block.forward_segment(x, c, mask, layer_prefix)  # k, v: [prefix, segment]
            keys.append(k)
            values.append(v)
        # Keep the sink and the last window_frames - 1 frames; in ``keys`` frame j >= first sits at
        # position 1 + j - first (also without a prefix, where frame j is at j and first is 1).
        tpf, new_end = self.config.tokens_per_frame, end + f
        new_first = max(1, new_end - self.config.generator.window_frames + 1)
        drop = (1 + new_first - first) * tpf

        def keep(z: torch.Tensor) -> torch.Tensor:
            z = z.detach()
            return torch.cat([z[:, :tpf], z[:, drop:]], 1)

        following = KVPrefix(tuple(map(keep, keys)), tuple(map(keep, values)), new_first, new_end)
        return x, c, following

    def _segment_mask(self, first: int, end: int, num_frames: int, device: torch.device) -> torch.Tensor:
        """(F*T, (P + F)*T) bool mask of frames end .. end + F - 1 over [sink, frames first .. end - 1,
        the segment]: the rows of the whole rollout's ``frame_attention_mask``, so the window and
        the sink mean exactly what they mean for ``forward_train`` and the KV cache."""
        frames = frame_attention_mask(end + num_frames, self.config.generator.window_frames, device)[end:]
        if end > 0:
            sink = torch.zeros(1, dtype=torch.long, device=device)
            frames = frames[:, torch.cat([sink, torch.arange(first, end + num_frames, device=device)])]
        tpf = self.config.tokens_per_frame
        return frames.repeat_interleave(tpf, 0).repeat_interleave(tpf, 1)

    def step(
        self,
        noisy: torch.Tensor,
        previous: torch.Tensor,
        rays: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        cache: KVCache,
        *,
        commit: torch.Tensor | None,
    ) -> torch.Tensor:
        """One frame per stream against the KV cache, for inference: the cache is written in place,
        so gradients do not flow through it (training differentiates ``forward_segment``).

        noisy, previous: (B, C, h, w); rays: (B, R, h, w); action: (B, A); t: (B,).
        A stream whose cache is empty takes this frame as its sink. The streams selected by the
        (B,) bool ``commit`` (on a frame's last sampling pass) add the frame to their cache; with
        None the cache is left untouched.
        Returns the velocity (B, C, h, w).
        """
        is_sink = cache.frames_seen == 0
        x, c = self._embed(
            noisy[:, None], previous[:, None], rays[:, None], action[:, None], t[:, None], is_sink[:, None]
        )
        slots = cache.write_slots()  # (B,), shared by all layers
        mask = cache.visible()[:, None, None, :]  # (B, 1, 1, S*T)
        for layer, block in enumerate(self._blocks()):
            x = block.step(x, c, cache, layer, slots, mask)
        if commit is not None:
            cache.commit(commit)
        return self._unpatchify(x, c)[:, 0]
