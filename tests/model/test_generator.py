"""The cached streaming step computes exactly what the block-causal full forward computes."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from aapt_ros.model.attention import attend_few_queries
from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.kv_cache import KVCache
from aapt_ros.model.masks import frame_attention_mask
from tests.conftest import tiny_config


def every(batch: int) -> torch.Tensor:
    return torch.ones(batch, dtype=torch.bool)


def _random_generator(window_frames: int, **overrides: object) -> CausalGenerator:
    torch.manual_seed(0)
    generator = CausalGenerator(tiny_config(window_frames=window_frames, **overrides))
    with torch.no_grad():
        for p in generator.parameters():  # leave adaLN-Zero's zeros: every path must contribute
            p.normal_(std=0.2)
    return generator.eval()


def _inputs(generator: CausalGenerator, batch: int, frames: int) -> tuple[torch.Tensor, ...]:
    config = generator.config
    c, h, w = config.vae.latent_channels, config.latent_height, config.latent_width
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, frames, c, h, w, generator=g),
        torch.randn(batch, frames, c, h, w, generator=g),
        torch.randn(batch, frames, 6, h, w, generator=g),
        torch.randn(batch, frames, config.generator.action_dim, generator=g),
        torch.rand(batch, frames, generator=g),
    )


@pytest.mark.parametrize('frames', [3, 11])  # within the window, and long enough to evict frames twice
@pytest.mark.parametrize('previous_warp', [(), (0.5, 3.0)], ids=['recycled', 'recycled_and_warped'])
def test_cached_steps_equal_the_full_block_causal_forward(frames: int, previous_warp: tuple[float, ...]) -> None:
    generator = _random_generator(window_frames=4, previous_warp_depths=previous_warp)
    noisy, previous, rays, action, t = _inputs(generator, batch=2, frames=frames)
    with torch.no_grad():
        full = generator.forward_train(noisy, previous, rays, action, t)
        cache = KVCache.allocate(generator.config, 2, 'cpu')
        steps = [
            generator.step(noisy[:, i], previous[:, i], rays[:, i], action[:, i], t[:, i], cache, commit=every(2))
            for i in range(frames)
        ]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-4, rtol=1e-4)


def test_streams_at_different_positions_share_one_batched_step() -> None:
    generator = _random_generator(window_frames=3)
    noisy, previous, rays, action, t = _inputs(generator, batch=1, frames=9)
    with torch.no_grad():
        alone = KVCache.allocate(generator.config, 1, 'cpu')
        expected = [
            generator.step(noisy[:, i], previous[:, i], rays[:, i], action[:, i], t[:, i], alone, commit=every(1))
            for i in range(9)
        ]
        # Stream 1 starts 4 frames after stream 0 and replays the same inputs; until then it is
        # reset before every step, so its history begins at step 4.
        both = KVCache.allocate(generator.config, 2, 'cpu')
        outputs = []
        for i in range(9 + 4):
            j0, j1 = min(i, 8), max(i - 4, 0)
            both.reset(torch.tensor([False, i <= 4]))
            inputs = [torch.cat([x[:, j0], x[:, j1]]) for x in (noisy, previous, rays, action, t)]
            outputs.append(generator.step(*inputs, both, commit=every(2)))
    torch.testing.assert_close(torch.stack([o[1] for o in outputs[4:]]), torch.cat(expected), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.stack([o[0] for o in outputs[:9]]), torch.cat(expected), atol=1e-4, rtol=1e-4)


def test_a_step_without_commit_changes_nothing_the_stream_sees_later() -> None:
    """A frame that is not committed (a preview, or a stream that idles in the batch) writes the
    ring slot of a frame already out of the window; the stream's later frames do not change."""
    generator = _random_generator(window_frames=3)
    noisy, previous, rays, action, t = _inputs(generator, batch=2, frames=8)
    junk = [torch.randn_like(x[:, 0]) for x in (noisy, previous, rays, action)] + [torch.rand(2)]
    with torch.no_grad():
        reference = KVCache.allocate(generator.config, 2, 'cpu')
        expected = [
            generator.step(noisy[:, i], previous[:, i], rays[:, i], action[:, i], t[:, i], reference, commit=every(2))
            for i in range(8)
        ]
        cache = KVCache.allocate(generator.config, 2, 'cpu')
        outputs = []
        for i in range(8):
            if i in (2, 5):  # the ring is not full yet at frame 2, full at frame 5
                generator.step(*junk, cache, commit=None)
                generator.step(*junk, cache, commit=torch.tensor([False, False]))
                assert cache.frames_seen.tolist() == [i, i]
            step = (noisy[:, i], previous[:, i], rays[:, i], action[:, i], t[:, i])
            outputs.append(generator.step(*step, cache, commit=every(2)))
    torch.testing.assert_close(torch.stack(outputs), torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_cache_memory_is_fixed_however_long_the_stream_runs() -> None:
    generator = _random_generator(window_frames=3)
    noisy, previous, rays, action, t = _inputs(generator, batch=1, frames=1)
    cache = KVCache.allocate(generator.config, 1, 'cpu')
    storage = (cache.k.data_ptr(), cache.k.shape, cache.v.data_ptr())
    with torch.no_grad():
        for _ in range(50):
            generator.step(noisy[:, 0], previous[:, 0], rays[:, 0], action[:, 0], t[:, 0], cache, commit=every(1))
    assert (cache.k.data_ptr(), cache.k.shape, cache.v.data_ptr()) == storage
    assert int(cache.window_fill()[0]) == 3


def test_frame_mask_keeps_the_sink_and_a_sliding_window() -> None:
    mask = frame_attention_mask(6, window_frames=3)
    assert mask[5].tolist() == [True, False, False, True, True, True]
    assert mask[1].tolist() == [True, True, False, False, False, False]
    assert not mask.triu(1).any()  # never the future


def test_the_gpu_step_attention_equals_sdpa_with_the_cache_mask() -> None:
    """The products the GPU runs at few streams compute SDPA's function, invisible slots included."""
    generator = _random_generator(window_frames=3)
    cache = KVCache.allocate(generator.config, 2, 'cpu')
    cache.frames_seen[:] = torch.tensor([0, 2])  # a new stream sees only itself, the other a partial ring
    g = generator.config.generator
    q = torch.randn(2, g.heads, generator.config.tokens_per_frame, g.head_dim)
    keys, values = (torch.randn(2, g.heads, cache.k.shape[3] * cache.tokens_per_frame, g.head_dim) for _ in range(2))
    mask = cache.visible()[:, None, None, :]
    expected = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    torch.testing.assert_close(attend_few_queries(q, keys, values, mask), expected, atol=1e-5, rtol=1e-5)
