"""Frame 0's objects on a table top found by colour, stood on a plane above the top and drawn into
another camera (``vae.fast_decoder_paste_objects``)."""

from __future__ import annotations

import pytest
import torch

from aapt_ros.model import table_objects
from aapt_ros.model.config import ConfigError, VAEConfig
from tests.conftest import tiny_config

CAMERA = tiny_config().camera  # 48 x 32, fx = fy = 40
TABLE = (0.0, 0.0, 0.6, 0.75, 0.5, 0.025)  # its top face at z = 0.625, wider than the view below
HEIGHT = 1.0  # metres from the camera down to the top
TOP = (0.2, 0.5, 0.1)  # the top's colour, 0..1
# The boxes' frame in the camera looking straight down from HEIGHT above the top's centre: its x
# along the image's, its y up the image, its z toward the camera.
POSE_FRAME = torch.tensor([[[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, HEIGHT + 0.625]]])


def table_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 32, 48) in [-1, 1]: the top, a red object in rows 12-17 and columns 20-27, a shadow
    (the top at 0.75) in rows 22-29 and columns 4-15, one speck of texture at row 5, column 40, and
    the arm in columns 36-44 of rows 20-30; and (1, 1, 32, 48) where the image shows the arm."""
    colour = torch.tensor(TOP)[:, None, None].repeat(1, 32, 48)
    colour[:, 12:18, 20:28] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    colour[:, 22:30, 4:16] *= 0.75
    colour[:, 5, 40] = torch.tensor([0.6, 0.6, 0.6])
    colour[:, 20:31, 36:45] = torch.tensor([0.3, 0.4, 0.9])[:, None, None]
    arm = torch.zeros(1, 1, 32, 48)
    arm[:, :, 19:32, 35:46] = 1  # grown by a pixel, as the engine's
    return colour[None] * 2 - 1, arm


def native(flags: torch.Tensor) -> torch.Tensor:
    """(1, 1, N) fine flags -> (32, 48) bool where any of a pixel's fine samples is set."""
    fine = flags.view(1, 1, 32 * table_objects.UPSAMPLING, 48 * table_objects.UPSAMPLING)
    return torch.nn.functional.max_pool2d(fine, table_objects.UPSAMPLING)[0, 0] > 0.5


def test_the_objects_are_what_is_not_the_tops_colour_its_shadows_specks_or_the_arm() -> None:
    image, arm = table_scene()
    points, colours = table_objects.first_image_objects(image, arm, POSE_FRAME, torch.tensor([TABLE]), CAMERA)
    n = 32 * 48 * table_objects.UPSAMPLING**2
    assert points.shape == (1, 3, n) and colours.shape == (1, 4, n)
    found = native(colours[:, 3:])
    assert found[13:17, 21:27].all()  # the object, but for its rim the upsampling blends with the top
    expected = torch.zeros(32, 48, dtype=torch.bool)
    expected[11:19, 19:29] = True
    assert not (found & ~expected).any()  # not the shadow, the speck or the arm
    # Stood RAISE above the top: that much nearer the camera, which looks straight down at it.
    depths = points[0, 2][colours[0, 3] > 0.5]
    torch.testing.assert_close(depths, torch.full_like(depths, HEIGHT - table_objects.RAISE), atol=1e-5, rtol=0)
    # Without the poses' frame the top cannot be placed: nothing is an object.
    unknown = table_objects.first_image_objects(image, arm, torch.zeros(1, 3, 4), torch.tensor([TABLE]), CAMERA)
    assert unknown[1][:, 3].sum() == 0 and unknown[0].abs().sum() == 0


def test_splatted_objects_stay_in_place_and_move_with_their_parallax() -> None:
    image, arm = table_scene()
    points, colours = table_objects.first_image_objects(image, arm, POSE_FRAME, torch.tensor([TABLE]), CAMERA)
    still = table_objects.splat(points, colours, torch.eye(3)[None], torch.zeros(1, 3), CAMERA)
    assert still.shape == (1, 4, 32, 48)
    drawn = still[0, 3] > 0.5
    torch.testing.assert_close(drawn, native(colours[:, 3:]))
    red = torch.tensor([0.9, 0.1, 0.1]) * 2 - 1
    torch.testing.assert_close(still[0, :3, 14, 23], red, atol=1e-5, rtol=0)
    # The camera 0.1 m to its right: a point HEIGHT - RAISE ahead moves fx 0.1 / 0.97 = 4.1 pixels left.
    moved = table_objects.splat(points, colours, torch.eye(3)[None], torch.tensor([[0.1, 0.0, 0.0]]), CAMERA)
    columns = torch.arange(48.0)
    shift = (moved[0, 3] * columns).sum() / moved[0, 3].sum() - (still[0, 3] * columns).sum() / still[0, 3].sum()
    assert shift == pytest.approx(-CAMERA.fx * 0.1 / (HEIGHT - table_objects.RAISE), abs=0.5)
    torch.testing.assert_close(moved[0, :3, 14, 19], red, atol=1e-5, rtol=0)
    # Behind the camera or out of view nothing is drawn, and nothing breaks.
    away = table_objects.splat(points, colours, torch.eye(3)[None], torch.tensor([[0.0, 0.0, 5.0]]), CAMERA)
    assert away[:, 3].sum() == 0 and away.isfinite().all()


def test_pasting_objects_extends_the_unseen_paste() -> None:
    with pytest.raises(ConfigError, match=r'fast_decoder_paste_objects extends vae\.fast_decoder_paste_unseen'):
        VAEConfig(fast_decoder_paste_objects=True)
