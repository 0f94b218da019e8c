#!/usr/bin/env python3
"""How much of a rollout's error is the step itself, and how much is compounding?

Rolls a generator out on recorded clips twice, one pass per frame, exactly as the engine does:
once recycling the recorded previous latent (teacher forcing: the error of one step) and once
recycling its own output (student forcing: what the engine streams). Both are decoded and
compared with the recorded latents decoded by the same autoencoder, so the autoencoder's own
error is left out. A flat teacher-forced curve over a falling student-forced one means the step
is good and the loss is exposure bias, which the adversarial stage's student forcing is meant to
remove.

Usage::

    python3 tools/forcing_gap.py --model models/default --bags 'recordings/sim/test/*' --output gap.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from aapt_ros.data.clips import ACTIONS
from aapt_ros.model.checkpoint import load_checkpoint
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.adversarial_stage import rollout
from aapt_ros.training.config import DataConfig
from aapt_ros.training.data import batch, load_splits
from aapt_ros.training.flow_stage import clip_latents, clip_times, noised


def decoded_psnr(vae: VideoAutoencoder, generated: torch.Tensor, recorded: torch.Tensor) -> np.ndarray:
    """(F,) PSNR in dB per frame, over the batch, of two (B, F, C, h, w) latent clips after decoding."""
    x, y = vae.decode(generated).clamp(-1, 1), vae.decode(recorded).clamp(-1, 1)
    mse = ((x - y) / 2).square().mean(dim=(0, 2, 3, 4))  # images in [0, 1]
    return (10 * torch.log10(1 / mse)).numpy()


@torch.no_grad()
def forcing_gap(
    model: Path, bags: list[str], *, clip_length: int, clips: int, seed: int, cache_dir: str
) -> dict[str, list[float]]:
    """Per-frame PSNR of the teacher- and student-forced rollouts over ``clips`` random clips (drawn
    from the first 80 % of each bag, the part the training loader calls its training split)."""
    checkpoint = load_checkpoint(model)
    net, vae = checkpoint.generator.eval(), checkpoint.vae.eval()
    data = DataConfig(bags=tuple(bags), clip_length=clip_length, cache_dir=cache_dir)
    splits = load_splits(data, checkpoint.config)
    generator = torch.Generator().manual_seed(seed)
    sample = batch(splits.train, clips, generator, torch.device('cpu'))
    recorded, _, rays = clip_latents(net, vae, sample, recycle=True)
    t = clip_times(torch.ones(clips), clip_length, recorded.device)
    noisy = noised(recorded, torch.randn(recorded.shape, generator=generator), t)
    result = {}
    for name, teacher in (('teacher_forced', True), ('student_forced', False)):
        generated = rollout(net, noisy, recorded, rays, sample[ACTIONS], t, teacher=teacher, cache_dtype=torch.float32)
        result[name] = decoded_psnr(vae, generated[:, 1:], recorded[:, 1:]).tolist()  # frame 0 is the sink
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', type=Path, default=Path('models/default'), help='checkpoint folder')
    parser.add_argument('--bags', nargs='+', required=True, help='held-out rosbag2 folders or globs')
    parser.add_argument('--clip-length', type=int, default=30, help='frames per clip, the sink included')
    parser.add_argument('--clips', type=int, default=4, help='random clips to average over')
    parser.add_argument('--seed', type=int, default=0, help='seed of the clip choice and the noise')
    parser.add_argument('--cache-dir', default='runs/cache', help='decoded-episode cache folder')
    parser.add_argument('--output', type=Path, required=True, help='JSON file to write (must not exist)')
    args = parser.parse_args(argv)
    if args.output.exists():
        parser.error(f'refusing to overwrite {args.output}')
    result = forcing_gap(
        args.model, args.bags, clip_length=args.clip_length, clips=args.clips, seed=args.seed, cache_dir=args.cache_dir
    )
    args.output.write_text(json.dumps({'model': str(args.model), 'clips': args.clips, **result}, indent=1) + '\n')
    print('frame  teacher-forced dB  student-forced dB')
    for frame, (teacher, student) in enumerate(zip(result['teacher_forced'], result['student_forced'], strict=True)):
        print(f'{frame + 1:5d}  {teacher:17.1f}  {student:17.1f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
