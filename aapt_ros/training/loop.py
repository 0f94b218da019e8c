"""The optimisation loop shared by the stages: AdamW, warm-up + cosine, clipping, logs, resumable state.

Several GPUs: ``torchrun --nproc_per_node N -m aapt_ros.training.cli <stage> ...`` (or
``torchrun --nproc_per_node N --no-python aapt-train <stage> ...``) trains data-parallel with
DistributedDataParallel (:func:`process_group` starts it when WORLD_SIZE > 1: NCCL with
cuda:LOCAL_RANK on CUDA, gloo on the CPU). Every rank draws step k's global batch of
``optim.batch_size`` clips and its noise from ``step_generator(seed, k)`` as a single process does
and keeps its contiguous share (``data.rank_share``); the gradients are averaged over the equal
shares, so N ranks follow the single-process run with the same global batch up to float summation
order. Only rank 0 logs, validates, saves ``train_state/`` and writes the checkpoint and card; the
logged loss is the mean over ranks. Used by the vae, base, adapt, distill and decoder stages;
the adversarial stage has its own loop and stays on one GPU. FSDP ("where the config is large")
is not built: the default model has 7.4M parameters, which every GPU holds whole.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from aapt_ros.training.checkpoints import load_state, save_state
from aapt_ros.training.config import OptimConfig, TrainConfig, TrainError
from aapt_ros.training.data import Clip, batch, distributed, rank_share, step_generator

LOG_DIR = 'logs'
LossFn = Callable[[Clip, torch.Generator], torch.Tensor]  # (batch, step generator) -> scalar loss


class Logger(Protocol):
    def scalar(self, name: str, value: float, step: int) -> None: ...
    def close(self) -> None: ...


class _TensorBoard:
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def scalar(self, name: str, value: float, step: int) -> None:
        self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class _Csv:
    """``scalars.csv`` (step, name, value): the fallback when TensorBoard is not installed."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.file = (folder / 'scalars.csv').open('a', newline='')
        self.writer = csv.writer(self.file)
        if self.file.tell() == 0:
            self.writer.writerow(['step', 'name', 'value'])

    def scalar(self, name: str, value: float, step: int) -> None:
        self.writer.writerow([step, name, f'{value:.6g}'])

    def close(self) -> None:
        self.file.close()


