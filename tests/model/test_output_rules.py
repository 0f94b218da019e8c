"""v30's rules around the light decoder's image: the ground tile snapped to the floor's colours, the
output smoothed by a bilateral filter, and its chroma at the recordings' 4:2:0 resolution."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from aapt_ros.model import ground_tile
from aapt_ros.model.bilateral import bilateral
from aapt_ros.model.chroma import RGB_TO_YCBCR, subsample_chroma
from aapt_ros.model.config import CameraConfig, ConfigError, VAEConfig
from tests.conftest import PLANE_WARPS_IN_PIXELS, tiny_config

T = 32  # texels per side of the test tiles


def checker_tile(light: tuple[float, ...], dark: tuple[float, ...], noise: float, seed: int = 0) -> torch.Tensor:
    """(1, 4, T, T): a 2 x 2 checker of two colours with Gaussian noise, every texel shown."""
    rng = np.random.default_rng(seed)
    cells = (np.add.outer(np.arange(T) * 2 // T, np.arange(T) * 2 // T) % 2).astype(bool)
    colour = np.where(cells[None], np.array(dark)[:, None, None], np.array(light)[:, None, None])
    colour = colour + rng.normal(0, noise, colour.shape)
    return torch.from_numpy(np.concatenate([colour, np.ones((1, T, T))])[None]).float()


def test_a_checkered_tile_snaps_to_its_two_colours() -> None:
    light, dark = (0.5, 0.6, 0.7), (-0.2, 0.0, 0.3)
    tile = checker_tile(light, dark, noise=0.08)
    tile[0, :3, 3:6, 3:6] = torch.tensor([0.9, -0.9, -0.9])[:, None, None]  # a red bit of table folded in
    tile[0, 3, 20:, :4] = 0  # texels frame 0 never showed
    snapped = ground_tile.snap_colours(tile)
    expected = checker_tile(light, dark, noise=0.0)
    shown = tile[0, 3] > 0.5
    floor = shown.clone()
    floor[3:6, 3:6] = False  # the table's bit takes whichever floor colour is nearer
    # Every texel of the floor takes its square's colour (the medians of the noisy groups, within noise / 4).
    torch.testing.assert_close(snapped[0, :3][:, floor], expected[0, :3][:, floor], atol=0.03, rtol=0)
    assert len(torch.unique(snapped[0, :3][:, shown].T, dim=0)) == 2
    torch.testing.assert_close(snapped[0, :3][:, ~shown], tile[0, :3][:, ~shown])  # untouched, as is the flag
    torch.testing.assert_close(snapped[:, 3], tile[:, 3])


def test_a_plain_tile_with_shadows_snaps_to_one_colour() -> None:
    floor = torch.tensor([0.3, 0.2, 0.25])
    tile = checker_tile(tuple(floor.tolist()), tuple(floor.tolist()), noise=0.02)
    tile[0, :3, :, :6] -= 0.2  # a shadow over a fifth of the tile: distinct, but not a pattern's half
    snapped = ground_tile.snap_colours(tile)
    assert len(torch.unique(snapped[0, :3].flatten(1).T, dim=0)) == 1
    torch.testing.assert_close(snapped[0, :3, 0, 0], floor, atol=0.02, rtol=0)
    # Two colours closer than SNAP_SEPARATION are one floor too, and so are tiles in a batch apiece.
    faint = checker_tile((0.3, 0.3, 0.3), (0.2, 0.2, 0.2), noise=0.01)
    both = ground_tile.snap_colours(torch.cat([faint, checker_tile((0.5, 0.5, 0.5), (-0.5, -0.5, -0.5), 0.01)]))
    assert len(torch.unique(both[0, :3].flatten(1).T, dim=0)) == 1
    assert len(torch.unique(both[1, :3].flatten(1).T, dim=0)) == 2


def test_chroma_subsampled_as_a_jpeg_decoder_blends_it_back() -> None:
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (32, 32), interpolation=cv2.INTER_NEAREST)
    image = cv2.GaussianBlur(image, (3, 3), 0.8)  # colour edges of a few pixels, as rendered scenes have
    as_tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    ours = ((subsample_chroma(as_tensor)[0].permute(1, 2, 0) + 1) * 127.5).numpy()
    # libjpeg at quality 100 with 4:2:0 (OpenCV's default) differs from it only by its rounding.
    encoded = cv2.imencode('.jpg', image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])[1]
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float64)
    assert np.abs(ours - decoded).mean() < 1.0 < np.abs(image - decoded).mean()
    # The luma is each pixel's own (away from saturation, where the result is clamped); a grey image
    # has no chroma to lose.
    luma, muted = torch.tensor(RGB_TO_YCBCR[0]), as_tensor * 0.5
    torch.testing.assert_close(
        torch.einsum('j,bjhw->bhw', luma, subsample_chroma(muted)),
        torch.einsum('j,bjhw->bhw', luma, muted),
        atol=1e-5,
        rtol=0,
    )
    grey = as_tensor.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    torch.testing.assert_close(subsample_chroma(grey), grey, atol=1e-5, rtol=0)
    assert subsample_chroma(as_tensor.half()).dtype == torch.float16


def test_the_bilateral_filter_is_opencvs_and_keeps_edges() -> None:
    rng = np.random.default_rng(1)
    image = np.zeros((24, 24, 3), np.uint8)
    image[:, 12:] = (200, 120, 40)  # an edge between two surfaces ...
    image = (image + rng.normal(0, 4, image.shape)).clip(0, 255).astype(np.uint8)  # ... with speckle
    as_tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    ours = ((bilateral(as_tensor, 20.0)[0].permute(1, 2, 0) + 1) * 127.5).numpy()
    assert np.abs(ours - cv2.bilateralFilter(image, 5, 20, 3)).max() <= 0.51  # OpenCV rounds to uint8
    assert ours[:, :10].std() < 0.6 * image[:, :10].std()  # the speckle goes
    assert ours[:, 11].mean() < 15 and ours[:, 12, 0].mean() > 185  # the edge stays


def test_the_output_rules_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='needs the ground tile'):
        VAEConfig(fast_decoder_ground_tile_snap=True)
    with pytest.raises(ConfigError, match=r'fast_decoder_bilateral must be >= 0'):
        VAEConfig(fast_decoder_bilateral=20.0)  # no light decoder
    with pytest.raises(ConfigError, match=r'fast_decoder_bilateral must be >= 0'):
        VAEConfig(fast_decoder_channels=16, fast_decoder_bilateral=-1.0)
    with pytest.raises(ConfigError, match='chroma_subsampled needs an even size'):
        CameraConfig(width=33, height=32, chroma_subsampled=True)
    from aapt_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from aapt_ros.model.init_checkpoint import untrained_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools'))
    import add_arm_paste

    vae = {'fast_decoder_channels': 16, 'fast_decoder_arm_channels': 9}
    source = save_checkpoint(
        untrained_checkpoint(tiny_config(vae=vae, **PLANE_WARPS_IN_PIXELS), seed=0), tmp_path / 'source'
    )
    args = [str(source), str(tmp_path / 'out'), '--bilateral', '20', '--chroma-subsampled']
    assert add_arm_paste.main(args) == 0
    config = load_checkpoint(tmp_path / 'out').config
    assert config.vae.fast_decoder_bilateral == 20.0 and config.camera.chroma_subsampled
    assert add_arm_paste.main([str(source), str(tmp_path / 'other'), '--tile-snap']) == 2  # no tile here
    assert add_arm_paste.main([str(source), str(tmp_path / 'more'), '--paste-objects']) == 2  # no unseen paste
