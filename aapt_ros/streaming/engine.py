"""The batched streaming engine: B camera streams stepped together, one network pass per frame.

State is explicit and preallocated: the KV cache, the recycled previous latent of each stream,
each camera's pose in its stream's sink frame (on the host, float64), and static input buffers
(relative camera motion, actions, noise, which streams commit). A step is a pure function of
those buffers, so on CUDA it is captured once in a CUDA graph, together with the copies of its
inputs from and its output to pinned host memory, and replayed: a frame then costs one graph
launch, whatever the model's kernel count.

Host API (numpy in, numpy out)::

    engine = StreamEngine(checkpoint, batch_size=8, device='cuda')
    engine.start(streams, first_frames, actions)     # begin some streams from images
    frames = engine.step(rotations, translations, actions)   # (B, H, W, 3) uint8
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from aapt_ros.model import ground_tile, static_boxes, table_objects
from aapt_ros.model.arm import SUPERSAMPLING
from aapt_ros.model.bilateral import bilateral
from aapt_ros.model.checkpoint import Checkpoint
from aapt_ros.model.chroma import subsample_chroma
from aapt_ros.model.config import ConfigError
from aapt_ros.model.kv_cache import KVCache
from aapt_ros.model.sampling import euler_update, shifted_timesteps, velocity_to_x0
from aapt_ros.streaming import cuda_graphs

COMMIT = 12  # column of the packed inputs that says whether a stream advances
SINK_ROTATION, SINK_TRANSLATION = slice(13, 22), slice(22, 25)  # the camera in the stream's sink frame
ARM_BASE = slice(25, 37)  # the arm's base link [R | t] (3, 4) in the stream's sink frame
INPUT_FIELDS = 37  # rotation 9, translation 3, commit 1, sink rotation 9 and translation 3, arm base 12; then actions
# The autoencoder's decoder, its light one (model/fast_decoder.py), or 'auto': the light one when
# the checkpoint has one (within 0.3 dB on held-out rollouts, several times cheaper), else the full one.
DECODERS = ('auto', 'full', 'fast')


class EngineError(ValueError):
    """Engine inputs with the wrong shape or an unusable setting; the message names them."""


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error, not a silent CPU run."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise EngineError(f'device {device!r} requested but CUDA is not available; use "cpu" or "auto"')
    if device != 'cpu' and not device.startswith('cuda'):
        raise EngineError(f'unknown device {device!r}; valid: "cpu", "cuda", "cuda:N", "auto"')
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on CUDA and float32 on the CPU (where half precision is slower)."""
    choices = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
    if dtype == 'auto':
        return torch.bfloat16 if device.type == 'cuda' else torch.float32
    if dtype not in choices:
        raise EngineError(f'unknown dtype {dtype!r}; valid: "auto", {", ".join(repr(c) for c in choices)}')
    return choices[dtype]


ModuleT = TypeVar('ModuleT', bound=nn.Module)


def network_in(module: ModuleT, device: torch.device, dtype: torch.dtype) -> ModuleT:
    """``module`` moved to ``device`` with its parameters in ``dtype`` and its buffers left in float32.

    The buffers are geometry (the pixels' rays, the arm's joints and spheres), which training keeps in
    float32 under autocast; ``module.to(dtype)`` would round them to bfloat16 on the GPU, where a ray
    is then off by up to a fifth of a pixel and a sphere by millimetres: the default model lost
    2.7 dB at 1 s on a test episode that way (docs/training, "Geometry kept in float32").
    """
    module.to(device)
    for parameter in module.parameters():
        parameter.data = parameter.data.to(dtype)
    return module


