"""Training and held-out clips, and deterministic batches: batch ``k`` depends only on (seed, k).

Drawing each step's clip indices and noise from a generator seeded by the step number, instead
of one generator carried through the run, is what makes ``--resume`` repeat an uninterrupted run
exactly without saving any random-number state.

Under ``torchrun`` (DDP, see ``loop.train``) every rank draws the same global batch of
``optim.batch_size`` clip indices and the same global noise from that generator and keeps its
contiguous share (:func:`rank_share`), so N ranks train as one process with the global batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

from aapt_ros.data.clips import FRAMES, ClipDataset, frames_to_float
from aapt_ros.data.episodes import sim_mapping
from aapt_ros.data.mapping import TopicMapping, load_mapping
from aapt_ros.model.camera import Pose, pose_in_frame, relative_motion
from aapt_ros.model.config import ModelConfig
from aapt_ros.training.config import DataConfig, TrainError, expand_bags

Clip = dict[str, torch.Tensor]
STEP_SEED_STRIDE = 1_000_003  # a prime: (seed, step) pairs map to distinct generator seeds


class Splits(NamedTuple):
    train: Dataset[Clip]
    val: Dataset[Clip]
    bags: list[Path]
    val_bags: list[Path]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one training step (or of validation with step = -1 - batch)."""
    return torch.Generator().manual_seed(seed * STEP_SEED_STRIDE + step + 2**20)


