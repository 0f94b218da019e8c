"""The ground tile (model/ground_tile.py) on a drawn floor: a checkerboard of a known period seen by
a camera tilted down at it."""

from __future__ import annotations

import math

import numpy as np
import torch

from aapt_ros.model import ground_tile
from aapt_ros.model.config import CameraConfig

CAMERA = CameraConfig()  # 128 x 128, 60 deg
PERIOD = 1.0  # metres: 0.5 m squares
HEIGHT = 1.5  # metres above the floor
TILT = math.radians(35)
# The camera in the world (the poses' frame, z up): looking along +x, tilted down; columns right, down, forward.
TO_WORLD = np.array([[0.0, -math.sin(TILT), math.cos(TILT)], [-1.0, 0.0, 0.0], [0.0, -math.cos(TILT), -math.sin(TILT)]])
POSITION = np.array([0.0, 0.0, HEIGHT])


def floor(points: np.ndarray) -> np.ndarray:
    """The floor's colour at world points (..., 3): 0.6 on one colour of square, -0.6 on the other."""
    squares = np.floor(points[..., 0] / (PERIOD / 2)) + np.floor(points[..., 1] / (PERIOD / 2))
    return np.where(squares % 2 == 0, 0.6, -0.6)


def in_camera(frame_in_world: np.ndarray) -> torch.Tensor:
    """A frame [R | t] in the world -> (1, 3, 4) float32 in the camera's frame."""
    rotation = TO_WORLD.T @ frame_in_world[:, :3]
    translation = TO_WORLD.T @ (frame_in_world[:, 3] - POSITION)
    return torch.tensor(np.concatenate([rotation, translation[:, None]], axis=1), dtype=torch.float32)[None]


def first_image() -> torch.Tensor:
    """What the camera sees: (1, 3, H, W), the floor's grey where rays meet it within the
    tile's reach, white (the background) above the horizon and beyond."""
    v, u = np.mgrid[0 : CAMERA.height, 0 : CAMERA.width].astype(np.float64)
    rays = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy, np.ones_like(u)], -1) @ TO_WORLD.T
    with np.errstate(divide='ignore'):
        depth = np.where(rays[..., 2] < 0, -HEIGHT / rays[..., 2], np.inf)  # along the optical axis
    image = np.where(depth <= ground_tile.MAX_DEPTH, floor(POSITION + depth[..., None] * rays), 1.0)
    return torch.tensor(image, dtype=torch.float32)[None, None].expand(1, 3, -1, -1).contiguous()


def behind_the_camera() -> tuple[np.ndarray, torch.Tensor]:
    """Floor points the camera does not show (world, (16, 32, 3)) and in its frame (1, 3, 16, 32)."""
    y, x = np.mgrid[0:16, 0:32].astype(np.float64)
    world = np.stack([-3.0 + x * 0.077, -0.7 + y * 0.09, np.zeros_like(x)], -1)
    camera = (world - POSITION) @ TO_WORLD  # R^T (p - c), row by row
    return world, torch.tensor(camera, dtype=torch.float32).permute(2, 0, 1)[None]


GROUND = in_camera(np.concatenate([np.eye(3), [[1.3], [0.4], [0.0]]], axis=1))  # the floor, origin ahead
POSE_FRAME = in_camera(np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1))


def copied_share(image: torch.Tensor, arm: torch.Tensor, pose_frame: torch.Tensor = POSE_FRAME) -> float:
    """The share of the floor points behind the camera whose colour the tile gets right."""
    tile, axes = ground_tile.fold_first_image(image, arm, GROUND, pose_frame, CAMERA, PERIOD)
    world, points = behind_the_camera()
    copied = ground_tile.tile_image(tile, axes, PERIOD, points, torch.ones(1, 1, 16, 32, dtype=torch.bool))
    assert copied.shape == (1, 6, 16, 32)
    right = (copied[0, 0].numpy() - floor(world)).__abs__() < 0.3
    return float((right & (copied[0, 3].numpy() > 0.5)).mean())


def test_the_tile_copies_the_floor_the_first_image_does_not_show() -> None:
    image, no_arm = first_image(), torch.zeros(1, 1, CAMERA.height, CAMERA.width)
    assert copied_share(image, no_arm) > 0.85  # all but the squares' blurred edges (0.91)
    # Something in front of a minority of the copies (a table filling the lower middle quarter of
    # the image): the median keeps the floor (0.90).
    table = image.clone()
    table[..., 64:, 32:96] = 0.0
    assert copied_share(table, no_arm) > 0.85


def test_the_tile_leaves_out_the_arm_and_is_empty_without_the_poses_frame() -> None:
    image = first_image()
    assert copied_share(image, torch.ones(1, 1, CAMERA.height, CAMERA.width)) == 0.0  # frame 0 shows only the arm
    assert copied_share(image, torch.zeros(1, 1, CAMERA.height, CAMERA.width), torch.zeros(1, 3, 4)) == 0.0
