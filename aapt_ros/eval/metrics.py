"""Per-frame image quality against ground truth: PSNR and SSIM on uint8 RGB frames."""

from __future__ import annotations

import math

import cv2
import numpy as np

SSIM_WINDOW_SIGMA = 1.5  # Gaussian window of Wang et al. 2004 (11x11, sigma 1.5)
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f'metrics need two uint8 images of one shape, got {a.dtype} {a.shape} and {b.dtype} {b.shape}')


def psnr(generated: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels; inf for identical images."""
    _check(generated, reference)
    mse = float(np.mean((generated.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(generated: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004), Gaussian-weighted, averaged over pixels and channels.

    SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    local statistics from an 11x11 Gaussian window (sigma 1.5) with reflected borders.
    """
    _check(generated, reference)
    x, y = generated.astype(np.float64), reference.astype(np.float64)

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (11, 11), SSIM_WINDOW_SIGMA, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return float(np.mean(numerator / denominator))