def distributed() -> bool:
    """True inside a process group of more than one rank (``torchrun --nproc_per_node N``, N > 1)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_share(size: int) -> slice:
    """This rank's contiguous share of a global batch of ``size``: all of it outside DDP.

    Stages index the global batch's per-clip random draws (times, noise) with it, so that rank r's
    noise is its slice of the single-process draw.
    """
    if not distributed():
        return slice(0, size)
    world, rank = dist.get_world_size(), dist.get_rank()
    if size % world:
        raise TrainError(f'optim.batch_size {size} is not divisible by the {world} processes of torchrun')
    per = size // world
    return slice(rank * per, (rank + 1) * per)


def _dataset(bags: list[Path], mapping: TopicMapping, data: DataConfig, model: ModelConfig) -> ClipDataset:
    camera = model.camera
    try:
        return ClipDataset(
            bags,
            mapping,
            clip_length=data.clip_length,
            rate_hz=camera.rate_hz,
            image_size=(camera.width, camera.height),
            cache_dir=data.cache_dir or None,
        )
    except ValueError as err:
        raise TrainError(str(err)) from None


def load_splits(data: DataConfig, model: ModelConfig) -> Splits:
    """Clips of ``data.bags`` (at the model's rate and size) and held-out clips.

    Without ``val_bags`` the last ``val_fraction`` of every training episode is held out, and no
    training clip overlaps it.
    """
    if distributed() and dist.get_rank() != 0:
        dist.barrier()  # rank 0 decodes the bags into the cache first; the others then read it
        return _load_splits(data, model)
    splits = _load_splits(data, model)
    if distributed():
        dist.barrier()
    return splits


def _load_splits(data: DataConfig, model: ModelConfig) -> Splits:
    bags = expand_bags(data.bags, 'data.bags')
    val_bags = expand_bags(data.val_bags, 'data.val_bags')
    mapping = load_mapping(data.mapping) if data.mapping else sim_mapping(bags[0])
    if model.generator.action_names != mapping.action_names:
        raise TrainError(
            f'the model acts on {list(model.generator.action_names)} but the mapping reads '
            f'{list(mapping.action_names)}; make generator.action_names match the data'
        )
    full = _dataset(bags, mapping, data, model)
    if val_bags:
        return Splits(full, _dataset(val_bags, mapping, data, model), bags, val_bags)
    ends: dict[int, int] = {}
    for ref in full.clips:
        ends[ref.episode] = max(ends.get(ref.episode, 0), ref.start + data.clip_length)
    cut = {e: int(end * (1 - data.val_fraction)) for e, end in ends.items()}
    train = [i for i, ref in enumerate(full.clips) if ref.start + data.clip_length <= cut[ref.episode]]
    val = [i for i, ref in enumerate(full.clips) if ref.start >= cut[ref.episode]]
    if not train or not val:
        raise TrainError(
            f'holding out the last {data.val_fraction:.0%} of each episode leaves {len(train)} training and '
            f'{len(val)} held-out clips of {data.clip_length} frames; use longer bags, data.val_bags or a shorter clip'
        )
    return Splits(Subset(full, train), Subset(full, val), bags, [])


def batch(
    dataset: Dataset[Clip],
    size: int,
    generator: torch.Generator,
    device: torch.device,
    share: slice | None = None,
) -> Clip:
    """``size`` clips drawn with replacement, stacked: each value gains a leading (B,) dimension.

    share: keep only these of the ``size`` drawn clips (a DDP rank's part, :func:`rank_share`); the
    generator advances as for the whole batch, so later draws are the same on every rank.
    """
    n = len(dataset)  # type: ignore[arg-type]
    indices = torch.randint(n, (size,), generator=generator).tolist()
    if share is not None:
        indices = indices[share]
    items = [dataset[i] for i in indices]
    clips = {key: torch.stack([item[key] for item in items]).to(device) for key in items[0]}
    clips[FRAMES] = frames_to_float(clips[FRAMES])  # on the device: uint8 crosses the bus
    return clips


class CameraMotions(NamedTuple):
    """The camera of each frame of a batch of clips, float64: rotation (B, F, 3, 3) and
    translation (B, F, 3) in the previous frame, and the same in the clip's sink frame 0."""

    rotation: torch.Tensor
    translation: torch.Tensor
    sink_rotation: torch.Tensor
    sink_translation: torch.Tensor


def relative_motions(positions: torch.Tensor, orientations: torch.Tensor) -> CameraMotions:
    """Camera of each frame relative to the frame before and to frame 0, as the streaming engine sees it.

    positions (B, F, 3), orientations (B, F, 4) xyzw. Frame 0 gets the identity for both (it is
    the sink). Uses the runtime's own ``relative_motion`` so the rays seen in training and in
    streaming cannot differ.
    """
    pos = positions.detach().cpu().double().numpy()
    ori = orientations.detach().cpu().double().numpy()
    b, f = pos.shape[:2]
    rotation = np.tile(np.eye(3), (b, f, 1, 1))  # (B, F, 3, 3)
    sink_rotation = rotation.copy()
    translation, sink_translation = np.zeros((b, f, 3)), np.zeros((b, f, 3))
    for i in range(b):
        poses = [Pose(tuple(p), tuple(q / np.linalg.norm(q))).validated() for p, q in zip(pos[i], ori[i], strict=True)]
        for j in range(1, f):
            rotation[i, j], translation[i, j] = relative_motion(poses[j - 1], poses[j])
            sink_rotation[i, j], sink_translation[i, j] = relative_motion(poses[0], poses[j])
    return CameraMotions(*(torch.from_numpy(m) for m in (rotation, translation, sink_rotation, sink_translation)))


def arm_bases_in_sink(positions: torch.Tensor, orientations: torch.Tensor, arm_base: torch.Tensor) -> torch.Tensor:
    """Each clip's arm base link in its sink (frame 0) camera frame, as ``StreamingSession.start``
    hands it to the engine (``pose_in_frame``): (B, 3, 4) float64 [R | t].

    positions (B, F, 3), orientations (B, F, 4) xyzw: the clips' cameras; arm_base (B, 7): the base
    link's x, y, z, qx, qy, qz, qw in the same frame (the episode's ``arm_base``).
    """
    base = arm_base.detach().cpu().double().numpy()
    links = [Pose(tuple(b[:3]), tuple(b[3:] / np.linalg.norm(b[3:]))).validated() for b in base]
    return _in_sink_cameras(positions, orientations, links)


def pose_frames_in_sink(positions: torch.Tensor, orientations: torch.Tensor) -> torch.Tensor:
    """The frame the clips' camera poses are given in, seen from each clip's sink (frame 0)
    camera, as ``StreamingSession.start`` hands it to the engine: (B, 3, 4) float64 [R | t].
    positions (B, F, 3), orientations (B, F, 4) xyzw: the clips' cameras."""
    return _in_sink_cameras(positions, orientations, [Pose.identity()] * len(positions))


def _in_sink_cameras(positions: torch.Tensor, orientations: torch.Tensor, poses: list[Pose]) -> torch.Tensor:
    """poses[i], in the clips' poses' frame, seen from clip i's frame 0 camera: (B, 3, 4) float64."""
    pos, ori = positions[:, 0].detach().cpu().double().numpy(), orientations[:, 0].detach().cpu().double().numpy()
    frames = np.zeros((len(poses), 3, 4))
    for i, pose in enumerate(poses):
        camera = Pose(tuple(pos[i]), tuple(ori[i] / np.linalg.norm(ori[i]))).validated()
        frames[i] = pose_in_frame(camera, pose)
    return torch.from_numpy(frames)
