"""The block-causal latent transformer (a DiT with adaLN conditioning per latent frame).

Per frame the input tokens are patches of [noisy latent, recycled previous latent, camera rays]
concatenated on channels (AAPT sec. 3: the previous generated frame is "recycled" as input);
the timestep and the action vector modulate every block through adaLN. Tokens of frame i attend
to frames i-window+1 .. i and to the sink (frame 0). The output is the flow-matching velocity
v = noise - x0, so the same network samples in one step or many.

Two entry points, never mixed: ``forward_train`` runs whole clips under the block-causal mask
(or an explicit one: the bidirectional base model);
``step`` runs one frame against a KVCache. Both compute the same function (tested).
"""

from __future__ import annotations

import math
import typing

import torch
from einops import rearrange
from torch import nn

from aapt_ros.model.attention import Attention
from aapt_ros.model.camera import RayEncoder
from aapt_ros.model.config import ModelConfig
from aapt_ros.model.kv_cache import KVCache
from aapt_ros.model.masks import token_attention_mask


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of flow times t in [0, 1], shape (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[..., None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate='tanh'), nn.Linear(hidden, dim))
        self.modulation = nn.Linear(dim, 6 * dim)  # adaLN-Zero: shift, scale, gate for attn and mlp
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def _mods(self, c: torch.Tensor) -> list[torch.Tensor]:
        """c (B, F, dim) -> six (B, F, 1, dim) tensors broadcast over a frame's tokens."""
        return [m[:, :, None, :] for m in self.modulation(c).chunk(6, dim=-1)]

    def forward_train(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, F, T, dim), c (B, F, dim)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self._mods(c)
        f = x.shape[1]
        h = rearrange(modulate(self.norm1(x), shift1, scale1), 'b f t d -> b (f t) d')
        x = x + gate1 * rearrange(self.attn.forward_train(h, mask), 'b (f t) d -> b f t d', f=f)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))

    def step(self, x: torch.Tensor, c: torch.Tensor, cache: KVCache, layer: int, mask: torch.Tensor) -> torch.Tensor:
        """x (B, 1, T, dim), c (B, 1, dim): one frame per stream."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self._mods(c)
        h = modulate(self.norm1(x), shift1, scale1)[:, 0]
        x = x + gate1 * self.attn.step(h, cache, layer, mask)[:, None]
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class CausalGenerator(nn.Module):
    """Block-causal transformer over latent frames; predicts flow velocity per frame."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        g, v = config.generator, config.vae
        self.rays = RayEncoder(config.camera, config.latent_height, config.latent_width, g.ray_origin_scale)
        in_channels = 2 * v.latent_channels + RayEncoder.num_channels
        self.patch_embed = nn.Conv2d(in_channels, g.dim, g.patch_size, stride=g.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(config.tokens_per_frame, g.dim) * 0.02)
        # The sink frame is the user's image, not a generated one: a learned marker tells them apart.
        self.sink_embed = nn.Parameter(torch.zeros(g.dim))
        self.time_embed = nn.Sequential(nn.Linear(g.dim, g.dim), nn.SiLU(), nn.Linear(g.dim, g.dim))
        self.action_embed = nn.Linear(g.action_dim, g.dim)
        self.blocks = nn.ModuleList(Block(g.dim, g.heads, g.mlp_ratio) for _ in range(g.depth))
        self.final_norm = nn.LayerNorm(g.dim, elementwise_affine=False)
        self.final_modulation = nn.Linear(g.dim, 2 * g.dim)
        self.final_proj = nn.Linear(g.dim, g.patch_size**2 * v.latent_channels)
        for layer in (self.final_modulation, self.final_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _blocks(self) -> list[Block]:
        return [typing.cast(Block, b) for b in self.blocks]

    def _embed(
        self,
        noisy: torch.Tensor,
        previous: torch.Tensor,
        rays: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        is_sink: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, F, ...) -> tokens (B, F, T, dim) and conditioning (B, F, dim)."""
        b = noisy.shape[0]
        x = torch.cat([noisy, previous, rays.to(noisy.dtype)], dim=2)  # (B, F, 2C+6, h, w)
        x = self.patch_embed(rearrange(x, 'b f c h w -> (b f) c h w'))
        x = rearrange(x, '(b f) d hp wp -> b f (hp wp) d', b=b) + self.pos_embed
        x = x + is_sink[:, :, None, None].to(x.dtype) * self.sink_embed
        dim = self.config.generator.dim
        c = self.time_embed(timestep_embedding(t, dim).to(x.dtype)) + self.action_embed(action.to(x.dtype))
        return x, c

    def _unpatchify(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """tokens (B, F, T, dim) -> velocity (B, F, C, h, w)."""
        shift, scale = (m[:, :, None, :] for m in self.final_modulation(c).chunk(2, dim=-1))
        out = self.final_proj(modulate(self.final_norm(x), shift, scale))
        p = self.config.generator.patch_size
        return rearrange(
            out, 'b f (hp wp) (p1 p2 c) -> b f c (hp p1) (wp p2)', hp=self.config.latent_height // p, p1=p, p2=p
        )

    def forward_train(
        self,
        noisy: torch.Tensor,
        previous: torch.Tensor,
        rays: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Whole clips in one pass; frame 0 of each clip is the sink.

        noisy, previous: (B, F, C, h, w) latents; rays: (B, F, 6, h, w); action: (B, F, A);
        t: (B, F) flow times in [0, 1]; mask: (F*T, F*T) bool, True where a query token may attend
        to a key token; None is the block-causal window mask of ``step`` (``token_attention_mask``),
        ``masks.bidirectional_attention_mask`` the all-to-all one of the base model.
        Returns the velocity (B, F, C, h, w).
        """
        b, f = noisy.shape[:2]
        is_sink = torch.zeros(b, f, dtype=torch.bool, device=noisy.device)
        is_sink[:, 0] = True
        x, c = self._embed(noisy, previous, rays, action, t, is_sink)
        if mask is None:
            window = self.config.generator.window_frames
            mask = token_attention_mask(f, self.config.tokens_per_frame, window, noisy.device)
        for block in self._blocks():
            x = block.forward_train(x, c, mask)
        return self._unpatchify(x, c)

    def step(
        self,
        noisy: torch.Tensor,
        previous: torch.Tensor,
        rays: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        cache: KVCache,
        *,
        commit: torch.Tensor | None,
    ) -> torch.Tensor:
        """One frame per stream against the KV cache.

        noisy, previous: (B, C, h, w); rays: (B, 6, h, w); action: (B, A); t: (B,).
        A stream whose cache is empty takes this frame as its sink. The streams selected by the
        (B,) bool ``commit`` (on a frame's last sampling pass) add the frame to their cache; with
        None the cache is left untouched.
        Returns the velocity (B, C, h, w).
        """
        is_sink = cache.frames_seen == 0
        x, c = self._embed(
            noisy[:, None], previous[:, None], rays[:, None], action[:, None], t[:, None], is_sink[:, None]
        )
        mask = cache.visible()[:, None, None, :]  # (B, 1, 1, S*T), shared by all layers
        for layer, block in enumerate(self._blocks()):
            x = block.step(x, c, cache, layer, mask)
        if commit is not None:
            cache.commit(commit)
        return self._unpatchify(x, c)[:, 0]
