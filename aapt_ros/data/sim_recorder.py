"""Record simulated robot camera episodes as rosbag2 folders (pybullet on the CPU: no GPU, no display).

Usage::

    aapt-record-sim --output recordings/sim --minutes 10 --split train
    aapt-record-sim --output recordings/sim_test --episodes 4 --split test --compression png

Each episode is a rosbag2 folder ``<output>/<split>/episode_<seed:06d>/``: a KUKA iiwa on a table
with random objects, ground and lighting, its joints driven by smooth random position commands,
seen by a camera on an ``orbit``, ``approach`` or ``handheld`` path. Topics, per frame and all
stamped alike (bag time = header stamp = sim time, from 1 s): ``/joint_states`` (measured),
``/joint_commands``, ``/camera/camera_info``, ``/camera/image_raw`` (rgb8) or
``/camera/image_raw/compressed`` and ``/camera/pose`` (optical frame in ``world``); once, at the
first frame: ``/tf_static`` with the arm base ``world`` -> ``lbr_iiwa_link_0``; see
``sim_episode.py``.

The split is fixed by the seed (``SPLIT_SEEDS``), so train, val and test never share a scene;
test episodes last 60 s by default so that drift can be measured over a minute. JPEG (quality
90) is the default because raw rgb8 at 160x120 and 15 Hz is 3.1 GB per hour. Episodes are
rendered in parallel processes; ``<output>/recording.yaml`` lists the arguments, versions, seeds
and frames of each episode.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, replace
from enum import Enum
from importlib.metadata import version
from pathlib import Path

import yaml
from tqdm import tqdm

from aapt_ros import __version__
from aapt_ros.data.bags import BagError, Storage
from aapt_ros.data.sim_episode import Compression, EpisodeResult, EpisodeSpec, record_episode
from aapt_ros.data.sim_motion import CameraMode
from aapt_ros.data.sim_scene import PHYSICS_HZ

METADATA_FILE = 'recording.yaml'


class Split(str, Enum):
    TRAIN = 'train'
    VAL = 'val'
    TEST = 'test'


# Seeds of each split; the episode of seed s is the same whichever command recorded it.
SPLIT_SEEDS = {
    Split.TRAIN: range(0, 900_000),
    Split.VAL: range(900_000, 950_000),
    Split.TEST: range(950_000, 1_000_000),
}
# Test episodes are long so that drift can be measured over 60 s (BRIEF section 6).
DEFAULT_EPISODE_SECONDS = {Split.TRAIN: 20.0, Split.VAL: 20.0, Split.TEST: 60.0}


class RecordingError(RuntimeError):
    """A recording cannot be made as asked; the message names the option or path and the fix."""


def split_of(seed: int) -> Split:
    """The split whose seed range holds ``seed``."""
    for split, seeds in SPLIT_SEEDS.items():
        if seed in seeds:
            return split
    raise RecordingError(f'seed {seed} is outside every split range {SPLIT_SEEDS}')


def split_seeds(split: Split, count: int, offset: int = 0) -> list[int]:
    """``count`` consecutive seeds of ``split``, from its range start + ``offset``."""
    seeds = SPLIT_SEEDS[split]
    if offset < 0 or count < 1 or offset + count > len(seeds):
        raise RecordingError(
            f'{count} episodes from --seed-offset {offset} do not fit the {split.value} split '
            f'({len(seeds)} seeds: {seeds.start}..{seeds.stop - 1}); use a smaller offset or fewer episodes'
        )
    return list(seeds[offset : offset + count])


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (width, height), both positive."""
    try:
        width, height = (int(part) for part in text.lower().split('x'))
    except ValueError:
        raise RecordingError(f'--size {text!r} is not WIDTHxHEIGHT, e.g. 160x120') from None
    if width <= 0 or height <= 0:
        raise RecordingError(f'--size {text!r} must be positive, e.g. 160x120')
    return width, height


