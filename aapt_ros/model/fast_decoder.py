"""A light per-frame decoder for the autoencoder's latents (TAESD-like), trained after the VAE.

Why: at batch 1 the full decoder costs about 3.5 GFLOP per 128x128 frame, more than a generator
pass (about 1 GFLOP), and on the H100 it is a third of the end-to-end step. This decoder does most
of its work at the latent resolution, where convolutions are cheap, and reaches the image size by
pixel shuffles instead of convolutions at full resolution: about 0.4 GFLOP and few kernels, with no
normalisation layers (no reductions to wait for).

It reads the same latents as the full decoder (the encoder is frozen while it trains: stage
``decoder``), so a checkpoint can publish with either; ``vae.fast_decoder_channels`` > 0 says one
is present. Temporal factor 1 only: it decodes each latent frame on its own.

Layout for spatial factor 8 and 128 channels (c = channels, halved per upsampling)::

    (N, C_lat, h, w) -conv3x3-> (N, 128, h, w) -residual conv pair-> (N, 128, h, w)
    -conv1x1, shuffle x2-> (N, 64, 2h, 2w) -conv3x3-> -conv1x1, shuffle x2-> (N, 32, 4h, 4w)
    -conv3x3-> -conv3x3 to 3 * 4, shuffle x2-> (N, 3, 8h, 8w)

With ``vae.fast_decoder_arm_channels`` it also reads the robot arm as the generator draws it
(``ArmDrawing.image``: per link whether it covers each sample, and its inverse depth) at 4 x the
latent resolution. The generator's latents carry the arm at 16 image pixels per latent pixel, and
its rollouts blur it (the arm is 6-8 % of our test pixels and about 30 % of their squared error);
given the drawing, the decoder can put the arm's edges where the joints say they are. It enters
each resolution (averaged down or repeated up to it) through a 3x3 convolution added to the
features; these start at zero, so a decoder given the arm decodes exactly as before until trained.

With ``vae.fast_decoder_warp_planes`` it also reads the generator's plane warps in pixels
(``CausalGenerator.sink_plane_images``: the first image where each pixel's ray meets the table top
and the ground, whether it was sampled, whether frame 0 shows it and whether frame 0 shows the arm
there) and may copy them. On the
surfaces frame 0 shows, that warp is exact for a plane, while the generator's latents, 8x8 pixels
a cell and blurred by the rollout, reproduce only part of it (2-5 dB below it, docs/training). The
warps enter each resolution like the arm (averaged down to it; at the finest, half the image size,
unshuffled, so no pixel of them is lost), and a second head predicts per pixel and plane how much
of the warp to take:

    image = decoded + sum_p coefficient_p * sampled_p * (1 - arm_p) * (warp_p - decoded)

Where frame 0 shows the arm, its warp shows the arm laid flat on the plane, never the plane: not
copied there.

With ``vae.fast_decoder_arm_warp`` the arm is copied the same way, as one more warped image after
the planes' (``CausalGenerator.sink_arm_warp``): each pixel the drawing gives to a link takes the
colour frame 0 shows at the same point of that link, where frame 0 shows that link there. The
drawing tells the decoder where the arm is, but not what it looks like, and v15 painted it at
13-14 dB inside the drawn links (docs/training); frame 0 shows the arm's colours and shading.

With ``vae.fast_decoder_ground_tile`` the floor folded from the first image into one period of its
tiling (``model/ground_tile.py``) is the last such image: the ground frame 0 does not show, where
the plane warps can only streak its edge or hand over what hides it.

The coefficients are not bounded: a plain linear blend the loss fits. Their head and the warps'
inputs start at zero, so a decoder given the warps decodes exactly as before until trained.
"""

from __future__ import annotations

import typing

import torch
from torch import nn
from torch.nn import functional as F

from aapt_ros.model.config import VAEConfig
from aapt_ros.model.plane_sweep import PLANE_IMAGE_CHANNELS


class FastDecoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        width = config.fast_decoder_channels
        ups = config.num_downsamples  # 2x upsamplings to the image size
        widths = [max(width // 2**i, 16) for i in range(ups)]  # channels at each resolution, latent first
        self.stem = nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)
        self.res1 = nn.Conv2d(widths[0], widths[0], 3, padding=1)
        self.res2 = nn.Conv2d(widths[0], widths[0], 3, padding=1)
        # Upsampling i: a 1x1 convolution to 4 x the next width, a pixel shuffle, a 3x3 convolution.
        self.expand = nn.ModuleList(nn.Conv2d(widths[i], 4 * widths[i + 1], 1) for i in range(ups - 1))
        self.refine = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i + 1], 3, padding=1) for i in range(ups - 1))
        self.head = nn.Conv2d(widths[-1], 4 * config.image_channels, 3, padding=1)  # the last 2x by a shuffle
        arm = config.fast_decoder_arm_channels
        arm_in = [nn.Conv2d(arm, width, 3, padding=1) for width in widths] if arm else []
        self.arm_in = nn.ModuleList(arm_in) if arm_in else None
        planes = config.fast_decoder_copied_images * PLANE_IMAGE_CHANNELS
        # The finest level reads the warps unshuffled (4 x the channels at half the size).
        warp_in = (
            [nn.Conv2d(planes * (4 if i == ups - 1 else 1), w, 3, padding=1) for i, w in enumerate(widths)]
            if planes
            else []
        )
        self.warp_in = nn.ModuleList(warp_in) if warp_in else None
        blend = [nn.Conv2d(widths[-1], 4 * config.fast_decoder_copied_images, 3, padding=1)] if planes else []
        self.blend = blend[0] if blend else None  # per pixel and plane, how much of the warp to take
        for conv in [*arm_in, *warp_in, *blend]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # Conv2d has a bias by default

    def forward(
        self, latents: torch.Tensor, arm: torch.Tensor | None = None, planes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, C_lat, h, w) unscaled latents -> (N, 3, H, W) images in about [-1, 1]; arm
        (N, A, h', w'): the arm drawing, read when the decoder has arm inputs (None: none in view);
        planes (N, P, 6, H, W): the plane warps in pixels, then the arm's (``vae.fast_decoder_arm_warp``)
        and the ground tile's (``vae.fast_decoder_ground_tile``), read when the decoder has warp inputs
        (None: nothing sampled, nothing copied)."""
        # The stem as a matrix product over unfolded 3x3 neighbourhoods, written channels-last like
        # the convolutions after it: cuDNN's kernel for so few input channels took 8 us on an H100.
        n, _, h, w = latents.shape
        neighbourhoods = F.unfold(latents, 3, padding=1).transpose(1, 2)  # (N, h*w, C_lat*9)
        x = F.linear(neighbourhoods, self.stem.weight.flatten(1), self.stem.bias)  # (N, h*w, width)
        x = F.silu(x.view(n, h, w, -1).permute(0, 3, 1, 2))  # (N, width, h, w)
        warps = None if planes is None else planes.flatten(1, 2)  # (N, P 6, H, W)
        x = self._add_warps(self._add_arm(x, arm, 0), warps, 0)
        x = x + self.res2(F.silu(self.res1(x)))
        for level, (expand, refine) in enumerate(zip(self.expand, self.refine, strict=True), start=1):
            x = self._add_arm(F.silu(F.pixel_shuffle(expand(x), 2)), arm, level)
            x = F.silu(refine(self._add_warps(x, warps, level)))
        image = F.pixel_shuffle(self._conv(self.head, x), 2)  # (N, 3, H, W)
        if self.blend is None or planes is None:
            return image
        coefficients = F.pixel_shuffle(self._conv(self.blend, x), 2)[:, :, None]  # (N, P, 1, H, W)
        colour = planes[:, :, :3].to(image.dtype)
        table_or_ground = (planes[:, :, 3:4] * (1 - planes[:, :, 5:6])).to(image.dtype)  # sampled, not the arm
        return image + (coefficients * table_or_ground * (colour - image[:, None])).sum(dim=1)

    def _add_warps(self, x: torch.Tensor, warps: torch.Tensor | None, level: int) -> torch.Tensor:
        """x (N, c, h', w') plus the plane warps (N, P 6, H, W) brought to its size through ``warp_in[level]``."""
        if self.warp_in is None:
            return x
        conv = typing.cast(nn.Conv2d, self.warp_in[level])
        if warps is None:  # as all-zero warps: nothing sampled
            return x + typing.cast(torch.Tensor, conv.bias).to(x.dtype)[:, None, None]
        if level == len(self.warp_in) - 1:
            warps = F.pixel_unshuffle(warps, warps.shape[-1] // x.shape[-1])
        else:
            warps = F.adaptive_avg_pool2d(warps, (x.shape[-2], x.shape[-1]))
        return x + conv(warps.to(x.dtype))

    def _add_arm(self, x: torch.Tensor, arm: torch.Tensor | None, level: int) -> torch.Tensor:
        """x (N, c, h', w') plus the arm drawing brought to its size through ``arm_in[level]``."""
        if self.arm_in is None:
            return x
        conv = typing.cast(nn.Conv2d, self.arm_in[level])
        if arm is None:  # as an all-zero drawing: no arm in view
            return x + typing.cast(torch.Tensor, conv.bias).to(x.dtype)[:, None, None]
        size = (x.shape[-2], x.shape[-1])
        if arm.shape[-2] >= size[0]:
            arm = F.adaptive_avg_pool2d(arm, size)
        else:
            arm = F.interpolate(arm, size=size, mode='nearest')
        return x + conv(arm.to(x.dtype))

    @staticmethod
    def _conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        # cuDNN's half-precision kernels want channel counts in multiples of 8: for the head's 12
        # outputs it ran a memset and two padding kernels around the convolution (10 us at batch 1
        # on an H100). On the CPU the extra filters would only cost time.
        return conv_with_padded_outputs(conv, x) if x.is_cuda else conv(x)


def conv_with_padded_outputs(conv: nn.Conv2d, x: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """``conv(x)``, computed with zero filters appended up to a multiple of ``multiple`` output
    channels and sliced off again (the slice fuses into the next copy)."""
    pad = -conv.out_channels % multiple
    weight = F.pad(conv.weight, (0, 0, 0, 0, 0, 0, 0, pad))
    bias = F.pad(conv.bias, (0, pad)) if conv.bias is not None else None
    return F.conv2d(x, weight, bias, conv.stride, conv.padding)[:, : conv.out_channels]
