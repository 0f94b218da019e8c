"""A latent of another frame seen from the current camera, at a few depths (a plane sweep).

Two frames feed the generator this way. The sink (frame 0) is the one real image of a stream:
through attention alone the generator sees it as 8x8 tokens and must work out itself which sink
content lies behind each of its pixels, to a fraction of a token; after a few seconds of rollout
our models had blurred it into the scene's average. The recycled previous frame holds nearly all
of the next one, shifted by the camera's motion, a shift the network otherwise has to make itself
every frame. Here each latent pixel of the current frame is handed that content directly: its
ray is followed to depth z (metres along the current camera's optical axis), the point is
projected into the other camera and that frame's latent is sampled there, once per depth in
``depths``. A surface at one of the depths is reprojected exactly; the network chooses (or
blends) the depth per patch, as plane-sweep view synthesis does. A far depth is exact for the
background under any rotation. Pixels whose point falls outside the other image (or behind its
camera) are zero and flagged by a validity channel; with ``beyond_edges`` a point outside the
image (but in front of its camera) takes the latent at the nearest edge instead, still flagged as
outside: a large surface seen up to an edge of the other frame, such as the ground, is more likely
to go on as it was there than as nothing.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from aapt_ros.model.camera import latent_ray_directions, rays_to_plane
from aapt_ros.model.config import CameraConfig

MIN_DEPTH = 1e-3  # metres: points nearer the other camera's image plane than this are behind it
# Per plane of an image warped in pixels (``CausalGenerator.sink_plane_images``): its colour (3),
# whether it was sampled, whether the other frame shows it, and how much of the sample is the arm
# there (the arm stands on the plane, it is not part of it).
PLANE_IMAGE_CHANNELS = 6


def image_grid(
    x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, camera: CameraConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (x, y, z, metres, any equal shapes) in a camera's frame -> their ``grid_sample``
    coordinates in its image (..., 2), in [-1, 1] inside it (align_corners=False), and whether they
    lie in front of it (...) bool (the coordinates of those behind are meaningless)."""
    in_front = z > MIN_DEPTH
    z = torch.where(in_front, z, torch.ones_like(z))
    u = camera.fx * x / z + camera.cx  # pixel coordinates in the image
    v = camera.fy * y / z + camera.cy
    # align_corners=False: -1 and 1 are the image's outer edges, half a pixel beyond pixels 0 and W - 1.
    return torch.stack([(u + 0.5) / camera.width * 2 - 1, (v + 0.5) / camera.height * 2 - 1], dim=-1), in_front


