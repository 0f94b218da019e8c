"""Per-frame convolutional autoencoder: images <-> latent frames.

With a temporal factor of 1 (one latent per image) the autoencoder is causal in time by
construction: a frame's latent depends on that frame alone, so streaming encode/decode is
exactly whole-clip encode/decode and a published image reflects the pose at its own stamp.
Images are float in [-1, 1]; latents are multiplied by ``latent_scale`` (about unit std).
"""

from __future__ import annotations

import itertools

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from aapt_ros.model.config import VAEConfig


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _level_channels(config: VAEConfig) -> list[int]:
    """Channels at each resolution level, full resolution first."""
    return [min(config.base_channels * 2**i, config.max_channels) for i in range(config.num_downsamples + 1)]


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        chans = _level_channels(config)
        self.stem = nn.Conv2d(config.image_channels, chans[0], 3, padding=1)
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(chans):
            layers += [ResBlock(c_in, c_in), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
        layers += [ResBlock(chans[-1], chans[-1]), _group_norm(chans[-1]), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(chans[-1], config.latent_channels, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(image)))


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        chans = _level_channels(config)[::-1]
        self.stem = nn.Conv2d(config.latent_channels, chans[0], 3, padding=1)
        layers: list[nn.Module] = [ResBlock(chans[0], chans[0])]
        for c_in, c_out in itertools.pairwise(chans):
            layers += [
                nn.Upsample(scale_factor=2, mode='nearest'),
                nn.Conv2d(c_in, c_out, 3, padding=1),
                ResBlock(c_out, c_out),
            ]
        layers += [_group_norm(chans[-1]), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(chans[-1], config.image_channels, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(latent)))


class FrameAutoencoder(nn.Module):
    """Encode (B, F, 3, H, W) images in [-1, 1] to (B, F, C, H/s, W/s) latents and back."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b = video.shape[0]
        frames = rearrange(video, 'b f c h w -> (b f) c h w')  # frames are independent (temporal factor 1)
        latents = self.encoder(frames) * self.config.latent_scale
        return rearrange(latents, '(b f) c h w -> b f c h w', b=b)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b = latents.shape[0]
        frames = rearrange(latents, 'b f c h w -> (b f) c h w') / self.config.latent_scale
        return rearrange(self.decoder(frames), '(b f) c h w -> b f c h w', b=b)
