"""Camera poses and per-pixel ray conditioning.

Following AAPT (arXiv 2506.09350, sec. 3), the camera enters the generator as per-pixel ray
origin and direction *relative to the previous frame*, so a rollout never sees absolute
coordinates and behaves the same wherever the robot starts. Pose algebra runs in float64 on the
host (it is 12 numbers a frame); ray maps are built on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aapt_ros.model.config import CameraConfig

QUATERNION_NORM_TOLERANCE = 1e-2  # |q| may differ from 1 by this much (float32 senders); then renormalised


class PoseError(ValueError):
    """A camera pose is unusable (non-finite values, bad quaternion); the message says which."""


@dataclass(frozen=True)
class Pose:
    """Pose of the camera optical frame (REP 103: z forward, x right, y down) in a world frame."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]  # quaternion x, y, z, w (ROS order)

    @classmethod
    def identity(cls) -> Pose:
        return cls((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))

    def validated(self) -> Pose:
        """This pose with a unit quaternion, or PoseError if it cannot be used."""
        p = np.asarray(self.position, dtype=np.float64)
        q = np.asarray(self.orientation, dtype=np.float64)
        if p.shape != (3,) or q.shape != (4,):
            raise PoseError(f'pose needs 3 position and 4 orientation values, got {p.size} and {q.size}')
        if not np.all(np.isfinite(p)):
            raise PoseError(f'position is not finite: {p.tolist()}')
        if not np.all(np.isfinite(q)):
            raise PoseError(f'orientation is not finite: {q.tolist()}')
        norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            raise PoseError(
                f'orientation quaternion is not normalised: |q| = {norm:.6g} '
                f'(allowed 1 +/- {QUATERNION_NORM_TOLERANCE}); send a unit quaternion'
            )
        q = q / norm
        return Pose((float(p[0]), float(p[1]), float(p[2])), (float(q[0]), float(q[1]), float(q[2]), float(q[3])))

    def rotation(self) -> np.ndarray:
        """3x3 rotation matrix (float64) of the orientation."""
        x, y, z, w = self.orientation
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )


