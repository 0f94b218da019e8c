"""Run configuration of ``aapt-train``: frozen dataclasses loaded from YAML with the model's strict loader.

A run config names a stage, the bags, the optimisation, the model to start from and the output
folder. Relative paths in a YAML file are relative to that file's folder, so a config can ship
next to its data; paths given as command-line overrides are relative to the working directory.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aapt_ros.model.config import ConfigError, from_dict, to_dict

STAGES = ('vae', 'base', 'adapt', 'distill', 'adversarial', 'decoder', 'encoder')


def stage_of_run(name: str) -> str:
    """The stage a run config named ``name`` (``config/train_sim/<name>.yaml``) trains: the stage
    itself or a variant of it, ``<stage>_<variant>`` (``adversarial_regression_only``)."""
    for stage in STAGES:
        if name == stage or name.startswith(f'{stage}_'):
            return stage
    raise ConfigError(f'run config {name!r} names no stage: expected one of {list(STAGES)} or <stage>_<variant>')


T_SAMPLINGS = ('uniform', 'logit_normal')
FORCINGS = ('student', 'teacher')


class TrainError(RuntimeError):
    """A training run cannot start or continue; the message names the file or value and the fix."""


@dataclass(frozen=True)
class DataConfig:
    bags: tuple[str, ...] = ()  # rosbag2 folders or glob patterns of them
    val_bags: tuple[str, ...] = ()  # held-out bags; empty: the last val_fraction of each training episode
    val_fraction: float = 0.2
    mapping: str = ''  # topic mapping YAML; '' reads the aapt-record-sim topics
    clip_length: int = 8  # frames per clip; frame 0 is the sink in the flow stages
    cache_dir: str = ''  # decoded-episode cache; '' uses ~/.cache/aapt_ros/episodes

    def __post_init__(self) -> None:
        if self.clip_length < 2:
            raise ConfigError(f'data.clip_length must be >= 2 (a sink and a frame to learn), got {self.clip_length}')
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f'data.val_fraction must be in (0, 1), got {self.val_fraction}')


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-4
    warmup_steps: int = 100  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99  # below Adam's 0.999: adapts faster in short runs
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f'optim.steps and optim.batch_size must be >= 1, got {self.steps}, {self.batch_size}')
        if not self.lr > 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ConfigError('optim.lr must be positive; optim.warmup_steps and optim.grad_clip non-negative')
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f'optim.beta1 and optim.beta2 must be in [0, 1), got {self.beta1}, {self.beta2}')


@dataclass(frozen=True)
class VAELossConfig:
    ssim_weight: float = 1.0  # loss = L1 + ssim_weight * (1 - SSIM), images in [0, 1]
    scale_batches: int = 8  # batches of training frames measured to set latent_scale


DECODER_LATENTS = ('recorded', 'rollout')
PIXEL_LOSSES = ('l1', 'mse')


@dataclass(frozen=True)
class DecoderConfig:
    """Stage ``decoder``: the light per-frame decoder (model/fast_decoder.py), trained on the frozen
    encoder's latents of recorded frames."""

    channels: int = 128  # width at the latent resolution, halved per upsampling (vae.fast_decoder_channels)
    ssim_weight: float = 1.0  # loss = L1 + ssim_weight * (1 - SSIM), as in stage vae
    # Std of Gaussian noise added to the latents (about unit std) while training. Generated latents
    # lie near, not on, the encoder's outputs; a decoder fitted to exact encoder latents alone may
    # amplify the difference (pixel shuffles turn it into checkerboards), and input noise bounds
    # that sensitivity. Kept small: the decoder learns E[frame | noisy latent], so a std near the
    # generator's own error (RMS about 0.3 per element) would teach it to blur every frame.
    latent_noise: float = 0.05
    # What it learns to decode. 'recorded': the encoder's latents of recorded frames (plus
    # latent_noise). 'rollout': the latents the checkpoint's generator makes when it rolls the
    # recorded clips out from their frame 0, one pass per frame on its own outputs, as the engine
    # runs; the decoder then learns the frame each generated latent stands for from the very
    # latents it gets at inference (needs an 'adversarial' checkpoint; latent_noise is not added).
    latents: str = 'recorded'
    # 'l1' or 'mse'. Where a generated latent leaves the frame uncertain, L1 learns the median
    # image and MSE the mean, which is what PSNR scores.
    pixel_loss: str = 'l1'
    # True: the decoder also reads the arm as the checkpoint's generator draws it from each frame's
    # joints and base pose, at 4 x the latent resolution (vae.fast_decoder_arm_channels; needs a
    # generator with generator.arm_chain). A decoder continued with it starts as it was.
    arm: bool = False
    # True: it also reads the generator's plane warps in pixels (the first image where each pixel's
    # ray meets the table top and the ground; vae.fast_decoder_warp_planes; needs a generator with
    # generator.sink_warp_pixels) and may copy them. A decoder continued with them starts as it was.
    warps: bool = False
    # True, with arm and warps: it also reads the arm as the first image shows it, each link's
    # points taken from where frame 0 shows them (vae.fast_decoder_arm_warp), and may copy it.
    # Its inputs change the warp convolutions' shapes: start from a decoder without warps.
    arm_warp: bool = False
    # > 0, with warps: the ground's texture repeats every this many metres along the poses' frame's
    # x and y axes (pybullet's plane.urdf: 2 m), and the decoder also reads the ground as frame 0
    # shows it whole periods away (vae.fast_decoder_ground_tile, model/ground_tile.py). Like arm_warp,
    # it changes the warp convolutions' shapes: start from a decoder without warps.
    ground_tile: float = 0.0
    # > 0, with ground_tile: the tile only where the ground lies within this many metres along the
    # camera's axis (vae.fast_decoder_ground_tile_depth: a rendered scene's far plane, 10 m for
    # our recorder's); 0: no limit.
    ground_tile_depth: float = 0.0
    # With warps: the scene's fixed furniture as axis-aligned boxes (x, y, z, half x, half y, half z;
    # metres, in the poses' frame; our recorder's table: sim_scene.TABLE_BOXES). Each copied image is
    # handed over only where it shows what the camera sees, and the decoder also reads the boxes'
    # colour as frame 0 shows them (vae.fast_decoder_static_boxes, model/static_boxes.py). Like
    # ground_tile, it changes the warp convolutions' shapes: start from a decoder without warps.
    static_boxes: tuple[tuple[float, ...], ...] = ()
    # True, with static_boxes, ground_tile and arm: where frame 0 never showed the ground or the table
    # top the camera sees and no arm is drawn, the decoder's image takes the tile or the boxes'
    # colour as they are, while training and after (vae.fast_decoder_paste_unseen).
    paste_unseen: bool = False
    # > 0, with arm: wherever a link is drawn that frame 0 shows, the decoder's image moves this far
    # (0..1) toward that link's colour in frame 0, while training and after (vae.fast_decoder_arm_paste);
    # the links drawn as arm_paste_chain (empty: the generator's chain; vae.fast_decoder_arm_paste_chain).
    arm_paste: float = 0.0
    arm_paste_chain: str = ''
    # >= 1, with warps: the weight of the loss on pixels whose ray meets the ground where frame 0
    # does not have it in view (the ground warp sampled, not shown), against 1 elsewhere. Long
    # rollouts look mostly past frame 0's view; the 48-frame clips this stage learns on, seldom.
    outside_view_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.arm_warp and not (self.arm and self.warps):
            raise ConfigError('decoder.arm_warp needs decoder.arm and decoder.warps: it copies like the plane warps')
        if not self.outside_view_weight >= 1 or (self.outside_view_weight != 1 and not self.warps):
            raise ConfigError(
                'decoder.outside_view_weight must be >= 1 and, above 1, needs decoder.warps (the ground warp says '
                f'what frame 0 has in view), got {self.outside_view_weight}'
            )
        if self.ground_tile_depth < 0 or (self.ground_tile_depth and not self.ground_tile):
            raise ConfigError(
                'decoder.ground_tile_depth must be >= 0 metres and needs decoder.ground_tile, '
                f'got {self.ground_tile_depth}'
            )
        if self.paste_unseen and not (self.static_boxes and self.ground_tile and self.arm):
            raise ConfigError('decoder.paste_unseen needs decoder.static_boxes, decoder.ground_tile and decoder.arm')
        if not 0 <= self.arm_paste <= 1 or (self.arm_paste and not self.arm):
            raise ConfigError(f'decoder.arm_paste must be in [0, 1] and needs decoder.arm, got {self.arm_paste}')
        if self.arm_paste_chain and not self.arm_paste:
            raise ConfigError('decoder.arm_paste_chain is the chain drawn for the arm paste: set decoder.arm_paste > 0')
        if self.static_boxes and not self.warps:
            raise ConfigError(
                'decoder.static_boxes needs decoder.warps: the boxes say where each warp shows what the camera sees'
            )
        if self.ground_tile < 0 or (self.ground_tile and not self.warps):
            raise ConfigError(
                f'decoder.ground_tile must be >= 0 metres and needs decoder.warps (it copies like the plane warps), '
                f'got {self.ground_tile}'
            )
        if self.channels < 16:  # FastDecoder keeps its later layers at >= 16 channels
            raise ConfigError(f'decoder.channels must be >= 16 (the default is 128), got {self.channels}')
        if self.latents not in DECODER_LATENTS or self.pixel_loss not in PIXEL_LOSSES:
            raise ConfigError(
                f'decoder.latents must be one of {DECODER_LATENTS} and decoder.pixel_loss one of {PIXEL_LOSSES}, '
                f'got {self.latents!r}, {self.pixel_loss!r}'
            )
        if not (0 <= self.latent_noise < 1 and self.ssim_weight >= 0):
            raise ConfigError(
                'decoder.latent_noise must be in [0, 1) (latents have about unit std) and decoder.ssim_weight '
                f'>= 0, got {self.latent_noise}, {self.ssim_weight}'
            )


