"""Fixed-length clips of frames, camera poses and actions from many bags: a torch ``Dataset``.

Decoding a bag (JPEG, resize, alignment) is slow and training reads every clip many times, so
each bag is decoded once by :func:`~aapt_ros.data.episodes.read_episode` and kept as an
uncompressed ``.npz`` in a cache folder. The file name holds a hash of everything the decoded
episode depends on: the bag's resolved path, the name, size and modification time of each file
in it, the topic mapping, the rate, the image size and :data:`CACHE_VERSION`. A re-recorded bag
or a changed setting gets a new file; old files are never deleted (empty the folder to reclaim
space). Writes are atomic (a temporary file renamed into place), so a killed run leaves no torn
file, and an unreadable file is decoded again.

Clips never span a gap in an episode (frames further apart than :data:`GAP_FACTOR` nominal
intervals, e.g. where resampling found no image): the clip index is built from each episode's
contiguous segments, in bag order, starting at every ``stride``-th frame of a segment. The index
depends only on the bags and the arguments, so it is the same in every run and worker.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from aapt_ros.data.alignment import NS
from aapt_ros.data.bags import BagError
from aapt_ros.data.episodes import Episode, read_episode
from aapt_ros.data.mapping import TopicMapping

log = logging.getLogger(__name__)

CACHE_VERSION: Final = 2  # bump when read_episode's output for the same inputs changes (2: arm_base)
GAP_FACTOR: Final = 1.5  # frames further apart than this many nominal intervals start a new segment
# Keys of a clip dictionary.
FRAMES: Final = 'frames'
POSITIONS: Final = 'positions'
ORIENTATIONS: Final = 'orientations'
ACTIONS: Final = 'actions'
ARM_BASE: Final = 'arm_base'
STAMPS: Final = 'stamps_ns'
EPISODE: Final = 'episode'
START: Final = 'start'


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/aapt_ros/episodes``, by default ``~/.cache/aapt_ros/episodes``."""
    root = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(root) / 'aapt_ros' / 'episodes'


