#!/usr/bin/env python3
"""Give a checkpoint's generator the camera in the sink frame as a second ray input.

The copy streams exactly as the original (the new input weights are zero) until a training stage
started from it (``model: <output>``) teaches it to use them. See ``generator.sink_ray_origin_scale``.

Usage::

    python3 tools/add_sink_rays.py models/default runs/default_sink_rays --origin-scale 1.0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aapt_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from aapt_ros.training.checkpoints import with_sink_rays
from aapt_ros.training.config import TrainError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', type=Path, help='checkpoint folder to start from')
    parser.add_argument('output', type=Path, help='new checkpoint folder (must not exist or be empty)')
    parser.add_argument(
        '--origin-scale', type=float, default=1.0, help='metres of camera travel since the sink that map to 1'
    )
    args = parser.parse_args(argv)
    if not args.origin_scale > 0:
        parser.error('--origin-scale must be positive')
    try:
        checkpoint = with_sink_rays(load_checkpoint(args.model), args.origin_scale)
        # float32: the first training stage should start from the exact weights.
        save_checkpoint(checkpoint, args.output, weight_dtype=torch.float32)
    except (CheckpointError, TrainError) as err:
        parser.exit(2, f'add_sink_rays: {err}\n')
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
