#!/usr/bin/env python3
"""Copy a checkpoint whose light decoder reads the arm drawing and set its arm paste: wherever a
link is drawn that frame 0 shows, the decoded image moves ``--weight`` of the way toward that
link's median colour in frame 0 (``vae.fast_decoder_arm_paste``, ``CausalGenerator.paste_arm``),
with the links drawn as ``--chain`` (``vae.fast_decoder_arm_paste_chain``, a chain of
``aapt_ros.model.arm.ARM_CHAINS`` that moves like the generator's).

No weight changes: the paste is a rule applied after the decoder, so a decoder trained without it
streams with it (the shipped v23 is v21's weights with it; docs/training, "Each link's colour
pasted"). A decoder stage started from the copy trains with the paste in place. The weights are
written in bfloat16 as shipped (``--float32`` to keep a training checkpoint's), so a shipped
model's copy streams everything else bit for bit as before.

More rules of the same kind (no weights), each off unless asked for:

- ``--previous-action``: the paste draws the links at the previous frame's action
  (``vae.fast_decoder_arm_paste_previous_action``: position commands are reached a frame late);
- ``--tile-nearest K``: the ground tile's texels take the K nearest copies no static box hides
  (``vae.fast_decoder_ground_tile_nearest``);
- ``--paste-under-arm``: the unseen-surface paste also covers frame 0's arm
  (``vae.fast_decoder_paste_under_arm``);
- ``--paste-upsampling F``: the paste's silhouette drawn F times finer per side
  (``vae.fast_decoder_arm_paste_upsampling``);
- ``--paste-surface DIR``: the paste's links drawn from ``--surface-points`` points spread over
  their meshes, ``DIR/link_<i>.obj`` in each link's frame, base link first (for our recordings
  pybullet_data's ``kuka_iiwa/meshes``), instead of the chain's spheres
  (``vae.fast_decoder_arm_paste_surface``; the points and their normals go to the checkpoint's
  extras file);
- ``--paste-shading``: with it, the pasted colours lit by a light fitted on frame 0's arm
  (``vae.fast_decoder_arm_paste_shading``);
- ``--paste-box-faces``: each static box's faces take frame 0's colour of their orientation
  (``vae.fast_decoder_paste_box_faces``);
- ``--paste-sky``: where no box and no ground is met, frame 0's background colour
  (``vae.fast_decoder_paste_sky``);
- ``--paste-objects``: what frame 0 shows standing on the boxes' tops, drawn a little above them
  (``vae.fast_decoder_paste_objects``);
- ``--tile-snap``: the ground tile snapped to the floor's one or two colours
  (``vae.fast_decoder_ground_tile_snap``);
- ``--bilateral S``: the output smoothed by a bilateral filter of colour sigma S
  (``vae.fast_decoder_bilateral``);
- ``--chroma-subsampled``: the output's colour at half resolution, as the recordings' JPEG 4:2:0
  keeps it (``camera.chroma_subsampled``).

Usage::

    python3 tools/add_arm_paste.py models/default runs/sim/v23 --chain kuka_iiwa_meshes --weight 0.5
    python3 tools/add_arm_paste.py runs/sim/v21 runs/sim/v30 --chain kuka_iiwa_meshes --weight 0.7 \
        --previous-action --tile-nearest 3 --paste-under-arm --paste-box-faces --paste-sky \
        --paste-upsampling 2 --tile-snap --bilateral 20 --chroma-subsampled   # v30
    python3 tools/add_arm_paste.py runs/sim/v21 runs/sim/v33 --chain kuka_iiwa_meshes --weight 0.7 \
        --previous-action --tile-nearest 3 --paste-under-arm --paste-box-faces --paste-sky --paste-objects \
        --paste-surface PYBULLET_DATA/kuka_iiwa/meshes --tile-snap --bilateral 20 --chroma-subsampled   # v33
    ... --weight 0.8 ... --paste-surface PYBULLET_DATA/kuka_iiwa/meshes --paste-shading ...   # v34
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from aapt_ros.model.arm import chain_moving_like
from aapt_ros.model.arm_surface import read_obj, sample_surfaces
from aapt_ros.model.checkpoint import CARD_FILE, Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from aapt_ros.model.config import ConfigError, ModelConfig
from aapt_ros.model.generator import CausalGenerator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', type=Path, help='checkpoint folder whose light decoder reads the arm drawing')
    parser.add_argument('output', type=Path, help='new checkpoint folder (refused if it exists and is not empty)')
    parser.add_argument('--weight', type=float, default=0.5, help='how far toward the link colour, 0..1 (0: none)')
    parser.add_argument('--chain', default='', help="the chain drawn for the paste (default: the generator's)")
    parser.add_argument(
        '--previous-action', action='store_true', help="draw the paste's links at the previous frame's action"
    )
    parser.add_argument(
        '--tile-nearest', type=int, default=0, help='ground tile: median of the K nearest unhidden copies (0: all)'
    )
    parser.add_argument(
        '--paste-under-arm', action='store_true', help="paste the unseen surfaces over frame 0's arm too"
    )
    parser.add_argument(
        '--paste-upsampling', type=int, default=1, help="the paste's silhouette this many times finer per side"
    )
    parser.add_argument(
        '--paste-surface',
        type=Path,
        default=None,
        help="folder of the links' meshes, link_<i>.obj, base link first: the paste's links drawn from them",
    )
    parser.add_argument(
        '--surface-points', type=int, default=131072, help='points spread over the meshes (--paste-surface)'
    )
    parser.add_argument(
        '--paste-shading', action='store_true', help='--paste-surface: the pasted colours lit by a fitted light'
    )
    parser.add_argument('--paste-box-faces', action='store_true', help="paste frame 0's colour of each box face")
    parser.add_argument('--paste-sky', action='store_true', help="paste frame 0's background where no box or ground is")
    parser.add_argument(
        '--paste-objects', action='store_true', help="paste what frame 0 shows standing on the boxes' tops"
    )
    parser.add_argument(
        '--tile-snap', action='store_true', help="ground tile: snapped to the floor's one or two colours"
    )
    parser.add_argument(
        '--chroma-subsampled',
        action='store_true',
        help="output colour at half resolution, as the recordings' JPEG 4:2:0",
    )
    parser.add_argument(
        '--bilateral',
        type=float,
        default=0.0,
        help='the output smoothed by a bilateral filter of this colour sigma (0: none)',
    )
    parser.add_argument('--float32', action='store_true', help='write float32 weights (default: bfloat16, as shipped)')
    args = parser.parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.model)
        surface, normals, counts = (None, None, ()) if args.paste_surface is None else _surface(args, checkpoint.config)
        vae = dataclasses.replace(
            checkpoint.config.vae,
            fast_decoder_arm_paste=args.weight,
            fast_decoder_arm_paste_chain=args.chain,
            fast_decoder_arm_paste_previous_action=args.previous_action,
            fast_decoder_arm_paste_upsampling=args.paste_upsampling,
            fast_decoder_arm_paste_surface=counts,
            fast_decoder_arm_paste_shading=args.paste_shading,
            fast_decoder_ground_tile_nearest=args.tile_nearest,
            fast_decoder_paste_under_arm=args.paste_under_arm,
            fast_decoder_paste_box_faces=args.paste_box_faces,
            fast_decoder_paste_sky=args.paste_sky,
            fast_decoder_paste_objects=args.paste_objects,
            fast_decoder_ground_tile_snap=args.tile_snap,
            fast_decoder_bilateral=args.bilateral,
        )
        camera = dataclasses.replace(checkpoint.config.camera, chroma_subsampled=args.chroma_subsampled)
        config = dataclasses.replace(checkpoint.config, vae=vae, camera=camera)
        generator = CausalGenerator(config)  # the paste's drawing is built from the config, not stored
    except (CheckpointError, ConfigError, OSError, ValueError) as err:
        print(f'add_arm_paste: {err}', file=sys.stderr)
        return 2
    generator.load_state_dict(checkpoint.generator.state_dict())
    if generator.arm_surface is not None:
        generator.arm_surface.points.copy_(torch.from_numpy(surface))
        generator.arm_surface.normals.copy_(torch.from_numpy(normals))
    dtype = torch.float32 if args.float32 else torch.bfloat16
    try:
        save_checkpoint(
            Checkpoint(config, checkpoint.vae, generator, checkpoint.start_frame), args.output, weight_dtype=dtype
        )
    except CheckpointError as err:
        print(f'add_arm_paste: {err}', file=sys.stderr)
        return 2
    if (args.model / CARD_FILE).is_file():
        shutil.copy(args.model / CARD_FILE, args.output / CARD_FILE)
    with (args.output / CARD_FILE).open('a') as card:
        chain = args.chain or config.generator.arm_chain
        card.write(
            f'\n- arm paste (tools/add_arm_paste.py, no training): {args.weight:g} of the way toward each '
            f"link's colour in frame 0, links drawn as {chain}"
            + (", at the previous frame's action" if args.previous_action else '')
            + (f', its silhouette {args.paste_upsampling}x finer' if args.paste_upsampling > 1 else '')
            + (f', from {sum(counts)} points on their meshes' if counts else '')
            + (', shaded by a light fitted on frame 0' if args.paste_shading else '')
            + '\n'
        )
        if args.tile_nearest:
            card.write(f'- ground tile: the median of the {args.tile_nearest} nearest copies no static box hides\n')
        if args.paste_under_arm:
            card.write('- unseen-surface paste also where frame 0 showed its arm\n')
        if args.paste_box_faces:
            card.write("- each static box face pasted in frame 0's colour of its orientation\n")
        if args.paste_sky:
            card.write("- frame 0's background colour pasted where no box and no ground is met\n")
        if args.paste_objects:
            card.write("- what frame 0 shows standing on the boxes' tops pasted, drawn a little above them\n")
        if args.tile_snap:
            card.write("- ground tile snapped to the floor's one or two colours\n")
        if args.bilateral:
            card.write(f'- output smoothed by a bilateral filter, colour sigma {args.bilateral:g}\n')
        if args.chroma_subsampled:
            card.write("- output chroma at half resolution, as the recordings' JPEG 4:2:0 keeps it\n")
    print(f'wrote {args.output}')
    return 0


def _surface(args: argparse.Namespace, config: ModelConfig) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The points spread over the paste chain's link meshes in args.paste_surface, their normals,
    and how many per link."""
    chain = chain_moving_like(args.chain or config.generator.arm_chain, config.generator.arm_chain)
    paths = [args.paste_surface / f'link_{i}.obj' for i in range(chain.num_links)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(
            f'--paste-surface: no mesh {missing[0]} (one OBJ per link of {chain.num_links}, base link first)'
        )
    return sample_surfaces([read_obj(p) for p in paths], args.surface_points)


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    sys.exit(main())
