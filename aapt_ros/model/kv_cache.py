"""The KV cache: a preallocated ring buffer of past latent frames, one per stream in a batch.

Layout of ``k`` and ``v``: (layers, B, slots, T, heads, head_dim) with T tokens per frame.
Slot 0 holds the sink (the first frame, attended always); slots 1..R form a ring of the last
R = window_frames - 1 frames, so with the current frame a step attends to ``window_frames``
frames. Memory is fixed at construction and never grows however long a stream runs.

Each stream keeps its own frame counter, so streams that started at different times share one
batched forward. Write positions and visibility are tensors computed once per step, never
per layer and never with host syncs, which keeps the step capturable by CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aapt_ros.model.config import ModelConfig


@dataclass
class KVCache:
    k: torch.Tensor  # (L, B, S, T, H, D)
    v: torch.Tensor  # (L, B, S, T, H, D)
    frames_seen: torch.Tensor  # (B,) int64: frames committed per stream, the sink included

    @classmethod
    def allocate(
        cls, config: ModelConfig, batch_size: int, device: torch.device | str, dtype: torch.dtype = torch.float32
    ) -> KVCache:
        g = config.generator
        shape = (g.depth, batch_size, g.window_frames, config.tokens_per_frame, g.heads, g.head_dim)
        return cls(
            k=torch.zeros(shape, device=device, dtype=dtype),
            v=torch.zeros(shape, device=device, dtype=dtype),
            frames_seen=torch.zeros(batch_size, device=device, dtype=torch.int64),
        )

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def ring_slots(self) -> int:
        return self.k.shape[2] - 1

    @property
    def tokens_per_frame(self) -> int:
        return self.k.shape[3]

    def reset(self, streams: torch.Tensor | None = None) -> None:
        """Forget the history of all streams, or of the streams selected by a (B,) bool mask."""
        if streams is None:
            self.frames_seen.zero_()
        else:
            self.frames_seen.masked_fill_(streams, 0)

    def write_slots(self) -> torch.Tensor:
        """(B,) slot index the current frame of each stream is committed to."""
        ring_position = 1 + (self.frames_seen - 1).clamp(min=0) % self.ring_slots
        return torch.where(self.frames_seen == 0, torch.zeros_like(ring_position), ring_position)

    def visible(self) -> torch.Tensor:
        """(B, S*T) bool: cached tokens the current frame may attend to."""
        slots = torch.arange(self.ring_slots + 1, device=self.frames_seen.device)
        seen = self.frames_seen[:, None]
        sink_visible = (slots == 0) & (seen > 0)
        ring_visible = (slots >= 1) & (slots <= (seen - 1).clamp(max=self.ring_slots))
        return (sink_visible | ring_visible).repeat_interleave(self.tokens_per_frame, dim=1)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor, commit: torch.Tensor) -> None:
        """Write one frame's (B, T, H, D) keys and values of ``layer`` into the slot of each stream
        selected by the (B,) bool ``commit``; the other streams' slots keep their contents."""
        batch = torch.arange(self.batch_size, device=slots.device)
        keep = ~commit[:, None, None, None]
        self.k[layer, batch, slots] = torch.where(keep, self.k[layer, batch, slots], k.to(self.k.dtype))
        self.v[layer, batch, slots] = torch.where(keep, self.v[layer, batch, slots], v.to(self.v.dtype))

    def advance(self, commit: torch.Tensor) -> None:
        """Count the frame just written by ``append`` in every layer, for the committed streams."""
        self.frames_seen += commit

    def window_fill(self) -> torch.Tensor:
        """(B,) number of cached frames a new frame will attend to, the sink included."""
        return self.frames_seen.clamp(max=self.ring_slots + 1)
