"""Model configuration: small frozen dataclasses, loaded from YAML/JSON with strict checks.

Unknown keys and wrong types are errors that name the key, because a silently ignored typo in
a model config produces a model that loads but generates the wrong thing.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

KUKA_IIWA_JOINTS = tuple(f'lbr_iiwa_joint_{i}' for i in range(1, 8))


class ConfigError(ValueError):
    """A model or run configuration is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class CameraConfig:
    """The pinhole camera the model was trained with (published as CameraInfo)."""

    width: int = 128
    height: int = 128
    fx: float = 110.85  # 60 deg horizontal field of view at 128 px: 64 / tan(30 deg)
    fy: float = 110.85
    cx: float = 64.0
    cy: float = 64.0
    rate_hz: float = 15.0  # frame rate of the training recordings; one latent frame per image
    # The recordings keep colour at half resolution along x and y (JPEG's 4:2:0, as most compressed
    # camera streams): the output's chroma is then averaged over 2x2 pixels and upsampled as a JPEG
    # decoder does (``model/chroma.py``), so that it holds no colour detail the camera does not give.
    chroma_subsampled: bool = False

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f'camera size must be positive, got {self.width}x{self.height}')
        if not (self.fx > 0 and self.fy > 0):
            raise ConfigError(f'camera focal lengths must be positive, got fx={self.fx} fy={self.fy}')
        if not self.rate_hz > 0:
            raise ConfigError(f'camera rate_hz must be positive, got {self.rate_hz}')
        if self.chroma_subsampled and (self.width % 2 or self.height % 2):
            raise ConfigError(f'camera.chroma_subsampled needs an even size, got {self.width}x{self.height}')


