#!/usr/bin/env python3
"""How much of a recorded frame do the first frame, the camera poses and the joints determine?

For episodes recorded by ``aapt-record-sim`` (the seed is in the folder name ``episode_<seed>``),
the scene is rebuilt from the seed and re-simulated; at the scored frames it renders depth and the
body at each pixel from the recorded camera poses, and reprojects the recorded first frame into
each frame:

- **seen**: static surfaces visible in frame 0 (depth-consistent, not the arm): frame 0's colour;
- **arm**: the arm, which the joints determine: the recorded colour (a perfect arm renderer);
- **sky**: nothing rendered, the uniform background: frame 0's background colour;
- **unseen**: surfaces frame 0 does not show: frame 0's mean colour.

The PSNR of that image ("geometric oracle") is what the inputs give without knowing the unseen
surfaces; a model can beat it there only from scene priors learnt in training. Nearly all unseen
pixels are the ground and the table (``unseen_surface``, a part of ``unseen``), whose colour and
pattern frame 0 shows elsewhere, so two more images bound what such priors give:

- **surface colour**: unseen ground and table pixels get that body's mean colour in frame 0 (a
  model that continues each large surface as a flat colour);
- **surface prior**: they get the recorded colour (one that continues their patterns, shading
  and shadows perfectly). Unseen objects keep frame 0's mean colour in both.

Scores are means over the frames of the second that ends at each horizon (every other frame), as
in ``aapt-eval``.

Usage::

    python3 tools/visibility_bound.py recordings/sim/test/* --output visibility.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from aapt_ros.data.episodes import read_episode, sim_mapping
from aapt_ros.data.sim_episode import EpisodeSpec, plan_episode
from aapt_ros.data.sim_scene import FAR, NEAR, Intrinsics, bullet_client, quaternion_to_rotation
from aapt_ros.eval.metrics import psnr
from aapt_ros.eval.replay import HORIZONS_S

SHARES = ('seen', 'arm', 'sky', 'unseen')  # they add up to 1; 'unseen_surface' is part of 'unseen'
ORACLES = ('oracle', 'surface_colour_oracle', 'surface_prior_oracle')


class View(NamedTuple):
    """A recorded frame and what the re-simulation renders from its camera pose."""

    image: np.ndarray  # (H, W, 3) uint8, recorded
    depth: np.ndarray  # (H, W) metres along the optical axis, rendered (FAR where nothing is drawn)
    bodies: np.ndarray  # (H, W) int, the body id rendered at each pixel (-1 where none)
    pose: tuple[np.ndarray, np.ndarray]  # (R, t) of the optical frame in the world


def oracle_frame(
    first: View, view: View, k: Intrinsics, arm: int, surfaces: tuple[int, ...]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ``ORACLES`` images of ``view`` (H, W, 3) uint8 from ``first``, and the pixel masks of
    each share; ``arm`` and ``surfaces`` are the body ids of the arm and of the ground and table."""
    z, rotation, translation = view.depth, *view.pose
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    points = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], -1) @ rotation.T + translation  # world
    in_first = (points - first.pose[1]) @ first.pose[0]  # the same points in frame 0's optical frame
    depth = in_first[..., 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        u0 = np.round(k.fx * in_first[..., 0] / depth + k.cx)
        v0 = np.round(k.fy * in_first[..., 1] / depth + k.cy)
    inside = (depth > NEAR) & (u0 >= 0) & (u0 < k.width) & (v0 >= 0) & (v0 < k.height)
    uc, vc = np.where(inside, u0, 0).astype(int), np.where(inside, v0, 0).astype(int)
    unoccluded = np.abs(first.depth[vc, uc] - depth) < 0.02 + 0.02 * depth  # frame 0 sees this very point
    is_arm = view.bodies == arm
    sky = z >= 0.99 * FAR
    seen = inside & unoccluded & (first.bodies[vc, uc] != arm) & ~is_arm & ~sky
    first_sky = first.depth >= 0.99 * FAR
    oracle = np.broadcast_to(first.image.reshape(-1, 3).mean(0), first.image.shape).astype(np.float64)
    oracle[sky] = first.image[first_sky].mean(0) if first_sky.any() else 255.0
    oracle[seen] = first.image[vc[seen], uc[seen]]
    oracle[is_arm] = view.image[is_arm]
    unseen = ~(seen | is_arm | sky)
    unseen_surface = unseen & np.isin(view.bodies, surfaces)
    masks = {'seen': seen, 'arm': is_arm, 'sky': sky, 'unseen': unseen, 'unseen_surface': unseen_surface}
    colour = oracle.copy()
    for body in surfaces:
        shown = first.bodies == body
        if shown.any():
            colour[unseen & (view.bodies == body)] = first.image[shown].mean(0)
    prior = oracle.copy()
    prior[unseen_surface] = view.image[unseen_surface]
    images = dict(zip(ORACLES, (oracle, colour, prior), strict=True))
    return {name: image.round().astype(np.uint8) for name, image in images.items()}, masks


def episode_bound(bag: Path, fov_deg: float = 60.0, rate_hz: float = 15.0, shadows: bool = True) -> dict[str, Any]:
    """Per horizon: the mean share of each pixel class and the PSNR of each oracle and of the
    re-render (the latter checks that the re-simulation is the recorded scene: about 30 dB with JPEG)."""
    seed = int(bag.name.rsplit('_', 1)[1])
    episode = read_episode(bag, sim_mapping(bag), rate_hz=rate_hz)
    frames = episode.frames
    height, width = frames.shape[1:3]
    k = Intrinsics.from_fov(width, height, fov_deg)
    n = len(frames)  # a 60 s episode has frames 0..899: its last second is 886..899
    horizons = {
        f'{h}s': range(round((h - 1) * rate_hz) + 1, min(round(h * rate_hz) + 1, n), 2)
        for h in HORIZONS_S
        if round(h * rate_hz) <= n
    }
    wanted = {0} | {i for r in horizons.values() for i in r}
    spec = EpisodeSpec(seed, n / rate_hz, rate_hz, width, height, fov_deg, shadows=shadows)
    plan = plan_episode(spec)  # the recorder's plan; the camera follows the recorded poses instead
    poses = [(quaternion_to_rotation(q), x) for q, x in zip(episode.orientations, episode.positions, strict=True)]
    rows: dict[int, dict[str, float]] = {}
    with bullet_client() as client:
        scene = plan.build_scene(client)
        for i in range(max(wanted) + 1):
            if i in wanted:
                rgb, z, bodies = scene.render_geometry(k, episode.positions[i], episode.orientations[i])
                view = View(frames[i], z, bodies, poses[i])
                if i == 0:
                    first = view
                else:
                    images, masks = oracle_frame(first, view, k, scene.arm, scene.surfaces)
                    rows[i] = {name: float(mask.mean()) for name, mask in masks.items()}
                    rows[i] |= {f'{name}_psnr': psnr(image, frames[i]) for name, image in images.items()}
                    rows[i]['render_psnr'] = psnr(rgb, frames[i])
            scene.command(plan.commands[i])
            scene.step(plan.steps_per_frame)
    keys = (*SHARES, 'unseen_surface', *(f'{name}_psnr' for name in ORACLES), 'render_psnr')
    return {
        'bag': str(bag),
        'seed': seed,
        'horizons': {
            name: {key: float(np.mean([rows[i][key] for i in r])) for key in keys} for name, r in horizons.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bags', type=Path, nargs='+', help='episode folders recorded by aapt-record-sim')
    parser.add_argument('--fov', type=float, default=60.0, help='horizontal field of view of the recording (deg)')
    parser.add_argument('--output', type=Path, required=True, help='JSON file to write (must not exist)')
    args = parser.parse_args(argv)
    if args.output.exists():
        print(f'ERROR: refusing to overwrite {args.output}; see --help', file=sys.stderr)
        return 1
    results = [episode_bound(bag, args.fov) for bag in tqdm(args.bags, desc='episodes', unit='episode')]
    names = results[0]['horizons']
    mean = {h: {key: float(np.mean([r['horizons'][h][key] for r in results])) for key in names[h]} for h in names}
    args.output.write_text(json.dumps({'mean': mean, 'episodes': results}, indent=1) + '\n')
    columns = ['horizon', *SHARES[:3], 'unseen (ground, table)', *(f'{name} dB' for name in ORACLES), 're-render dB']
    print('| ' + ' | '.join(columns) + ' |\n' + '|---' * len(columns) + '|')
    for h, m in mean.items():
        shares = ' | '.join(f'{m[s]:.0%}' for s in SHARES)
        psnrs = ' | '.join(f'{m[f"{name}_psnr"]:.2f}' for name in ORACLES)
        print(f'| {h} | {shares} ({m["unseen_surface"]:.0%}) | {psnrs} | {m["render_psnr"]:.1f} |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