def cache_name(bag: Path, mapping: TopicMapping, rate_hz: float | None, image_size: tuple[int, int] | None) -> str:
    """File name of the cached episode: the bag's name and a hash of what its decoding depends on.

    Raises:
        BagError: the bag does not exist.
    """
    if not bag.exists():
        raise BagError(f'bag not found: {bag}')
    files = sorted(p for p in bag.rglob('*') if p.is_file()) if bag.is_dir() else [bag]
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = {
        'version': CACHE_VERSION,
        'bag': str(bag.resolve()),
        'files': stats,
        'mapping': mapping.as_dict(),
        'rate_hz': rate_hz,
        'image_size': list(image_size) if image_size is not None else None,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return f'{re.sub(r"[^A-Za-z0-9_.-]", "_", bag.name)}-{digest}.npz'


def save_episode(episode: Episode, path: Path) -> None:
    """Write ``episode`` to ``path`` (uncompressed npz) through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    with temporary.open('wb') as file:
        np.savez(
            file,
            stamps_ns=episode.stamps_ns,
            frames=episode.frames,
            positions=episode.positions,
            orientations=episode.orientations,
            actions=episode.actions,
            action_names=np.array(episode.action_names, dtype=str),
            source=np.array(episode.source),
            arm_base=episode.arm_base,
            skipped=np.array(episode.skipped),
        )
    os.replace(temporary, path)


def load_episode(path: Path) -> Episode:
    """Read an episode written by :func:`save_episode` (no pickles are loaded)."""
    with np.load(path, allow_pickle=False) as data:
        return Episode(
            stamps_ns=data['stamps_ns'],
            frames=data['frames'],
            positions=data['positions'],
            orientations=data['orientations'],
            actions=data['actions'],
            action_names=tuple(str(n) for n in data['action_names']),
            source=str(data['source']),
            arm_base=data['arm_base'],
            skipped=int(data['skipped']),
        )


def cached_episode(
    bag: str | Path,
    mapping: TopicMapping,
    *,
    rate_hz: float | None,
    image_size: tuple[int, int] | None,
    cache_dir: str | Path,
) -> Path:
    """Path of the cached episode of ``bag``, decoding the bag first if the cache has none.

    Raises:
        BagError, MappingError: as :func:`~aapt_ros.data.episodes.read_episode`.
    """
    bag = Path(bag)
    path = Path(cache_dir) / cache_name(bag, mapping, rate_hz, image_size)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:  # reading a member checks the zip and npy headers
                if data['stamps_ns'].ndim == 1 and data['arm_base'].ndim == 1:
                    return path
            raise ValueError('stamps_ns or arm_base is not one-dimensional')
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            log.warning('cached episode %s is unreadable (%s); decoding %s again', path, err, bag)
    save_episode(read_episode(bag, mapping, rate_hz=rate_hz, image_size=image_size), path)
    return path


class ClipRef(NamedTuple):
    """One clip: frames ``start .. start + clip_length - 1`` of episode ``episode`` (its bag's index)."""

    episode: int
    start: int


def segments(stamps_ns: np.ndarray, interval_ns: float) -> list[tuple[int, int]]:
    """Half-open ranges [a, b) of frames with no step longer than ``GAP_FACTOR * interval_ns``."""
    breaks = np.flatnonzero(np.diff(stamps_ns) > GAP_FACTOR * interval_ns) + 1  # (G,) first frame after a gap
    bounds = [0, *breaks.tolist(), len(stamps_ns)]
    return list(itertools.pairwise(bounds))


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames -> float32 in [-1, 1], any leading shape."""
    return frames.float() / 127.5 - 1


class ClipDataset(Dataset[dict[str, torch.Tensor]]):
    """Clips of ``clip_length`` consecutive frames from rosbag2 recordings, decoded once and cached.

    Each item is a dict of tensors (F = clip_length, A = len(mapping.action_names)):

    - ``frames``: (F, 3, H, W) uint8 RGB; :func:`frames_to_float` maps them to [-1, 1] (done on the
      training device: float32 frames would be 4x the host memory traffic per step)
    - ``positions``: (F, 3) float32, camera optical frame in the world
    - ``orientations``: (F, 4) float32, unit quaternion x, y, z, w
    - ``actions``: (F, A) float32, in ``mapping.action_names`` order
    - ``arm_base``: (7,) float32 x, y, z, qx, qy, qz, qw of ``mapping.arm_base_frame`` in the poses'
      frame, one per clip (the base is fixed for the episode); (0,) when the mapping reads none
    - ``stamps_ns``: (F,) int64 header stamps; ``episode``, ``start``: () int64, the clip's place

    Episodes are read from the cache on first use and kept in memory by the process (each
    DataLoader worker holds the ones it touches).
    """

    def __init__(
        self,
        bags: Sequence[str | Path],
        mapping: TopicMapping,
        *,
        clip_length: int,
        rate_hz: float | None = None,
        image_size: tuple[int, int] | None = None,
        stride: int = 1,
        cache_dir: str | Path | None = None,
    ) -> None:
        """Decode (or find in ``cache_dir``) every bag and index its clips.

        Args:
            bags: rosbag2 folders; their order fixes the episode numbers.
            mapping: the topics to read.
            clip_length: frames per clip.
            rate_hz: frame rate to resample to (None keeps every image); also the nominal frame
                interval for finding gaps (the median interval when None).
            image_size: (width, height) of the frames; needed when the bags' sizes differ.
            stride: frames between the starts of consecutive clips of a segment.
            cache_dir: folder of the decoded episodes; :func:`default_cache_dir` when None.

        Raises:
            ValueError: a bad argument, or no episode long enough for one clip.
            BagError, MappingError: a bag cannot be read through ``mapping``.
        """
        if clip_length < 1 or stride < 1:
            raise ValueError(f'clip_length and stride must be at least 1, got {clip_length} and {stride}')
        if not bags:
            raise ValueError('ClipDataset needs at least one bag')
        self.mapping = mapping
        self.clip_length = clip_length
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.paths = [
            cached_episode(bag, mapping, rate_hz=rate_hz, image_size=image_size, cache_dir=self.cache_dir)
            for bag in bags
        ]
        clips: list[ClipRef] = []
        for episode, path in enumerate(self.paths):
            with np.load(path, allow_pickle=False) as data:
                stamps = data['stamps_ns']  # (N,) int64; the frames stay on disk
            if rate_hz is not None:
                interval = NS / rate_hz
            else:
                interval = float(np.median(np.diff(stamps))) if len(stamps) > 1 else 0.0
            for first, end in segments(stamps, interval):
                clips.extend(ClipRef(episode, s) for s in range(first, end - clip_length + 1, stride))
        if not clips:
            raise ValueError(
                f'no episode has {clip_length} consecutive frames without a gap (bags: {[str(b) for b in bags]}); '
                f'use a shorter clip_length'
            )
        self.clips: tuple[ClipRef, ...] = tuple(clips)
        self._episodes: dict[int, Episode] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def episode(self, index: int) -> Episode:
        """The decoded episode of bag ``index``, loaded from the cache on first use."""
        if index not in self._episodes:
            self._episodes[index] = load_episode(self.paths[index])
        return self._episodes[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ref = self.clips[index]
        episode = self.episode(ref.episode)
        span = slice(ref.start, ref.start + self.clip_length)
        frames = torch.from_numpy(episode.frames[span])  # (F, H, W, 3) uint8
        return {
            FRAMES: rearrange(frames, 'f h w c -> f c h w'),  # (F, 3, H, W) uint8
            POSITIONS: torch.from_numpy(episode.positions[span]).float(),  # (F, 3)
            ORIENTATIONS: torch.from_numpy(episode.orientations[span]).float(),  # (F, 4)
            ACTIONS: torch.from_numpy(episode.actions[span]).float(),  # (F, A)
            ARM_BASE: torch.from_numpy(episode.arm_base).float(),  # (7,), or (0,) when not read
            STAMPS: torch.from_numpy(episode.stamps_ns[span]),  # (F,) int64
            EPISODE: torch.tensor(ref.episode),
            START: torch.tensor(ref.start),
        }
