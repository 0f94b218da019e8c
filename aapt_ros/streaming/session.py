"""One camera stream: turns (pose, action) into an RGB frame per step.

Usage::

    session = StreamingSession(load_checkpoint('models/default'), device='cpu', seed=0)
    frame0 = session.start(pose0, action0, first_frame=None)   # None: the model's start frame
    frame1 = session.step(pose1, action1)                      # (H, W, 3) uint8, one pass per frame
    session.reset()                                            # forget the stream; start again

The first frame becomes the attention sink: it is written to the KV cache once and stays
visible; later frames attend to it and to a sliding window of recent frames, so cost and memory
per step are constant however long the stream runs. This class validates inputs and keeps the
pose history; ``StreamEngine`` (batch size 1 here) does the tensor work. Knows nothing of ROS.
"""

from __future__ import annotations

import numpy as np

from aapt_ros.model.camera import Pose, pose_in_frame, relative_motion
from aapt_ros.model.checkpoint import Checkpoint
from aapt_ros.model.config import CameraConfig
from aapt_ros.streaming.engine import EngineError, StreamEngine

ALL = np.ones(1, dtype=bool)


class SessionError(ValueError):
    """Input the streaming session cannot use; the message names the value and what is expected."""


class StreamingSession:
    """One generated camera stream on one device."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str = 'cpu',
        dtype: str = 'auto',
        seed: int = 0,
        sampling_steps: int | None = None,
        cuda_graph: bool = True,
        compile: bool = False,
        decoder: str = 'auto',
        window_frames: int | None = None,
    ):
        try:
            self.engine = StreamEngine(
                checkpoint,
                batch_size=1,
                device=device,
                dtype=dtype,
                seed=seed,
                sampling_steps=sampling_steps,
                cuda_graph=cuda_graph,
                compile=compile,
                decoder=decoder,
                window_frames=window_frames,
            )
        except EngineError as err:
            raise SessionError(str(err)) from None
        self.config = self.engine.config  # the checkpoint's, with the window streamed
        self._default_start_frame = checkpoint.start_frame.numpy()
        self._previous_pose: Pose | None = None
        self.frame_index = -1  # index of the last frame produced; -1 before start

    @property
    def device(self) -> str:
        return str(self.engine.device)

    @property
    def dtype(self) -> str:
        return str(self.engine.dtype).removeprefix('torch.')

    @property
    def decoder(self) -> str:
        """'full' or 'fast': the decoder in use ('auto' resolved)."""
        return self.engine.decoder

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
        self.engine.reset()
        self._previous_pose = None
        self.frame_index = -1

    def _check_action(self, action: np.ndarray | None) -> np.ndarray:
        names = self.action_names
        if action is None:
            return np.zeros((1, len(names)))
        values = np.asarray(action, dtype=np.float64)
        if values.shape != (len(names),):
            raise SessionError(f'action has {values.size} values, the model expects {len(names)}: {list(names)}')
        if not np.all(np.isfinite(values)):
            raise SessionError(f'action is not finite: {values.tolist()}')
        return values[None]

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

    @property
    def draws_arm(self) -> bool:
        """Whether the model draws the robot arm from its joints, and so wants ``arm_base`` at start."""
        return bool(self.config.generator.arm_chain)

    def start(
        self,
        pose: Pose,
        action: np.ndarray | None = None,
        first_frame: np.ndarray | None = None,
        arm_base: Pose | None = None,
    ) -> np.ndarray:
        """Begin a stream at ``pose`` from ``first_frame`` ((H, W, 3) uint8 RGB; None: the model's).

        arm_base: the pose of the arm's base link in the camera poses' frame, for a model that
        draws the arm (``draws_arm``); None there: the arm is left to the actions alone, and
        drawn worse. Ignored by other models.
        Returns the first frame as published (the start image itself).
        """
        pose = pose.validated()
        actions = self._check_action(action)
        frame = self._check_first_frame(first_frame)
        bases = pose_in_frame(pose, arm_base.validated())[None] if arm_base is not None else None  # (1, 3, 4)
        pose_frame = pose_in_frame(pose, Pose.identity())[None]  # the floor's tiles follow its axes
        self.reset()
        self.engine.start(ALL, frame[None], actions, bases, pose_frame)
        self._previous_pose = pose
        self.frame_index = 0
        return frame.copy()

    def step(self, pose: Pose, action: np.ndarray | None = None) -> np.ndarray:
        """Generate the frame seen from ``pose`` after ``action``: (H, W, 3) uint8 RGB."""
        if self._previous_pose is None:
            raise SessionError('step() before start(): start the stream with a first pose (and image)')
        pose = pose.validated()
        actions = self._check_action(action)
        rotation, translation = relative_motion(self._previous_pose, pose)
        frame = self.engine.step(rotation[None], translation[None], actions)[0]
        self._previous_pose = pose
        self.frame_index += 1
        return frame
