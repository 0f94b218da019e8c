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

Each oracle image is also scored per pixel class (``oracle_classes``: what each bound gives where),
so a model's score on a class can be read against the oracles' there. With ``--generated DIR``
(an ``aapt-eval`` output folder of the same bags) it also scores the generated frames per pixel
class (``CLASSES``; squared errors pooled over the horizon's frames and
the bags): where a model's error is, next to what the inputs give there; and per finer class
(``BODY_CLASSES``, ``generated_by_body``), the surfaces split into the ground, the table and the
rest: which surface a model gets wrong; and the unseen ground and table split by why frame 0 does
not show them (``UNSEEN_CLASSES``, ``generated_unseen``): outside its view, behind its arm, or
behind something else (the table, an object).

Usage::

    python3 tools/visibility_bound.py recordings/sim/test/* --output visibility.json
    python3 tools/visibility_bound.py recordings/sim/test/* --output v.json --generated runs/eval/default
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from aapt_ros.data.bags import TYPESTORE, read_messages
from aapt_ros.data.episodes import read_episode, sim_mapping
from aapt_ros.data.sim_episode import EpisodeSpec, plan_episode
from aapt_ros.data.sim_scene import FAR, NEAR, Intrinsics, bullet_client, quaternion_to_rotation
from aapt_ros.eval.metrics import psnr
from aapt_ros.eval.replay import GENERATED_TOPIC, HORIZONS_S
from aapt_ros.node.image_conversion import image_msg_to_rgb8

SHARES = ('seen', 'arm', 'sky', 'unseen')  # they add up to 1; 'unseen_surface' is part of 'unseen'
ORACLES = ('oracle', 'surface_colour_oracle', 'surface_prior_oracle')
CLASSES = ('seen', 'arm', 'sky', 'unseen_surface', 'unseen_object')  # disjoint: the generated frames' scores
# The same pixels split finer by body (disjoint too): the ground is surfaces[0], the table surfaces[1].
BODY_CLASSES = (
    'seen_ground',
    'seen_table',
    'seen_other',
    'arm',
    'sky',
    'unseen_ground',
    'unseen_table',
    'unseen_object',
)
# The unseen ground and table split by why frame 0 does not show them (disjoint; they cover
# unseen_ground and unseen_table): the point lies outside frame 0's view, or frame 0 shows its arm
# or something else (the table, an object) in front of it.
UNSEEN_CLASSES = tuple(
    f'unseen_{body}_{why}' for body in ('ground', 'table') for why in ('outside', 'behind_arm', 'behind_other')
)
ALL_CLASSES = tuple(dict.fromkeys(CLASSES + BODY_CLASSES + UNSEEN_CLASSES))


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
    masks |= {'outside': ~inside, 'behind_arm': inside & (first.bodies[vc, uc] == arm)}
    masks |= {name: view.bodies == body for name, body in zip(('ground', 'table'), surfaces, strict=False)}
    colour = oracle.copy()
    for body in surfaces:
        shown = first.bodies == body
        if shown.any():
            colour[unseen & (view.bodies == body)] = first.image[shown].mean(0)
    prior = oracle.copy()
    prior[unseen_surface] = view.image[unseen_surface]
    images = dict(zip(ORACLES, (oracle, colour, prior), strict=True))
    return {name: image.round().astype(np.uint8) for name, image in images.items()}, masks


def generated_frames(replay_bag: Path) -> list[np.ndarray]:
    """The generated images (H, W, 3) uint8 of an ``aapt-eval`` replay bag, in order."""
    return [
        image_msg_to_rgb8(TYPESTORE.deserialize_cdr(message.data, message.msgtype))
        for message in read_messages(replay_bag, [GENERATED_TOPIC])
    ]


def class_errors(
    generated: np.ndarray, frame: np.ndarray, masks: dict[str, np.ndarray], names: tuple[str, ...] = CLASSES
) -> dict[str, dict[str, float]]:
    """Per ``names`` entry (``CLASSES`` or ``BODY_CLASSES``), the squared error of ``generated``
    against ``frame`` summed over the class's pixels, and the number of values summed."""
    nothing = np.zeros_like(masks['seen'])
    ground, table = masks.get('ground', nothing), masks.get('table', nothing)
    classes = {
        **masks,
        'unseen_object': masks['unseen'] & ~masks['unseen_surface'],
        'seen_ground': masks['seen'] & ground,
        'seen_table': masks['seen'] & table,
        'seen_other': masks['seen'] & ~ground & ~table,
        'unseen_ground': masks['unseen_surface'] & ground,
        'unseen_table': masks['unseen_surface'] & ~ground,
    }
    outside, behind_arm = masks.get('outside', nothing), masks.get('behind_arm', nothing)
    for body in ('ground', 'table'):
        unseen = classes[f'unseen_{body}']
        classes[f'unseen_{body}_outside'] = unseen & outside
        classes[f'unseen_{body}_behind_arm'] = unseen & behind_arm
        classes[f'unseen_{body}_behind_other'] = unseen & ~outside & ~behind_arm
    error = (generated.astype(np.float64) - frame) ** 2  # (H, W, 3)
    return {
        name: {'squared_error': float(error[classes[name]].sum()), 'values': float(classes[name].sum() * 3)}
        for name in names
    }


def pooled(errors: list[dict[str, dict[str, float]]], names: tuple[str, ...] = CLASSES) -> dict[str, dict[str, float]]:
    """``class_errors`` (or ``pooled`` results) of the classes ``names`` summed over frames or
    bags, with each class's PSNR and share of the summed error."""
    sums = {name: [sum(e[name][key] for e in errors) for key in ('squared_error', 'values')] for name in names}
    total = sum(error for error, _ in sums.values()) or 1.0
    return {
        name: {
            'squared_error': error,
            'values': count,
            'psnr': None if count == 0 else float(10 * np.log10(255.0**2 / (error / count))) if error > 0 else math.inf,
            'error_share': error / total,
        }
        for name, (error, count) in sums.items()
    }


def episode_bound(
    bag: Path,
    fov_deg: float = 60.0,
    rate_hz: float = 15.0,
    shadows: bool = True,
    generated: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Per horizon: the mean share of each pixel class and the PSNR of each oracle and of the
    re-render (the latter checks that the re-simulation is the recorded scene: about 30 dB with JPEG);
    each oracle's error per pixel class (``oracle_classes``, ``pooled``); with ``generated`` (one
    image per recorded frame), its error per pixel class too (``generated``)."""
    seed = int(bag.name.rsplit('_', 1)[1])
    episode = read_episode(bag, sim_mapping(bag), rate_hz=rate_hz)
    frames = episode.frames
    if generated is not None and (len(generated) != len(frames) or generated[0].shape != frames[0].shape):
        raise ValueError(
            f'{bag}: {len(generated)} generated images of {generated[0].shape if generated else None} '
            f'for {len(frames)} recorded frames of {frames[0].shape}'
        )
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
    errors: dict[int, dict[str, dict[str, float]]] = {}  # every class of ALL_CLASSES
    oracle_errors: dict[int, dict[str, dict[str, dict[str, float]]]] = {}
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
                    oracle_errors[i] = {name: class_errors(image, frames[i], masks) for name, image in images.items()}
                    if generated is not None:
                        errors[i] = class_errors(generated[i], frames[i], masks, ALL_CLASSES)
            scene.command(plan.commands[i])
            scene.step(plan.steps_per_frame)
    keys = (*SHARES, 'unseen_surface', *(f'{name}_psnr' for name in ORACLES), 'render_psnr')
    scores: dict[str, dict[str, Any]] = {
        name: {key: float(np.mean([rows[i][key] for i in r])) for key in keys} for name, r in horizons.items()
    }
    for name, r in horizons.items():
        scores[name]['oracle_classes'] = {o: pooled([oracle_errors[i][o] for i in r]) for o in ORACLES}
        if generated is not None:
            scores[name]['generated'] = pooled([errors[i] for i in r])
            scores[name]['generated_by_body'] = pooled([errors[i] for i in r], BODY_CLASSES)
            scores[name]['generated_unseen'] = pooled([errors[i] for i in r], UNSEEN_CLASSES)
    return {'bag': str(bag), 'seed': seed, 'horizons': scores}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bags', type=Path, nargs='+', help='episode folders recorded by aapt-record-sim')
    parser.add_argument('--fov', type=float, default=60.0, help='horizontal field of view of the recording (deg)')
    parser.add_argument('--output', type=Path, required=True, help='JSON file to write (must not exist)')
    parser.add_argument(
        '--generated', type=Path, help='aapt-eval output folder of these bags: score its frames per pixel class'
    )
    args = parser.parse_args(argv)
    if args.output.exists():
        print(f'ERROR: refusing to overwrite {args.output}; see --help', file=sys.stderr)
        return 1
    results = []
    for bag in tqdm(args.bags, desc='episodes', unit='episode'):
        replay_bag = args.generated / bag.name / 'replay_bag' if args.generated else None
        if replay_bag is not None and not replay_bag.exists():
            print(f'ERROR: {replay_bag} not found: --generated must be aapt-eval output of these bags', file=sys.stderr)
            return 1
        generated = generated_frames(replay_bag) if replay_bag is not None else None
        try:
            results.append(episode_bound(bag, args.fov, generated=generated))
        except ValueError as err:
            print(f'ERROR: {err}', file=sys.stderr)
            return 1
    names = results[0]['horizons']
    pooled_keys = ('generated', 'generated_by_body', 'generated_unseen', 'oracle_classes')
    mean: dict[str, dict[str, Any]] = {
        h: {key: float(np.mean([r['horizons'][h][key] for r in results])) for key in names[h] if key not in pooled_keys}
        for h in names
    }
    for h in names:
        mean[h]['oracle_classes'] = {
            o: pooled([r['horizons'][h]['oracle_classes'][o] for r in results]) for o in ORACLES
        }
        if args.generated:
            mean[h]['generated'] = pooled([r['horizons'][h]['generated'] for r in results])
            by_body = [r['horizons'][h]['generated_by_body'] for r in results]
            mean[h]['generated_by_body'] = pooled(by_body, BODY_CLASSES)
            unseen = [r['horizons'][h]['generated_unseen'] for r in results]
            mean[h]['generated_unseen'] = pooled(unseen, UNSEEN_CLASSES)
    args.output.write_text(
        json.dumps({'mean': mean, 'generated': str(args.generated), 'episodes': results}, indent=1) + '\n'
    )
    columns = ['horizon', *SHARES[:3], 'unseen (ground, table)', *(f'{name} dB' for name in ORACLES), 're-render dB']
    print('| ' + ' | '.join(columns) + ' |\n' + '|---' * len(columns) + '|')
    for h, m in mean.items():
        shares = ' | '.join(f'{m[s]:.0%}' for s in SHARES)
        psnrs = ' | '.join(f'{m[f"{name}_psnr"]:.2f}' for name in ORACLES)
        print(f'| {h} | {shares} ({m["unseen_surface"]:.0%}) | {psnrs} | {m["render_psnr"]:.1f} |')
    tables = [
        (f'{name}: PSNR dB per pixel class', CLASSES, lambda m, o=name: m['oracle_classes'][o]) for name in ORACLES
    ]
    if args.generated:
        tables.append((f'{args.generated}: PSNR dB per pixel class', CLASSES, lambda m: m['generated']))
        tables.append((f'{args.generated}: per pixel class and body', BODY_CLASSES, lambda m: m['generated_by_body']))
        tables.append(
            (f'{args.generated}: the unseen ground and table by why', UNSEEN_CLASSES, lambda m: m['generated_unseen'])
        )
    for title, names, of in tables:
        print(f'\n{title} (its share of the squared error)\n')
        print('| horizon | ' + ' | '.join(names) + ' |\n' + '|---' * (len(names) + 1) + '|')
        for h, m in mean.items():
            scores = [(of(m)[c]['psnr'], of(m)[c]['error_share']) for c in names]
            cells = ['none' if value is None else f'{value:.1f} ({share:.0%})' for value, share in scores]
            print(f'| {h} | ' + ' | '.join(cells) + ' |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
