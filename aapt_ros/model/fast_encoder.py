"""A light per-frame encoder, distilled from the autoencoder's for the plane warps (stage ``encoder``).

Why: a generator with ``generator.sink_warp_pixels`` encodes two warped images every frame (the
first image seen at the arm base's plane and at the ground). The autoencoder's encoder costs about
2.4 GFLOP per 128x128 image, with residual blocks and group norms at every resolution; on two CPU
cores the two passes took 40 ms of a 72-75 ms frame. This encoder reaches the latent resolution by
a pixel unshuffle and strided convolutions, with no normalisation layers, and does most of its
work where the images are small: about 0.4 GFLOP per image.

It is trained to give the generator what the full encoder gives it (the warped latents times each
cell's sampled share), on the warped images themselves, with the autoencoder frozen. When a
checkpoint has one (``vae.fast_encoder_channels`` > 0) the plane warps pass through it, in
training and in the engine alike; every other image (the recorded frames, the stream's first
image) still passes through the full encoder.

Layout for spatial factor 8 and 128 channels (c = channels, doubled per downsampling)::

    (N, 3, H, W) -unshuffle x2-> (N, 12, H/2, W/2) -conv3x3-> (N, 32, H/2, W/2) -conv3x3->
    -conv3x3 stride 2-> (N, 64, H/4, W/4) -conv3x3-> -conv3x3 stride 2-> (N, 128, H/8, W/8)
    -residual conv pair-> -conv3x3-> (N, C_lat, H/8, W/8)

For spatial factor 4 there is one strided convolution, for 16 three.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from aapt_ros.model.config import VAEConfig


class FastEncoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        width = config.fast_encoder_channels
        levels = config.num_downsamples  # resolutions H/2 .. H/spatial_factor
        widths = [max(width // 2 ** (levels - 1 - i), 16) for i in range(levels)]  # channels, finest first
        self.stem = nn.Conv2d(4 * config.image_channels, widths[0], 3, padding=1)
        # At each resolution but the latent's, a 3x3 convolution, then one of stride 2 to the next.
        self.refine = nn.ModuleList(nn.Conv2d(w, w, 3, padding=1) for w in widths[:-1])
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in itertools.pairwise(widths))
        self.res1 = nn.Conv2d(widths[-1], widths[-1], 3, padding=1)
        self.res2 = nn.Conv2d(widths[-1], widths[-1], 3, padding=1)
        self.head = nn.Conv2d(widths[-1], config.latent_channels, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [-1, 1] -> (N, C_lat, h, w) latents, unscaled like the encoder's head."""
        x = F.silu(self.stem(F.pixel_unshuffle(images, 2)))  # (N, widths[0], H/2, W/2)
        for refine, down in zip(self.refine, self.down, strict=True):
            x = F.silu(down(F.silu(refine(x))))  # half the size, the next width
        x = x + self.res2(F.silu(self.res1(x)))
        return self.head(x)
