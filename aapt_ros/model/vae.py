"""Video autoencoder, causal in time: images <-> latent frames.

Spatially, 2-D convolutions downsample by ``spatial_factor``. In time, a temporal factor of 1
(one latent per image, the low-latency default) has no temporal layers at all: a frame's latent
depends on that frame alone and a published image reflects the pose at its own stamp. A factor
of 4 (as in the paper) adds causal temporal layers at the latent resolution (``temporal.py``):
latent k summarises frames 4k..4k+3 and earlier ones, never later ones.

``encode``/``decode`` take whole clips; ``encode_stream``/``decode_stream`` take one frame or one
latent at a time with an explicit state, and give the same numbers (tested).
Images are float in [-1, 1]; latents are multiplied by ``latent_scale`` (about unit std).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from aapt_ros.model.config import VAEConfig
from aapt_ros.model.fast_decoder import FastDecoder
from aapt_ros.model.fast_encoder import FastEncoder
from aapt_ros.model.temporal import TemporalDownsample, TemporalUpsample


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

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C_max, h, w), before the latent projection."""
        return self.body(self.stem(image))


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

    def image(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C_max, h, w) -> (N, 3, H, W)."""
        return self.head(self.body(features))


@dataclass
class StreamState:
    """Cached tails of the causal temporal layers of one stream (None until the stream starts)."""

    cache: torch.Tensor | None = None
    pending: list[torch.Tensor] = field(default_factory=list)  # encoder: features of an incomplete group


class VideoAutoencoder(nn.Module):
    """Encode (B, F, 3, H, W) images to (B, F / t, C, H / s, W / s) latents and back."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        channels = _level_channels(config)[-1]
        factor = config.temporal_factor
        self.down = TemporalDownsample(channels, factor) if factor > 1 else None
        self.up = TemporalUpsample(channels, factor) if factor > 1 else None
        self.fast_decoder = FastDecoder(config) if config.fast_decoder_channels else None
        self.fast_encoder = FastEncoder(config) if config.fast_encoder_channels else None

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Whole clips; F must be a multiple of the temporal factor."""
        b, f = video.shape[:2]
        factor = self.config.temporal_factor
        if f % factor:
            raise ValueError(f'clip of {f} frames: the temporal factor {factor} needs a multiple of {factor}')
        features = self.encoder.features(rearrange(video, 'b f c h w -> (b f) c h w'))
        if self.down is not None:
            h, w = features.shape[-2:]
            series = rearrange(features, '(b f) c h w -> (b h w) c f', b=b)
            features = rearrange(self.down(series)[0], '(b h w) c l -> (b l) c h w', b=b, h=h, w=w)
        latents = self.encoder.head(features) * self.config.latent_scale
        return rearrange(latents, '(b l) c h w -> b l c h w', b=b)

    def encode_warped(self, images: torch.Tensor) -> torch.Tensor:
        """The generator's plane warps (``CausalGenerator.encoded_sink_at_planes``), (N, 3, H, W) ->
        (N, C, h, w): with the light encoder when there is one (stage encoder distils it for them),
        else with the full encoder, each image on its own."""
        if self.fast_encoder is not None:
            return self.fast_encoder(images) * self.config.latent_scale
        return self.encode(images[:, None])[:, 0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b = latents.shape[0]
        features = self.decoder.stem(rearrange(latents, 'b l c h w -> (b l) c h w') / self.config.latent_scale)
        if self.up is not None:
            h, w = features.shape[-2:]
            series = rearrange(features, '(b l) c h w -> (b h w) c l', b=b)
            features = rearrange(self.up(series)[0], '(b h w) c f -> (b f) c h w', b=b, h=h, w=w)
        return rearrange(self.decoder.image(features), '(b f) c h w -> b f c h w', b=b)

    def decode_fast(
        self, latents: torch.Tensor, arm: torch.Tensor | None = None, planes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``decode`` with the light decoder: (B, L, C, h, w) -> (B, L, 3, H, W). arm (B, L, A, h', w'):
        each frame's arm drawing (``CausalGenerator.arm_image``), read when the light decoder
        takes it (``vae.fast_decoder_arm_channels``; None there: as a drawing with no arm in view);
        planes (B, L, P, 6, H, W): each frame's plane warps in pixels (``CausalGenerator.sink_plane_images``)
        and, with ``vae.fast_decoder_arm_warp``, the arm's after them (``CausalGenerator.sink_arm_warp``),
        read when it takes them (``vae.fast_decoder_warp_planes``; None there: nothing warped)."""
        if self.fast_decoder is None:
            raise ValueError('no fast decoder here (vae.fast_decoder_channels is 0): train one with aapt-train decoder')
        b = latents.shape[0]
        flat_arm = None if arm is None else arm.flatten(0, 1)
        flat_planes = None if planes is None else planes.flatten(0, 1)
        images = self.fast_decoder(
            rearrange(latents, 'b l c h w -> (b l) c h w') / self.config.latent_scale, flat_arm, flat_planes
        )
        return rearrange(images, '(b l) c h w -> b l c h w', b=b)

    def encode_stream(self, frame: torch.Tensor, state: StreamState) -> torch.Tensor | None:
        """One frame (B, 3, H, W) -> its group's latent (B, C, h, w) once the group is complete."""
        features = self.encoder.features(frame)  # (B, C, h, w)
        if self.down is None:
            return self.encoder.head(features) * self.config.latent_scale
        state.pending.append(features)
        if len(state.pending) < self.config.temporal_factor:
            return None
        b, _, h, w = features.shape
        series = rearrange(torch.stack(state.pending, dim=1), 'b f c h w -> (b h w) c f')
        state.pending.clear()
        down, state.cache = self.down(series, state.cache)
        grouped = rearrange(down, '(b h w) c 1 -> b c h w', b=b, h=h, w=w)
        return self.encoder.head(grouped) * self.config.latent_scale

    def decode_stream(self, latent: torch.Tensor, state: StreamState) -> torch.Tensor:
        """One latent (B, C, h, w) -> its frames (B, t, 3, H, W)."""
        features = self.decoder.stem(latent / self.config.latent_scale)
        b, _, h, w = features.shape
        if self.up is not None:
            series = rearrange(features, 'b c h w -> (b h w) c 1')
            up, state.cache = self.up(series, state.cache)
            features = rearrange(up, '(b h w) c f -> (b f) c h w', b=b, h=h, w=w)
        return rearrange(self.decoder.image(features), '(b f) c h w -> b f c h w', b=b)
