"""Checkpoints: a folder with ``config.yaml``, ``vae.safetensors``, ``generator.safetensors``.

A weights file larger than ``MAX_FILE_BYTES`` is written in shards, ``generator-00001-of-00002.safetensors``
and so on, so that every file of a shipped model stays under the repository's 16 MiB per file.

Weights are only ever read with safetensors (no pickle), so a checkpoint from an untrusted
source cannot run code. ``extras.safetensors`` holds small tensors that belong to the model but
are no network weights, such as the default start frame used when no start image is given and
the points on the arm's meshes that the arm paste draws, and their normals (``vae.fast_decoder_arm_paste_surface``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from aapt_ros.model.config import ConfigError, ModelConfig, from_dict, to_dict
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.vae import VideoAutoencoder

CONFIG_FILE = 'config.yaml'
VAE_FILE = 'vae.safetensors'
GENERATOR_FILE = 'generator.safetensors'
EXTRAS_FILE = 'extras.safetensors'
CARD_FILE = 'MODEL_CARD_FRAGMENT.md'  # what made the checkpoint and how it scores (aapt-train, aapt-eval)
START_FRAME_KEY = 'start_frame'  # (H, W, 3) uint8 image used when no start image is received
ARM_SURFACE_KEY = 'arm_surface_points'  # (N, 3) float32, with vae.fast_decoder_arm_paste_surface (ArmSurface.points)
ARM_NORMALS_KEY = 'arm_surface_normals'  # (N, 3) float32, their unit normals (ArmSurface.normals)
MAX_FILE_BYTES = 16 * 2**20 - 2**16  # the repository's limit per file, less room for the safetensors header


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded; the message names the file and the problem."""


@dataclass
class Checkpoint:
    config: ModelConfig
    vae: VideoAutoencoder
    generator: CausalGenerator
    start_frame: torch.Tensor  # (H, W, 3) uint8
    path: Path | None = None


def load_config(path: Path) -> ModelConfig:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f'model config not found: {path}') from None
    except (OSError, yaml.YAMLError) as err:
        raise CheckpointError(f'could not read model config {path}: {err}') from None
    try:
        return from_dict(ModelConfig, data, where=str(path))
    except ConfigError as err:
        raise CheckpointError(f'invalid model config: {err}') from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f'model file not found: {path}')
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f'model file {path} is not a readable safetensors file: {err}') from None


