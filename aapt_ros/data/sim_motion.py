"""Smooth random motions for simulated episodes: the camera's path and the arm's joint commands.

All paths are sampled at given times (s) from a numpy Generator, so a seed fixes them. Camera
poses are those of the optical frame (REP 103: z forward, x right, y down) in ``world``, always
looking roughly at the workspace above the table (``sim_scene.WORKSPACE_CENTER``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from aapt_ros.data.sim_scene import TABLE_TOP_Z, WORKSPACE_CENTER
from aapt_ros.data.trajectory import look_at

MIN_CAMERA_DISTANCE = 0.9  # m from the look-at point: keeps the camera clear of the arm's reach
MIN_CAMERA_HEIGHT = TABLE_TOP_Z + 0.25  # m: never below the table top's edge view
# The arm moves around a pose leaning over the objects (shoulder and elbow bent towards the base's +x),
# by at most ARM_AMPLITUDES: inside the iiwa's limits, with the flange staying above the table top.
ARM_HOME = np.array([0.0, 0.5, 0.0, -1.0, 0.0, 0.6, 0.0])  # rad, KUKA_IIWA_JOINTS order
ARM_AMPLITUDES = np.array([1.2, 0.6, 1.2, 0.9, 1.2, 1.0, 1.5])  # rad
JOINT_FREQUENCIES_HZ = (0.03, 0.25)  # slow enough for the iiwa's position controllers to follow
HANDHELD_JITTER_M = 0.004  # std of the shake of a hand-held camera's position
HANDHELD_AIM_JITTER_M = 0.015  # std of the shake of its look-at point (about 0.6 deg at 1.4 m)
HANDHELD_JITTER_SECONDS = 0.15  # correlation time of the shake


class CameraMode(str, Enum):
    ORBIT = 'orbit'  # circles the workspace, distance and height wobbling
    APPROACH = 'approach'  # moves towards and away from the table along a slowly swinging bearing
    HANDHELD = 'handheld'  # slow wandering around one viewpoint plus small jitter


@dataclass(frozen=True)
class CameraPath:
    positions: np.ndarray  # (N, 3) optical frame origin in the world, metres
    orientations: np.ndarray  # (N, 4) quaternion x, y, z, w of the optical frame
    targets: np.ndarray  # (N, 3) the point looked at


def _wobble(rng: np.random.Generator, times: np.ndarray, amplitude: float, freq_hz: tuple[float, float]) -> np.ndarray:
    """(N,) sinusoid with random frequency in ``freq_hz`` and random phase."""
    wave: np.ndarray = amplitude * np.sin(2 * np.pi * rng.uniform(*freq_hz) * times + rng.uniform(0, 2 * np.pi))
    return wave


def _smooth_noise(rng: np.random.Generator, times: np.ndarray, std: float, seconds: float) -> np.ndarray:
    """(N, 3) stationary AR(1) noise with the given std and correlation time."""
    dt = float(times[1] - times[0]) if len(times) > 1 else 1.0
    a = np.exp(-dt / seconds)  # keeps the std constant: x_i = a x_(i-1) + sqrt(1 - a^2) n_i
    noise = rng.normal(0.0, std, size=(len(times), 3))
    out = noise.copy()
    for i in range(1, len(times)):
        out[i] = a * out[i - 1] + np.sqrt(1 - a * a) * noise[i]
    return out


def _spherical(azimuth: np.ndarray, elevation: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """(N, 3) offsets at the given azimuth and elevation (rad) and distance (m)."""
    directions = np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=1
    )
    offsets: np.ndarray = distance[:, None] * directions
    return offsets


def camera_path(mode: CameraMode, times: np.ndarray, rng: np.random.Generator) -> CameraPath:
    """Camera path of one ``mode`` at ``times`` (N,) seconds."""
    n = len(times)
    targets = WORKSPACE_CENTER + np.stack([_wobble(rng, times, 0.05, (0.02, 0.1)) for _ in range(3)], axis=1)
    azimuth0 = rng.uniform(0, 2 * np.pi)
    if mode is CameraMode.ORBIT:
        speed = rng.uniform(0.1, 0.3) * rng.choice([-1.0, 1.0])  # rad/s: a full turn in 20 to 60 s
        azimuth = azimuth0 + speed * times + _wobble(rng, times, 0.15, (0.02, 0.08))
        elevation = rng.uniform(0.3, 0.7) + _wobble(rng, times, 0.1, (0.02, 0.1))
        distance = rng.uniform(1.4, 1.9) + _wobble(rng, times, 0.15, (0.02, 0.1))
        positions = targets + _spherical(azimuth, elevation, distance)
    elif mode is CameraMode.APPROACH:
        azimuth = azimuth0 + _wobble(rng, times, 0.3, (0.01, 0.05))
        elevation = rng.uniform(0.3, 0.7) + _wobble(rng, times, 0.08, (0.02, 0.08))
        middle, swing = rng.uniform(1.4, 1.8), rng.uniform(0.3, 0.5)
        distance = middle + swing * np.sin(2 * np.pi * rng.uniform(0.03, 0.08) * times + rng.uniform(0, 2 * np.pi))
        positions = targets + _spherical(azimuth, elevation, distance)
    elif mode is CameraMode.HANDHELD:
        start = _spherical(np.array([azimuth0]), np.array([rng.uniform(0.3, 0.7)]), np.array([rng.uniform(1.3, 1.9)]))
        wander = np.stack(
            [sum(_wobble(rng, times, rng.uniform(0.02, 0.06), (0.03, 0.25)) for _ in range(3)) for _ in range(3)],
            axis=1,
        )  # (N, 3): three sinusoids per axis
        positions = (
            WORKSPACE_CENTER + start + wander + _smooth_noise(rng, times, HANDHELD_JITTER_M, HANDHELD_JITTER_SECONDS)
        )
        targets = targets + _smooth_noise(rng, times, HANDHELD_AIM_JITTER_M, HANDHELD_JITTER_SECONDS)
    else:
        raise ValueError(f'unknown camera mode {mode!r}; choose one of {[m.value for m in CameraMode]}')
    positions = _keep_clear(positions, targets)
    orientations = np.stack([look_at(pos, tgt) for pos, tgt in zip(positions, targets, strict=True)])
    assert orientations.shape == (n, 4)
    return CameraPath(positions, orientations, targets)


def _keep_clear(positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Push positions out to MIN_CAMERA_DISTANCE from their targets and up to MIN_CAMERA_HEIGHT."""
    offsets = positions - targets
    distance = np.linalg.norm(offsets, axis=1, keepdims=True)
    positions = targets + offsets * np.maximum(1.0, MIN_CAMERA_DISTANCE / distance)
    positions[:, 2] = np.maximum(positions[:, 2], MIN_CAMERA_HEIGHT)
    return positions


def joint_command_path(times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 7) joint position targets (rad) in KUKA_IIWA_JOINTS order: per joint ARM_HOME plus a
    random offset plus three sinusoids, within ARM_AMPLITUDES of ARM_HOME."""
    joints = len(ARM_HOME)
    offsets = rng.uniform(-0.4, 0.4, size=joints) * ARM_AMPLITUDES
    weights = rng.uniform(0.2, 1.0, size=(joints, 3))
    amplitudes = weights / weights.sum(axis=1, keepdims=True) * (ARM_AMPLITUDES - np.abs(offsets))[:, None]
    freqs = rng.uniform(*JOINT_FREQUENCIES_HZ, size=(joints, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(joints, 3))
    waves = amplitudes * np.sin(2 * np.pi * freqs * times[:, None, None] + phases)  # (N, 7, 3)
    commands: np.ndarray = ARM_HOME + offsets + waves.sum(axis=2)
    return commands
