"""The KV cache: a preallocated ring buffer of past latent frames, one per stream in a batch.

Layout of ``k`` and ``v``: (layers, B, heads, slots, T, head_dim) with T tokens per frame, so the
keys of one layer, stream and head are one contiguous (slots * T, head_dim) matrix that attention
reads in place (with slots before heads, every layer first copied its whole cache into that
shape: 2 x 5 us per layer at batch 1 on an H100). Slot 0 holds the sink (the first frame,
attended always); slots 1..R form a ring of the last R = window_frames - 1 frames; the last slot
is scratch space for the frame being generated. A step writes its keys and values into the
scratch slot and attends over all slots under a visibility mask: no concatenation, so no copy
of the cache per layer. Committing the frame copies the scratch slot into each stream's ring
position for all layers at once, which may evict the oldest frame. Memory is fixed at
construction however long a stream runs.

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
    k: torch.Tensor  # (L, B, H, R + 2, T, D): sink, R ring slots, scratch
    v: torch.Tensor  # (L, B, H, R + 2, T, D)
    frames_seen: torch.Tensor  # (B,) int64: frames committed per stream, the sink included

    @classmethod
    def allocate(
        cls, config: ModelConfig, batch_size: int, device: torch.device | str, dtype: torch.dtype = torch.float32
    ) -> KVCache:
        g = config.generator
        shape = (g.depth, batch_size, g.heads, g.window_frames + 1, config.tokens_per_frame, g.head_dim)
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
        return self.k.shape[3] - 2

    @property
    def tokens_per_frame(self) -> int:
        return self.k.shape[4]

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
        """(B, (R + 2) * T) bool: the tokens the current frame attends to (its own always)."""
        slots = torch.arange(self.ring_slots + 2, device=self.frames_seen.device)
        seen = self.frames_seen[:, None]
        sink_visible = (slots == 0) & (seen > 0)
        ring_visible = (slots >= 1) & (slots <= (seen - 1).clamp(max=self.ring_slots))
        current = slots == self.ring_slots + 1
        return (sink_visible | ring_visible | current).repeat_interleave(self.tokens_per_frame, dim=1)

    def write_current(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Put the current frame's (B, T, H, D) keys and values of ``layer`` in the scratch slot;
        return that layer's keys and values over all slots, (B, H, (R + 2) * T, D) views."""
        self.k[layer, :, :, -1] = k.transpose(1, 2)
        self.v[layer, :, :, -1] = v.transpose(1, 2)
        return self.k[layer].flatten(2, 3), self.v[layer].flatten(2, 3)

    def commit(self, streams: torch.Tensor) -> None:
        """Move the scratch frame of every layer into the ring of the streams selected by the (B,)
        bool ``streams``; the other streams keep their contents. Then count the frame."""
        batch = torch.arange(self.batch_size, device=streams.device)
        # A stream that does not commit copies its scratch slot onto itself: one scatter per
        # tensor, with no read-back of the ring and no host sync to pick the committing streams.
        scratch = torch.full_like(self.frames_seen, self.ring_slots + 1)
        slots = torch.where(streams, self.write_slots(), scratch)
        for cache in (self.k, self.v):
            # Indexing batch and slots around the heads puts the indexed dimension first: (B, L, H, T, D).
            cache[:, batch, :, slots] = cache[:, :, :, -1].transpose(0, 1)
        self.frames_seen += streams

    def window_fill(self) -> torch.Tensor:
        """(B,) number of cached frames a new frame will attend to, the sink included."""
        return self.frames_seen.clamp(max=self.ring_slots + 1)