def prepare_output(path: Path) -> None:
    """Create ``path``, or accept it if it is an empty folder; never overwrite a recording."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RecordingError(
            f'refusing to overwrite {path}: it exists and is not an empty folder; choose another --output'
        )
    path.mkdir(parents=True, exist_ok=True)


def plan_episodes(args: argparse.Namespace) -> list[EpisodeSpec]:
    """Check the options and turn them into one spec per episode."""
    split = Split(args.split)
    seconds = DEFAULT_EPISODE_SECONDS[split] if args.episode_seconds is None else args.episode_seconds
    checks = {
        '--episode-seconds': seconds > 0,
        '--minutes': args.minutes > 0,
        '--rate': 0 < args.rate <= PHYSICS_HZ,
        '--horizontal-fov': 0 < args.horizontal_fov < 180,
        '--jpeg-quality': 0 <= args.jpeg_quality <= 100,
        '--workers': args.workers >= 1,
        '--episodes': args.episodes is None or args.episodes >= 1,
    }
    for flag, ok in checks.items():
        if not ok:
            value = seconds if flag == '--episode-seconds' else getattr(args, flag[2:].replace('-', '_'))
            raise RecordingError(f'{flag} {value} is out of range')
    width, height = parse_size(args.size)
    count = args.episodes or math.ceil(args.minutes * 60 / seconds - 1e-9)
    template = EpisodeSpec(
        seed=0,
        seconds=seconds,
        rate_hz=args.rate,
        width=width,
        height=height,
        horizontal_fov_deg=args.horizontal_fov,
        camera_mode=None if args.camera_mode == 'mixed' else CameraMode(args.camera_mode),
        compression=Compression(args.compression),
        jpeg_quality=args.jpeg_quality,
        storage=Storage(args.storage),
        shadows=args.shadows,
    )
    return [replace(template, seed=seed) for seed in split_seeds(split, count, args.seed_offset)]


def episode_path(output: Path, seed: int) -> Path:
    return output / split_of(seed).value / f'episode_{seed:06d}'


def _record(job: tuple[EpisodeSpec, Path]) -> EpisodeResult:
    return record_episode(*job)


def record_all(specs: list[EpisodeSpec], output: Path, workers: int) -> list[EpisodeResult]:
    """Record ``specs`` under ``output`` with ``workers`` processes (each its own pybullet client)."""
    jobs = [(spec, episode_path(output, spec.seed)) for spec in specs]
    for _, path in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with ExitStack() as stack:
        progress = stack.enter_context(
            tqdm(total=sum(s.frames for s in specs), unit='frame', desc='aapt-record-sim', smoothing=0.05)
        )
        outcomes: Iterator[EpisodeResult] = map(_record, jobs)
        if workers > 1 and len(jobs) > 1:  # spawn: a clean interpreter per worker, whatever the parent holds
            pool = stack.enter_context(multiprocessing.get_context('spawn').Pool(min(workers, len(jobs))))
            outcomes = pool.imap_unordered(_record, jobs)
        for result in outcomes:
            progress.update(result.frames)
            results.append(result)
    return sorted(results, key=lambda r: r.seed)


def write_metadata(
    output: Path, args: argparse.Namespace, specs: list[EpisodeSpec], results: list[EpisodeResult]
) -> None:
    metadata = {
        'package': {'aapt_ros': __version__, 'pybullet': version('pybullet'), 'rosbags': version('rosbags')},
        'arguments': {k: str(v) if isinstance(v, Path) else v for k, v in sorted(vars(args).items())},
        'episode': {k: v.value if isinstance(v, Enum) else v for k, v in asdict(specs[0]).items() if k != 'seed'},
        'seeds': [spec.seed for spec in specs],
        'episodes': [
            {
                'seed': r.seed,
                'path': str(Path(r.path).relative_to(output)),
                'frames': r.frames,
                'camera_mode': r.camera_mode,
            }
            for r in results
        ],
        'total_frames': sum(r.frames for r in results),
    }
    (output / METADATA_FILE).write_text(yaml.safe_dump(metadata, sort_keys=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='aapt-record-sim', description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('--output', type=Path, required=True, help='folder to create (or an empty one)')
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument('--minutes', type=float, default=10.0, help='total duration to record')
    amount.add_argument('--episodes', type=int, help='number of episodes (instead of --minutes)')
    parser.add_argument(
        '--episode-seconds', type=float, help='seconds per episode; %(default)s: 20 for train and val, 60 for test'
    )
    parser.add_argument(
        '--split',
        choices=[s.value for s in Split],
        default=Split.TRAIN.value,
        help='seed range to draw episodes from: train 0.., val 900000.., test 950000..',
    )
    parser.add_argument('--seed-offset', type=int, default=0, help='first seed = split start + this offset')
    parser.add_argument('--rate', type=float, default=15.0, help='frames per second (Hz)')
    parser.add_argument('--size', default='160x120', help='image WIDTHxHEIGHT in pixels')
    parser.add_argument('--horizontal-fov', type=float, default=60.0, help='horizontal field of view (degrees)')
    parser.add_argument(
        '--compression',
        choices=[c.value for c in Compression],
        default=Compression.JPEG.value,
        help='none: Image rgb8 on /camera/image_raw; jpeg/png: CompressedImage on .../compressed',
    )
    parser.add_argument('--jpeg-quality', type=int, default=90, help='JPEG quality 0..100')
    parser.add_argument(
        '--storage', choices=[s.value for s in Storage], default=Storage.MCAP.value, help='rosbag2 storage plugin'
    )
    parser.add_argument(
        '--camera-mode',
        choices=[*(m.value for m in CameraMode), 'mixed'],
        default='mixed',
        help='camera path of every episode; mixed: drawn from each episode seed',
    )
    parser.add_argument(
        '--shadows',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='render shadows (they make rendering about 1.7x slower)',
    )
    parser.add_argument(
        '--workers', type=int, default=os.cpu_count() or 1, help='episodes rendered in parallel processes'
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        specs = plan_episodes(args)
        prepare_output(args.output)
        results = record_all(specs, args.output, args.workers)
        write_metadata(args.output, args, specs, results)
    except (RecordingError, BagError) as err:
        print(f'ERROR: {err}; see --help', file=sys.stderr)
        return 1
    frames = sum(r.frames for r in results)
    print(f'wrote {len(results)} episodes, {frames} frames ({frames / specs[0].rate_hz / 60:.1f} min) to {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
