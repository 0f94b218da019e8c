#!/usr/bin/env python3
"""Give a trained checkpoint's generator more to work with; new inputs start with zero weights, so
it streams as before until trained (all but ``--sink-warp-pixels``).

- ``--sink-rays SCALE``: the camera in the sink frame as a second ray input
  (``generator.sink_ray_origin_scale``); the new input weights are zero.
- ``--sink-warp D1,D2,...``: the sink frame's latent resampled into the current view at these
  depths (metres) as more input channels (``generator.sink_warp_depths``); needs sink rays
  (given already or with ``--sink-rays``); the new input weights are zero.
- ``--sink-warp-base-plane``: the sink latent also seen where each ray meets the arm base's plane
  (``generator.sink_warp_base_plane``); needs a sink warp and an arm; the new input weights are zero.
- ``--sink-warp-ground METRES``: the sink latent also seen where each ray meets the ground, this far
  below the arm base's plane (``generator.sink_warp_ground_below_base``), continued from the first
  frame's nearest edge where it did not show that point; needs a sink warp and an arm; the new input
  weights are zero.
- ``--sink-warp-pixels``: those plane warps (given already or added here) sample the sink *image*
  per pixel and encode it, instead of sampling the sink latent per latent pixel
  (``generator.sink_warp_pixels``): sharper content in the same channels, so unlike the others this
  changes what the checkpoint streams.
- ``--previous-warp D1,D2,...``: the same for the recycled previous latent, along the motion since
  the previous frame (``generator.previous_warp_depths``); the new input weights are zero.
- ``--arm CHAIN``: the robot arm drawn per latent pixel from the joint positions and the base pose
  (``generator.arm_chain``, a chain of ``aapt_ros.model.arm.ARM_CHAINS``); needs sink rays; the
  new input weights are zero.
- ``--depth N``: N transformer blocks in all, the new ones spread evenly among the old; each
  starts as an identity (adaLN-Zero gates at zero).

Either way the copy streams exactly as the original until a training stage started from it
(``model: <output>``) teaches it the new parts. Weights are written in float32, so that training
starts from the exact values; a generator file over 16 MiB is written in shards
(``generator-00001-of-00002.safetensors``, ...).

Usage::

    python3 tools/grow_generator.py models/default runs/default_sink_rays --sink-rays 1.0
    python3 tools/grow_generator.py models/default runs/default_depth9 --depth 9
    python3 tools/grow_generator.py models/default runs/default_warp --sink-warp 0.8,1.1,1.5,2.2,4,30
    python3 tools/grow_generator.py models/default runs/default_arm --arm kuka_iiwa
    python3 tools/grow_generator.py models/default runs/default_plane --arm-base-plane
    python3 tools/grow_generator.py models/default runs/default_ground --sink-warp-ground 0.625
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aapt_ros.model.arm import ARM_CHAINS
from aapt_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from aapt_ros.model.config import ConfigError
from aapt_ros.training.checkpoints import (
    deepened,
    with_arm,
    with_arm_base_plane,
    with_previous_warp,
    with_sink_rays,
    with_sink_warp,
    with_sink_warp_base_plane,
    with_sink_warp_ground,
    with_sink_warp_pixels,
)
from aapt_ros.training.config import TrainError


def depth_list(text: str) -> tuple[float, ...]:
    """'0.8,1.5,4' -> (0.8, 1.5, 4.0), depths in metres (the generator config checks their range)."""
    try:
        return tuple(float(d) for d in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated depths in metres, got {text!r}') from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', type=Path, help='checkpoint folder to start from')
    parser.add_argument('output', type=Path, help='new checkpoint folder (must not exist or be empty)')
    parser.add_argument(
        '--sink-rays', type=float, metavar='SCALE', help='add sink rays: metres of camera travel that map to 1'
    )
    parser.add_argument(
        '--sink-warp', type=depth_list, metavar='D1,D2,...', help='add the sink latent warped to these depths (m)'
    )
    parser.add_argument(
        '--previous-warp',
        type=depth_list,
        metavar='D1,D2,...',
        help='add the recycled latent warped to these depths (m) along the last motion',
    )
    parser.add_argument('--arm', choices=sorted(ARM_CHAINS), help='draw this robot arm from its joints and base pose')
    parser.add_argument(
        '--arm-base-plane', action='store_true', help="draw the plane the arm's base stands on as the rays meet it"
    )
    parser.add_argument(
        '--sink-warp-base-plane', action='store_true', help="warp the sink latent at the arm base's plane too"
    )
    parser.add_argument(
        '--sink-warp-ground',
        type=float,
        metavar='METRES',
        help="warp the sink latent at the ground too, this far below the arm base's plane",
    )
    parser.add_argument(
        '--sink-warp-pixels',
        action='store_true',
        help='compute the plane warps on the sink image and encode them (changes what it streams)',
    )
    parser.add_argument('--depth', type=int, help='blocks in all, more than the checkpoint has')
    args = parser.parse_args(argv)
    additions = ('sink_rays', 'sink_warp', 'previous_warp', 'arm', 'sink_warp_ground', 'depth')
    switches = args.arm_base_plane or args.sink_warp_base_plane or args.sink_warp_pixels
    if all(getattr(args, a) is None for a in additions) and not switches:
        parser.error(
            'nothing to add: give --sink-rays, --sink-warp, --previous-warp, --arm, --arm-base-plane, '
            '--sink-warp-base-plane, --sink-warp-ground, --sink-warp-pixels and/or --depth'
        )
    if args.sink_rays is not None and not args.sink_rays > 0:
        parser.error('--sink-rays must be positive')
    if args.sink_warp_ground is not None and not args.sink_warp_ground > 0:
        parser.error('--sink-warp-ground must be positive (metres below the base)')
    try:
        checkpoint = load_checkpoint(args.model)
        if args.sink_rays is not None:
            checkpoint = with_sink_rays(checkpoint, args.sink_rays)
        if args.sink_warp is not None:
            checkpoint = with_sink_warp(checkpoint, args.sink_warp)
        if args.arm is not None:
            checkpoint = with_arm(checkpoint, args.arm)
        if args.arm_base_plane:
            checkpoint = with_arm_base_plane(checkpoint)
        if args.sink_warp_base_plane:
            checkpoint = with_sink_warp_base_plane(checkpoint)
        if args.sink_warp_ground is not None:
            checkpoint = with_sink_warp_ground(checkpoint, args.sink_warp_ground)
        if args.sink_warp_pixels:
            checkpoint = with_sink_warp_pixels(checkpoint)
        if args.previous_warp is not None:
            checkpoint = with_previous_warp(checkpoint, args.previous_warp)
        if args.depth is not None:
            checkpoint = deepened(checkpoint, args.depth)
        save_checkpoint(checkpoint, args.output, weight_dtype=torch.float32)
    except (CheckpointError, ConfigError, TrainError) as err:
        parser.exit(2, f'grow_generator: {err}\n')
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
