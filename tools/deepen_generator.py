#!/usr/bin/env python3
"""Give a checkpoint's generator more transformer blocks, spread evenly among its own.

The new blocks start as identities (adaLN-Zero), so the copy streams exactly as the original
until a training stage started from it (``model: <output>``) teaches them. A generator over
16 MiB in bfloat16 is written in shards (``generator-00001-of-00002.safetensors``, ...).

Usage::

    python3 tools/deepen_generator.py models/default runs/default_depth9 --depth 9
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aapt_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from aapt_ros.training.checkpoints import deepened
from aapt_ros.training.config import TrainError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', type=Path, help='checkpoint folder to start from')
    parser.add_argument('output', type=Path, help='new checkpoint folder (must not exist or be empty)')
    parser.add_argument('--depth', type=int, required=True, help='blocks in all, more than the checkpoint has')
    args = parser.parse_args(argv)
    try:
        checkpoint = deepened(load_checkpoint(args.model), args.depth)
        # float32: the first training stage should start from the exact weights.
        save_checkpoint(checkpoint, args.output, weight_dtype=torch.float32)
    except (CheckpointError, TrainError) as err:
        parser.exit(2, f'deepen_generator: {err}\n')
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