@dataclass(frozen=True)
class VAEConfig:
    """Per-frame convolutional autoencoder (temporal factor 1: one latent frame per image)."""

    image_channels: int = 3
    latent_channels: int = 8
    spatial_factor: int = 8  # 8 as in the paper; 4 and 16 trade detail for speed
    temporal_factor: int = 1  # images per latent: 1 keeps each image at its own pose's stamp; 4 as in the paper
    base_channels: int = 32  # channels at full resolution, doubled at each downsampling
    max_channels: int = 128
    latent_scale: float = 1.0  # multiplies latents so the generator sees about unit std
    fast_decoder_channels: int = 0  # > 0: a light second decoder of this width is present (stage decoder)
    # > 0: the light decoder also reads the generator's arm drawing at its finer resolution
    # (ArmDrawing.image, generator.arm_chain's links + 1 channels; stage decoder with decoder.arm).
    fast_decoder_arm_channels: int = 0
    # > 0: a light encoder of this width is present (stage encoder), and the generator's plane
    # warps in pixels (generator.sink_warp_pixels) are encoded with it rather than the full encoder.
    fast_encoder_channels: int = 0
    # > 0: the light decoder also reads the generator's plane warps in pixels (the first image
    # where each pixel's ray meets each plane, generator.sink_warp_pixels) for this many planes,
    # and may copy them into its image (stage decoder with decoder.warps).
    fast_decoder_warp_planes: int = 0
    # With plane warps and the arm drawing: the light decoder also reads the arm as frame 0 shows it,
    # each point of each link taken from where that link's point was in the first image, and may
    # copy it like the plane warps (``CausalGenerator.sink_arm_warp``; stage decoder with decoder.arm_warp).
    fast_decoder_arm_warp: bool = False
    # > 0: the ground's texture repeats every this many metres along the x and y axes of the frame
    # the camera poses are given in (a tiled floor; pybullet's plane.urdf: 2 m), and the light decoder
    # also reads the ground as frame 0 shows it one or more periods away, after the other warps
    # (model/ground_tile.py; stage decoder with decoder.ground_tile). A fact of the scene, not learnt.
    fast_decoder_ground_tile: float = 0.0
    # > 0, with the ground tile: it is sampled only where the ground lies within this many metres
    # along the camera's optical axis (the far clipping plane of a rendered scene; our recorder's:
    # 10 m, beyond which the recordings show the background); 0: wherever a ray meets the ground.
    fast_decoder_ground_tile_depth: float = 0.0
    # The scene's fixed furniture as axis-aligned boxes (x, y, z, half x, half y, half z; metres,
    # in the frame the camera poses are given in; our recorder's table: a top and four legs).
    # Given, the light decoder's plane warps and ground tile are handed over only where they show
    # what the camera sees, and it also reads the boxes' colour as frame 0 shows it, last
    # (model/static_boxes.py; stage decoder with decoder.static_boxes). A fact of the scene, not learnt.
    fast_decoder_static_boxes: tuple[tuple[float, ...], ...] = ()
    # With the boxes, the ground tile and the arm drawing: where frame 0 never showed what the camera
    # sees and no arm is drawn, the light decoder's image takes the copy as it is: the tile on the
    # ground, the boxes' colour on the table top (``CausalGenerator.paste_unseen``; stage decoder
    # with decoder.paste_unseen). The decoder blends those copies by learnt coefficients, which the
    # training clips, seldom looking there, leave short of 1 (v19: 23.5 dB on that ground, the tile 26.2).
    fast_decoder_paste_unseen: bool = False
    # > 0, with the arm drawing: wherever a link is drawn that frame 0 shows, the light decoder's
    # image moves this far (0..1) toward that link's median colour in frame 0
    # (``CausalGenerator.paste_arm``): each link of our arm is one material, and the rollouts blur
    # it into the background (v21: 13.6 dB on the arm at 5 s, more than half of its error).
    fast_decoder_arm_paste: float = 0.0
    # The chain drawn for that paste, one of aapt_ros.model.arm.ARM_CHAINS that moves like
    # generator.arm_chain (kuka_iiwa_meshes: spheres fitted to the links' meshes, the right link on
    # 93 % of our arm, the capsules on 74 %); empty: generator.arm_chain.
    fast_decoder_arm_paste_chain: str = ''
    # With the arm paste: the links are drawn for it where the previous frame's action put them.
    # Our recordings' actions are position commands, which the arm's controllers reach about a
    # frame later: drawn at the previous command, the paste's spheres meet pybullet's render of the
    # arm at IoU 0.88 instead of 0.86 (docs/training, "A frame's lag, the nearest copies, the arm in frame 0").
    fast_decoder_arm_paste_previous_action: bool = False
    # > 1: the paste's silhouette drawn this many times finer per side than its drawing's samples
    # (``ArmDrawing.fine_links``: the spheres' distance field interpolated; 2 is the image's
    # resolution for our 8x latents). Drawn at the samples it is blocky at the image's resolution.
    fast_decoder_arm_paste_upsampling: int = 1
    # Non-empty: the paste's links drawn from points on their meshes, this many per link (base link
    # first; ``arm_surface.ArmSurface``, the points in the checkpoint's extras file), not from the
    # chain's spheres: the right link on 95 % of our arm's pixels instead of 88 %, the silhouette at
    # IoU 0.97 instead of 0.92 (docs/training, "The arm drawn from its meshes"). Drawn at the
    # image's resolution, so the upsampling above does not apply.
    fast_decoder_arm_paste_surface: tuple[int, ...] = ()
    # With that surface: the pasted colours shaded, each material's ambient and diffuse colour and
    # one light fitted per stream on frame 0's arm (``arm_surface.fit_shading``) and lit by the
    # surface's normals every frame, instead of each link's flat median colour. The links' shading
    # was most of the arm's error left (docs/training, "The arm shaded by a light fitted on frame 0").
    fast_decoder_arm_paste_shading: bool = False
    # > 0, with the ground tile and the static boxes: each texel of the tile takes the median of the
    # this many nearest copies frame 0 shows with no box in front (``ground_tile.fold_first_image``);
    # 0: the median of all it shows. Nearer copies are drawn sharper, and a box in front of a copy
    # paints it the table's colour.
    fast_decoder_ground_tile_nearest: int = 0
    # With paste_unseen: the copies are also taken as they are where frame 0 showed its arm in front
    # of the ground or the table top (``CausalGenerator.paste_unseen``): else the decoder draws a
    # ghost of frame 0's arm there.
    fast_decoder_paste_under_arm: bool = False
    # With paste_unseen: wherever a ray first meets a static box and no arm is drawn, the image takes
    # the colour frame 0 shows on box faces of that orientation (the boxes are axis-aligned, lit by
    # a distant light), except on a table top frame 0 shows, which the decoder copies
    # (``CausalGenerator.paste_boxes_and_sky``). The decoder drew the table's sides and legs at 19 dB.
    fast_decoder_paste_box_faces: bool = False
    # With paste_unseen: where a ray meets neither a box nor the ground within
    # fast_decoder_ground_tile_depth and no arm is drawn, the image takes the background colour
    # frame 0 shows (a rendered scene's sky; ``CausalGenerator.paste_boxes_and_sky``).
    fast_decoder_paste_sky: bool = False
    # With paste_unseen: what frame 0 shows standing on the static boxes' tops (the objects on a
    # table) is drawn on a plane a little above the top and pasted where each frame sees it and no
    # arm is drawn (``model/table_objects.py``): the table plane's warp lays the objects flat, and
    # the decoder blurs their sliding copies.
    fast_decoder_paste_objects: bool = False
    # With the ground tile: its texels snapped to the floor's two colours where a 2-means split of
    # them is balanced and distinct (a checkered floor), else to their median (a plain floor)
    # (``ground_tile.snap_colours``). The median of a few far copies blurs the pattern's edges and
    # folds frame 0's shadows and table edges into streaks repeated over the whole floor.
    fast_decoder_ground_tile_snap: bool = False
    # > 0: the light decoder's image, after the pastes, smoothed by a bilateral filter of this colour
    # sigma (0..255 units; ``model/bilateral.py``): the decoder's speckle goes, the edges stay.
    fast_decoder_bilateral: float = 0.0

    def __post_init__(self) -> None:
        if self.spatial_factor not in (4, 8, 16):
            raise ConfigError(f'vae.spatial_factor must be 4, 8 or 16, got {self.spatial_factor}')
        if self.temporal_factor not in (1, 4):
            raise ConfigError(f'vae.temporal_factor must be 1 or 4, got {self.temporal_factor}')
        if self.latent_channels <= 0 or self.base_channels <= 0:
            raise ConfigError('vae.latent_channels and vae.base_channels must be positive')
        if self.fast_decoder_channels < 0 or (self.fast_decoder_channels and self.temporal_factor != 1):
            raise ConfigError(
                f'vae.fast_decoder_channels must be >= 0 and needs temporal_factor 1 (it decodes each latent '
                f'frame on its own), got {self.fast_decoder_channels} with temporal_factor {self.temporal_factor}'
            )
        if self.fast_decoder_arm_channels < 0 or (self.fast_decoder_arm_channels and not self.fast_decoder_channels):
            raise ConfigError(
                f'vae.fast_decoder_arm_channels must be >= 0 and needs a light decoder (fast_decoder_channels > 0), '
                f'got {self.fast_decoder_arm_channels} with fast_decoder_channels {self.fast_decoder_channels}'
            )
        if self.fast_decoder_warp_planes < 0 or (self.fast_decoder_warp_planes and not self.fast_decoder_channels):
            raise ConfigError(
                f'vae.fast_decoder_warp_planes must be >= 0 and needs a light decoder (fast_decoder_channels > 0), '
                f'got {self.fast_decoder_warp_planes} with fast_decoder_channels {self.fast_decoder_channels}'
            )
        if self.fast_decoder_arm_warp and not (self.fast_decoder_warp_planes and self.fast_decoder_arm_channels):
            raise ConfigError(
                'vae.fast_decoder_arm_warp needs a light decoder that reads the plane warps and the arm drawing '
                f'(fast_decoder_warp_planes > 0 and fast_decoder_arm_channels > 0), got '
                f'{self.fast_decoder_warp_planes} and {self.fast_decoder_arm_channels}'
            )
        if self.fast_decoder_ground_tile < 0 or (self.fast_decoder_ground_tile and not self.fast_decoder_warp_planes):
            raise ConfigError(
                'vae.fast_decoder_ground_tile must be >= 0 metres (0: none) and needs a light decoder that reads '
                f'the plane warps (fast_decoder_warp_planes > 0), got {self.fast_decoder_ground_tile} and '
                f'{self.fast_decoder_warp_planes}'
            )
        depth = self.fast_decoder_ground_tile_depth
        if depth < 0 or (depth and not self.fast_decoder_ground_tile):
            raise ConfigError(
                'vae.fast_decoder_ground_tile_depth must be >= 0 metres (0: no limit) and needs the ground tile '
                f'(fast_decoder_ground_tile > 0), got {depth} and {self.fast_decoder_ground_tile}'
            )
        boxes = self.fast_decoder_static_boxes
        if boxes and not self.fast_decoder_warp_planes:
            raise ConfigError(
                'vae.fast_decoder_static_boxes needs a light decoder that reads the plane warps '
                f'(fast_decoder_warp_planes > 0), got {self.fast_decoder_warp_planes}'
            )
        for i, box in enumerate(boxes):
            if len(box) != 6 or not all(math.isfinite(x) for x in box) or min(box[3:]) <= 0:
                raise ConfigError(
                    f'vae.fast_decoder_static_boxes[{i}] must be (x, y, z, half x, half y, half z) with '
                    f'positive half sizes, got {list(box)}'
                )
        if self.fast_decoder_paste_unseen and not (
            boxes and self.fast_decoder_ground_tile and self.fast_decoder_arm_channels
        ):
            raise ConfigError(
                'vae.fast_decoder_paste_unseen needs the static boxes, the ground tile and the arm drawing '
                '(fast_decoder_static_boxes, fast_decoder_ground_tile > 0, fast_decoder_arm_channels > 0): '
                'they say where frame 0 never showed the ground or the table and no arm is drawn'
            )
        paste = self.fast_decoder_arm_paste
        if not 0 <= paste <= 1 or (paste and not self.fast_decoder_arm_channels):
            raise ConfigError(
                'vae.fast_decoder_arm_paste must be in [0, 1] (0: none) and needs a light decoder that reads the '
                f'arm drawing (fast_decoder_arm_channels > 0), got {paste} and {self.fast_decoder_arm_channels}'
            )
        if self.fast_decoder_arm_paste_chain and not paste:
            raise ConfigError(
                f'vae.fast_decoder_arm_paste_chain {self.fast_decoder_arm_paste_chain!r} is the chain drawn for '
                'the arm paste: set vae.fast_decoder_arm_paste > 0 too'
            )
        if self.fast_decoder_arm_paste_previous_action and not paste:
            raise ConfigError(
                'vae.fast_decoder_arm_paste_previous_action draws the arm paste at the previous action: '
                'set vae.fast_decoder_arm_paste > 0 too'
            )
        upsampling = self.fast_decoder_arm_paste_upsampling
        if upsampling < 1 or (upsampling > 1 and not paste):
            raise ConfigError(
                'vae.fast_decoder_arm_paste_upsampling must be >= 1 (1: at the drawing samples) and, above 1, '
                f'needs vae.fast_decoder_arm_paste > 0, got {upsampling} and {paste}'
            )
        surface = self.fast_decoder_arm_paste_surface
        if surface and (not paste or min(surface) < 0 or not sum(surface)):
            raise ConfigError(
                'vae.fast_decoder_arm_paste_surface is the points per link drawn for the arm paste: it needs '
                f'vae.fast_decoder_arm_paste > 0 and counts >= 0 that are not all 0, got {list(surface)} and {paste}'
            )
        if self.fast_decoder_arm_paste_shading and not surface:
            raise ConfigError(
                'vae.fast_decoder_arm_paste_shading lights the arm drawn from its meshes: set '
                'vae.fast_decoder_arm_paste_surface too'
            )
        nearest = self.fast_decoder_ground_tile_nearest
        if nearest < 0 or (nearest and not (self.fast_decoder_ground_tile and boxes)):
            raise ConfigError(
                'vae.fast_decoder_ground_tile_nearest must be >= 0 (0: every copy) and needs the ground tile and '
                f'the static boxes (fast_decoder_ground_tile > 0, fast_decoder_static_boxes), got {nearest}'
            )
        if self.fast_decoder_bilateral < 0 or (self.fast_decoder_bilateral and not self.fast_decoder_channels):
            raise ConfigError(
                'vae.fast_decoder_bilateral must be >= 0 (0: none) and needs a light decoder '
                f'(fast_decoder_channels > 0), got {self.fast_decoder_bilateral}'
            )
        if self.fast_decoder_ground_tile_snap and not self.fast_decoder_ground_tile:
            raise ConfigError('vae.fast_decoder_ground_tile_snap needs the ground tile (fast_decoder_ground_tile > 0)')
        for name in ('paste_under_arm', 'paste_box_faces', 'paste_sky', 'paste_objects'):
            if getattr(self, f'fast_decoder_{name}') and not self.fast_decoder_paste_unseen:
                raise ConfigError(f'vae.fast_decoder_{name} extends vae.fast_decoder_paste_unseen: set it too')
        if self.fast_encoder_channels < 0 or (self.fast_encoder_channels and self.temporal_factor != 1):
            raise ConfigError(
                f'vae.fast_encoder_channels must be >= 0 and needs temporal_factor 1 (it encodes each image '
                f'on its own), got {self.fast_encoder_channels} with temporal_factor {self.temporal_factor}'
            )

    @property
    def num_downsamples(self) -> int:
        return int(math.log2(self.spatial_factor))

    @property
    def fast_decoder_copied_images(self) -> int:
        """The warped first images the light decoder reads and may copy: the planes', the arm's, the
        ground's tile, the boxes' colour."""
        return (
            self.fast_decoder_warp_planes
            + int(self.fast_decoder_arm_warp)
            + int(self.fast_decoder_ground_tile > 0)
            + int(bool(self.fast_decoder_static_boxes))
        )

    def without_light_decoder(self) -> VAEConfig:
        """This config without the light decoder and everything it reads or does after it (stage
        decoder and tools/add_arm_paste.py add them): every ``fast_decoder_*`` key at its default."""
        fresh = VAEConfig()
        defaults: dict[str, Any] = {
            f.name: getattr(fresh, f.name) for f in dataclasses.fields(self) if f.name.startswith('fast_decoder_')
        }
        return dataclasses.replace(self, **defaults)


