"""Aligning sampled streams in time: bracketing lookups, quaternion slerp, resampling to a rate.

Stamps are int64 nanoseconds (header stamps near 1.7e18 stay exact); values are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

NS = 1_000_000_000


@dataclass(frozen=True)
class Lookup:
    """Where each query time falls in a stream's sorted stamps."""

    left: np.ndarray  # (N,) index of the last sample before t (clipped into range)
    right: np.ndarray  # (N,) index of the first sample at or after t (clipped)
    weight: np.ndarray  # (N,) float64 in [0, 1]: 0 -> left's value, 1 -> right's
    nearest: np.ndarray  # (N,) index of the nearest sample
    ok: np.ndarray  # (N,) bool: the nearest sample is within max_skew

    def lerp(self, values: np.ndarray) -> np.ndarray:
        w = self.weight.reshape((-1,) + (1,) * (values.ndim - 1))
        out: np.ndarray = values[self.left] * (1 - w) + values[self.right] * w
        return out


def lookup(stamps: np.ndarray, t: np.ndarray, max_skew_ns: float, interpolate: bool) -> Lookup:
    """Bracketing samples of each ``t`` in strictly increasing ``stamps`` (int64 nanoseconds)."""
    m = len(stamps)
    i = np.searchsorted(stamps, t, side='left')  # stamps[i - 1] < t <= stamps[i]
    left, right = np.clip(i - 1, 0, m - 1), np.clip(i, 0, m - 1)
    far = np.iinfo(np.int64).max
    d_left = np.where(i > 0, t - stamps[left], far)  # int64: stamps near 1.7e18 stay exact
    d_right = np.where(i < m, stamps[right] - t, far)
    nearest = np.where(d_right < d_left, right, left)
    bracketed = (i > 0) & (i < m)
    if interpolate:
        span = np.where(bracketed, stamps[right] - stamps[left], 1)
        weight = np.where(bracketed, d_left / span, (nearest == right).astype(np.float64))
    else:
        weight = (nearest == right).astype(np.float64)
    return Lookup(left, right, weight, nearest, np.minimum(d_left, d_right) <= max_skew_ns)


def slerp(q0: np.ndarray, q1: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Spherical interpolation of unit quaternions (N, 4) x, y, z, w along the shorter arc, float64.

    q(w) = sin((1 - w) θ) / sin θ · q0 + sin(w θ) / sin θ · q1 with cos θ = |q0 · q1| (q1 negated
    when q0 · q1 < 0); normalised linear interpolation when θ is tiny.
    """
    dot = np.sum(q0 * q1, axis=1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    small = theta < 1e-6
    sin_theta = np.where(small, 1.0, np.sin(theta))
    a = np.where(small, 1 - weight, np.sin((1 - weight) * theta) / sin_theta)
    b = np.where(small, weight, np.sin(weight * theta) / sin_theta)
    q = a[:, None] * q0 + b[:, None] * q1
    out: np.ndarray = q / np.linalg.norm(q, axis=1, keepdims=True)
    return out


def resample(stamps_ns: np.ndarray, rate_hz: float, tolerance_ns: float) -> np.ndarray:
    """Indices into increasing ``stamps_ns`` of the image nearest each output time, each used once.

    Output times are ``stamps_ns[0] + k / rate_hz`` up to the last stamp (plus the tolerance, so
    nanosecond rounding of the stamps cannot lose the last image); a time without an image within
    ``tolerance_ns`` gets none (the output has a gap there).
    """
    step = NS / rate_hz
    count = int((stamps_ns[-1] - stamps_ns[0] + tolerance_ns) // step) + 1
    targets = stamps_ns[0] + np.round(np.arange(count) * step).astype(np.int64)  # (K,)
    found = lookup(stamps_ns, targets, tolerance_ns, interpolate=False)
    chosen: npt.NDArray[np.int64] = np.unique(found.nearest[found.ok])  # nearest is monotone in the target
    return chosen
