from __future__ import annotations

import math

import numpy as np
import pytest

from aapt_ros.eval.metrics import SSIM_C1, psnr, ssim

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_identical_images_have_infinite_psnr_and_unit_ssim() -> None:
    assert psnr(IMAGE, IMAGE) == math.inf
    assert ssim(IMAGE, IMAGE) == pytest.approx(1.0)


def test_psnr_of_a_constant_offset_follows_the_formula() -> None:
    shifted = (IMAGE.astype(int) // 2 + 10).astype(np.uint8)
    reference = (IMAGE.astype(int) // 2).astype(np.uint8)
    assert psnr(shifted, reference) == pytest.approx(10 * math.log10(255**2 / 100))


def test_ssim_of_two_flat_images_is_the_luminance_term() -> None:
    a, b = np.full((32, 32, 3), 100, np.uint8), np.full((32, 32, 3), 150, np.uint8)
    expected = (2 * 100 * 150 + SSIM_C1) / (100**2 + 150**2 + SSIM_C1)
    assert ssim(a, b) == pytest.approx(expected)


def test_metrics_fall_as_noise_grows_and_are_symmetric() -> None:
    noisy = [np.clip(IMAGE + RNG.normal(0, s, IMAGE.shape), 0, 255).astype(np.uint8) for s in (5, 20, 60)]
    assert psnr(noisy[0], IMAGE) > psnr(noisy[1], IMAGE) > psnr(noisy[2], IMAGE)
    assert ssim(noisy[0], IMAGE) > ssim(noisy[1], IMAGE) > ssim(noisy[2], IMAGE)
    assert ssim(noisy[1], IMAGE) == pytest.approx(ssim(IMAGE, noisy[1]))


def test_mismatched_images_are_an_error() -> None:
    with pytest.raises(ValueError, match=r'two uint8 images of one shape'):
        psnr(IMAGE, IMAGE[:10])
    with pytest.raises(ValueError, match=r'two uint8 images of one shape'):
        ssim(IMAGE, IMAGE.astype(np.float32))
