"""Edge-preserving smoothing of the output (``vae.fast_decoder_bilateral``).

Why: the light decoder's image carries faint speckle of its own, which the recorded frame does not
share. A bilateral filter averages each pixel with its neighbours of a similar colour only, so the
speckle goes and the edges between surfaces stay (on our validation episodes at 5 s, 0.002 more
SSIM and 0.02 dB more PSNR over the rules before it). It is OpenCV's ``bilateralFilter`` with
d = 5 (the offsets within RADIUS pixels) and sigmaSpace = SPACE_SIGMA:

    out(p) = sum_q w(p, q) in(q) / sum_q w(p, q),
    w(p, q) = exp(-|p - q|^2 / (2 SPACE_SIGMA^2)) exp(-(sum over channels of |in(p) - in(q)|)^2 / (2 sigma^2))

with colours in 0..255 units, as OpenCV measures them, and the image mirrored at its border.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

RADIUS = 2  # OpenCV's d = 5
SPACE_SIGMA = 3.0  # pixels
OFFSETS = tuple(
    (dy, dx) for dy in range(-RADIUS, RADIUS + 1) for dx in range(-RADIUS, RADIUS + 1) if dy * dy + dx * dx <= RADIUS**2
)


def bilateral(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """image (B, 3, H, W) in [-1, 1] -> the same, smoothed where neighbours' colours differ by much
    less than sigma (0..255 units); in the image's dtype."""
    x = image.float()
    padded = F.pad(x, (RADIUS,) * 4, mode='reflect')
    h, w = x.shape[-2:]
    total = torch.zeros_like(x)
    weights = torch.zeros_like(x[:, :1])
    for dy, dx in OFFSETS:
        neighbour = padded[:, :, RADIUS + dy : RADIUS + dy + h, RADIUS + dx : RADIUS + dx + w]
        difference = (neighbour - x).abs().sum(dim=1, keepdim=True) * 127.5  # (B, 1, H, W), 0..255 units
        weight = math.exp(-(dy * dy + dx * dx) / (2 * SPACE_SIGMA**2)) * torch.exp(
            -difference.square() / (2 * sigma**2)
        )
        total += weight * neighbour
        weights += weight
    return (total / weights).to(image.dtype)
