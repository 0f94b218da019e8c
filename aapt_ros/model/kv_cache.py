"""The KV cache: a preallocated ring buffer of past latent frames, one per stream in a batch.

Layout of ``k`` and ``v``: (layers, B, heads, slots, T, head_dim) with T tokens per frame, so the
keys of one layer, stream and head are one contiguous (slots * T, head_dim) matrix that attention
reads in place (with slots before heads, every layer first copied its whole cache into that
shape: 2 x 5 us per layer at batch 1 on an H100). Slot 0 holds the sink (the first frame,
attended always); slots 1..W form a ring of W = window_frames frames. Frame n >= 1 of a stream
lives in slot 1 + (n - 1) % W. A step writes the current frame's keys and values straight into
that slot, over the frame that falls out of the window (n - W, which frame n no longer sees),
and attends over every slot it has filled: no concatenation and no scratch slot, so committing
a frame is only counting it, and a stream that does not commit writes the same slot again next
step. Memory is fixed at construction however long a stream runs.

Each stream keeps its own frame counter, so streams that started at different times share one
batched forward. Write positions and visibility are tensors computed once per step, never
per layer and never with host syncs, which keeps the step capturable by CUDA graphs.

The write is a custom operator (``aapt::write_frame``) because torch.compile turns an indexed
assignment into the cache into a copy of the whole cache (every slot of every layer, for each
layer's write: 12 copies of 6 MB per pass at batch 1 on an H100, 1.5 GB each at batch 256); an
operator that declares what it mutates is run in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aapt_ros.model.config import ModelConfig


@torch.library.custom_op('aapt::write_frame', mutates_args=('keys', 'values'))
def write_frame(
    keys: torch.Tensor,
    values: torch.Tensor,
    layer: int,
    streams: torch.Tensor,
    slots: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
) -> None:
    """Write one frame's (B, H, T, D) keys and values of ``layer`` into slot ``slots[i]`` of stream
    ``streams[i]`` of the (L, B, H, S, T, D) ``keys`` and ``values``."""
    keys[layer, streams, :, slots] = k
    values[layer, streams, :, slots] = v


# What torch.compile traces in its place: the operator returns nothing, it only writes.
write_frame.register_fake(lambda *args: None)


@dataclass
class KVCache:
    k: torch.Tensor  # (L, B, H, W + 1, T, D): the sink, then a ring of W frames
    v: torch.Tensor  # (L, B, H, W + 1, T, D)
    frames_seen: torch.Tensor  # (B,) int64: frames committed per stream, the sink included
    streams: torch.Tensor  # (B,) int64: 0 .. B - 1, the stream index of each frame written

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
            streams=torch.arange(batch_size, device=device),
        )

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def ring_slots(self) -> int:
        return self.k.shape[3] - 1

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
        """(B,) slot index of each stream's current frame: 0 for the sink, then around the ring."""
        return torch.where(self.frames_seen == 0, 0, 1 + (self.frames_seen - 1) % self.ring_slots)

    def visible(self) -> torch.Tensor:
        """(B, (W + 1) * T) bool: the tokens the current frame attends to, its own included.

        Frame n sees the slots it has filled (the sink and frames 1 .. n - 1, the last W - 1 of
        them once the ring is full) and its own slot: exactly the slots up to n."""
        slots = torch.arange(self.ring_slots + 1, device=self.frames_seen.device)
        return (slots <= self.frames_seen[:, None]).repeat_interleave(self.tokens_per_frame, dim=1)

    def write_current(
        self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Put the current frame's (B, T, H, D) keys and values of ``layer`` in each stream's slot
        (``write_slots()``, computed once per step); return that layer's keys and values over all
        slots, (B, H, (W + 1) * T, D) views."""
        write_frame(self.k, self.v, layer, self.streams, slots, k.transpose(1, 2), v.transpose(1, 2))
        return self.k[layer].flatten(2, 3), self.v[layer].flatten(2, 3)

    def commit(self, streams: torch.Tensor) -> None:
        """Count the current frame in the history of the streams selected by the (B,) bool
        ``streams``; the others write the same slot again next step."""
        self.frames_seen += streams

    def window_fill(self) -> torch.Tensor:
        """(B,) number of cached frames a new frame will attend to, the sink included."""
        return self.frames_seen.clamp(max=self.ring_slots)
