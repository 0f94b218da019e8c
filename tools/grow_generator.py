#!/usr/bin/env python3
"""Give a trained checkpoint's generator more to work with, without changing what it streams.

- ``--sink-rays SCALE``: the camera in the sink frame as a second ray input
  (``generator.sink_ray_origin_scale``); the new input weights are zero.
- ``--depth N``: N transformer blocks in all, the new ones spread evenly among the old; each
  starts as an identity (adaLN-Zero gates at zero).

Either way the copy streams exactly as the original until a training stage started from it
(``model: <output>``) teaches it the new parts. Weights are written in float32, so that training
starts from the exact values; a generator file over 16 MiB is written in shards
(``generator-00001-of-00002.safetensors``, ...).

Usage::

    python3 tools/grow_generator.py models/default runs/default_sink_rays --sink-rays 1.0
    python3 tools/grow_generator.py models/default runs/default_depth9 --depth 9
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aapt_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from aapt_ros.training.checkpoints import deepened, with_sink_rays
from aapt_ros.training.config import TrainError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', type=Path, help='checkpoint folder to start from')
    parser.add_argument('output', type=Path, help='new checkpoint folder (must not exist or be empty)')
    parser.add_argument(
        '--sink-rays', type=float, metavar='SCALE', help='add sink rays: metres of camera travel that map to 1'
    )
    parser.add_argument('--depth', type=int, help='blocks in all, more than the checkpoint has')
    args = parser.parse_args(argv)
    if args.sink_rays is None and args.depth is None:
        parser.error('nothing to add: give --sink-rays and/or --depth')
    if args.sink_rays is not None and not args.sink_rays > 0:
        parser.error('--sink-rays must be positive')
    try:
        checkpoint = load_checkpoint(args.model)
        if args.sink_rays is not None:
            checkpoint = with_sink_rays(checkpoint, args.sink_rays)
        if args.depth is not None:
            checkpoint = deepened(checkpoint, args.depth)
        save_checkpoint(checkpoint, args.output, weight_dtype=torch.float32)
    except (CheckpointError, TrainError) as err:
        parser.exit(2, f'grow_generator: {err}\n')
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
