"""The optimisation loop shared by the stages: AdamW, warm-up + cosine, clipping, logs, resumable state."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from aapt_ros.training.checkpoints import load_state, save_state
from aapt_ros.training.config import OptimConfig, TrainConfig
from aapt_ros.training.data import Clip, batch, step_generator

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


def make_logger(folder: Path) -> Logger:
    try:
        return _TensorBoard(folder / LOG_DIR)
    except ImportError:  # the tensorboard package is an optional extra
        return _Csv(folder / LOG_DIR)


def resolve_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


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

    def as_dict(self) -> dict[str, Any]:
        return {'wall_s': self.wall_s, 'losses': self.losses}


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
    """Optimise ``module`` (already on ``device``) for ``config.optim.steps`` steps, or until ``stop_after``."""
    optim = config.optim
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=optim.lr, betas=(optim.beta1, optim.beta2), weight_decay=optim.weight_decay
    )
    stats = RunStats()
    if resume:
        stats.step, scalars = load_state(folder, module, optimizer)
        stats.wall_s, stats.losses = float(scalars['wall_s']), list(scalars['losses'])
    end = min(optim.steps, stop_after) if stop_after is not None else optim.steps
    use_bf16 = config.bf16 and device.type == 'cuda'
    logger = make_logger(folder)
    started = time.perf_counter() - stats.wall_s
    module.train()
    try:
        with tqdm(total=end, initial=stats.step, desc=f'aapt-train {config.stage}', dynamic_ncols=True) as bar:
            while stats.step < end:
                step = stats.step
                lr = learning_rate(optim, step)
                for group in optimizer.param_groups:
                    group['lr'] = lr
                generator = step_generator(optim.seed, step)
                clips = batch(dataset, optim.batch_size, generator, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = loss_fn(clips, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                grad_norm = torch.nn.utils.clip_grad_norm_(params, optim.grad_clip or math.inf)
                optimizer.step()
                stats.losses.append(loss.item())
                stats.step += 1
                stats.wall_s = time.perf_counter() - started
                bar.update(1)
                if stats.step % config.log_every == 0 or stats.step == end:
                    bar.set_postfix(loss=f'{stats.losses[-1]:.4f}', lr=f'{lr:.2e}')
                    logger.scalar('train/loss', stats.losses[-1], stats.step)
                    logger.scalar('train/lr', lr, stats.step)
                    logger.scalar('train/grad_norm', float(grad_norm), stats.step)
                if validate is not None and config.val_every and stats.step % config.val_every == 0:
                    for name, value in validate().items():
                        logger.scalar(f'val/{name}', value, stats.step)
                    module.train()
                if stats.step % config.state_every == 0 or stats.step == end:
                    save_state(folder, module, optimizer, stats.step, stats.as_dict())
    finally:
        logger.close()
    module.eval()
    return stats


def mean_first_last(losses: list[float], n: int = 5) -> tuple[float, float]:
    """Mean of the first and of the last ``n`` losses (the card's "loss first -> last")."""
    n = max(1, min(n, len(losses) // 2))
    return sum(losses[:n]) / n, sum(losses[-n:]) / n
