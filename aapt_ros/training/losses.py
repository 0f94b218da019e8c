"""Differentiable image losses (no pretrained networks: none can be downloaded here)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5  # the Gaussian window of Wang et al. 2004, as in aapt_ros.eval.metrics
SSIM_C1 = 0.01**2  # (K1 L)^2 with dynamic range L = 1
SSIM_C2 = 0.03**2


def _gaussian_window(channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).to(device, dtype)  # (11, 11), sums to 1
    return window.expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)  # depthwise: one window per channel


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of images (N, C, H, W) in [0, 1], over the valid (unpadded) window positions.

    SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)).
    Computed in float32 even under autocast, which would otherwise run the blur convolutions in
    bfloat16: variances are small differences of large terms, and in bfloat16 they are noise (the
    first CUDA run of the vae stage never learned because of it).
    """
    with torch.autocast(x.device.type, enabled=False):
        return _ssim_float32(x.float(), y.float())


def _ssim_float32(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f'SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(x.shape[-2:])}')
    window = _gaussian_window(c, x.device, x.dtype)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, window, groups=c)  # (N, C, H - 10, W - 10)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return (num / den).mean()


def reconstruction_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    ssim_weight: float,
    pixel_loss: str = 'l1',
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L1 (or MSE, pixel_loss 'mse') + ssim_weight * (1 - SSIM) on images (N, 3, H, W) in [-1, 1],
    both measured in [0, 1]; pixel_weights (N, 1, H, W): the pixel term as a mean weighted by them."""
    r, t = (recon.float() + 1) / 2, (target.float() + 1) / 2  # to [0, 1], SSIM's dynamic range
    if pixel_loss not in ('l1', 'mse'):
        raise ValueError(f"pixel_loss must be 'l1' or 'mse', got {pixel_loss!r}")
    error = (r - t) ** 2 if pixel_loss == 'mse' else (r - t).abs()
    if pixel_weights is None:
        pixel = error.mean()
    else:
        weights = pixel_weights.float().expand_as(error)
        pixel = (weights * error).sum() / weights.sum().clamp(min=1e-12)
    return pixel + ssim_weight * (1 - ssim(r, t)) if ssim_weight else pixel