class _NoLogger:
    """The logger of DDP ranks other than 0."""

    def scalar(self, name: str, value: float, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def make_logger(folder: Path) -> Logger:
    try:
        return _TensorBoard(folder / LOG_DIR)
    except ImportError:  # the tensorboard package is an optional extra
        return _Csv(folder / LOG_DIR)


def world_size() -> int:
    """Processes of the torchrun job (1 without torchrun), from its WORLD_SIZE variable."""
    return int(os.environ.get('WORLD_SIZE', '1'))


def is_main_process() -> bool:
    """True in a single process and on DDP rank 0: the one that logs, validates and writes."""
    return not distributed() or dist.get_rank() == 0


def resolve_device(name: str) -> torch.device:
    """The run's device; under torchrun, CUDA means cuda:LOCAL_RANK."""
    auto = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(auto if name == 'auto' else name)
    if world_size() > 1 and device.type == 'cuda':
        if device.index is not None:
            raise TrainError(f'device={name} under torchrun: use device=cuda or auto (each rank takes cuda:LOCAL_RANK)')
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
    return device


@contextmanager
def process_group(device_name: str) -> Iterator[None]:
    """Join the torchrun job's process group when WORLD_SIZE > 1 (else do nothing).

    NCCL on cuda:LOCAL_RANK when the run's device is CUDA, gloo on the CPU. On leaving, the ranks
    meet at a barrier (the others wait there while rank 0 writes the outputs), then the group ends.
    """
    if world_size() == 1 or dist.is_initialized():
        yield
        return
    device = resolve_device(device_name)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        dist.init_process_group('nccl', device_id=device)
    else:
        dist.init_process_group('gloo')
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


class _LossModule(torch.nn.Module):
    """``loss_fn`` as the forward of a module holding the trained one, for DDP: gradients are only
    averaged over ranks when the forward pass runs through the DistributedDataParallel wrapper."""

    def __init__(self, module: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, clips: Clip, generator: torch.Generator) -> torch.Tensor:
        return self.loss_fn(clips, generator)


def _mean_over_ranks(loss: torch.Tensor) -> float:
    value = loss.detach().float().reshape(1).clone()
    dist.all_reduce(value)  # SUM: gloo has no AVG
    return float(value) / dist.get_world_size()


def learning_rate(optim: OptimConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, optim.steps - optim.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return optim.lr * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * cosine)


@dataclass
class RunStats:
    step: int = 0
    wall_s: float = 0.0
    losses: list[float] = field(default_factory=list)  # one per step, including resumed-from steps
    # wall_s at the end of each step, for timing a stage (tools/run_recipe.py --pace); a validation
    # falls into the step after it
    step_ends: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {'wall_s': self.wall_s, 'losses': self.losses, 'step_ends': self.step_ends}


def writes_outputs(stats: RunStats, config: TrainConfig) -> bool:
    """Whether this process writes the stage's checkpoint: the run reached ``optim.steps`` (after
    ``--stop-after`` only the state is saved) and, under DDP, this is rank 0 (the others just wait)."""
    return stats.step >= config.optim.steps and is_main_process()


def train(
    config: TrainConfig,
    module: torch.nn.Module,
    loss_fn: LossFn,
    dataset: torch.utils.data.Dataset[Clip],
    folder: Path,
    *,
    device: torch.device,
    resume: bool = False,
    stop_after: int | None = None,
    validate: Callable[[], dict[str, float]] | None = None,
) -> RunStats:
    """Optimise ``module`` (already on ``device``) for ``config.optim.steps`` steps, or until ``stop_after``.

    Under torchrun (see the module docstring) ``loss_fn`` gets this rank's share of the global batch
    and must keep the same share of its own per-clip draws (``data.rank_share``).
    """
    optim = config.optim
    main = is_main_process()
    share = rank_share(optim.batch_size) if distributed() else None  # raises unless batch_size divides
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=optim.lr, betas=(optim.beta1, optim.beta2), weight_decay=optim.weight_decay
    )
    stats = RunStats()
    if resume:
        stats.step, scalars = load_state(folder, module, optimizer)
        stats.wall_s, stats.losses = float(scalars['wall_s']), list(scalars['losses'])
        stats.step_ends = list(scalars.get('step_ends', []))  # states saved before it was kept have none
    end = min(optim.steps, stop_after) if stop_after is not None else optim.steps
    use_bf16 = config.bf16 and device.type == 'cuda'
    compute: Callable[[Clip, torch.Generator], torch.Tensor] = loss_fn
    if share is not None:
        wrapped = _LossModule(module, loss_fn)
        compute = DistributedDataParallel(wrapped, device_ids=[device] if device.type == 'cuda' else None)
    logger = make_logger(folder) if main else _NoLogger()
    started = time.perf_counter() - stats.wall_s
    module.train()
    try:
        with tqdm(
            total=end, initial=stats.step, desc=f'aapt-train {config.stage}', dynamic_ncols=True, disable=not main
        ) as bar:
            while stats.step < end:
                step = stats.step
                lr = learning_rate(optim, step)
                for group in optimizer.param_groups:
                    group['lr'] = lr
                generator = step_generator(optim.seed, step)
                clips = batch(dataset, optim.batch_size, generator, device, share)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = compute(clips, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                grad_norm = torch.nn.utils.clip_grad_norm_(params, optim.grad_clip or math.inf)
                optimizer.step()
                stats.losses.append(loss.item() if share is None else _mean_over_ranks(loss))
                stats.step += 1
                stats.wall_s = time.perf_counter() - started
                stats.step_ends.append(stats.wall_s)
                bar.update(1)
                if stats.step % config.log_every == 0 or stats.step == end:
                    bar.set_postfix(loss=f'{stats.losses[-1]:.4f}', lr=f'{lr:.2e}')
                    logger.scalar('train/loss', stats.losses[-1], stats.step)
                    logger.scalar('train/lr', lr, stats.step)
                    logger.scalar('train/grad_norm', float(grad_norm), stats.step)
                if main and validate is not None and config.val_every and stats.step % config.val_every == 0:
                    for name, value in validate().items():
                        logger.scalar(f'val/{name}', value, stats.step)
                    module.train()
                if main and (stats.step % config.state_every == 0 or stats.step == end):
                    save_state(folder, module, optimizer, stats.step, stats.as_dict())
    finally:
        logger.close()
    module.eval()
    return stats


def mean_first_last(losses: list[float], n: int = 5) -> tuple[float, float]:
    """Mean of the first and of the last ``n`` losses (the card's "loss first -> last")."""
    n = max(1, min(n, len(losses) // 2))
    return sum(losses[:n]) / n, sum(losses[-n:]) / n