def shard_paths(path: Path) -> list[Path]:
    """The files that hold ``path`` (``folder/name.safetensors``): itself, or its complete set of shards."""
    if path.is_file():
        return [path]
    stem = path.name.removesuffix('.safetensors')
    shards = sorted(path.parent.glob(f'{stem}-?????-of-?????.safetensors'))
    if not shards:
        return [path]  # not found: _load_tensors names the unsharded file
    total = shards[0].name.removesuffix('.safetensors').rsplit('-', 1)[1]
    expected = [path.parent / f'{stem}-{i:05d}-of-{total}.safetensors' for i in range(1, int(total) + 1)]
    if shards != expected:
        names = sorted(p.name for p in shards)
        raise CheckpointError(f'model file {path} is sharded, but its shards are not one complete set: {names}')
    return shards


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path``, read from its shards where it was written in shards."""
    tensors: dict[str, torch.Tensor] = {}
    for shard in shard_paths(path):
        part = _load_tensors(shard)
        if twice := sorted(set(part) & set(tensors)):
            raise CheckpointError(f'model file {shard} repeats tensors of an earlier shard: {twice[:5]}')
        tensors.update(part)
    return tensors


def save_sharded(tensors: dict[str, torch.Tensor], path: Path, max_bytes: int = MAX_FILE_BYTES) -> list[Path]:
    """Write ``tensors`` to ``path``, or, where they exceed ``max_bytes``, to numbered shards
    (``stem-00001-of-0000N.safetensors``) that ``load_checkpoint`` reads as one file."""
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if groups[-1] and size + nbytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = tensor
        size += nbytes
    stem = path.name.removesuffix('.safetensors')
    for old in [path, *path.parent.glob(f'{stem}-?????-of-?????.safetensors')]:
        old.unlink(missing_ok=True)  # a stale shard set would be read instead of (or with) the new file
    if len(groups) == 1:
        paths = [path]
    else:
        paths = [path.parent / f'{stem}-{i:05d}-of-{len(groups):05d}.safetensors' for i in range(1, len(groups) + 1)]
    for group, target in zip(groups, paths, strict=True):
        save_file(group, str(target))
    return paths


def _load_weights(module: torch.nn.Module, path: Path) -> None:
    tensors = load_weights_file(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f'model file {path} does not match its config.yaml: '
            f'missing {missing[:5]}{"..." if len(missing) > 5 else ""}, '
            f'unexpected {unexpected[:5]}{"..." if len(unexpected) > 5 else ""}'
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f'model file {path}: tensor {name} has shape {tuple(tensor.shape)}, '
                f'config.yaml implies {tuple(expected[name].shape)}'
            )
    module.load_state_dict({k: t.float() for k, t in tensors.items()})


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint folder on the CPU in float32; errors name the file at fault."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(
            f'model folder not found: {folder} (expected {CONFIG_FILE}, {VAE_FILE}, {GENERATOR_FILE})'
        )
    config = load_config(folder / CONFIG_FILE)
    vae, generator = VideoAutoencoder(config.vae), CausalGenerator(config)
    _load_weights(vae, folder / VAE_FILE)
    _load_weights(generator, folder / GENERATOR_FILE)
    extras = _load_tensors(folder / EXTRAS_FILE)
    start_frame = extras.get(START_FRAME_KEY)
    expected = (config.camera.height, config.camera.width, 3)
    if start_frame is None or tuple(start_frame.shape) != expected or start_frame.dtype != torch.uint8:
        raise CheckpointError(f'{folder / EXTRAS_FILE}: needs a uint8 {START_FRAME_KEY!r} of shape {expected}')
    if generator.arm_surface is not None:
        shape = tuple(generator.arm_surface.points.shape)
        # The normals only light the paste (vae.fast_decoder_arm_paste_shading): a model drawn without
        # them may lack them.
        needed = {ARM_SURFACE_KEY: True, ARM_NORMALS_KEY: config.vae.fast_decoder_arm_paste_shading}
        for key, buffer in (
            (ARM_SURFACE_KEY, generator.arm_surface.points),
            (ARM_NORMALS_KEY, generator.arm_surface.normals),
        ):
            tensor = extras.get(key)
            if tensor is None and not needed[key]:
                continue
            if (
                tensor is None
                or tuple(tensor.shape) != shape
                or not tensor.is_floating_point()
                or not tensor.isfinite().all()
            ):
                raise CheckpointError(
                    f'{folder / EXTRAS_FILE}: vae.fast_decoder_arm_paste_surface needs finite float {key!r} '
                    f'of shape {shape}'
                )
            buffer.copy_(tensor.float())
    return Checkpoint(config, vae.eval(), generator.eval(), start_frame, folder)


def save_checkpoint(
    checkpoint: Checkpoint,
    path: str | Path,
    *,
    weight_dtype: torch.dtype = torch.bfloat16,
    overwrite: bool = False,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Path:
    """Write a checkpoint folder; weights are stored in ``weight_dtype`` to keep files small, and
    in shards where a module's weights exceed ``max_file_bytes``."""
    folder = Path(path)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise CheckpointError(f'refusing to overwrite the non-empty folder {folder}; pass overwrite=True')
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(to_dict(checkpoint.config), sort_keys=False))
    for module, name in ((checkpoint.vae, VAE_FILE), (checkpoint.generator, GENERATOR_FILE)):
        state = {k: t.detach().to('cpu', weight_dtype).contiguous() for k, t in module.state_dict().items()}
        save_sharded(state, folder / name, max_file_bytes)
    extras = {START_FRAME_KEY: checkpoint.start_frame.contiguous()}
    if checkpoint.generator.arm_surface is not None:
        surface = checkpoint.generator.arm_surface
        extras[ARM_SURFACE_KEY] = surface.points.detach().to('cpu', torch.float32).contiguous()
        extras[ARM_NORMALS_KEY] = surface.normals.detach().to('cpu', torch.float32).contiguous()
    save_file(extras, str(folder / EXTRAS_FILE))
    return folder
