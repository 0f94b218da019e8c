"""The explicit attention mask of forward_train: the base model's bidirectional one and the default causal one."""

from __future__ import annotations

from pathlib import Path

import torch

from aapt_ros.model.checkpoint import load_config
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.masks import bidirectional_attention_mask

TINY_MODEL = Path(__file__).resolve().parents[2] / 'config' / 'train_tiny_model.yaml'


def first_frame_output_moves(mask_kind: str) -> bool:
    """Whether frame 0's output changes when only the input of the last frame changes."""
    torch.manual_seed(0)
    config = load_config(TINY_MODEL)
    net = CausalGenerator(config).eval()
    with torch.no_grad():  # adaLN-Zero starts at an identity map: give every zero-initialised weight a value
        for param in net.parameters():
            if not param.any():
                param.normal_(0, 0.02)
    b, f, c = 1, 5, config.vae.latent_channels
    noisy = torch.randn(b, f, c, config.latent_height, config.latent_width)
    previous = torch.randn_like(noisy)
    rays = torch.randn(b, f, 6, config.latent_height, config.latent_width)
    action = torch.randn(b, f, config.generator.action_dim)
    t = torch.full((b, f), 0.5)
    mask = bidirectional_attention_mask(f, config.tokens_per_frame) if mask_kind == 'bidirectional' else None
    changed = noisy.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        out = net.forward_train(noisy, previous, rays, action, t, mask=mask)
        out_changed = net.forward_train(changed, previous, rays, action, t, mask=mask)
    return not torch.allclose(out[:, 0], out_changed[:, 0], atol=1e-7)


def test_bidirectional_mask_lets_frame_0_see_the_last_frame() -> None:
    assert first_frame_output_moves('bidirectional')


def test_default_block_causal_mask_hides_the_last_frame_from_frame_0() -> None:
    assert not first_frame_output_moves('causal')


def test_bidirectional_mask_is_all_true_over_tokens() -> None:
    mask = bidirectional_attention_mask(3, 4)
    assert mask.shape == (12, 12) and mask.dtype == torch.bool and bool(mask.all())