def relative_motion(previous: Pose, current: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (3, 3) and translation (3,) of ``current`` expressed in ``previous``'s camera frame.

    R_rel = R_prev^T R_cur and t_rel = R_prev^T (p_cur - p_prev), both float64.
    """
    r_prev = previous.rotation()
    rotation = r_prev.T @ current.rotation()
    translation = r_prev.T @ (np.asarray(current.position) - np.asarray(previous.position))
    return rotation, translation


def pose_in_frame(frame: Pose, pose: Pose) -> np.ndarray:
    """``pose`` seen from ``frame`` as one (3, 4) float64 [R | t] (``relative_motion`` side by side):
    how the arm's base enters the engine, in its stream's first camera frame."""
    rotation, translation = relative_motion(frame, pose)
    return np.concatenate([rotation, translation[:, None]], axis=1)


def frame_given(frame: torch.Tensor) -> torch.Tensor:
    """(B, 3, 4) frames [R | t] (``pose_in_frame``'s) -> (B,) bool: whether each is given (all
    zeros: unknown, and what depends on it is left out)."""
    return frame.flatten(1).abs().sum(1) > 0


def points_in_frame(frame: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """points (B, 3, ...) in a camera's frame -> the same points in the frame whose [R | t] in that
    camera's frame is ``frame`` (B, 3, 4): R^T (p - t)."""
    rotation, translation = frame[:, :, :3].float(), frame[:, :, 3].float()
    flat = points.float().reshape(points.shape[0], 3, -1) - translation[:, :, None]
    return (rotation.transpose(1, 2) @ flat).view(points.shape)


def directions_in_frame(frame: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """directions (B, 3, H, W) in a camera's frame -> in ``frame``'s (B, 3, 4) (rotated only)."""
    return torch.einsum('bji,bjhw->bihw', frame[:, :, :3].float(), directions.float())


def latent_ray_directions(camera: CameraConfig, latent_height: int, latent_width: int) -> torch.Tensor:
    """(3, h, w) float64 unit rays through the centres of the latent cells, in the camera frame."""
    # Centre of each latent cell in image pixel coordinates (pixel i has its centre at i).
    fy_cell = camera.height / latent_height
    fx_cell = camera.width / latent_width
    v = torch.arange(latent_height, dtype=torch.float64) * fy_cell + (fy_cell - 1) / 2
    u = torch.arange(latent_width, dtype=torch.float64) * fx_cell + (fx_cell - 1) / 2
    vv, uu = torch.meshgrid(v, u, indexing='ij')
    dirs = torch.stack([(uu - camera.cx) / camera.fx, (vv - camera.cy) / camera.fy, torch.ones_like(uu)])
    return dirs / dirs.norm(dim=0, keepdim=True)


def rays_to_plane(base: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera rays against a frame's z = 0 plane. base (B, 3, 4): the frame [R | t] in the camera's
    (x_cam = R x + t); directions (3, N): unit rays in the camera frame -> float32 the camera's
    origin in that frame (B, 3), the rays there (B, 3, N) and the metres along each ray to the
    plane (B, N): positive where it meets it ahead, negative or huge (parallel) where not."""
    rotation, translation = base[:, :, :3].float(), base[:, :, 3].float()
    origin = -torch.einsum('bji,bj->bi', rotation, translation)  # -R^T t
    rays = torch.einsum('bji,jn->bin', rotation, directions.float())  # R^T d
    up = rays[:, 2]
    # A ray parallel to the plane gets a tiny up component, so a huge distance, not a division by
    # zero (and no NaN inside a CUDA graph).
    safe_up = torch.where(up.abs() < 1e-6, torch.full_like(up, 1e-6), up)
    return origin, rays, -origin[:, 2:3] / safe_up


class RayEncoder(nn.Module):
    """Per-latent-pixel ray origin and direction of the current frame in the previous frame and,
    when ``sink_origin_scale`` > 0, also in the sink (first) frame of the stream.

    Output channels: origin (3, divided by ``origin_scale``) then unit direction (3), followed by
    the same in the sink frame (origin divided by ``sink_origin_scale``) when that is on.
    """

    camera_directions: torch.Tensor  # (3, h, w) unit rays in the camera frame, a buffer

    def __init__(
        self,
        camera: CameraConfig,
        latent_height: int,
        latent_width: int,
        origin_scale: float,
        sink_origin_scale: float = 0.0,
    ):
        super().__init__()
        self.origin_scale = origin_scale
        self.sink_origin_scale = sink_origin_scale
        self.num_channels = 12 if sink_origin_scale > 0 else 6
        self.register_buffer(
            'camera_directions', latent_ray_directions(camera, latent_height, latent_width).float(), persistent=False
        )

    def _rays(self, rotation: torch.Tensor, translation: torch.Tensor, origin_scale: float) -> torch.Tensor:
        b = rotation.shape[0]
        _, h, w = self.camera_directions.shape
        directions = torch.einsum('bij,jhw->bihw', rotation.float(), self.camera_directions.float())  # (B, 3, h, w)
        origins = (translation.float() / origin_scale)[:, :, None, None].expand(b, 3, h, w)
        return torch.cat([origins, directions], dim=1)

    def forward(
        self,
        rotation: torch.Tensor,
        translation: torch.Tensor,
        sink_rotation: torch.Tensor | None = None,
        sink_translation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """rotation (B, 3, 3), translation (B, 3): the motion since the previous frame; sink_rotation
        and sink_translation: the camera in the sink frame (needed when sink rays are on)
        -> float32 rays (B, num_channels, h, w).

        Computed in float32 whatever the module's dtype: a half-precision direction map would
        round the small differences between neighbouring rays.
        """
        rays = self._rays(rotation, translation, self.origin_scale)
        if self.sink_origin_scale <= 0:
            return rays
        if sink_rotation is None or sink_translation is None:
            raise ValueError(
                'this generator also takes the camera in the sink frame: pass sink_rotation, sink_translation'
            )
        return torch.cat([rays, self._rays(sink_rotation, sink_translation, self.sink_origin_scale)], dim=1)
