"""The streaming engine: a camera stream that turns (pose, action) into an RGB frame per step.

Usage::

    session = StreamingSession(load_checkpoint('models/default'), device='cpu', seed=0)
    frame0 = session.start(pose0, action0, first_frame=None)   # None: the model's start frame
    frame1 = session.step(pose1, action1)                      # (H, W, 3) uint8, one pass per frame
    session.reset()                                            # forget the stream; start again

The first frame becomes the attention sink: its latent is written to the KV cache once and
stays visible; later frames attend to it and to a sliding window of recent frames, so cost and
memory per step are constant however long the stream runs. Knows nothing of ROS.
"""

from __future__ import annotations

import numpy as np
import torch

from aapt_ros.model.camera import Pose, relative_motion, stack_motions
from aapt_ros.model.checkpoint import Checkpoint
from aapt_ros.model.config import CameraConfig
from aapt_ros.model.kv_cache import KVCache
from aapt_ros.model.sampling import euler_update, shifted_timesteps, velocity_to_x0


class SessionError(ValueError):
    """Input the streaming session cannot use; the message names the value and what is expected."""


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error, not a silent CPU run."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise SessionError(f'device {device!r} requested but CUDA is not available; use "cpu" or "auto"')
    if device != 'cpu' and not device.startswith('cuda'):
        raise SessionError(f'unknown device {device!r}; valid: "cpu", "cuda", "cuda:N", "auto"')
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on CUDA and float32 on the CPU (where half precision is slower)."""
    choices = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
    if dtype == 'auto':
        return torch.bfloat16 if device.type == 'cuda' else torch.float32
    if dtype not in choices:
        raise SessionError(f'unknown dtype {dtype!r}; valid: "auto", {", ".join(repr(c) for c in choices)}')
    return choices[dtype]


class StreamingSession:
    """One generated camera stream (batch 1) on one device."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str = 'cpu',
        dtype: str = 'auto',
        seed: int = 0,
        sampling_steps: int | None = None,
    ):
        self.config = checkpoint.config
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.seed = seed
        self.sampling_steps = sampling_steps or self.config.generator.sampling_steps
        if self.sampling_steps < 1:
            raise SessionError(f'sampling_steps must be >= 1, got {self.sampling_steps}')
        self._vae = checkpoint.vae.to(self.device, self.dtype).eval()
        self._generator = checkpoint.generator.to(self.device, self.dtype).eval()
        self._default_start_frame = checkpoint.start_frame.numpy()
        self._timesteps = shifted_timesteps(self.sampling_steps, self.config.generator.timestep_shift).tolist()
        self._cache = KVCache.allocate(self.config, 1, self.device, self.dtype)
        self._rng = torch.Generator(self.device)
        self._previous_pose: Pose | None = None
        self._previous_latent: torch.Tensor | None = None  # (1, C, h, w)
        self.frame_index = -1  # index of the last frame produced; -1 before start
        self.reset()

    @property
    def camera(self) -> CameraConfig:
        return self.config.camera

    @property
    def action_names(self) -> tuple[str, ...]:
        return self.config.generator.action_names

    @property
    def started(self) -> bool:
        return self._previous_pose is not None

    @property
    def window_size(self) -> int:
        """Latent frames the KV cache holds when full, the sink included."""
        return self.config.generator.window_frames

    @property
    def window_fill(self) -> int:
        """Latent frames in the KV cache now, the sink included (0 before start)."""
        return min(self.frame_index + 1, self.window_size)

    def reset(self) -> None:
        """Forget the stream; the next call must be ``start``. Re-seeds, so replays repeat exactly."""
        self._cache.reset()
        self._rng.manual_seed(self.seed)
        self._previous_pose = None
        self._previous_latent = None
        self.frame_index = -1

    def _check_action(self, action: np.ndarray | None) -> torch.Tensor:
        names = self.action_names
        if action is None:
            return torch.zeros(1, len(names), device=self.device, dtype=self.dtype)
        values = np.asarray(action, dtype=np.float64)
        if values.shape != (len(names),):
            raise SessionError(f'action has {values.size} values, the model expects {len(names)}: {list(names)}')
        if not np.all(np.isfinite(values)):
            raise SessionError(f'action is not finite: {values.tolist()}')
        return torch.from_numpy(values).to(self.device, self.dtype)[None]

    def _check_first_frame(self, frame: np.ndarray | None) -> np.ndarray:
        if frame is None:
            return self._default_start_frame
        expected = (self.camera.height, self.camera.width, 3)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise SessionError(
                f'start image must be uint8 RGB of shape {expected} (the size the model was trained at), '
                f'got {frame.dtype} {frame.shape}'
            )
        return frame

    def _rays(self, pose: Pose) -> torch.Tensor:
        assert self._previous_pose is not None
        rotation, translation = stack_motions([relative_motion(self._previous_pose, pose)], self.device)
        return self._generator.rays(rotation, translation).to(self.dtype)  # (1, 6, h, w)

    @torch.inference_mode()
    def start(self, pose: Pose, action: np.ndarray | None = None, first_frame: np.ndarray | None = None) -> np.ndarray:
        """Begin a stream at ``pose`` from ``first_frame`` ((H, W, 3) uint8 RGB; None: the model's).

        Returns the first frame as published (the start image itself).
        """
        pose = pose.validated()
        action_t = self._check_action(action)
        frame = self._check_first_frame(first_frame)
        self.reset()
        image = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)
        image = image.permute(2, 0, 1)[None, None].to(self.dtype) / 127.5 - 1  # (1, 1, 3, H, W) in [-1, 1]
        latent = self._vae.encode(image)[:, 0]  # (1, C, h, w)
        self._previous_pose = pose
        zero_t = torch.zeros(1, device=self.device, dtype=self.dtype)
        # The sink pass: the clean first latent at t=0 enters the cache; its output is not needed.
        self._generator.step(latent, latent, self._rays(pose), action_t, zero_t, self._cache, commit=True)
        self._previous_latent = latent
        self.frame_index = 0
        return frame.copy()

    @torch.inference_mode()
    def step(self, pose: Pose, action: np.ndarray | None = None) -> np.ndarray:
        """Generate the frame seen from ``pose`` after ``action``: (H, W, 3) uint8 RGB.

        One network pass per sampling step (one in total for an adversarially trained model).
        The KV cache takes the frame on its last pass.
        """
        if not self.started:
            raise SessionError('step() before start(): start the stream with a first pose (and image)')
        pose = pose.validated()
        action_t = self._check_action(action)
        rays = self._rays(pose)
        previous = self._previous_latent
        assert previous is not None
        x = torch.randn(previous.shape, generator=self._rng, device=self.device, dtype=self.dtype)
        ts = self._timesteps
        for i in range(self.sampling_steps):
            t = torch.full((1,), ts[i], device=self.device, dtype=self.dtype)
            last = i == self.sampling_steps - 1
            velocity = self._generator.step(x, previous, rays, action_t, t, self._cache, commit=last)
            x = velocity_to_x0(x, velocity, t) if last else euler_update(x, velocity, ts[i], ts[i + 1])
        self._previous_latent = x
        self._previous_pose = pose
        self.frame_index += 1
        return self._decode(x)

    def _decode(self, latent: torch.Tensor) -> np.ndarray:
        image = self._vae.decode(latent[:, None])[0, 0]  # (3, H, W) in [-1, 1]
        image = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return image.permute(1, 2, 0).cpu().numpy()