class PlaneSweep(nn.Module):
    """latent (B, C, h, w) of another frame + the current camera in that frame -> (B, K * (C + 1), h, w):
    per depth, the sampled latent (C channels) followed by its validity (1 channel, 1 or 0)."""

    camera_directions: torch.Tensor  # (3, h, w) unit rays of the latent pixels in the current camera frame
    ray_lengths: torch.Tensor  # (K, 1, h, w) metres along each unit ray to each depth

    def __init__(self, camera: CameraConfig, latent_height: int, latent_width: int, depths: tuple[float, ...]):
        super().__init__()
        self.camera = camera
        self.latent_size = (latent_height, latent_width)
        self.num_depths = len(depths)
        directions = latent_ray_directions(camera, latent_height, latent_width)  # as RayEncoder's
        self.register_buffer('camera_directions', directions.float(), persistent=False)
        lengths = torch.tensor(depths, dtype=torch.float32)[:, None, None, None] / directions.float()[2]
        self.register_buffer('ray_lengths', lengths, persistent=False)

    def num_channels(self, latent_channels: int) -> int:
        return self.num_depths * (latent_channels + 1)

    def sample_grid(
        self,
        directions: torch.Tensor,
        origin: torch.Tensor,
        lengths: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
        beyond_edges: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """directions (B, 3, h, w): each latent pixel's unit ray, rotated into the other camera's
        frame (R d, as RayEncoder gives it); origin (B, 3): the current camera there, metres;
        lengths (B, K, 1, h, w): metres along each ray, in place of ``depths``' (None: those);
        known (B, K, h, w) bool: the points to sample at all (None: every one); beyond_edges: points
        outside the other image sample its nearest edge pixel (else nothing) -> the ``grid_sample``
        coordinates (B, K, h, w, 2) of each point in the other latent, in [-1, 1] inside it, and
        their validity (B, K, h, w) bool: inside it."""
        # Buffers cast where used: a generator cast to bfloat16 casts them too.
        lengths = self.ray_lengths.float() if lengths is None else lengths.float()
        p = lengths * directions.float()[:, None] + origin.float()[:, None, :, None, None]  # (B, K, 3, h, w)
        grid, in_front = image_grid(p[:, :, 0], p[:, :, 1], p[:, :, 2], self.camera)  # in the other image
        sampled = in_front if known is None else in_front & known
        valid = sampled & (grid.abs() <= 1).all(dim=-1)
        if beyond_edges:
            # The edge pixels' centres (align_corners=False): beyond them zero padding would blend in zeros.
            # Clamped per axis with Python numbers: a tensor of them would be a host-to-device copy,
            # which a CUDA graph cannot capture.
            h, w = self.latent_size
            grid = torch.stack(
                [grid[..., 0].clamp(-1 + 1 / w, 1 - 1 / w), grid[..., 1].clamp(-1 + 1 / h, 1 - 1 / h)], -1
            )
        else:
            sampled = valid
        return torch.where(sampled[..., None], grid, torch.full_like(grid, 2.0)), valid  # 2: outside, samples 0

    def forward(
        self,
        latent: torch.Tensor,
        directions: torch.Tensor,
        origin: torch.Tensor,
        lengths: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
        beyond_edges: bool = False,
    ) -> torch.Tensor:
        """latent (B, C, h, w) of the other frame; directions, origin, lengths, known and
        beyond_edges as ``sample_grid``'s."""
        grid, valid = self.sample_grid(directions, origin, lengths, known, beyond_edges)
        k = grid.shape[1]
        sampled = F.grid_sample(
            latent.float(),
            rearrange(grid, 'b k h w two -> b (k h) w two'),
            mode='bilinear',
            padding_mode='zeros',
            align_corners=False,
        )  # (B, C, K*h, w)
        sampled = rearrange(sampled, 'b c (k h) w -> b k c h w', k=k)
        warped = torch.cat([sampled, valid[:, :, None].float()], dim=2)  # (B, K, C + 1, h, w)
        return rearrange(warped, 'b k c h w -> b (k c) h w')

    def along_motion(
        self,
        latent: torch.Tensor,
        rotation: torch.Tensor,
        translation: torch.Tensor,
        lengths: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
        beyond_edges: bool = False,
    ) -> torch.Tensor:
        """``forward`` with the current camera in the other frame as (B, 3, 3), (B, 3): x_other = R x + t."""
        return self(latent, self.rotated_directions(rotation), translation, lengths, known, beyond_edges)

    def rotated_directions(self, rotation: torch.Tensor) -> torch.Tensor:
        """(B, 3, 3) the current camera's rotation into the other frame -> its pixels' unit rays
        there, (B, 3, h, w): ``sample_grid``'s directions."""
        return torch.einsum('bij,jhw->bihw', rotation.float(), self.camera_directions.float())

    def plane_lengths(self, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """base (B, 3, 4): a frame [R | t] in the current camera's -> metres along each latent
        pixel's ray to that frame's z = 0 plane, (B, 1, 1, h, w) (1 where the ray does not meet it
        ahead), and whether it does, (B, 1, h, w) bool: ``along_motion``'s lengths and known for
        a warp at that plane (the arm base's: the table top it stands on)."""
        _, _, length = rays_to_plane(base, self.camera_directions.flatten(1))
        length = length.unflatten(1, self.camera_directions.shape[1:])  # type: ignore[no-untyped-call]  # (B, h, w)
        meets = (length > 0) & length.isfinite()
        length = torch.where(meets, length, torch.ones_like(length))
        return length[:, None, None], meets[:, None]
