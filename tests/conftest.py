"""Shared fixtures: a tiny checkpoint built by the real model code, and an isolated ROS 2 graph."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

# Every test session gets its own DDS domain on the loopback interface, so parallel runs and
# other ROS 2 graphs on the machine never see our topics. Set before rclpy is imported anywhere.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

REPO = Path(__file__).resolve().parents[1]
# A generator that warps its first image to the table top and the ground in pixels, as the default
# model's does (generator overrides for tiny_config and ModelConfig.with_generator).
PLANE_WARPS_IN_PIXELS = {
    'sink_ray_origin_scale': 1.0,
    'sink_warp_depths': (1.0,),
    'arm_chain': 'kuka_iiwa',
    'sink_warp_base_plane': True,
    'sink_warp_ground_below_base': 0.625,  # the simulated table's height
    'sink_warp_pixels': True,
}


def tiny_config(*, vae: dict[str, int] | None = None, **generator_overrides: object):  # type: ignore[no-untyped-def]
    """A model small enough for fast CPU tests; 48x32 (non-square) catches width/height swaps.
    vae: overrides of its autoencoder's config."""
    from aapt_ros.model.config import CameraConfig, GeneratorConfig, ModelConfig, VAEConfig

    generator = dict(dim=32, depth=2, heads=2, window_frames=4)
    generator.update(generator_overrides)
    return ModelConfig(
        name='tiny-test',
        camera=CameraConfig(width=48, height=32, fx=40.0, fy=40.0, cx=24.0, cy=16.0),
        vae=VAEConfig(**{'latent_channels': 4, 'base_channels': 8, 'max_channels': 16, **(vae or {})}),
        generator=GeneratorConfig(**generator),  # type: ignore[arg-type]
    )


def save_tiny_model(folder: Path, *, vae: dict[str, int] | None = None, **generator_overrides: object) -> Path:
    """A tiny random checkpoint, with generator outputs made non-trivial."""
    import torch

    from aapt_ros.model.checkpoint import save_checkpoint
    from aapt_ros.model.init_checkpoint import untrained_checkpoint

    checkpoint = untrained_checkpoint(tiny_config(vae=vae, **generator_overrides), seed=0)
    with torch.no_grad():  # adaLN-Zero starts at zero; perturb so frames depend on the inputs
        for p in checkpoint.generator.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return save_checkpoint(checkpoint, folder, weight_dtype=torch.float32)


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose actions are the 7 KUKA iiwa joint positions."""
    return save_tiny_model(tmp_path_factory.mktemp('models') / 'tiny')


@pytest.fixture(scope='session')
def ros_context() -> Iterator[None]:
    import rclpy

    rclpy.init()
    yield
    rclpy.shutdown()
