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
LIGHT_DIRECTIONS = 2000  # candidate lights for ``fit_shading``, about 4.5 degrees apart
MIN_SHADE_SAMPLES = 8  # pixels of a material ``fit_shading`` needs to fit it


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


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth unit normals (V, 3) of a mesh's vertices: the sum of their triangles' normals weighted
    by area, as a renderer interpolates them across each triangle."""
    t = vertices[faces]
    weighted = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])  # (T, 3), length twice the area
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], weighted)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def sample_surfaces(
    meshes: list[tuple[np.ndarray, np.ndarray]], count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """count points spread by area over the links' meshes (vertices, triangles in each link's frame,
    base link first) -> float32 (count, 3) points and (count, 3) unit normals there, grouped by
    link, and how many each link got."""
    rng = np.random.default_rng(seed)
    triangles = [vertices[faces] for vertices, faces in meshes]  # per link (T, 3, 3)
    corner_normals = [vertex_normals(vertices, faces)[faces] for vertices, faces in meshes]  # per link (T, 3, 3)
    areas = [0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1) for t in triangles]
    totals = np.array([a.sum() for a in areas])
    if not totals.all():
        raise ValueError(f'every link mesh needs an area, got {totals.tolist()} m^2')
    counts = np.floor(count * totals / totals.sum()).astype(int)
    counts[np.argmax(totals)] += count - counts.sum()
    points, normals = [], []
    for t, corners, a, n in zip(triangles, corner_normals, areas, counts, strict=True):
        chosen = rng.choice(len(t), size=n, p=a / a.sum())
        r1, r2 = rng.random((2, n, 1))
        s = np.sqrt(r1)  # uniform over each triangle
        weights = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)  # (n, 3, 1) barycentric
        points.append((weights * t[chosen]).sum(1))
        normal = (weights * corners[chosen]).sum(1)
        normals.append(normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12))
    return (
        np.concatenate(points).astype(np.float32),
        np.concatenate(normals).astype(np.float32),
        tuple(int(n) for n in counts),
    )


class ArmSurface(nn.Module):
    """Points on each link's surface (grouped by link, base link first) and their normals -> which
    link each pixel shows, and the surface's normal there. The points are not weights: a
    checkpoint keeps them in its extras file."""

    points: torch.Tensor  # (N, 3) metres, each in its link's frame
    normals: torch.Tensor  # (N, 3) unit, each in its link's frame
    link_ids: torch.Tensor  # (N,) long: each point's link

    def __init__(self, counts: tuple[int, ...]):
        super().__init__()
        self.counts = tuple(counts)
        self.register_buffer('points', torch.zeros(sum(counts), 3), persistent=False)
        self.register_buffer('normals', torch.zeros(sum(counts), 3), persistent=False)
        ids = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        self.register_buffer('link_ids', ids, persistent=False)

    def draw(
        self, poses: torch.Tensor, camera: CameraConfig, normals: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """poses (B, L, 4, 4): each link in the camera's frame (``ArmDrawing.link_poses``) -> long
        (B, H, W), the link each pixel shows (-1: none), and with ``normals`` float32 (B, 3, H, W)
        the unit normal there in the camera's frame (0 where no link is)."""
        b, h, w = poses.shape[0], camera.height, camera.width
        poses = poses.float()
        # One small matrix product per link: a pose gathered per point costs several times more on a CPU.
        rotations, translations = poses[:, :, :3, :3], poses[:, :, None, :3, 3]
        points = torch.split(self.points.float(), list(self.counts))
        x = torch.cat([p @ rotations[:, i].transpose(1, 2) + translations[:, i] for i, p in enumerate(points)], 1)
        depth = x[..., 2]  # (B, N)
        safe = depth.clamp(min=NEAR)
        u, v = camera.fx * x[..., 0] / safe + camera.cx, camera.fy * x[..., 1] / safe + camera.cy
        column, row = torch.round(u), torch.round(v)
        inside = (depth > NEAR) & (column >= 0) & (column < w) & (row >= 0) & (row < h)
        # Points outside go to one spare slot past the image, so every shape is fixed (a CUDA graph's).
        index = torch.where(inside, row * w + column, torch.full_like(column, h * w)).long()
        numbers = torch.arange(x.shape[1], device=x.device).expand(b, -1)

        def nearest(drawn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """-> each pixel's nearest depth (B, H W + 1) and one of its points there (B, H, W), -1: none."""
            far = torch.where(drawn, depth, torch.full_like(depth, math.inf))
            front = torch.full((b, h * w + 1), math.inf, device=x.device).scatter_reduce(
                1, index, far, reduce='amin', include_self=True
            )
            shown = drawn & (far <= front.gather(1, index))
            point = torch.full((b, h * w + 1), -1, dtype=torch.long, device=x.device).scatter_reduce(
                1, torch.where(shown, index, h * w), torch.where(shown, numbers, -1), reduce='amax', include_self=True
            )
            return front, point[:, : h * w].view(b, h, w)

        front, any_point = nearest(inside)
        centred = ((u - column).abs() * CENTRE_WINDOW <= 0.5) & ((v - row).abs() * CENTRE_WINDOW <= 0.5)
        on_front = depth <= front.gather(1, index) + FRONT_TOLERANCE
        _, centre_point = nearest(inside & centred & on_front)
        covered = (any_point >= 0).float()[:, None]
        interior = -F.max_pool2d(-covered, 3, stride=1, padding=1)[:, 0] > 0.5
        point = torch.where(
            centre_point >= 0, centre_point, torch.where(interior, any_point, torch.full_like(any_point, -1))
        )  # (B, H, W)
        drawn = point >= 0
        links = torch.where(drawn, self.link_ids[point.clamp(min=0)], torch.full_like(point, -1))
        if not normals:
            return links, None
        # Each pixel's point's normal turned into the camera's frame by its link's rotation.
        rotation = torch.gather(rotations, 1, links.clamp(min=0).flatten(1)[..., None, None].expand(-1, -1, 3, 3))
        local = self.normals.float()[point.clamp(min=0).flatten(1)]  # (B, H W, 3)
        turned = torch.einsum('bpij,bpj->bpi', rotation, local) * drawn.flatten(1)[..., None]
        return links, turned.transpose(1, 2).reshape(b, 3, h, w)


def light_directions(count: int) -> torch.Tensor:
    """count unit directions spread evenly over the sphere (a Fibonacci lattice), (count, 3)."""
    i = torch.arange(count, dtype=torch.float64) + 0.5
    polar, azimuth = torch.acos(1 - 2 * i / count), math.pi * (1 + math.sqrt(5)) * i
    return torch.stack(
        [torch.cos(azimuth) * torch.sin(polar), torch.sin(azimuth) * torch.sin(polar), torch.cos(polar)], 1
    ).float()


def fit_shading(
    image: torch.Tensor, links: torch.Tensor, normals: torch.Tensor, materials: torch.Tensor
) -> torch.Tensor:
    """Each link's look in the first image as lit by one light, fitted per stream.

    image (B, 3, H, W) in [-1, 1]; links (B, H, W) the link each pixel shows (-1: none; the caller
    leaves out each link's rim, whose colours mix with what is behind) and normals (B, 3, H, W) its
    surface's unit normal in the arm base's frame, as ``ArmSurface.draw`` gives them for the first
    image; materials (L,) long, one id per material.
    Each pixel of a link is taken as colour = A + B max(0, n . light), A and B per
    material (its ambient and diffuse colour) and one light direction for the stream, the one of
    LIGHT_DIRECTIONS candidates whose least-squares fit leaves the least error: a TinyRenderer
    scene's Lambert term, its specular highlight and shadows left out. A material with fewer
    than MIN_SHADE_SAMPLES pixels is not fitted. -> float32 (B, L, 10) per link: A (3), whether
    its material was fitted (1), B (3), the light (3).
    Runs once per stream, at its start: a loop over the streams keeps its memory per stream."""
    b, num_links = image.shape[0], materials.shape[0]
    directions = light_directions(LIGHT_DIRECTIONS).to(image.device)  # (D, 3)
    material_of = F.one_hot(materials, num_links).float()  # (L, M), M = L slots
    out = torch.zeros(b, num_links, 10, device=image.device)
    for i in range(b):
        keep = links[i] >= 0
        colour = image[i].float()[:, keep].T  # (P, 3)
        weights = material_of[links[i][keep]]  # (P, M)
        lit = (normals[i].float()[:, keep].T @ directions.T).clamp(min=0)  # (P, D)
        count = weights.sum(0)  # (M,)
        fitted = count >= MIN_SHADE_SAMPLES
        s1, s2 = weights.T @ lit, weights.T @ (lit * lit) + 1e-3 * count[:, None]  # (M, D); a small ridge on B
        sc = weights.T @ colour  # (M, 3)
        slc = torch.einsum('pm,pd,pc->mdc', weights, lit, colour)  # (M, D, 3)
        det = (count[:, None] * s2 - s1 * s1).clamp(min=1e-9)  # (M, D)
        ambient = (s2[..., None] * sc[:, None] - s1[..., None] * slc) / det[..., None]  # (M, D, 3)
        diffuse = (count[:, None, None] * slc - s1[..., None] * sc[:, None]) / det[..., None]
        # The squared error left: sum c^2 - A . sum c - B . sum lam c (the normal equations' solution).
        error = (weights.T @ (colour * colour)).sum(-1)[:, None] - (ambient * sc[:, None] + diffuse * slc).sum(-1)
        best = torch.where(fitted[:, None], error, torch.zeros_like(error)).sum(0).argmin()
        per_material = torch.cat(
            [ambient[:, best], fitted[:, None].float(), diffuse[:, best], directions[best].expand(num_links, 3)], 1
        )  # (M, 10)
        out[i] = per_material[materials] * fitted[materials, None]
    return out