@dataclass(frozen=True)
class FlowConfig:
    t_sampling: str = 'logit_normal'  # u ~ sigmoid(N(0, 1)) or U(0, 1), then shifted (generator.timestep_shift)
    # adapt only: the most noise mixed into the recycled previous frame, (1 - s) x + s noise with
    # s ~ U(0, context_noise) per frame, so that teacher forcing does not teach the model to trust
    # its previous frame more than its own outputs will deserve at inference (0: off)
    context_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.t_sampling not in T_SAMPLINGS:
            raise ConfigError(f'flow.t_sampling must be one of {list(T_SAMPLINGS)}, got {self.t_sampling!r}')
        if not 0.0 <= self.context_noise <= 1.0:
            raise ConfigError(f'flow.context_noise must be in [0, 1], got {self.context_noise}')


@dataclass(frozen=True)
class DistillConfig:
    # N of the shifted grid 1 = t_0 > ... > t_N = 0 of the distill stage; t' = t_{k+1} is one grid
    # step below t = t_k. Larger N: smaller teacher steps (more accurate targets), slower propagation.
    schedule_steps: int = 16

    def __post_init__(self) -> None:
        if self.schedule_steps < 1:
            raise ConfigError(f'distill.schedule_steps must be >= 1, got {self.schedule_steps}')


