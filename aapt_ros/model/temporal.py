"""Causal temporal layers of the video autoencoder (temporal factor 4, as in the paper's VAE).

Every layer sees the current and earlier frames only, so a clip can be processed whole or a
frame (latent) at a time with the cached tail of earlier inputs, with identical results.
Tensors are (N, C, T): N gathers batch and pixels, T is time.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F


class CausalTemporalConv(nn.Module):
    """1-D convolution over time, left-padded: output t depends on inputs t-k+1 .. t."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.context = kernel_size - 1
        self.conv = nn.Conv1d(channels, channels, kernel_size)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, T) -> (N, C, T) and the cache for the next call (the last k-1 inputs).

        ``cache`` None means the stream starts here (zeros before the first frame).
        """
        past = cache if cache is not None else x.new_zeros(x.shape[0], x.shape[1], self.context)
        padded = torch.cat([past, x], dim=2)
        return self.conv(padded), padded[:, :, padded.shape[2] - self.context :]


class TemporalDownsample(nn.Module):
    """(N, C, T) -> (N, C, T / factor): causal mixing, then each group of ``factor`` frames to one."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.mix = CausalTemporalConv(channels)
        self.group = nn.Conv1d(channels, channels, factor, stride=factor)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """T must be a multiple of ``factor``; streaming callers pass whole groups."""
        mixed, cache = self.mix(F.silu(x), cache)
        return x[:, :, self.factor - 1 :: self.factor] + self.group(mixed), cache


class TemporalUpsample(nn.Module):
    """(N, C, L) -> (N, C, L * factor): each latent to ``factor`` frames, then causal mixing."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.expand = nn.Conv1d(channels, channels * factor, 1)
        self.mix = CausalTemporalConv(channels)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        frames = rearrange(self.expand(x), 'n (c r) l -> n c (l r)', r=self.factor)
        frames = frames + x.repeat_interleave(self.factor, dim=2)
        mixed, cache = self.mix(F.silu(frames), cache)
        return frames + mixed, cache
