"""Multi-head self-attention with QK-norm, for the full block-causal pass (whole or by segments) and the cached step."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from aapt_ros.model.kv_cache import KVCache

# Streams x heads up to which a cached step attends by ``attend_few_queries`` on the GPU. A frame's
# few queries against the whole window leave the fused SDPA kernels one thread block per stream
# and head, each walking all keys in turn; the products spread over the GPU but write out every
# score. Default config (4 heads, 64 queries, 1984 keys, bf16) on an H100, SDPA against products:
# 38 / 11 us at 1 stream, 38 / 27 at 8, 39 / 48 at 16, 270 / 760 at 256.
FEW_STREAM_HEADS = 32


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        # QK-norm keeps attention logits bounded, which long autoregressive rollouts need.
        self.q_norm = nn.RMSNorm(dim // heads)
        self.k_norm = nn.RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = rearrange(self.qkv(x), 'b n (three h d) -> three b n h d', three=3, h=self.heads)
        return self.q_norm(q), self.k_norm(k), v  # each (B, N, H, D)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # from [B, N, H, D] to [B, H, N, D] as SDPA expects
        q, k, v = (rearrange(t, 'b n h d -> b h n d') for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(rearrange(out, 'b h n d -> b n (h d)'))

    def forward_train(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, F*T, dim), mask (F*T, F*T) bool -> (B, F*T, dim): all frames in one pass."""
        q, k, v = self._qkv(x)
        return self._attend(q, k, v, mask)

    def forward_segment(
        self, x: torch.Tensor, mask: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward_train`` for a segment of a longer rollout that also attends to earlier frames.

        x (B, F*T, dim) of the segment; prefix: keys and values (B, P*T, H, D) of earlier frames,
        detached, or None; mask (F*T, P*T + F*T) bool over [prefix, segment].
        Returns the output (B, F*T, dim) and the keys and values attended, [prefix, segment]
        ((B, P*T + F*T, H, D)), from which the caller keeps the next segment's prefix.
        """
        q, k, v = self._qkv(x)
        if prefix is not None:
            k, v = torch.cat([prefix[0], k], 1), torch.cat([prefix[1], v], 1)
        return self._attend(q, k, v, mask), k, v

    def step(
        self, x: torch.Tensor, cache: KVCache, layer: int, slots: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """x (B, T, dim) of the current frame -> (B, T, dim), attending to the cache and itself.

        The frame's keys and values go to each stream's cache slot ``slots`` (B,); ``mask``
        (B, 1, 1, S*T) marks the visible tokens. Both are computed once per step.
        """
        q, k, v = self._qkv(x)
        keys, values = cache.write_current(layer, slots, k, v)  # (B, H, S*T, D), views of the cache
        q = q.transpose(1, 2)  # (B, H, T, D)
        if q.is_cuda and q.shape[0] * q.shape[1] <= FEW_STREAM_HEADS:
            out = attend_few_queries(q, keys, values, mask)
        else:  # more streams, or the CPU (where the fused SDPA kernel is twice as fast as the products)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.proj(rearrange(out, 'b h n d -> b n (h d)'))


def attend_few_queries(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA for (B, H, T, D) queries against (B, H, S*T, D) keys and values, as two matrix
    products and a softmax; mask (B, 1, 1, S*T) bool, True where visible."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, T, S*T)
    weights = scores.masked_fill(~mask, float('-inf')).softmax(-1, dtype=torch.float32).to(v.dtype)
    return torch.matmul(weights, v)  # (B, H, T, D)
