"""What a stage writes: the checkpoint the runtime loads, its model-card fragment, and resumable state.

The resumable state lives in ``<output>/train_state/``, without pickle:

- ``model.safetensors``: the trained module's float32 weights;
- ``optimizer.safetensors``: AdamW's per-parameter tensors, keyed ``<param index>.<name>``;
- ``state.json``: the step, the optimiser's param groups and the run's scalars.

Batches and noise are functions of (seed, step) (``data.step_generator``), so weights, moments
and the step are all a resumed run needs to continue exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aapt_ros.model.arm import chain_named, drawing_channels
from aapt_ros.model.checkpoint import CARD_FILE, Checkpoint, save_checkpoint
from aapt_ros.model.config import ModelConfig, VAEConfig
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.training.config import TrainConfig, TrainError, to_yaml

STATE_DIR = 'train_state'
MODEL_STATE = 'model.safetensors'
OPTIMIZER_STATE = 'optimizer.safetensors'
STATE_JSON = 'state.json'
RUN_CONFIG = 'train_config.yaml'


def save_state(
    folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, scalars: dict[str, Any]
) -> None:
    """Write the state after ``step`` steps; each file is written whole and renamed into place."""
    state_dir = folder / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: t.detach().to('cpu', torch.float32).contiguous() for k, t in module.state_dict().items()}
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, per_param in opt['state'].items():
        for name, value in per_param.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f'{index}.{name}'] = tensor.detach().cpu().contiguous()
    meta = {'step': step, 'param_groups': opt['param_groups'], 'scalars': scalars}
    for name, write in (
        (MODEL_STATE, lambda p: save_file(weights, p)),
        (OPTIMIZER_STATE, lambda p: save_file(tensors, p)),
        (STATE_JSON, lambda p: Path(p).write_text(json.dumps(meta, indent=1))),
    ):
        tmp = state_dir / f'.{name}.tmp'
        write(str(tmp))
        os.replace(tmp, state_dir / name)


def load_state(folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any]]:
    """Restore module and optimizer from ``folder``; returns (step, scalars)."""
    state_dir = folder / STATE_DIR
    if not (state_dir / STATE_JSON).is_file():
        raise TrainError(f'--resume: no training state in {state_dir}; start without --resume')
    meta = json.loads((state_dir / STATE_JSON).read_text())
    weights = load_file(str(state_dir / MODEL_STATE))
    module.load_state_dict(weights)
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(state_dir / OPTIMIZER_STATE)).items():
        index, name = key.split('.', 1)
        per_param.setdefault(int(index), {})[name] = tensor
    optimizer.load_state_dict({'state': per_param, 'param_groups': meta['param_groups']})
    return int(meta['step']), dict(meta['scalars'])


def check_output(folder: Path, resume: bool) -> None:
    """Refuse to overwrite an earlier run's output unless it is being resumed."""
    if resume:
        if not (folder / STATE_DIR / STATE_JSON).is_file():
            raise TrainError(f'--resume: {folder} has no {STATE_DIR}/{STATE_JSON} to resume from')
    elif folder.exists() and any(folder.iterdir()):
        raise TrainError(f'output {folder} exists and is not empty; pass --resume to continue it or choose another')


# Sampling steps a stage's checkpoint streams with unless the user asks otherwise: the flow
# models integrate the velocity in several steps; distillation and adversarial training exist to
# make one pass per frame enough.
STAGE_SAMPLING_STEPS = {'base': 8, 'adapt': 8, 'distill': 1, 'adversarial': 1}


def generator_checkpoint(model_config: ModelConfig, trained: torch.nn.Module, start: Checkpoint) -> Checkpoint:
    """A checkpoint of ``trained`` generator weights with ``start``'s autoencoder and start frame,
    set to stream with its stage's ``STAGE_SAMPLING_STEPS``."""
    steps = STAGE_SAMPLING_STEPS.get(model_config.stage, model_config.generator.sampling_steps)
    model_config = model_config.with_generator(sampling_steps=steps)
    generator = CausalGenerator(model_config)
    generator.load_state_dict(trained.state_dict())
    return Checkpoint(model_config, start.vae.cpu(), generator, start.start_frame)