@dataclass(frozen=True)
class GeneratorConfig:
    """Block-causal latent transformer: one latent frame per step, attending to a window."""

    patch_size: int = 2
    dim: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    window_frames: int = 30  # frames attended besides the sink, the current one included: 2 s at 15 Hz
    action_names: tuple[str, ...] = KUKA_IIWA_JOINTS
    ray_origin_scale: float = 0.05  # metres; typical camera motion between frames -> about unit std
    # Our addition to AAPT: > 0 also gives each frame its rays in the sink (first) frame's camera,
    # origins divided by this many metres (camera travel since the start -> about unit std). With
    # previous-frame rays alone, where the current view lies relative to the sink, the one real image,
    # is lost once the frames in between have left the window. 0: previous-frame rays only (AAPT).
    sink_ray_origin_scale: float = 0.0
    # Also ours: depths (metres, along the current camera's z) at which the sink frame's latent is
    # resampled into the current view (``plane_sweep.PlaneSweep``); each depth adds latent_channels + 1
    # input channels. Empty: the sink reaches a frame only through attention.
    sink_warp_depths: tuple[float, ...] = ()
    # The same for the recycled previous latent, along the motion since the previous frame: hands
    # each pixel the content the camera's motion brings there, a shift the network must otherwise
    # make itself every frame. Empty: the recycled latent is given as it is only.
    previous_warp_depths: tuple[float, ...] = ()
    # Also ours: the robot arm drawn per latent pixel from its joint positions (taken from the actions
    # by name) and its base pose (``arm.ArmDrawing``); names a chain of ``arm.ARM_CHAINS``, whose
    # links each add an input channel, plus one of depth. Empty: the arm is known from the actions only.
    arm_chain: str = ''
    # Also ours, with an arm: its drawing also holds the plane the arm's base stands on (its link
    # frame's z = 0) as each ray meets it (``arm.ArmDrawing.plane``), 5 more channels. Around a
    # fixed arm the table, the ground beyond it and the horizon are fixed in that frame.
    arm_base_plane: bool = False
    # Also ours, with a sink warp and an arm: the sink latent also seen where each ray meets the arm
    # base's plane (one depth per pixel, exact for the table top the arm stands on; the sweep's
    # fronto-parallel depths meet a slanted surface only in bands), latent_channels + 1 channels.
    sink_warp_base_plane: bool = False
    # Also ours, with a sink warp and an arm: > 0 also gives the sink latent seen where each ray meets
    # the ground, this many metres below the arm base's plane and parallel to it (a property of the
    # workcell, like the base pose: 0.625 m for our simulated table), latent_channels + 1 channels.
    # Points outside the first frame take its nearest edge (``PlaneSweep`` ``beyond_edges``): the
    # ground a camera turns to is mostly the ground it saw at that edge. 0: no ground warp.
    sink_warp_ground_below_base: float = 0.0
    # Also ours, with a warp at the base plane or the ground: sample the sink *image* there, per
    # pixel, and encode what it shows with the autoencoder, in place of sampling the sink latent per
    # latent pixel. Bilinear resampling of a latent blurs what its 8x8-pixel cells hold: on the
    # surfaces frame 0 shows, with exact depth, the decoded latent warp scores 19-21 dB at 5 s and
    # the encoded pixel warp 24-27 dB. The same channels, so a checkpoint can switch it on as it is;
    # costs one pass of the encoder per plane and frame.
    sink_warp_pixels: bool = False
    sampling_steps: int = 1  # network passes per frame at inference (1 after adversarial training)
    timestep_shift: float = 3.0  # shifted t schedule (SD3): spends more steps at high noise

    def __post_init__(self) -> None:
        if self.dim % self.heads != 0:
            raise ConfigError(f'generator.dim ({self.dim}) must be divisible by generator.heads ({self.heads})')
        if self.window_frames < 2:
            raise ConfigError(f'generator.window_frames must be >= 2, got {self.window_frames}')
        if self.sampling_steps < 1:
            raise ConfigError(f'generator.sampling_steps must be >= 1, got {self.sampling_steps}')
        if len(set(self.action_names)) != len(self.action_names):
            raise ConfigError(f'generator.action_names has duplicates: {list(self.action_names)}')
        if not self.ray_origin_scale > 0:
            raise ConfigError(f'generator.ray_origin_scale must be positive, got {self.ray_origin_scale}')
        if self.sink_ray_origin_scale < 0:
            raise ConfigError(f'generator.sink_ray_origin_scale must be >= 0, got {self.sink_ray_origin_scale}')
        for name in ('sink_warp_depths', 'previous_warp_depths'):
            depths = getattr(self, name)
            if not all(math.isfinite(d) and d > 0 for d in depths):
                raise ConfigError(f'generator.{name} must be positive and finite, got {list(depths)}')
        if self.sink_warp_depths and self.sink_ray_origin_scale <= 0:
            raise ConfigError(
                'generator.sink_warp_depths needs sink rays (sink_ray_origin_scale > 0): both use the sink pose'
            )
        if self.arm_chain and self.sink_ray_origin_scale <= 0:
            raise ConfigError(
                'generator.arm_chain needs sink rays (sink_ray_origin_scale > 0): the base is in the sink frame'
            )
        if self.arm_base_plane and not self.arm_chain:
            raise ConfigError("generator.arm_base_plane needs an arm (generator.arm_chain): the plane is its base's")
        ground = self.sink_warp_ground_below_base
        if not (math.isfinite(ground) and ground >= 0):
            raise ConfigError(f'generator.sink_warp_ground_below_base must be >= 0 metres (0: none), got {ground}')
        for name, on in (('sink_warp_base_plane', self.sink_warp_base_plane), ('sink_warp_ground_below_base', ground)):
            if on and not (self.sink_warp_depths and self.arm_chain):
                raise ConfigError(
                    f'generator.{name} needs a sink warp (sink_warp_depths) and an arm (arm_chain), '
                    'whose base pose places the plane it warps the sink at'
                )
        if self.sink_warp_pixels and not (self.sink_warp_base_plane or ground):
            raise ConfigError(
                'generator.sink_warp_pixels needs a warp at a plane to compute in pixels '
                '(sink_warp_base_plane or sink_warp_ground_below_base)'
            )
        if self.arm_chain:
            from aapt_ros.model.arm import chain_named  # arm.py imports this module

            missing = [n for n in chain_named(self.arm_chain).joint_names if n not in self.action_names]
            if missing:
                raise ConfigError(
                    f'generator.arm_chain {self.arm_chain!r} needs the joint positions {missing} among '
                    f'generator.action_names {list(self.action_names)}'
                )

    @property
    def pixel_warp_planes(self) -> int:
        """How many planes the sink image is warped to in pixels (``CausalGenerator.sink_plane_images``)."""
        return (self.sink_warp_base_plane + bool(self.sink_warp_ground_below_base)) if self.sink_warp_pixels else 0

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def action_dim(self) -> int:
        return len(self.action_names)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a checkpoint's networks and to publish its CameraInfo."""

    name: str = 'aapt-untrained'
    stage: str = 'untrained'  # training stage that produced the weights (untrained, vae, ..., adversarial)
    camera: CameraConfig = field(default_factory=CameraConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)

    def __post_init__(self) -> None:
        step = self.vae.spatial_factor * self.generator.patch_size
        if self.camera.width % step or self.camera.height % step:
            raise ConfigError(
                f'camera size {self.camera.width}x{self.camera.height} must be divisible by '
                f'vae.spatial_factor * generator.patch_size = {step}; '
                'change the size, the spatial factor or the patch size'
            )
        if self.vae.fast_decoder_arm_channels:
            from aapt_ros.model.arm import chain_named, drawing_channels  # arm.py imports this module

            chain = self.generator.arm_chain
            drawn = drawing_channels(chain_named(chain), self.generator.arm_base_plane) if chain else 0
            if self.vae.fast_decoder_arm_channels != drawn:
                raise ConfigError(
                    f'vae.fast_decoder_arm_channels is {self.vae.fast_decoder_arm_channels}, but the generator draws '
                    f'{drawn} arm channels (generator.arm_chain {chain!r}); the light decoder reads its drawing'
                )

        planes = self.vae.fast_decoder_warp_planes
        if planes and planes != self.generator.pixel_warp_planes:
            raise ConfigError(
                f'vae.fast_decoder_warp_planes is {planes}, but the generator warps the first image to '
                f'{self.generator.pixel_warp_planes} planes in pixels (generator.sink_warp_pixels, '
                'sink_warp_base_plane, sink_warp_ground_below_base); the light decoder reads those warps'
            )
        if self.vae.fast_decoder_ground_tile and not self.generator.sink_warp_ground_below_base:
            raise ConfigError(
                'vae.fast_decoder_ground_tile needs the ground the generator warps the first image to '
                '(generator.sink_warp_ground_below_base > 0): the tile is sampled where each ray meets it'
            )

    def with_generator(self, **changes: Any) -> ModelConfig:
        """This config with the generator settings ``changes`` replaced (validated again)."""
        return dataclasses.replace(self, generator=dataclasses.replace(self.generator, **changes))

    @property
    def latent_height(self) -> int:
        return self.camera.height // self.vae.spatial_factor

    @property
    def latent_width(self) -> int:
        return self.camera.width // self.vae.spatial_factor

    @property
    def tokens_per_frame(self) -> int:
        p = self.generator.patch_size
        return (self.latent_height // p) * (self.latent_width // p)


T = TypeVar('T')


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = 'config') -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types.

    ``where`` names the source (a file path) in error messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(f'{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}')
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f'{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}')
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f'{where}.{name}') for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where=where)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{where}: expected a list of {item.__name__}, got {value!r}')
        return tuple(_coerce(item, v, f'{where}[{i}]') for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f'{where}: union types are not supported in configs')
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f'{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}')
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists, for YAML/JSON)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))
