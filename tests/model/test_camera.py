from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aapt_ros.model.camera import Pose, PoseError, RayEncoder, relative_motion
from aapt_ros.model.config import CameraConfig

S = math.sqrt(0.5)


@pytest.mark.parametrize(
    ('pose', 'message'),
    [
        (Pose((float('nan'), 0, 0), (0, 0, 0, 1)), 'position is not finite'),
        (Pose((0, 0, 0), (0, 0, float('inf'), 1)), 'orientation is not finite'),
        (Pose((0, 0, 0), (0, 0, 0, 0)), r'not normalised: \|q\| = 0'),
        (Pose((0, 0, 0), (0, 0, 1, 1)), r'not normalised: \|q\| = 1.41'),
    ],
)
def test_unusable_poses_are_rejected_with_the_reason(pose: Pose, message: str) -> None:
    with pytest.raises(PoseError, match=message):
        pose.validated()


def test_nearly_unit_quaternion_is_renormalised() -> None:
    q = Pose((0, 0, 0), (0, 0, 0, 1.005)).validated().orientation
    assert q == (0.0, 0.0, 0.0, 1.0)


def test_relative_motion_is_expressed_in_the_previous_camera_frame() -> None:
    # Previous camera turned 90 deg about world z; the current one is 1 m further along world x.
    previous = Pose((0, 0, 0), (0, 0, S, S))
    current = Pose((1, 0, 0), (0, 0, S, S))
    rotation, translation = relative_motion(previous, current)
    np.testing.assert_allclose(rotation, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(translation, [0, -1, 0], atol=1e-12)  # world +x is the camera's -y


def test_rays_without_motion_are_zero_origin_and_unit_directions() -> None:
    camera = CameraConfig(width=64, height=48, fx=50, fy=50, cx=32, cy=24)
    rays = RayEncoder(camera, 6, 8, origin_scale=0.1)(torch.eye(3)[None], torch.zeros(1, 3))
    assert rays.shape == (1, 6, 6, 8)
    assert torch.all(rays[:, :3] == 0)
    torch.testing.assert_close(rays[:, 3:].norm(dim=1), torch.ones(1, 6, 8))
    assert torch.all(rays[:, 5] > 0.7)  # optical frame: z forward, all pixels in front


def test_ray_origins_are_scaled_translation() -> None:
    camera = CameraConfig(width=32, height=32, fx=30, fy=30, cx=16, cy=16)
    rays = RayEncoder(camera, 4, 4, origin_scale=0.05)(torch.eye(3)[None], torch.tensor([[0.05, 0.0, -0.1]]))
    torch.testing.assert_close(rays[0, :3, 2, 2], torch.tensor([1.0, 0.0, -2.0]))


def test_sink_rays_follow_the_previous_frame_rays_with_their_own_scale() -> None:
    camera = CameraConfig(width=32, height=32, fx=30, fy=30, cx=16, cy=16)
    yaw = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    motion = torch.eye(3)[None], torch.tensor([[0.05, 0.0, 0.0]])
    sink_motion = yaw, torch.tensor([[1.0, 0.0, -2.0]])
    with_sink = RayEncoder(camera, 4, 4, origin_scale=0.05, sink_origin_scale=0.5)
    rays = with_sink(*motion, *sink_motion)
    assert with_sink.num_channels == 12 and rays.shape == (1, 12, 4, 4)
    torch.testing.assert_close(rays[:, :6], RayEncoder(camera, 4, 4, origin_scale=0.05)(*motion))
    torch.testing.assert_close(rays[:, 6:], RayEncoder(camera, 4, 4, origin_scale=0.5)(*sink_motion))
    torch.testing.assert_close(rays[0, 6:9, 0, 0], torch.tensor([2.0, 0.0, -4.0]))
    with pytest.raises(ValueError, match='sink_rotation'):
        with_sink(*motion)