def from_uint8_images(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 1, 3, H, W) in [-1, 1] of ``dtype``: one latent frame per image."""
    return frames.permute(0, 3, 1, 2)[:, None].to(dtype) / 127.5 - 1


def to_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


class StreamEngine:
    """B streams on one device. Inputs of a step are packed per stream in one row,
    ``rotation (9) | translation (3) | commit (1) | sink rotation (9) | sink translation (3) |
    arm base (12) | actions (A)``, so they reach the device in a single copy from pinned memory; the
    step reads them through the views below. The sink columns are filled only for a generator with
    sink rays (``generator.sink_ray_origin_scale``): the engine chains each stream's motions into
    its camera in the sink frame, so callers pass frame-to-frame motion either way. The arm base is
    set when a stream starts and read only by a generator that draws the arm (``generator.arm_chain``);
    all zeros (the default) draws no arm."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        batch_size: int = 1,
        device: str = 'cpu',
        dtype: str = 'auto',
        sampling_steps: int | None = None,
        seed: int = 0,
        cuda_graph: bool = True,
        decode: bool = True,
        compile: bool = False,
        decoder: str = 'auto',
        window_frames: int | None = None,
    ):
        config = checkpoint.config
        if window_frames is not None:
            # The generator has no temporal position encoding, so its window is only the size of the
            # cache's ring; streaming with another than the trained one is a quality/speed setting
            # (docs/training/README.md, "The attention window at inference").
            if window_frames < 1:
                raise EngineError(f'window_frames must be >= 1, got {window_frames}')
            try:
                config = config.with_generator(window_frames=window_frames)
            except ConfigError as err:  # the config's own bounds: a clear error, not a crash of the node
                raise EngineError(str(err)) from None
        self.config = config
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.sampling_steps = sampling_steps or config.generator.sampling_steps
        if config.vae.temporal_factor != 1:
            raise EngineError(
                f'the streaming engine publishes one image per latent frame and needs vae.temporal_factor 1, '
                f'got {config.vae.temporal_factor}; use temporal factor 4 for offline encoding only'
            )
        if self.sampling_steps < 1 or batch_size < 1:
            raise EngineError(f'sampling_steps and batch_size must be >= 1, got {self.sampling_steps}, {batch_size}')
        self.decode = decode  # False: latents only, to time the generator alone
        if decoder not in DECODERS:
            raise EngineError(f'unknown decoder {decoder!r}; valid: {", ".join(repr(d) for d in DECODERS)}')
        has_fast = checkpoint.vae.fast_decoder is not None
        if decoder == 'fast' and not has_fast:
            raise EngineError(
                'decoder "fast" requested but the checkpoint has no fast decoder (vae.fast_decoder_channels is 0); '
                'use "full" or train one with aapt-train decoder'
            )
        self.decoder = ('fast' if has_fast else 'full') if decoder == 'auto' else decoder
        # The light decoder may also read the arm drawing (vae.fast_decoder_arm_channels).
        self.decoder_reads_arm = self.decoder == 'fast' and checkpoint.config.vae.fast_decoder_arm_channels > 0
        # ... and the plane warps in pixels (vae.fast_decoder_warp_planes).
        self.decoder_reads_warps = self.decoder == 'fast' and checkpoint.config.vae.fast_decoder_warp_planes > 0
        # ... and the arm as the first image shows it (vae.fast_decoder_arm_warp).
        self.decoder_reads_arm_warp = self.decoder == 'fast' and checkpoint.config.vae.fast_decoder_arm_warp
        # ... and the first image folded into one period of a tiled floor (vae.fast_decoder_ground_tile).
        self.decoder_reads_ground_tile = self.decoder == 'fast' and checkpoint.config.vae.fast_decoder_ground_tile > 0
        # ... and the scene's static boxes, which say where each copy shows what the camera sees
        # (vae.fast_decoder_static_boxes).
        self.decoder_reads_boxes = self.decoder == 'fast' and bool(checkpoint.config.vae.fast_decoder_static_boxes)
        # ... and takes those copies as they are where frame 0 never showed the surface (vae.fast_decoder_paste_unseen).
        self.decoder_pastes_unseen = self.decoder == 'fast' and checkpoint.config.vae.fast_decoder_paste_unseen
        # ... and moves the arm toward each link's colour in the first image (vae.fast_decoder_arm_paste).
        self.decoder_pastes_arm = self.decoder == 'fast' and checkpoint.config.vae.fast_decoder_arm_paste > 0
        self.vae = network_in(checkpoint.vae, self.device, self.dtype).eval()
        if self.device.type == 'cuda':  # cuDNN's half-precision convolutions want NHWC; NCHW adds transposes
            self.vae = self.vae.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # untyped overload
        self.generator = network_in(checkpoint.generator, self.device, self.dtype).eval()
        self.cache = KVCache.allocate(config, batch_size, self.device, self.dtype)
        self.seed = seed
        self.rng = torch.Generator(self.device).manual_seed(seed)

        b, c, h, w = batch_size, config.vae.latent_channels, config.latent_height, config.latent_width
        dev, pin = self.device, self.device.type == 'cuda'
        self._host_inputs = torch.zeros(b, INPUT_FIELDS + config.generator.action_dim, pin_memory=pin)
        self._host_inputs[:, :9] = torch.eye(3).flatten()
        self._host_inputs[:, SINK_ROTATION] = torch.eye(3).flatten()
        self._host_inputs[:, COMMIT] = 1.0
        self._host_rows = self._host_inputs.numpy()  # the same memory, written by the host API
        self._all_streams = np.ones(b, dtype=bool)
        self._sink_rays = config.generator.sink_ray_origin_scale > 0
        # Each camera in its stream's sink frame as of its last committed frame, float64: chaining
        # thousands of float32 motions would drift.
        self._sink_rotations = np.tile(np.eye(3), (b, 1, 1))  # (B, 3, 3)
        self._sink_translations = np.zeros((b, 3))  # (B, 3) metres
        self.inputs = self._host_inputs.to(dev)  # (B, 37 + A) float32, read through the views below
        self.rotations = self.inputs[:, :9].unflatten(1, (3, 3))  # type: ignore[no-untyped-call]  # (B, 3, 3) view
        self.translations = self.inputs[:, 9:12]  # (B, 3) metres, in the previous camera frame
        self.sink_rotations = self.inputs[:, SINK_ROTATION].unflatten(1, (3, 3))  # type: ignore[no-untyped-call]
        self.sink_translations = self.inputs[:, SINK_TRANSLATION]  # (B, 3) metres, in the sink camera frame
        self.arm_bases = self.inputs[:, ARM_BASE].unflatten(1, (3, 4))  # type: ignore[no-untyped-call]  # (B, 3, 4)
        self.actions = self.inputs[:, INPUT_FIELDS:]  # (B, A)
        self.noise = torch.zeros(b, c, h, w, device=dev, dtype=self.dtype)  # (B, C, h, w)
        self.previous = torch.zeros(b, c, h, w, device=dev, dtype=self.dtype)  # recycled latent of the last frame
        self.sink_latents = torch.zeros(b, c, h, w, device=dev, dtype=self.dtype)  # each stream's first latent
        # Each stream's first image, (B, 3, H, W) in [-1, 1], kept only for a generator that warps it
        # (sink_warp_pixels).
        image_shape = (b, 3, config.camera.height, config.camera.width)
        self.sink_images = (
            torch.zeros(image_shape, device=dev, dtype=self.dtype)
            if self.generator.sink_image_warp is not None
            else None
        )
        # Where each stream's first image shows the arm, (B, 1, H, W), for a light decoder that
        # copies the plane warps (it must not copy the arm laid flat on them).
        self.sink_arms = (
            torch.zeros((b, 1, config.camera.height, config.camera.width), device=dev, dtype=torch.float32)
            if self.decoder_reads_warps
            else None
        )
        # Each stream's first joints (B, A) and the links its first image shows (B, 1, h s, w s), for a
        # light decoder that copies the arm from it.
        self.sink_actions: torch.Tensor | None = None
        self.sink_arm_links: torch.Tensor | None = None
        if self.decoder_reads_arm_warp:
            drawing = (h * SUPERSAMPLING, w * SUPERSAMPLING)
            self.sink_actions = torch.zeros(b, config.generator.action_dim, device=dev)
            self.sink_arm_links = torch.zeros((b, 1, *drawing), device=dev)
        # Each stream's first image folded into one period of the floor (B, 4, T + 2, T + 2) and that
        # period's corner and axes in the sink camera (B, 3, 3), for a light decoder that copies it.
        self.ground_tiles: torch.Tensor | None = None
        self.tile_axes: torch.Tensor | None = None
        if self.decoder_reads_ground_tile:
            padded = ground_tile.TEXELS + 2  # fold_first_image pads the tile by a texel each side
            self.ground_tiles = torch.zeros(b, 4, padded, padded, device=dev)
            self.tile_axes = torch.zeros(b, 3, 3, device=dev)
        # The boxes (K, 6) in the pose frame, each stream's pose frame in its sink camera (B, 3, 4) and
        # the boxes' colour as its first image shows them (B, 4), for a light decoder told the boxes.
        self.static_boxes: torch.Tensor | None = None
        self.pose_frames: torch.Tensor | None = None
        self.box_colours: torch.Tensor | None = None
        if self.decoder_reads_boxes:
            self.static_boxes = torch.tensor(config.vae.fast_decoder_static_boxes, device=dev, dtype=torch.float32)
            self.pose_frames = torch.zeros(b, 3, 4, device=dev)
            self.box_colours = torch.zeros(b, 4, device=dev)
        # The colour each stream's first image shows on each box face orientation (B, FACES, 4) and
        # in the background (B, 4), for vae.fast_decoder_paste_box_faces and fast_decoder_paste_sky.
        self.face_colours: torch.Tensor | None = None
        self.sky_colours: torch.Tensor | None = None
        if self.decoder_pastes_unseen and config.vae.fast_decoder_paste_box_faces:
            self.face_colours = torch.zeros(b, static_boxes.FACES, 4, device=dev)
        if self.decoder_pastes_unseen and config.vae.fast_decoder_paste_sky:
            self.sky_colours = torch.zeros(b, 4, device=dev)
        # What each stream's first image shows standing on the boxes' tops, as points in its camera
        # frame (B, 3, N) and their colours (B, 4, N), for vae.fast_decoder_paste_objects.
        self.object_points: torch.Tensor | None = None
        self.object_colours: torch.Tensor | None = None
        if self.decoder_pastes_unseen and config.vae.fast_decoder_paste_objects:
            fine = config.camera.height * config.camera.width * table_objects.UPSAMPLING**2
            self.object_points = torch.zeros(b, 3, fine, device=dev)
            self.object_colours = torch.zeros(b, 4, fine, device=dev)
        # Each stream's object points come first; without a CUDA graph or torch.compile, whose shapes
        # are fixed, a step splats only as many as the stream with the most has (6 ms less a frame on
        # two CPU cores, where most of the 65536 are not objects).
        self._object_points_used = 1
        graphed = cuda_graph and self.device.type == 'cuda'
        self._compact_objects = not (compile or graphed)
        # Each link's colour as each stream's first image shows it (B, L, 4), for the arm paste; with
        # its shading, each material's ambient and diffuse colour and the light (B, L, 10).
        self.link_colours: torch.Tensor | None = None
        if self.decoder_pastes_arm:
            paste_drawing = self.generator.paste_drawing
            assert paste_drawing is not None  # the config checks that the decoder reads the arm
            channels = self.generator.link_colour_channels
            self.link_colours = torch.zeros(b, paste_drawing.chain.num_links, channels, device=dev)
        # Each stream's action of its last committed frame (B, A): where the arm paste draws the
        # links with vae.fast_decoder_arm_paste_previous_action (position commands are reached a frame late).
        self.paste_actions: torch.Tensor | None = None
        if self.decoder_pastes_arm and config.vae.fast_decoder_arm_paste_previous_action:
            self.paste_actions = torch.zeros(b, config.generator.action_dim, device=dev)
        self.latents = torch.zeros(b, c, h, w, device=dev, dtype=self.dtype)  # output of the last step
        self.frames = torch.zeros(b, config.camera.height, config.camera.width, 3, device=dev, dtype=torch.uint8)
        self._schedule = shifted_timesteps(self.sampling_steps, config.generator.timestep_shift).tolist()
        self._times = [torch.full((b,), t, device=dev, dtype=self.dtype) for t in self._schedule]
        self._host_frames = torch.zeros(self.frames.shape, dtype=torch.uint8, pin_memory=pin)
        self._host_latents = torch.zeros(self.latents.shape, dtype=self.dtype, pin_memory=pin)
        # torch.compile fuses the many small elementwise kernels of a step, which dominate at batch 1.
        self._step_fn: Callable[[], None] = (
            torch.compile(self._step_tensors, dynamic=False) if compile else self._step_tensors
        )
        self._graph: torch.cuda.CUDAGraph | None = None
        if graphed:
            self._graph = cuda_graphs.capture(self._transfer_and_step, generators=[self.rng])
            self.reset()  # the warm-up steps ran for real

    # -- the step, as the graph records it ------------------------------------------------

    @torch.no_grad()  # not inference_mode: torch.compile rejects inference tensors
    def _step_tensors(self) -> None:
        commit = self.inputs[:, COMMIT] > 0.5  # (B,) bool
        actions = self.actions.to(self.dtype)
        arm = links = None
        if self.decode and self.decoder_reads_arm:  # drawn once, for the generator and the decoder
            arm, links = self.generator.arm_image_and_links(
                self.actions, self.arm_bases, self.sink_rotations, self.sink_translations
            )
        planes = None
        if self.decode and self.decoder_reads_warps:  # warped once, for the generator and the decoder
            assert self.sink_images is not None  # the config checks that the generator warps in pixels
            planes = self.generator.sink_plane_images(
                self.sink_images, self.arm_bases, self.sink_rotations, self.sink_translations, self.sink_arms
            )
        rays = self.generator.conditioning(
            self.rotations,
            self.translations,
            self.sink_rotations,
            self.sink_translations,
            self.sink_latents,
            self.actions,
            self.arm_bases,
            arm_drawing=arm,
            sink_image=self.sink_images,
            encode=self.vae.encode_warped,
            plane_images=planes,
        ).to(self.dtype)  # (B, R, h, w)
        x = self.noise.normal_(generator=self.rng)
        last = self.sampling_steps - 1
        for i in range(self.sampling_steps):
            t = self._times[i]
            velocity = self.generator.step(
                x, self.previous, rays, actions, t, self.cache, commit=commit if i == last else None
            )
            if i == last:
                x = velocity_to_x0(x, velocity, t)
            else:
                x = euler_update(x, velocity, self._schedule[i], self._schedule[i + 1])
        self.latents.copy_(x)
        self.previous.copy_(torch.where(commit[:, None, None, None], x, self.previous))
        if self.decode:  # with the arm where this frame's joints put it, finer than the latent
            arm_frames = arm[:, None] if arm is not None else None  # (B, 1, A, h s, w s)
            copied = [planes] if planes is not None else []
            if self.decoder_reads_arm_warp:  # the config checks that it also reads the planes and the arm
                assert planes is not None and arm is not None and links is not None
                assert self.sink_images is not None and self.sink_actions is not None
                assert self.sink_arm_links is not None
                arm_warp = self.generator.sink_arm_warp(
                    self.sink_images,
                    self.sink_actions,
                    self.sink_arm_links,
                    self.actions,
                    self.arm_bases,
                    self.sink_rotations,
                    self.sink_translations,
                    arm,
                    links,
                )
                copied.append(arm_warp[:, None])
            if self.decoder_reads_ground_tile:  # the config checks that it also reads the planes
                assert self.ground_tiles is not None and self.tile_axes is not None
                ground = self.generator.ground_tile_image(
                    self.ground_tiles,
                    self.tile_axes,
                    self.config.vae.fast_decoder_ground_tile,
                    self.arm_bases,
                    self.sink_rotations,
                    self.sink_translations,
                    self.config.vae.fast_decoder_ground_tile_depth,
                )
                copied.append(ground[:, None])
            plane_frames = torch.cat(copied, dim=1) if copied else None  # (B, P, 6, H, W)
            entries = None  # where rays enter the boxes: the copies and the face and sky pastes need them
            if self.face_colours is not None or self.sky_colours is not None:
                assert self.static_boxes is not None and self.pose_frames is not None
                entries = self.generator.box_entries(
                    self.pose_frames, self.static_boxes, self.sink_rotations, self.sink_translations
                )
            if self.decoder_reads_boxes:  # the config checks that it also reads the planes
                assert plane_frames is not None and self.static_boxes is not None
                assert self.box_colours is not None and self.pose_frames is not None
                plane_frames = self.generator.copies_among_boxes(
                    plane_frames,
                    self.box_colours,
                    self.static_boxes,
                    self.pose_frames,
                    self.arm_bases,
                    self.sink_rotations,
                    self.sink_translations,
                    tile_last=self.decoder_reads_ground_tile,
                    entries=entries,
                )
            plane_frames = plane_frames[:, None] if plane_frames is not None else None  # (B, 1, P, 6, H, W)
            image = self.decode_latents(x[:, None], arm_frames, plane_frames)[:, 0]
            if self.decoder_pastes_unseen:  # the config checks that it reads the boxes, the tile and the arm
                assert plane_frames is not None and links is not None
                image = self.generator.paste_unseen(image, plane_frames[:, 0], links)
                if entries is not None:
                    assert self.pose_frames is not None
                    image = self.generator.paste_boxes_and_sky(
                        image,
                        links,
                        plane_frames[:, 0, 0] if self.config.generator.sink_warp_base_plane else None,
                        entries[1],
                        self.face_colours,
                        self.sky_colours,
                        self.pose_frames,
                        self.arm_bases,
                        self.sink_rotations,
                        self.sink_translations,
                    )
                if self.object_points is not None and self.object_colours is not None:
                    used = self._object_points_used if self._compact_objects else self.object_points.shape[2]
                    image = self.generator.paste_table_objects(
                        image,
                        links,
                        self.object_points[:, :, :used],
                        self.object_colours[:, :, :used],
                        self.sink_rotations,
                        self.sink_translations,
                    )
            if self.link_colours is not None:
                paste_actions = self.actions if self.paste_actions is None else self.paste_actions
                colours = self.generator.arm_colour_image(
                    self.link_colours, paste_actions, self.arm_bases, self.sink_rotations, self.sink_translations
                )
                image = self.generator.paste_arm(image, colours)
                if self.paste_actions is not None:
                    self.paste_actions.copy_(torch.where(commit[:, None], self.actions, self.paste_actions))
            if self.decoder == 'fast' and self.config.vae.fast_decoder_bilateral:
                image = bilateral(image, self.config.vae.fast_decoder_bilateral)
            if self.config.camera.chroma_subsampled:
                image = subsample_chroma(image)
            self.frames.copy_(to_uint8_images(image))

    def decode_latents(
        self, latents: torch.Tensor, arm: torch.Tensor | None = None, planes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L, C, h, w) latents -> (B, L, 3, H, W) images in [-1, 1], with the decoder in use;
        arm (B, L, A, h', w'): the arm drawing, for a light decoder that reads it (``decoder_reads_arm``);
        planes (B, L, P, 6, H, W): the plane warps, for one that reads them (``decoder_reads_warps``)."""
        return self.vae.decode_fast(latents, arm, planes) if self.decoder == 'fast' else self.vae.decode(latents)

    def _transfer_and_step(self) -> None:
        """Upload the packed inputs, step, download the result: what a CUDA graph replays."""
        self._upload()
        self._step_fn()
        self._download()

    # -- host API ---------------------------------------------------------------------------

    def reset(self, streams: np.ndarray | None = None) -> None:
        """Forget all streams (and re-seed the noise), or the streams of a (B,) bool mask."""
        if streams is None:
            self.cache.reset()
            self.previous.zero_()
            self.rng.manual_seed(self.seed)
            streams = self._all_streams
        else:
            self.cache.reset(torch.as_tensor(streams, device=self.device))
        self._sink_rotations[streams] = np.eye(3)
        self._sink_translations[streams] = 0.0

    def _pack(self, columns: slice, values: np.ndarray | None, shape: tuple[int, ...], name: str) -> None:
        """Write ``values`` of ``shape`` into the pinned input rows (None: keep the last ones)."""
        if values is None:
            return
        array = np.asarray(values)
        if array.shape != shape:
            raise EngineError(f'{name} must have shape {shape}, got {array.shape}')
        self._host_rows[:, columns] = array.reshape(self.batch_size, -1)

    def _upload(self) -> None:
        # Safe to reuse the pinned rows next step: every step ends with a synchronisation.
        self.inputs.copy_(self._host_inputs, non_blocking=True)

    def _download(self) -> None:
        source, host = (self.frames, self._host_frames) if self.decode else (self.latents, self._host_latents)
        host.copy_(source, non_blocking=True)

    @torch.no_grad()
    def start(
        self,
        streams: np.ndarray,
        first_frames: np.ndarray,
        actions: np.ndarray | None = None,
        arm_bases: np.ndarray | None = None,
        pose_frames: np.ndarray | None = None,
    ) -> None:
        """Begin the streams of the (B,) bool mask ``streams`` from ``first_frames`` (B, H, W, 3) uint8
        (rows of other streams are ignored): each image becomes its stream's attention sink.
        arm_bases (B, 3, 4): the arm's base link [R | t] in each first frame's camera frame (None:
        unknown, no arm drawn), read by a generator with ``arm_chain``; pose_frames (B, 3, 4): the
        frame the camera poses are given in, in each first frame's camera frame (None: unknown),
        read by a light decoder with ``vae.fast_decoder_ground_tile`` (the floor's tiles follow its axes)
        or ``vae.fast_decoder_static_boxes`` (the boxes stand in it)."""
        b = self.batch_size
        self._pack(slice(INPUT_FIELDS, None), actions, (b, self.config.generator.action_dim), 'actions')
        chosen = np.asarray(streams, dtype=bool)
        bases = self._frames(arm_bases, chosen, 'arm_bases')
        frames_given = self._frames(pose_frames, chosen, 'pose_frames')
        self._host_rows[chosen, ARM_BASE] = bases[chosen].reshape(-1, 12)
        self._upload()
        mask = torch.as_tensor(chosen, device=self.device)
        frames = torch.from_numpy(np.ascontiguousarray(first_frames)).to(self.device)
        images = from_uint8_images(frames, self.dtype)[:, 0]  # (B, 3, H, W)
        latents = self.vae.encode(images[:, None])[:, 0]  # (B, C, h, w), by the full encoder
        self.reset(chosen)
        identity, zero = torch.eye(3, device=self.device).repeat(b, 1, 1), torch.zeros(b, 3, device=self.device)
        rays = self.generator.conditioning(
            identity,
            zero,
            identity,
            zero,
            latents,
            self.actions,
            self.arm_bases,
            sink_image=images,
            encode=self.vae.encode_warped,
        ).to(self.dtype)
        zero_t = torch.zeros(b, device=self.device, dtype=self.dtype)
        # The sink pass: the clean first latent at t = 0 enters the cache; its output is not needed.
        self.generator.step(latents, latents, rays, self.actions.to(self.dtype), zero_t, self.cache, commit=mask)
        self.previous.copy_(torch.where(mask[:, None, None, None], latents, self.previous))
        self.sink_latents.copy_(torch.where(mask[:, None, None, None], latents, self.sink_latents))
        if self.sink_images is not None:
            self.sink_images.copy_(torch.where(mask[:, None, None, None], images, self.sink_images))
        if self.sink_arms is not None:
            arms = self.generator.sink_arm_mask(self.actions, self.arm_bases)
            self.sink_arms.copy_(torch.where(mask[:, None, None, None], arms, self.sink_arms))
        if self.sink_actions is not None and self.sink_arm_links is not None:
            self.sink_actions.copy_(torch.where(mask[:, None], self.actions, self.sink_actions))
            links = self.generator.sink_arm_links(self.actions, self.arm_bases)
            self.sink_arm_links.copy_(torch.where(mask[:, None, None, None], links, self.sink_arm_links))
        if self.link_colours is not None:
            colours = self.generator.sink_link_colours(images, self.actions, self.arm_bases)
            self.link_colours.copy_(torch.where(mask[:, None, None], colours, self.link_colours))
        if self.paste_actions is not None:
            self.paste_actions.copy_(torch.where(mask[:, None], self.actions, self.paste_actions))
        pose_frame = torch.as_tensor(frames_given, device=self.device).float()
        if self.ground_tiles is not None and self.tile_axes is not None:
            assert self.sink_arms is not None  # the config checks that the decoder reads the planes
            period = self.config.vae.fast_decoder_ground_tile
            tiles, axes = self.generator.sink_ground_tile(images, self.sink_arms, self.arm_bases, pose_frame, period)
            self.ground_tiles.copy_(torch.where(mask[:, None, None, None], tiles, self.ground_tiles))
            self.tile_axes.copy_(torch.where(mask[:, None, None], axes, self.tile_axes))
        if self.static_boxes is not None and self.pose_frames is not None and self.box_colours is not None:
            assert self.sink_arms is not None  # the config checks that the decoder reads the planes
            colours = self.generator.sink_box_colour(images, self.sink_arms, pose_frame, self.static_boxes)
            self.box_colours.copy_(torch.where(mask[:, None], colours, self.box_colours))
            self.pose_frames.copy_(torch.where(mask[:, None, None], pose_frame, self.pose_frames))
            if self.face_colours is not None:
                faces = self.generator.sink_face_colours(images, self.sink_arms, pose_frame, self.static_boxes)
                self.face_colours.copy_(torch.where(mask[:, None, None], faces, self.face_colours))
            if self.sky_colours is not None:
                sky = self.generator.sink_sky_colour(
                    images, self.sink_arms, self.arm_bases, pose_frame, self.static_boxes
                )
                self.sky_colours.copy_(torch.where(mask[:, None], sky, self.sky_colours))
            if self.object_points is not None and self.object_colours is not None:
                points, colours = self.generator.sink_table_objects(
                    images, self.sink_arms, pose_frame, self.static_boxes
                )
                first = torch.argsort(colours[:, 3], dim=1, descending=True, stable=True)  # (B, N): objects first
                points = points.gather(2, first[:, None].expand_as(points))
                colours = colours.gather(2, first[:, None].expand_as(colours))
                self.object_points.copy_(torch.where(mask[:, None, None], points, self.object_points))
                self.object_colours.copy_(torch.where(mask[:, None, None], colours, self.object_colours))
                self._object_points_used = max(1, int((self.object_colours[:, 3] > 0.5).sum(1).max()))

    def _frames(self, values: np.ndarray | None, chosen: np.ndarray, name: str) -> np.ndarray:
        """(B, 3, 4) float64 frames [R | t] for ``start``: the chosen streams' rows of ``values``
        (None: unknown, all zeros), zeros in the others; EngineError unless finite there."""
        b = self.batch_size
        if values is None:
            return np.zeros((b, 3, 4))
        frames = np.asarray(values, dtype=np.float64)
        if frames.shape != (b, 3, 4) or not np.all(np.isfinite(frames[chosen])):
            raise EngineError(f'{name} must be finite with shape {(b, 3, 4)}, got {frames.shape}')
        return np.where(chosen[:, None, None], frames, 0.0)

    def _chain_sink_poses(self, rotations: np.ndarray, translations: np.ndarray, commit: np.ndarray | None) -> None:
        """Pack each camera in its sink frame (its pose there after this step's motion), and keep
        it for the streams that commit: R_s <- R_s R, t_s <- t_s + R_s t."""
        rotation = self._sink_rotations @ np.asarray(rotations, dtype=np.float64)  # (B, 3, 3)
        step = np.asarray(translations, dtype=np.float64)[..., None]  # (B, 3, 1)
        translation = self._sink_translations + (self._sink_rotations @ step)[..., 0]  # (B, 3)
        self._host_rows[:, SINK_ROTATION] = rotation.reshape(self.batch_size, 9)
        self._host_rows[:, SINK_TRANSLATION] = translation
        if commit is None:
            self._sink_rotations, self._sink_translations = rotation, translation
        else:
            advance = np.asarray(commit, dtype=bool)
            self._sink_rotations[advance], self._sink_translations[advance] = rotation[advance], translation[advance]

    def step(
        self,
        rotations: np.ndarray,
        translations: np.ndarray,
        actions: np.ndarray | None = None,
        commit: np.ndarray | None = None,
    ) -> np.ndarray:
        """Generate one frame per stream: (B, H, W, 3) uint8 (or (B, C, h, w) latents without decode).

        rotations (B, 3, 3) and translations (B, 3): each camera's motion since its last frame, in
        that frame; actions (B, A) (None: the last ones); commit (B,) bool: streams that advance
        (default all).
        """
        b = self.batch_size
        self._pack(slice(0, 9), rotations, (b, 3, 3), 'rotations')
        self._pack(slice(9, 12), translations, (b, 3), 'translations')
        self._pack(slice(INPUT_FIELDS, None), actions, (b, self.config.generator.action_dim), 'actions')
        self._pack(slice(COMMIT, COMMIT + 1), self._all_streams if commit is None else commit, (b,), 'commit')
        if self._sink_rays:
            self._chain_sink_poses(rotations, translations, commit)
        if self._graph is not None:
            self._graph.replay()
        else:
            self._transfer_and_step()
        if self.device.type == 'cuda':
            torch.cuda.current_stream().synchronize()
        # The pinned buffer is reused by the next step: return one copy of it.
        if self.decode:
            return self._host_frames.numpy().copy()
        return self._host_latents.to(torch.float32, copy=True).numpy()