@dataclass(frozen=True)
class AdversarialConfig:
    """Stage ``adversarial`` (AAPT sec. 3.3-3.4). The rollout is a clip of data.clip_length frames,
    frame 0 the recorded sink; optim.steps, batch_size, warmup_steps, min_lr_ratio, grad_clip and
    seed apply, optim.lr, beta1, beta2 and weight_decay do not (RMSProp with the rates below)."""

    discriminator_init: str = ''  # the adapt checkpoint the discriminator starts from (the stage-1 weights)
    # student: the recycled input is the generator's own previous output, as at inference (the
    # method); teacher: the recorded previous latent (the ablation the paper reports drifting).
    forcing: str = 'student'
    r1_lambda: float = 1000.0  # approximated R1: lambda (D(x) - D(x + sigma n))^2 on real frames (paper 1000)
    r2_lambda: float = 1000.0  # approximated R2: the same on generated frames (paper 1000)
    sigma: float = 0.1  # std of the perturbation n, in latent units (latents have about unit std; paper 0.1)
    g_lr: float = 1e-5  # RMSProp moves every weight by about lr per step: small for fine-tuning
    # The rate of the generator's input projection (patch_embed), if not 0 (then g_lr). A grown
    # checkpoint's new input channels start there at zero weight, and RMSProp moves each weight by
    # about its rate per step, so channels added late stay small at g_lr (v9's weights: RMS 0.013 for
    # the arm, 0.002 for the sink warp, against 0.05-0.06 for the channels it had from the start).
    g_input_lr: float = 0.0
    d_lr: float = 1e-5  # the discriminator's pretrained trunk
    # The discriminator's new, zero-initialised logit head learns from scratch and needs a rate of
    # its own (see discriminator.py).
    d_head_lr: float = 1e-3
    rmsprop_alpha: float = 0.9  # RMSProp's squared-gradient decay (paper 0.9; PyTorch's default is 0.99)
    # Long rollouts are trained by segments of segment_frames frames, of which the first
    # segment_overlap repeat the end of the previous segment as the discriminator's context
    # (paper: 10 s with 1 s overlap = 150 and 15 frames at 15 Hz). Memory grows with the segment,
    # not with data.clip_length.
    segment_frames: int = 150
    segment_overlap: int = 15
    d_steps: int = 1  # discriminator updates per generator update, each on its own batch and rollout
    # Our addition, not the paper's: the weight of the latent MSE between each generated frame of
    # the rollout and the recorded frame of the same poses and actions, added to the generator's
    # loss. Under student forcing it trains away compounding error directly (DAgger-like): one
    # step is at 26-28 dB teacher-forced, but each model's own rollout loses about 6 dB within 4
    # frames (docs/training). 0: the paper's pure adversarial recipe.
    regression_weight: float = 0.0
    # The weight of the generator's adversarial loss. 0 leaves the discriminator out, neither run
    # nor updated: a pure regression stage at the cost of the generator's passes alone.
    adversarial_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.forcing not in FORCINGS:
            raise ConfigError(f'adversarial.forcing must be one of {list(FORCINGS)}, got {self.forcing!r}')
        if not 0 <= self.segment_overlap < self.segment_frames:
            raise ConfigError(
                'adversarial.segment_overlap must be in [0, segment_frames), got '
                f'{self.segment_overlap} with segment_frames {self.segment_frames}'
            )
        if min(self.r1_lambda, self.r2_lambda) < 0 or not self.sigma > 0:
            raise ConfigError('adversarial.r1_lambda and r2_lambda must be >= 0 and adversarial.sigma positive')
        if self.g_input_lr < 0:
            raise ConfigError(f'adversarial.g_input_lr must be >= 0 (0: g_lr), got {self.g_input_lr}')
        if not (min(self.g_lr, self.d_lr, self.d_head_lr) > 0 and 0 < self.rmsprop_alpha < 1) or self.d_steps < 1:
            raise ConfigError(
                'adversarial.g_lr, d_lr and d_head_lr must be positive, rmsprop_alpha in (0, 1) and d_steps >= 1, '
                f'got {self.g_lr}, {self.d_lr}, {self.d_head_lr}, {self.rmsprop_alpha}, {self.d_steps}'
            )
        weights = self.regression_weight, self.adversarial_weight
        if not all(w >= 0 for w in weights) or not any(w > 0 for w in weights):
            raise ConfigError(
                'adversarial.regression_weight and adversarial_weight must be >= 0 and not both 0 (the generator '
                f'would have no loss), got {self.regression_weight} and {self.adversarial_weight}'
            )


