"""The arm's links as points sampled on their meshes, drawn for the arm paste
(``vae.fast_decoder_arm_paste_surface``).

Our addition to AAPT, like the rest of the paste. The spheres fitted to the link meshes
(``arm.KUKA_IIWA_MESHES``) cover pybullet's silhouette of the arm with IoU 0.92 and put 88 % of
it on the right link (two validation episodes, the measured joints); the pasted colour follows
them, so the arm's rims and the links' borders are pasted wrong. Points spread over the meshes
by area, moved with their links, give 0.97 and 95 % for 131072 points (``tools/add_arm_paste.py
--paste-surface``, docs/training, "The arm drawn from its meshes").

A point cloud splatted into pixels draws the arm too fat (a pixel is covered when any point
falls in it, a rasteriser covers it when its centre is inside) and shows the back of a link
where the front has no point in a pixel. So the drawing takes two z-buffers of the same points:
the nearest point of each pixel (its front surface), then, among the points within
``FRONT_TOLERANCE`` of that front and within ``1 / (2 CENTRE_WINDOW)`` pixel of the pixel's
centre, the nearest one's link. Where no point falls that near the centre, a pixel inside the
first drawing (all its neighbours covered) keeps the first drawing's link; on the rim it is
left out.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aapt_ros.model.config import CameraConfig

CENTRE_WINDOW = 3  # a point counts for a pixel's centre within 1 / (2 * 3) of a pixel of it, as at 3x finer pixels
FRONT_TOLERANCE = 0.02  # metres: points this far behind a pixel's nearest point are still its front surface
NEAR = 0.05  # metres: points nearer the camera are not drawn (as arm.NEAR)


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and triangles (T, 3) int of a Wavefront OBJ file (polygons fanned)."""
    vertices, faces = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == 'v':
            vertices.append([float(v) for v in parts[1:4]])
        elif parts[0] == 'f':
            ids = [int(p.split('/')[0]) - 1 for p in parts[1:]]
            faces += [[ids[0], ids[i], ids[i + 1]] for i in range(1, len(ids) - 1)]
    return np.array(vertices, dtype=np.float64).reshape(-1, 3), np.array(faces, dtype=np.int64).reshape(-1, 3)


def sample_surfaces(
    meshes: list[tuple[np.ndarray, np.ndarray]], count: int, seed: int = 0
) -> tuple[np.ndarray, tuple[int, ...]]:
    """count points spread by area over the links' meshes (vertices, triangles in each link's frame,
    base link first) -> float32 (count, 3), grouped by link, and how many each link got."""
    rng = np.random.default_rng(seed)
    triangles = [vertices[faces] for vertices, faces in meshes]  # per link (T, 3, 3)
    areas = [0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1) for t in triangles]
    totals = np.array([a.sum() for a in areas])
    if not totals.all():
        raise ValueError(f'every link mesh needs an area, got {totals.tolist()} m^2')
    counts = np.floor(count * totals / totals.sum()).astype(int)
    counts[np.argmax(totals)] += count - counts.sum()
    points = []
    for t, a, n in zip(triangles, areas, counts, strict=True):
        chosen = t[rng.choice(len(t), size=n, p=a / a.sum())]  # (n, 3, 3)
        r1, r2 = rng.random((2, n, 1))
        s = np.sqrt(r1)  # uniform over each triangle
        points.append((1 - s) * chosen[:, 0] + s * (1 - r2) * chosen[:, 1] + s * r2 * chosen[:, 2])
    return np.concatenate(points).astype(np.float32), tuple(int(n) for n in counts)


class ArmSurface(nn.Module):
    """Points on each link's surface (grouped by link, base link first) -> which link each pixel
    shows. The points are not weights: a checkpoint keeps them in its extras file."""

    points: torch.Tensor  # (N, 3) metres, each in its link's frame
    link_ids: torch.Tensor  # (N,) long: each point's link

    def __init__(self, counts: tuple[int, ...]):
        super().__init__()
        self.counts = tuple(counts)
        self.register_buffer('points', torch.zeros(sum(counts), 3), persistent=False)
        self.register_buffer(
            'link_ids', torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)), persistent=False
        )

    def links(self, poses: torch.Tensor, camera: CameraConfig) -> torch.Tensor:
        """poses (B, L, 4, 4): each link in the camera's frame (``ArmDrawing.link_poses``) -> long
        (B, H, W), the link each pixel shows (-1: none)."""
        b, h, w = poses.shape[0], camera.height, camera.width
        poses = poses.float()
        # One small matrix product per link: a pose gathered per point costs several times more on a CPU.
        groups = torch.split(self.points.float(), list(self.counts))
        x = torch.cat(
            [p @ poses[:, i, :3, :3].transpose(1, 2) + poses[:, i, None, :3, 3] for i, p in enumerate(groups)], 1
        )  # (B, N, 3)
        depth = x[..., 2]
        safe = depth.clamp(min=NEAR)
        u, v = camera.fx * x[..., 0] / safe + camera.cx, camera.fy * x[..., 1] / safe + camera.cy
        column, row = torch.round(u), torch.round(v)
        inside = (depth > NEAR) & (column >= 0) & (column < w) & (row >= 0) & (row < h)
        # Points outside go to one spare slot past the image, so every shape is fixed (a CUDA graph's).
        index = torch.where(inside, row * w + column, torch.full_like(column, h * w)).long()
        ids = self.link_ids[None].expand(b, -1)

        def nearest(drawn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            far = torch.where(drawn, depth, torch.full_like(depth, math.inf))
            front = torch.full((b, h * w + 1), math.inf, device=x.device).scatter_reduce(
                1, index, far, reduce='amin', include_self=True
            )
            shown = drawn & (far <= front.gather(1, index))
            link = torch.full((b, h * w + 1), -1, dtype=torch.long, device=x.device).scatter_reduce(
                1, torch.where(shown, index, h * w), torch.where(shown, ids, -1), reduce='amax', include_self=True
            )
            return front, link[:, : h * w].view(b, h, w)

        front, any_link = nearest(inside)
        centred = ((u - column).abs() * CENTRE_WINDOW <= 0.5) & ((v - row).abs() * CENTRE_WINDOW <= 0.5)
        on_front = depth <= front.gather(1, index) + FRONT_TOLERANCE
        _, centre_link = nearest(inside & centred & on_front)
        covered = (any_link >= 0).float()[:, None]
        interior = -F.max_pool2d(-covered, 3, stride=1, padding=1)[:, 0] > 0.5
        return torch.where(
            centre_link >= 0, centre_link, torch.where(interior, any_link, torch.full_like(any_link, -1))
        )
