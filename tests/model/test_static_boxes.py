"""The scene's static boxes (model/static_boxes.py) and what they do to the light decoder's copies: a
table top seen from straight above by frame 0, then from below its edge by a camera that sees the
ground under it."""

from __future__ import annotations

import numpy as np
import torch

from aapt_ros.model import static_boxes
from aapt_ros.model.generator import CausalGenerator
from tests.conftest import PLANE_WARPS_IN_PIXELS, tiny_config

TOP = (0.0, 0.0, 0.6, 0.5, 0.5, 0.025)  # a 1 m square table top, its face 0.625 m up
BOXES = torch.tensor([TOP])
# Cameras in the world (z up) as [R | c], R's columns the optical axes (right, down, forward).
ABOVE = np.array([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.5]])  # frame 0: 2.5 m up, looking down
UNDER = np.array([[0.0, 0, -1, 1.2], [1, 0, 0, 0], [0, -1, 0, 0.3]])  # 0.3 m up beside it, looking along -x
BASE = np.array(
    [[1.0, 0, 0, -0.3], [0, 1, 0, 0], [0, 0, 1, 0.625]]
)  # the arm's base on the top; the ground 0.625 m below


def in_camera(camera: np.ndarray, frame: np.ndarray) -> torch.Tensor:
    """A frame [R | t] in the world -> (1, 3, 4) float32 in the camera's frame."""
    rotation, centre = camera[:, :3], camera[:, 3]
    placed = np.concatenate([rotation.T @ frame[:, :3], (rotation.T @ (frame[:, 3] - centre))[:, None]], axis=1)
    return torch.tensor(placed, dtype=torch.float32)[None]


def world_rays(camera: np.ndarray, generator: CausalGenerator) -> np.ndarray:
    """The camera's pixel rays in the world, (H, W, 3)."""
    directions = generator._pixel_warp().camera_directions.numpy()  # (3, H, W) in the camera
    return np.einsum('ij,jhw->hwi', camera[:, :3], directions)


def test_rays_enter_boxes_where_their_faces_are_and_boxes_hide_what_lies_behind() -> None:
    origins = torch.tensor([[0.0, 0.0, 2.0]])[:, :, None, None].expand(1, 3, 1, 3)
    # Straight down, sideways and diagonally down, as columns: (1, 3, 1, 3).
    directions = torch.tensor([[[0.0, 1.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, -1.0]]])[:, :, None]
    entries = static_boxes.first_entries(origins, directions, BOXES)[0, 0]
    # Down onto the face; sideways, never; diagonally, past the top's edge (0.5 m) when down at its face.
    assert torch.allclose(entries[0], torch.tensor(1.375)) and entries[1] == torch.inf and entries[2] == torch.inf
    inside = static_boxes.first_entries(torch.tensor([[0.0, 0.0, 0.6]])[:, :, None, None], directions, BOXES)
    assert (inside == 0).all()  # a ray that starts inside a box is in it at once
    # Under the table, on its face and 2 m beside it, as columns: (1, 3, 1, 3).
    points = torch.tensor([[[0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.625, 0.0]]])[:, :, None]
    hidden = static_boxes.hidden_from(torch.tensor([[0.0, 0.0, 2.5]]), points, BOXES)[0, 0]
    assert hidden.tolist() == [True, False, False]


