"""Rate and latency statistics over a sliding window of recent frames (for diagnostics)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StreamStats:
    frames: int
    rate_hz: float  # frames per second over the window (0 with fewer than two frames)
    latency_last_ms: float
    latency_p50_ms: float
    latency_p99_ms: float


class StatsWindow:
    """Keeps (wall time, latency) of the last ``size`` frames."""

    def __init__(self, size: int = 200):
        self._times: deque[float] = deque(maxlen=size)
        self._latencies: deque[float] = deque(maxlen=size)
        self.frames = 0

    def add(self, time_s: float, latency_s: float) -> None:
        self._times.append(time_s)
        self._latencies.append(latency_s)
        self.frames += 1

    def summary(self) -> StreamStats:
        if not self._latencies:
            return StreamStats(self.frames, 0.0, 0.0, 0.0, 0.0)
        span = self._times[-1] - self._times[0]
        rate = (len(self._times) - 1) / span if span > 0 else 0.0
        lat_ms = np.asarray(self._latencies) * 1e3
        return StreamStats(
            self.frames, rate, float(lat_ms[-1]), float(np.percentile(lat_ms, 50)), float(np.percentile(lat_ms, 99))
        )
