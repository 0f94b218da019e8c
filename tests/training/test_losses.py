"""The training losses keep float32 where bfloat16 autocast would ruin them."""

from __future__ import annotations

import torch

from aapt_ros.training.losses import ssim


def test_ssim_is_float32_under_bf16_autocast() -> None:
    # Smooth images with a large mean: their variances are tiny differences of large terms.
    torch.manual_seed(0)
    base = torch.linspace(0.6, 0.7, 64)[None, None, None, :].expand(2, 3, 64, 64)
    x = base + 0.01 * torch.randn(2, 3, 64, 64)
    y = base + 0.01 * torch.randn(2, 3, 64, 64)
    reference = ssim(x, y)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        under_autocast = ssim(x, y)
    assert under_autocast.dtype == torch.float32
    assert torch.allclose(under_autocast, reference, atol=1e-6)
