"""Write an untrained checkpoint built by the model code (a stand-in until training runs).

Usage::

    python -m aapt_ros.model.init_checkpoint models/default --seed 0

The weights are random (adaLN-Zero output layers start at zero, so the untrained generator
predicts zero velocity and its frames are decoded noise). The start frame is a synthetic
picture of a horizon over a checkered floor, so the first published image is recognisable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from aapt_ros.model.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from aapt_ros.model.config import ModelConfig
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.vae import VideoAutoencoder


def synthetic_start_frame(height: int, width: int) -> torch.Tensor:
    """(H, W, 3) uint8: a blue-grey sky above a grey checkered floor."""
    v = torch.linspace(0, 1, height)[:, None].expand(height, width)
    u = torch.linspace(0, 1, width)[None, :].expand(height, width)
    sky = torch.stack([0.55 + 0.2 * v, 0.65 + 0.2 * v, 0.85 + 0.1 * v], dim=-1)
    checks = ((u * 8).floor() + (v * 8).floor()) % 2
    floor = (0.35 + 0.25 * checks)[..., None].expand(height, width, 3)
    image = torch.where((v < 0.45)[..., None], sky, floor)
    return (image * 255).round().to(torch.uint8)


def untrained_checkpoint(config: ModelConfig, seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    return Checkpoint(
        config=config,
        vae=VideoAutoencoder(config.vae),
        generator=CausalGenerator(config),
        start_frame=synthetic_start_frame(config.camera.height, config.camera.width),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('output', type=Path, help='checkpoint folder to write (must not exist or be empty)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random weights')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing checkpoint')
    args = parser.parse_args(argv)
    try:
        folder = save_checkpoint(untrained_checkpoint(ModelConfig(), args.seed), args.output, overwrite=args.overwrite)
    except CheckpointError as err:
        print(f'ERROR: {err}; see --help', file=sys.stderr)
        return 1
    print(f'wrote untrained checkpoint to {folder}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