@dataclass(frozen=True)
class EncoderConfig:
    """Stage ``encoder``: the light encoder of the plane warps (model/fast_encoder.py), distilled
    from the frozen autoencoder's on the warped images the generator reads."""

    channels: int = 128  # width at the latent resolution, halved per finer level (vae.fast_encoder_channels)

    def __post_init__(self) -> None:
        if self.channels < 16:  # FastEncoder keeps its finer levels at >= 16 channels
            raise ConfigError(f'encoder.channels must be >= 16 (the default is 128), got {self.channels}')


@dataclass(frozen=True)
class TrainConfig:
    stage: str = ''  # set by the aapt-train subcommand; a YAML value must agree with it
    # vae: a ModelConfig YAML; base, adapt, distill, adversarial: the previous stage's checkpoint;
    # decoder: any stage's checkpoint
    model: str = ''
    output: str = ''  # folder of the checkpoint, model card, logs and resumable state
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    vae: VAELossConfig = field(default_factory=VAELossConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    log_every: int = 10
    val_every: int = 0  # 0: validate at the end only
    val_batches: int = 4
    state_every: int = 100  # steps between resumable-state saves (and always at the end)
    device: str = 'auto'  # auto: cuda when available
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on the CPU)
    # On CUDA the no-grad rollouts (adversarial, decoder on rollouts) replay a CUDA graph of one
    # frame's step: the same kernels, without launching them one by one (training/rollout_graphs.py).
    # Off until verified on a GPU (the rollout is 80 % of a regression step: about 3x faster measured
    # in a first version that was not yet right after its first rollout)
    cuda_graph_rollout: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f'stage must be one of {list(STAGES)}, got {self.stage!r}')
        if not self.model or not self.output:
            raise ConfigError('model and output must be set (in the YAML or as model=... output=...)')
        if not self.data.bags:
            raise ConfigError('data.bags is empty: list at least one rosbag2 folder or glob')
        if min(self.log_every, self.state_every, self.val_batches) < 1 or self.val_every < 0:
            raise ConfigError('log_every, state_every and val_batches must be >= 1, val_every >= 0')
        if (
            self.stage == 'adversarial'
            and self.adversarial.adversarial_weight
            and not self.adversarial.discriminator_init
        ):
            raise ConfigError(
                'adversarial.discriminator_init must be set: the adapt checkpoint the discriminator starts from '
                '(not needed at adversarial.adversarial_weight 0, which trains without a discriminator)'
            )


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split('.')
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f'override {dotted}: {key} is not a section')
    node[keys[-1]] = value


