"""Pose-following probe: does a generated video move the way the commanded camera and arm move?

A small CNN, trained by ``aapt-train-probe`` on recorded frames, reads two consecutive frames and
predicts the camera's motion between them (translation in the earlier camera frame and a rotation
vector) and the arm's joint positions in the later frame. Relative motion is observable in any
scene, where an absolute world pose is not (scenes are randomised).
Applied to generated frames it says how far each image's implied motion and joints are from the
commanded ones; on recorded frames the same numbers are the probe's own error, the floor any
generator is compared against.

Usage::

    aapt-train-probe data/sim/train/* --val data/sim/val/* --output models/probe --steps 3000
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from aapt_ros.data.bags import BagError
from aapt_ros.data.episodes import Episode, read_episode, sim_mapping
from aapt_ros.data.mapping import MappingError
from aapt_ros.model.camera import Pose, relative_motion
from aapt_ros.model.config import ConfigError, from_dict, to_dict

TRANSLATION_SCALE = 0.05  # metres: typical camera motion per frame, so targets are about unit size
ROTATION_SCALE = 0.05  # radians per frame, likewise


@dataclass(frozen=True)
class ProbeConfig:
    image_size: int = 64  # frames are resized to a square of this size
    channels: int = 32
    joints: int = 7
    rate_hz: float = 15.0


class PoseProbe(nn.Module):
    """(B, 6, S, S) two frames in [-1, 1] -> (B, 6 + J): scaled motion, then joint positions."""

    def __init__(self, config: ProbeConfig):
        super().__init__()
        self.config = config
        c = config.channels
        layers: list[nn.Module] = []
        for c_in, c_out in ((6, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 4 * c)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(4 * c, 4 * c), nn.SiLU(), nn.Linear(4 * c, 6 + config.joints))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pairs).mean(dim=(2, 3)))


def rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """Axis * angle (3,) of a 3x3 rotation matrix (the logarithm map), angle in [0, pi)."""
    cos = np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)
    angle = math.acos(cos)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    if angle < 1e-8:
        return axis / 2  # first order: R ~ I + [w]x
    return axis * angle / (2 * math.sin(angle))


def targets(episode: Episode) -> np.ndarray:
    """(N-1, 6 + J) scaled motion from frame i-1 to i and the joints of frame i, for i >= 1."""
    rows = []
    for i in range(1, len(episode)):
        poses = [Pose(tuple(episode.positions[j]), tuple(episode.orientations[j])) for j in (i - 1, i)]  # type: ignore[arg-type]
        rotation, translation = relative_motion(*poses)
        motion = np.concatenate([translation / TRANSLATION_SCALE, rotation_vector(rotation) / ROTATION_SCALE])
        rows.append(np.concatenate([motion, episode.actions[i]]))
    return np.asarray(rows, dtype=np.float32)


def frame_pairs(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N-1, 6, S, S) float pairs (frame i-1, frame i) in [-1, 1]."""
    small = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    images = torch.from_numpy(small).permute(0, 3, 1, 2).float() / 127.5 - 1
    return torch.cat([images[:-1], images[1:]], dim=1)


@dataclass(frozen=True)
class ProbeErrors:
    translation_m: np.ndarray  # (N-1,) per frame
    rotation_deg: np.ndarray
    joints_rad: np.ndarray  # mean absolute joint error


@torch.no_grad()
def probe_errors(probe: PoseProbe, frames: np.ndarray, episode: Episode) -> ProbeErrors:
    """How far the motion and joints the probe reads from ``frames`` are from ``episode``'s."""
    predicted = probe(frame_pairs(frames, probe.config.image_size)).numpy()
    truth = targets(episode)
    translation = np.linalg.norm(predicted[:, :3] - truth[:, :3], axis=1) * TRANSLATION_SCALE
    rotation = np.degrees(np.linalg.norm(predicted[:, 3:6] - truth[:, 3:6], axis=1) * ROTATION_SCALE)
    joints = np.abs(predicted[:, 6:] - truth[:, 6:]).mean(axis=1)
    return ProbeErrors(translation, rotation, joints)


def save_probe(probe: PoseProbe, folder: Path, card: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'config.yaml').write_text(yaml.safe_dump(to_dict(probe.config)))
    save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, str(folder / 'probe.safetensors'))
    (folder / 'PROBE_CARD.md').write_text(card)


def load_probe(folder: Path) -> PoseProbe:
    try:
        config = from_dict(ProbeConfig, yaml.safe_load((folder / 'config.yaml').read_text()), where=str(folder))
        probe = PoseProbe(config)
        probe.load_state_dict(load_file(str(folder / 'probe.safetensors')))
    except (OSError, ConfigError, RuntimeError) as err:  # safetensors raises its errors as RuntimeError subclasses
        raise ValueError(f'cannot load the pose probe in {folder}: {err}') from None
    return probe.eval()


def load_episodes(bags: list[Path], config: ProbeConfig) -> list[Episode]:
    return [read_episode(bag, sim_mapping(bag), rate_hz=config.rate_hz) for bag in bags]


def train_probe(
    train: list[Episode], config: ProbeConfig, *, steps: int, batch_size: int = 64, lr: float = 2e-3, seed: int = 0
) -> PoseProbe:
    torch.manual_seed(seed)
    inputs = torch.cat([frame_pairs(e.frames, config.image_size) for e in train])
    labels = torch.from_numpy(np.concatenate([targets(e) for e in train]))
    probe = PoseProbe(config)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc='probe', unit='step'):
        index = torch.randint(len(inputs), (batch_size,), generator=generator)
        loss = F.mse_loss(probe(inputs[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return probe.eval()


def error_summary(errors: list[ProbeErrors]) -> dict[str, float]:
    return {
        'translation_m': float(np.mean(np.concatenate([e.translation_m for e in errors]))),
        'rotation_deg': float(np.mean(np.concatenate([e.rotation_deg for e in errors]))),
        'joints_rad': float(np.mean(np.concatenate([e.joints_rad for e in errors]))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bags', type=Path, nargs='+', help='training recordings (aapt-record-sim topics)')
    parser.add_argument('--val', type=Path, nargs='+', required=True, help='held-out recordings for the probe card')
    parser.add_argument('--output', type=Path, required=True, help='folder for the probe (must not exist)')
    parser.add_argument('--steps', type=int, default=3000, help='optimiser steps')
    parser.add_argument('--image-size', type=int, default=64, help='probe input size (square)')
    parser.add_argument('--seed', type=int, default=0, help='seed of initialisation and batches')
    args = parser.parse_args(argv)
    if args.output.exists():
        print(f'ERROR: refusing to overwrite {args.output}; see --help', file=sys.stderr)
        return 1
    try:
        config = ProbeConfig(image_size=args.image_size)
        probe = train_probe(load_episodes(args.bags, config), config, steps=args.steps, seed=args.seed)
        val = load_episodes(args.val, config)
    except (BagError, MappingError) as err:
        print(f'ERROR: {err}', file=sys.stderr)
        return 1
    own = error_summary([probe_errors(probe, e.frames, e) for e in val])
    card = (
        f'# Pose-following probe\n\nTrained by `aapt-train-probe` on {len(args.bags)} recording(s), '
        f'{args.steps} steps, seed {args.seed}.\n\nOwn error on {len(val)} held-out recording(s) (recorded frames):\n'
        f'camera translation {own["translation_m"] * 100:.2f} cm/frame, rotation {own["rotation_deg"]:.3f} deg/frame, '
        f'joints {own["joints_rad"]:.3f} rad.\n'
    )
    save_probe(probe, args.output, card)
    print(card, end='')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