def autoencoder_with_light_parts(start: VideoAutoencoder, config: VAEConfig, device: torch.device) -> VideoAutoencoder:
    """An autoencoder of ``config``, frozen on ``device``: ``start``'s weights over freshly
    initialised parts that ``start`` lacks (a light decoder or encoder the stage adds; the
    start's keys must be a subset). The stage unfreezes the part it trains."""
    vae = VideoAutoencoder(config)
    vae.load_state_dict({**vae.state_dict(), **start.state_dict()})
    return vae.to(device).eval().requires_grad_(False)


def parameter_count(module: torch.nn.Module) -> str:
    """'0.446 M': the module's parameter count, as the cards give it."""
    return f'{sum(p.numel() for p in module.parameters()) / 1e6:.3f} M'


def _with_new_inputs(start: Checkpoint, config: ModelConfig, part: str) -> Checkpoint:
    """``start``'s weights in a generator of ``config``, whose input has more channels at the end of
    its ``part`` (``CausalGenerator.input_parts``). Their weights are zero, so the result streams
    exactly as ``start`` until training teaches it to use them."""
    generator = CausalGenerator(config)
    weights = start.generator.state_dict()
    old = weights['patch_embed.weight']  # (dim, channels, p, p)
    widened = torch.zeros_like(generator.patch_embed.weight)  # (dim, channels + new, p, p)
    new = widened.shape[1] - old.shape[1]
    first = generator.input_slice(part).stop - new
    widened[:, :first] = old[:, :first]
    widened[:, first + new :] = old[:, first:]
    generator.load_state_dict({**weights, 'patch_embed.weight': widened})
    return dataclasses.replace(start, config=config, generator=generator.eval())


def with_sink_rays(start: Checkpoint, origin_scale: float) -> Checkpoint:
    """``start`` with rays in the sink frame added to its camera input (``generator.sink_ray_origin_scale``),
    with zero weights: it streams as ``start`` until trained."""
    g = start.config.generator
    if g.sink_ray_origin_scale > 0:
        name = start.path or 'the checkpoint'
        raise TrainError(f'{name} already has sink rays (origin scale {g.sink_ray_origin_scale})')
    config = start.config.with_generator(sink_ray_origin_scale=origin_scale)
    return _with_new_inputs(start, config, 'rays')  # the sink rays follow the rays


def _require_sink_rays(start: Checkpoint, what: str) -> None:
    """TrainError unless ``start`` has sink rays: ``what`` reads the camera in the sink frame."""
    if start.config.generator.sink_ray_origin_scale <= 0:
        name = start.path or 'the checkpoint'
        raise TrainError(f'{name} has no sink rays, which {what} needs: add them first (--sink-rays)')


def _require_sink_warp_and_arm(start: Checkpoint) -> None:
    """TrainError unless ``start`` has a sink warp and an arm: a warp at a plane placed by the base pose."""
    g = start.config.generator
    if not (g.sink_warp_depths and g.arm_chain):
        name = start.path or 'the checkpoint'
        raise TrainError(f'{name} needs a sink warp and an arm first (--sink-warp, --arm)')


def with_sink_warp(start: Checkpoint, depths: tuple[float, ...]) -> Checkpoint:
    """``start`` with the sink latent seen at ``depths`` added to its camera input
    (``generator.sink_warp_depths``, see ``model.plane_sweep``), with zero weights: it streams as
    ``start`` until trained."""
    g = start.config.generator
    name = start.path or 'the checkpoint'
    if g.sink_warp_depths:
        raise TrainError(f'{name} already has a sink warp (depths {list(g.sink_warp_depths)})')
    _require_sink_rays(start, 'the sink warp')
    config = start.config.with_generator(sink_warp_depths=tuple(depths))
    return _with_new_inputs(start, config, 'sink_warp')


