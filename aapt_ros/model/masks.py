"""Attention masks over latent frames: block-causal sliding window (the engine) and all-to-all (the base model)."""

from __future__ import annotations

import torch


def frame_attention_mask(num_frames: int, window_frames: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (F, F) mask, True where query frame i may attend to key frame j.

    Frame i sees itself and the ``window_frames - 1`` frames before it, never the future,
    plus frame 0, the attention sink (the user's first frame), which stays visible always.
    """
    i = torch.arange(num_frames, device=device)[:, None]
    j = torch.arange(num_frames, device=device)[None, :]
    return (j <= i) & ((i - j < window_frames) | (j == 0))


def token_attention_mask(
    num_frames: int, tokens_per_frame: int, window_frames: int, device: torch.device | None = None
) -> torch.Tensor:
    """Boolean (F*T, F*T) mask: tokens of one frame attend to each other and to visible frames."""
    frames = frame_attention_mask(num_frames, window_frames, device)
    return frames.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


def bidirectional_attention_mask(
    num_frames: int, tokens_per_frame: int, device: torch.device | None = None
) -> torch.Tensor:
    """Boolean (F*T, F*T) mask, all True: every token attends to every frame of the clip, past and future.

    The mask of the bidirectional ``base`` model that AAPT starts from (BRIEF section 2, step 0);
    training-only, since a streaming step cannot see frames that do not exist yet.
    """
    size = num_frames * tokens_per_frame
    return torch.ones(size, size, dtype=torch.bool, device=device)
