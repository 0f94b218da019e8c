#!/usr/bin/env python3
"""Fit each link of a URDF arm with a few spheres, for ``aapt_ros.model.arm.ArmChain.spheres``.

The arm drawing places spheres along each link; capsules along the joint-to-joint segments put a
quarter of the drawn arm on the wrong link (``docs/training``, "Each link's colour pasted").
This tool reads each link's visual mesh (Wavefront OBJ, in the link's frame), finds the points
inside it on a grid (generalised winding number, robust to small holes), measures how deep each
lies (distance to the nearest surface sample), and then picks spheres greedily: each time the
inscribed sphere (grown by ``--margin``) that covers the most interior points not yet covered,
until ``--spheres`` are chosen. Inscribed spheres stay inside the housing, so the drawing does not
spill onto the background; the margin closes the gaps between them.

It needs only numpy and torch; the meshes come from the robot's description package (for our
recordings pybullet_data's ``kuka_iiwa``). The result is printed as Python to paste into
``aapt_ros/model/arm.py`` and, with ``--output``, written as JSON.

Usage::

    python3 tools/fit_arm_spheres.py PATH/kuka_iiwa/meshes --output spheres.json   # KUKA_IIWA_MESHES
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aapt_ros.model.arm_surface import read_obj


def winding_numbers(points: torch.Tensor, triangles: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Generalised winding number of each point (N, 3) for a mesh's triangles (T, 3, 3): about 1
    inside a closed surface, 0 outside (Jacobson et al. 2013, the solid angle of each triangle)."""
    out = []
    for start in range(0, len(points), chunk):
        a, b, c = (triangles[None, :, i] - points[start : start + chunk, None] for i in range(3))  # (n, T, 3)
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.cross(b, c, dim=-1)).sum(-1)
        div = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append((2 * torch.atan2(det, div)).sum(-1) / (4 * math.pi))
    return torch.cat(out)


def surface_samples(vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """count points (count, 3) spread over the mesh surface by area."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    chosen = rng.choice(len(faces), size=count, p=area / area.sum())
    r1, r2 = rng.random((2, count, 1))
    s = np.sqrt(r1)
    t = tri[chosen]
    return (1 - s) * t[:, 0] + s * (1 - r2) * t[:, 1] + s * r2 * t[:, 2]


def fit_link(vertices: np.ndarray, faces: np.ndarray, spheres: int, grid: float, margin: float) -> np.ndarray:
    """Greedy inscribed spheres for one mesh: (spheres, 4) x, y, z, radius in metres."""
    rng = np.random.default_rng(0)
    lo, hi = vertices.min(0), vertices.max(0)
    axes = [np.arange(lo[i] + grid / 2, hi[i], grid) for i in range(3)]
    points = torch.from_numpy(np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3))
    triangles = torch.from_numpy(vertices[faces])
    # |w| > 0.5: a mesh wound the other way round has w = -1 inside.
    inside = points[winding_numbers(points, triangles).abs() > 0.5]  # (N, 3)
    if len(inside) < spheres:
        raise ValueError(f'{len(inside)} grid points lie inside the mesh, fewer than {spheres} spheres: a finer --grid')
    surface = torch.from_numpy(surface_samples(vertices, faces, 20000, rng))
    depth = torch.cat([torch.cdist(part, surface).amin(1) for part in inside.split(4096)])  # (N,)
    radius = depth + margin
    uncovered = torch.ones(len(inside), dtype=torch.bool)
    chosen = []
    for _ in range(spheres):
        remaining = inside[uncovered]
        parts = zip(inside.split(2048), radius.split(2048), strict=True)
        counts = torch.cat([(torch.cdist(part, remaining) < r[:, None]).sum(1) for part, r in parts])
        best = int(counts.argmax())
        chosen.append([*inside[best].tolist(), float(radius[best])])
        uncovered &= (inside - inside[best]).norm(dim=1) >= radius[best]
    return np.array(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('meshes', type=Path, help='folder with link_0.obj ... link_{N-1}.obj, each in its link frame')
    parser.add_argument('--links', type=int, default=8, help='number of links (link_0 is the base link)')
    parser.add_argument('--spheres', type=int, default=16, help='spheres per link')
    parser.add_argument('--grid', type=float, default=0.006, help='metres between the interior samples')
    parser.add_argument('--margin', type=float, default=0.008, help='metres each inscribed sphere is grown by')
    parser.add_argument('--output', type=Path, help='JSON file to write (refuses to overwrite)')
    args = parser.parse_args(argv)
    if args.output is not None and args.output.exists():
        print(f'{args.output} exists; choose another path', file=sys.stderr)
        return 2
    fitted = []
    for link in tqdm(range(args.links), desc='links'):
        path = args.meshes / f'link_{link}.obj'
        if not path.is_file():
            print(f'no mesh {path}', file=sys.stderr)
            return 2
        vertices, faces = read_obj(path)
        try:
            fitted.append(fit_link(vertices, faces, args.spheres, args.grid, args.margin))
        except ValueError as err:
            print(f'{path}: {err}', file=sys.stderr)
            return 2
    print('spheres=(')
    for link, spheres in enumerate(fitted):
        values = ', '.join('(' + ', '.join(f'{v:.3f}' for v in s) + ')' for s in spheres)
        print(f'    ({values}),  # link {link}')
    print('),')
    if args.output is not None:
        args.output.write_text(json.dumps([s.round(4).tolist() for s in fitted], indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