def with_arm(start: Checkpoint, chain: str) -> Checkpoint:
    """``start`` with the arm of ``model.arm.ARM_CHAINS[chain]`` drawn into its camera input
    (``generator.arm_chain``), with zero weights: it streams as ``start`` until trained."""
    g = start.config.generator
    name = start.path or 'the checkpoint'
    if g.arm_chain:
        raise TrainError(f'{name} already draws the arm {g.arm_chain!r}')
    _require_sink_rays(start, 'the arm drawing')
    config = start.config.with_generator(arm_chain=chain)
    return _with_new_inputs(start, config, 'arm')


def with_arm_base_plane(start: Checkpoint) -> Checkpoint:
    """``start`` with the plane its arm's base stands on added to the arm drawing
    (``generator.arm_base_plane``), with zero weights in the generator and, where its light decoder
    reads the drawing, in the decoder too: it streams as ``start`` until trained."""
    g = start.config.generator
    name = start.path or 'the checkpoint'
    if not g.arm_chain:
        raise TrainError(f'{name} draws no arm, whose base the plane belongs to: add one first (--arm)')
    if g.arm_base_plane:
        raise TrainError(f'{name} already draws its arm base plane')
    generator = dataclasses.replace(g, arm_base_plane=True)
    vae = start.vae
    vae_config = start.config.vae
    if vae_config.fast_decoder_arm_channels:  # the decoder reads the same drawing, plane included
        drawn = drawing_channels(chain_named(g.arm_chain), base_plane=True)
        vae_config = dataclasses.replace(vae_config, fast_decoder_arm_channels=drawn)
        vae = VideoAutoencoder(vae_config)
        weights = start.vae.state_dict()
        for key, value in vae.state_dict().items():
            if key.startswith('fast_decoder.arm_in.') and key.endswith('.weight'):
                widened = torch.zeros_like(value)  # (width, drawn, 3, 3): the plane's channels come last
                widened[:, : weights[key].shape[1]] = weights[key]
                weights[key] = widened
        vae.load_state_dict(weights)
        vae.eval()
    config = dataclasses.replace(start.config, generator=generator, vae=vae_config)  # validated together
    return dataclasses.replace(_with_new_inputs(start, config, 'arm'), vae=vae)


def with_sink_warp_base_plane(start: Checkpoint) -> Checkpoint:
    """``start`` with the sink latent seen where each ray meets its arm base's plane added to its
    input (``generator.sink_warp_base_plane``), with zero weights: it streams as ``start`` until trained."""
    _require_sink_warp_and_arm(start)
    if start.config.generator.sink_warp_base_plane:
        raise TrainError(f'{start.path or "the checkpoint"} already warps the sink at its arm base plane')
    return _with_new_inputs(start, start.config.with_generator(sink_warp_base_plane=True), 'sink_plane_warp')


def with_sink_warp_ground(start: Checkpoint, below_base: float) -> Checkpoint:
    """``start`` with the sink latent seen where each ray meets the ground ``below_base`` metres under
    its arm base's plane added to its input (``generator.sink_warp_ground_below_base``), with zero
    weights: it streams as ``start`` until trained."""
    _require_sink_warp_and_arm(start)
    if below := start.config.generator.sink_warp_ground_below_base:
        raise TrainError(
            f'{start.path or "the checkpoint"} already warps the sink at the ground ({below} m below the base)'
        )
    config = start.config.with_generator(sink_warp_ground_below_base=below_base)
    return _with_new_inputs(start, config, 'sink_ground_warp')