def _absolute(data: dict[str, Any], root: Path) -> None:
    """Make the YAML's relative paths relative to ``root`` (the YAML file's folder)."""

    def fix(p: str) -> str:
        return p if not p or Path(p).is_absolute() else os.path.normpath(root / p)

    for key in ('model', 'output'):
        if isinstance(data.get(key), str):
            data[key] = fix(data[key])
    section = data.get('data')
    if isinstance(section, dict):
        for key in ('bags', 'val_bags'):
            if isinstance(section.get(key), list):
                section[key] = [fix(p) if isinstance(p, str) else p for p in section[key]]
        for key in ('mapping', 'cache_dir'):
            if isinstance(section.get(key), str):
                section[key] = fix(section[key])
    section = data.get('adversarial')
    if isinstance(section, dict) and isinstance(section.get('discriminator_init'), str):
        section['discriminator_init'] = fix(section['discriminator_init'])


def load_train_config(path: str | Path, stage: str, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read ``path``, apply ``key=value`` overrides (dotted keys, YAML values), check everything."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f'training config not found: {path}') from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f'could not read training config {path}: {err}') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: expected a mapping at the top level')
    _absolute(data, path.parent.resolve())
    if data.setdefault('stage', stage) != stage:
        raise ConfigError(f'{path}: stage is {data["stage"]!r} but the command is aapt-train {stage}')
    for item in overrides:
        key, sep, text = item.partition('=')
        if not sep or not key:
            raise ConfigError(f'override {item!r} is not key=value (e.g. optim.steps=100)')
        _set(data, key, yaml.safe_load(text))
    return from_dict(TrainConfig, data, where=str(path))


def expand_bags(patterns: tuple[str, ...], what: str) -> list[Path]:
    """Bag folders matching ``patterns`` (globs), in sorted order per pattern; errors if one matches none."""
    bags: list[Path] = []
    for pattern in patterns:
        found = sorted(Path(p) for p in glob.glob(pattern))
        if not found:
            raise TrainError(f'{what}: no bag matches {pattern!r}')
        bags += found
    return bags


def to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
