from __future__ import annotations

import pytest
import torch

from aapt_ros.model.config import VAEConfig
from aapt_ros.model.fast_decoder import conv_with_padded_outputs
from aapt_ros.model.vae import StreamState, VideoAutoencoder


def _vae(**overrides: int) -> VideoAutoencoder:
    torch.manual_seed(0)
    config = VAEConfig(latent_channels=4, base_channels=8, max_channels=16, **overrides)  # type: ignore[arg-type]
    vae = VideoAutoencoder(config).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(std=0.1)
    return vae


@pytest.mark.parametrize(('size', 'spatial'), [((120, 160), 8), ((128, 128), 8), ((64, 96), 4), ((64, 64), 16)])
@pytest.mark.parametrize('temporal', [1, 4])
def test_shapes_follow_the_spatial_and_temporal_factors(size: tuple[int, int], spatial: int, temporal: int) -> None:
    vae = _vae(spatial_factor=spatial, temporal_factor=temporal)
    video = torch.rand(2, 8, 3, *size) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(video)
        assert latents.shape == (2, 8 // temporal, 4, size[0] // spatial, size[1] // spatial)
        assert vae.decode(latents).shape == video.shape


@pytest.mark.parametrize('temporal', [1, 4])
def test_streaming_encode_and_decode_equal_whole_clip(temporal: int) -> None:
    vae = _vae(temporal_factor=temporal)
    video = torch.rand(2, 12, 3, 120, 160) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(video)
        state = StreamState()
        streamed = [z for i in range(12) if (z := vae.encode_stream(video[:, i], state)) is not None]
        torch.testing.assert_close(torch.stack(streamed, dim=1), latents, atol=1e-5, rtol=1e-5)
        frames = vae.decode(latents)
        state = StreamState()
        streamed_frames = torch.cat([vae.decode_stream(latents[:, i], state) for i in range(latents.shape[1])], dim=1)
        torch.testing.assert_close(streamed_frames, frames, atol=1e-5, rtol=1e-5)


def test_latents_never_depend_on_later_frames() -> None:
    vae = _vae(temporal_factor=4)
    video = torch.rand(1, 12, 3, 64, 64) * 2 - 1
    changed = video.clone()
    changed[:, 8:] = -changed[:, 8:]  # only the third group differs
    with torch.no_grad():
        a, b = vae.encode(video), vae.encode(changed)
        assert torch.equal(a[:, :2], b[:, :2]) and not torch.equal(a[:, 2], b[:, 2])
        later = a.clone()
        later[:, 2] += 1.0
        assert torch.equal(vae.decode(a)[:, :8], vae.decode(later)[:, :8])


def test_clip_length_must_be_a_multiple_of_the_temporal_factor() -> None:
    with pytest.raises(ValueError, match='clip of 6 frames: the temporal factor 4 needs a multiple of 4'):
        _vae(temporal_factor=4).encode(torch.zeros(1, 6, 3, 32, 32))


@pytest.mark.parametrize(('size', 'spatial'), [((120, 160), 8), ((64, 96), 4), ((64, 64), 16)])
def test_fast_decoder_gives_images_of_the_full_decoders_shape_frame_by_frame(
    size: tuple[int, int], spatial: int
) -> None:
    vae = _vae(spatial_factor=spatial, fast_decoder_channels=16)
    latents = vae.encode(torch.rand(2, 3, 3, *size) * 2 - 1)
    with torch.no_grad():
        images = vae.decode_fast(latents)
        assert images.shape == vae.decode(latents).shape
        torch.testing.assert_close(vae.decode_fast(latents[:, 1:2]), images[:, 1:2])  # no temporal mixing


def test_fast_decoder_is_optional_and_needs_temporal_factor_one() -> None:
    with pytest.raises(ValueError, match='no fast decoder'):
        _vae().decode_fast(torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match='needs temporal_factor 1'):
        VAEConfig(fast_decoder_channels=16, temporal_factor=4)


@pytest.mark.parametrize(('size', 'spatial'), [((120, 160), 8), ((64, 96), 4), ((64, 64), 16)])
def test_the_plane_warps_pass_the_light_encoder_when_there_is_one(size: tuple[int, int], spatial: int) -> None:
    """encode_warped: the full encoder's latents, image by image, or the light encoder's in their shape."""
    images = torch.rand(3, 3, *size) * 2 - 1
    full = _vae(spatial_factor=spatial)
    light = _vae(spatial_factor=spatial, fast_encoder_channels=16)
    light.load_state_dict(full.state_dict(), strict=False)  # all but the light encoder
    with torch.no_grad():
        by_full = full.encode(images[:, None])[:, 0]
        torch.testing.assert_close(full.encode_warped(images), by_full)
        by_light = light.encode_warped(images)
        assert by_light.shape == by_full.shape
        assert not torch.allclose(by_light, by_full)
        torch.testing.assert_close(light.encode_warped(images[1:2]), by_light[1:2])  # each image on its own
    with pytest.raises(ValueError, match='fast_encoder_channels must be >= 0 and needs temporal_factor 1'):
        VAEConfig(fast_encoder_channels=16, temporal_factor=4)


def test_the_gpu_decoder_head_with_padded_filters_computes_the_same_convolution() -> None:
    conv = torch.nn.Conv2d(16, 12, 3, padding=1)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(conv_with_padded_outputs(conv, x), conv(x))


def test_a_light_decoder_given_plane_warps_decodes_as_before_until_trained_then_copies_them() -> None:
    plain = _vae(fast_decoder_channels=16)
    warps = _vae(fast_decoder_channels=16, fast_decoder_warp_planes=2)
    warps.load_state_dict(plain.state_dict(), strict=False)  # all but the warps' inputs and blend head
    fast = warps.fast_decoder
    assert fast is not None and fast.warp_in is not None and fast.blend is not None
    with torch.no_grad():
        for conv in [*fast.warp_in, fast.blend]:  # as a stage that adds them starts: at zero
            conv.weight.zero_()
            conv.bias.zero_()
    latents = torch.randn(2, 1, 4, 4, 6)  # (B, L, C, h, w): 32x48 images
    planes = torch.rand(2, 1, 2, 6, 32, 48) * 2 - 1  # (B, L, P, 6, H, W)
    planes[:, :, :, 3:5] = 1.0  # sampled, and shown by frame 0, everywhere
    planes[:, :, :, 5] = 0.0  # nowhere the arm
    with torch.no_grad():
        before = plain.decode_fast(latents)
        torch.testing.assert_close(warps.decode_fast(latents, planes=planes), before)
        torch.testing.assert_close(warps.decode_fast(latents), before)  # None: nothing warped
        fast.blend.bias.fill_(1.0)  # take all of every plane's warp ...
        planes[:, :, 1, 3] = 0.0  # ... but the second plane samples nothing,
        planes[:, :, 0, 3, :, 24:] = 0.0  # and the first only the left half
        copied = warps.decode_fast(latents, planes=planes)
        torch.testing.assert_close(copied[..., :24], planes[:, :, 0, :3, :, :24])
        torch.testing.assert_close(copied[..., 24:], before[..., 24:])
        planes[:, :, 0, 5, :16] = 1.0  # frame 0 showed the arm in the top half of that warp: not copied
        copied = warps.decode_fast(latents, planes=planes)
        torch.testing.assert_close(copied[..., :16, :], before[..., :16, :])
        torch.testing.assert_close(copied[..., 16:, :24], planes[:, :, 0, :3, 16:, :24])
    with pytest.raises(ValueError, match=r'fast_decoder_warp_planes must be >= 0 and needs a light decoder'):
        VAEConfig(fast_decoder_warp_planes=2)


@pytest.mark.parametrize(
    'third',
    [
        {'fast_decoder_arm_channels': 9, 'fast_decoder_arm_warp': True},  # the arm as frame 0 shows it
        {'fast_decoder_ground_tile': 2.0},  # the floor folded from frame 0
    ],
    ids=['arm', 'ground tile'],
)
def test_a_light_decoder_that_copies_a_third_image_reads_it_after_the_planes(third: dict[str, object]) -> None:
    vae = _vae(fast_decoder_channels=16, fast_decoder_warp_planes=2, **third)
    fast = vae.fast_decoder
    assert fast is not None and fast.blend is not None and fast.blend.out_channels == 4 * 3  # two planes, one more
    latents = torch.randn(1, 1, 4, 4, 6)  # (B, L, C, h, w): 32x48 images
    images = torch.zeros(1, 1, 3, 6, 32, 48)  # (B, L, P + 1, 6, H, W): nothing sampled
    with torch.no_grad():
        before = vae.decode_fast(latents, planes=images)
        fast.blend.weight.zero_()
        fast.blend.bias.fill_(1.0)  # take all of every warp: the planes sampled nothing, the third everything
        images[:, :, 2, :3], images[:, :, 2, 3:5] = 0.25, 1.0  # the third image, shown everywhere
        torch.testing.assert_close(vae.decode_fast(latents, planes=images), torch.full_like(before, 0.25))


def test_the_arm_warp_the_ground_tile_and_the_static_boxes_need_the_plane_warps() -> None:
    with pytest.raises(ValueError, match=r'fast_decoder_arm_warp needs a light decoder that reads the plane warps'):
        VAEConfig(fast_decoder_channels=16, fast_decoder_warp_planes=2, fast_decoder_arm_warp=True)
    with pytest.raises(ValueError, match=r'fast_decoder_ground_tile must be >= 0 metres .* reads the plane warps'):
        VAEConfig(fast_decoder_channels=16, fast_decoder_ground_tile=2.0)
    with pytest.raises(
        ValueError, match=r'fast_decoder_ground_tile_depth must be >= 0 metres .* needs the ground tile'
    ):
        VAEConfig(fast_decoder_channels=16, fast_decoder_warp_planes=2, fast_decoder_ground_tile_depth=10.0)
    with pytest.raises(ValueError, match=r'fast_decoder_static_boxes needs a light decoder that reads the plane warps'):
        VAEConfig(fast_decoder_channels=16, fast_decoder_static_boxes=((0.0, 0.0, 0.6, 0.75, 0.5, 0.025),))
    with pytest.raises(
        ValueError, match=r'fast_decoder_paste_unseen needs the static boxes, the ground tile and the arm'
    ):
        VAEConfig(fast_decoder_channels=16, fast_decoder_warp_planes=2, fast_decoder_paste_unseen=True)
    with pytest.raises(
        ValueError, match=r'static_boxes\[1\] must be .* positive half sizes, got \[0.0, 0.0, 0.6, 0.75, 0.5, 0.0\]'
    ):
        VAEConfig(
            fast_decoder_channels=16,
            fast_decoder_warp_planes=2,
            fast_decoder_static_boxes=((0.0, 0.0, 0.6, 0.75, 0.5, 0.025), (0.0, 0.0, 0.6, 0.75, 0.5, 0.0)),
        )


def test_the_ground_tile_needs_the_ground_the_generator_warps_to() -> None:
    from aapt_ros.model.config import ConfigError
    from tests.conftest import PLANE_WARPS_IN_PIXELS, tiny_config

    vae = {'fast_decoder_channels': 16, 'fast_decoder_warp_planes': 1, 'fast_decoder_ground_tile': 2.0}
    with pytest.raises(ConfigError, match=r'ground_tile needs the ground .*generator\.sink_warp_ground_below_base'):
        tiny_config(vae=vae, **{**PLANE_WARPS_IN_PIXELS, 'sink_warp_ground_below_base': 0.0})