def with_sink_warp_pixels(start: Checkpoint) -> Checkpoint:
    """``start`` with its warps at the base plane and the ground computed on the sink image and
    encoded (``generator.sink_warp_pixels``) instead of on the sink latent: the same input channels,
    so the weights stay as they are, but sharper content in them, so what it streams changes."""
    g = start.config.generator
    name = start.path or 'the checkpoint'
    if g.sink_warp_pixels:
        raise TrainError(f'{name} already warps the sink image at its planes')
    if not (g.sink_warp_base_plane or g.sink_warp_ground_below_base):
        raise TrainError(f'{name} warps the sink at no plane: add --sink-warp-base-plane or --sink-warp-ground first')
    return dataclasses.replace(start, config=start.config.with_generator(sink_warp_pixels=True))


def with_previous_warp(start: Checkpoint, depths: tuple[float, ...]) -> Checkpoint:
    """``start`` with the recycled latent seen at ``depths`` along the last motion added to its
    input (``generator.previous_warp_depths``), with zero weights: it streams as ``start`` until trained."""
    g = start.config.generator
    if g.previous_warp_depths:
        name = start.path or 'the checkpoint'
        raise TrainError(f'{name} already has a previous-frame warp (depths {list(g.previous_warp_depths)})')
    config = start.config.with_generator(previous_warp_depths=tuple(depths))
    return _with_new_inputs(start, config, 'previous_warp')


def deepened(start: Checkpoint, depth: int) -> Checkpoint:
    """``start`` with new transformer blocks spread evenly among its own, ``depth`` blocks in all.

    A new block's adaLN-Zero modulation starts at zero, so its gates are zero and it passes its
    input through unchanged: the result streams exactly as ``start`` until training uses the new
    blocks (the start of every DiT block, here applied to a trained network).
    """
    g = start.config.generator
    if depth <= g.depth:
        raise TrainError(f'depth {depth} must exceed the {g.depth} blocks of {start.path or "the checkpoint"}')
    config = start.config.with_generator(depth=depth)
    with torch.random.fork_rng(devices=[]):  # the new blocks' initial weights are the same every time
        torch.manual_seed(0)
        generator = CausalGenerator(config)
    extra = depth - g.depth
    # Old block i lands at i plus the number of new blocks inserted before it; a new block
    # follows old blocks round(k * old / extra) - 1 for k = 1..extra.
    after = [round(k * g.depth / extra) - 1 for k in range(1, extra + 1)]
    position = {i: i + sum(a < i for a in after) for i in range(g.depth)}
    weights = {}
    for name, tensor in start.generator.state_dict().items():
        if name.startswith('blocks.'):
            _, index, rest = name.split('.', 2)
            name = f'blocks.{position[int(index)]}.{rest}'
        weights[name] = tensor
    fresh = generator.state_dict()
    weights.update({k: v for k, v in fresh.items() if k not in weights})
    generator.load_state_dict(weights)
    return dataclasses.replace(start, config=config, generator=generator.eval())


def write_outputs(
    folder: Path, checkpoint: Checkpoint, config: TrainConfig, card: dict[str, Any], bags: list[Path]
) -> None:
    """The loadable checkpoint (float32 weights, so later stages start from exact values) and its card."""
    save_checkpoint(checkpoint, folder, weight_dtype=torch.float32, overwrite=True)
    (folder / RUN_CONFIG).write_text(to_yaml(config))
    lines = [
        f'## Stage `{config.stage}`: {checkpoint.config.name}',
        '',
        f'- started from: `{config.model}`',
        f'- data: {len(bags)} bag(s): ' + ', '.join(f'`{b}`' for b in bags),
        f'- clips of {config.data.clip_length} frames at {checkpoint.config.camera.rate_hz:g} Hz, '
        f'{checkpoint.config.camera.width}x{checkpoint.config.camera.height}',
    ]
    lines += [f'- {key}: {value}' for key, value in card.items()]
    (folder / CARD_FILE).write_text('\n'.join(lines) + '\n')