def test_the_copies_are_kept_where_they_show_what_the_camera_sees_and_the_boxes_colour_comes_last() -> None:
    # A generator whose own config reads no tile, as a decoder stage's start: the copies follow tile_last.
    config = tiny_config(**PLANE_WARPS_IN_PIXELS)
    torch.manual_seed(0)
    g = CausalGenerator(config).eval()
    h, w = config.camera.height, config.camera.width
    pose_frame, base = in_camera(ABOVE, np.eye(4)[:3]), in_camera(ABOVE, BASE)
    # Frame 0: the table red, the ground grey.
    rays = world_rays(ABOVE, g)
    on_top = (np.abs(rays[..., :2] / -rays[..., 2:] * 1.875) <= 0.5).all(-1)  # (H, W): rays meeting the top
    image = torch.where(torch.from_numpy(on_top), torch.tensor([0.8, -0.6, -0.6])[:, None, None], torch.tensor(0.1))
    no_arm = torch.zeros(1, 1, h, w)
    colour = g.sink_box_colour(image[None], no_arm, pose_frame, BOXES)
    torch.testing.assert_close(colour, torch.tensor([[0.8, -0.6, -0.6, 1.0]]))
    assert (g.sink_box_colour(image[None], torch.ones(1, 1, h, w), pose_frame, BOXES) == 0).all()  # all arm
    assert (g.sink_box_colour(image[None], no_arm, torch.zeros(1, 3, 4), BOXES) == 0).all()  # no pose frame

    def copies(camera: np.ndarray, frame: torch.Tensor = pose_frame) -> torch.Tensor:
        """The plane warps of camera's view and an all-shown tile, told the boxes: (6, 4, H, W)."""
        sink_to_camera = in_camera(ABOVE, camera)[0]
        rotation, translation = sink_to_camera[None, :, :3], sink_to_camera[None, :, 3]
        planes = g.sink_plane_images(image[None], base, rotation, translation, no_arm)  # (1, 2, 6, H, W)
        tile = torch.ones(1, 1, 6, h, w)
        copied = torch.cat([planes, tile], 1)
        out = g.copies_among_boxes(copied, colour, BOXES, frame, base, rotation, translation, tile_last=True)
        assert out.shape == (1, 4, 6, h, w)
        return out[0].permute(1, 0, 2, 3)  # channel first

    # Frame 0's own view: the top's warp on the table, the ground's and the tile around it, red on the table.
    seen = copies(ABOVE)[3] > 0.5  # (4, H, W): sampled
    table = torch.from_numpy(on_top)
    assert (seen[0] == table).all() and (seen[1] == ~table).all() and (seen[2] == ~table).all()
    assert (seen[3] == table).all() and (copies(ABOVE)[0, 3][table] == 0.8).all()
    # From below the edge: the ground under the table is in view, but frame 0 saw the table there.
    under = copies(UNDER)
    rays = world_rays(UNDER, g)
    with np.errstate(divide='ignore', invalid='ignore'):
        ground = UNDER[:, 3] + (-0.3 / rays[..., 2:]) * rays  # (H, W, 3) where rays meet the ground
    below_table = torch.from_numpy((rays[..., 2] < 0) & (np.abs(ground[..., :2]) < 0.5).all(-1))
    assert below_table.sum() > 20
    assert (under[3, 1][below_table] == 0).all()  # the ground's warp would hand over the table: not kept
    assert (under[3, 2][below_table] == 1).all()  # the tile is
    assert (under[:, 0] == 0).all()  # no ray meets the top's face from below
    # Without the poses' frame the copies stay as they were, and no box is drawn.
    unknown = copies(UNDER, torch.zeros(1, 3, 4))
    assert (unknown[3, 2] == 1).all() and (unknown[:, 3] == 0).all() and (unknown[3, 1][below_table] > 0).any()


def test_the_unseen_ground_and_table_top_are_pasted_where_no_arm_is_drawn() -> None:
    config = tiny_config(**PLANE_WARPS_IN_PIXELS)  # 48 x 32; the arm drawn at 24 x 16 samples
    g = CausalGenerator(config).eval()
    copies = torch.zeros(1, 4, 6, 32, 48)  # the table's and the ground's warps, the tile, the boxes' colour
    copies[:, 2, :3], copies[:, 3, :3] = 0.5, -0.5
    copies[:, 2, 3, :16] = 1  # the tile on the ground in the upper half, ...
    copies[:, 1, 4, 8:16] = 1  # ... of which frame 0 shows the lower quarter
    copies[:, 3, 3, 16:], copies[:, 0, 3, 16:] = 1, 1  # a box's top face in the lower half, ...
    copies[:, 0, 4, 24:] = 1  # ... of which frame 0 shows the lower quarter
    links = torch.full((1, 16, 24), -1)
    links[:, :, :4] = 2  # a link drawn over the first 8 pixel columns
    pasted = g.paste_unseen(torch.zeros(1, 3, 32, 48), copies, links)[0, 0]
    assert (pasted[:8, 9:] == 0.5).all() and (pasted[16:24, 9:] == -0.5).all()
    assert (pasted[8:16] == 0).all() and (pasted[24:] == 0).all()  # what frame 0 shows: the decoder's
    assert (pasted[:, :9] == 0).all()  # the arm and a pixel around it: the decoder's
