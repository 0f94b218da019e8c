"""The training rollout's one generator step per frame, captured once as a CUDA graph and replayed.

Not yet verified on a GPU in this form (``TrainConfig.cuda_graph_rollout`` is off by default): its
first version matched the eager rollout on the rollout that captured it and not after, since the
graph read a commit mask Python had freed; ``tests/training/test_adversarial_stage.py`` checks
repeated rollouts and rollouts after a weight update where CUDA is present.

A student-forced rollout steps the generator frame by frame, as the engine streams, and each step
launches about 420 small kernels: on an H100 the rollout was 80 % of a regression step and the GPU
was busy a fifth of it, waiting on the host (docs/benchmarks/training_step_profile_h100_*.json).
Replayed from a graph a frame costs five input copies, the replay and a copy out. The graph runs
the same kernels on the same weights (the optimiser updates them in place, and autocast casts them
inside the graph), so the rollout is the eager one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aapt_ros.model.generator import CausalGenerator
from aapt_ros.model.kv_cache import KVCache
from aapt_ros.model.sampling import velocity_to_x0
from aapt_ros.streaming import cuda_graphs


@dataclass
class FrameStep:
    """One captured step: the inputs it reads and the x0 it writes, all at fixed addresses."""

    graph: torch.cuda.CUDAGraph
    cache: KVCache
    every: torch.Tensor  # (B,) bool, the commit mask: kept here, or its memory would be reused while the graph reads it
    noisy: torch.Tensor  # (B, C, h, w)
    previous: torch.Tensor  # (B, C, h, w)
    rays: torch.Tensor  # (B, R, h, w)
    action: torch.Tensor  # (B, A)
    t: torch.Tensor  # (B,)
    x0: torch.Tensor  # (B, C, h, w), written by each replay

    def __call__(
        self, noisy: torch.Tensor, previous: torch.Tensor, rays: torch.Tensor, action: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """x0 of one frame, as ``net.step`` and ``velocity_to_x0`` give it (a copy: the next replay
        overwrites the graph's)."""
        inputs = (noisy, previous, rays, action, t)
        for buffer, value in zip((self.noisy, self.previous, self.rays, self.action, self.t), inputs, strict=True):
            buffer.copy_(value)
        self.graph.replay()
        return self.x0.clone()


class RolloutGraphs:
    """Captured frame steps of one generator, one per input shape, dtype and autocast setting. CUDA only."""

    def __init__(self, net: CausalGenerator):
        self.net = net
        self._frames: dict[tuple[object, ...], FrameStep] = {}

    def frame_step(
        self, noisy: torch.Tensor, rays: torch.Tensor, actions: torch.Tensor, t: torch.Tensor, cache_dtype: torch.dtype
    ) -> FrameStep:
        """The captured step for a rollout of these (B, F, ...) inputs, its KV cache emptied."""
        frame = self._frame(noisy, rays, actions, t, cache_dtype)
        frame.cache.reset()
        return frame

    def _frame(
        self, noisy: torch.Tensor, rays: torch.Tensor, actions: torch.Tensor, t: torch.Tensor, cache_dtype: torch.dtype
    ) -> FrameStep:
        device = noisy.device
        autocast = torch.is_autocast_enabled(device.type)
        key = (*((x.shape, x.dtype) for x in (noisy, rays, actions, t)), cache_dtype, autocast)
        if key not in self._frames:
            self._frames[key] = self._capture(noisy, rays, actions, t, cache_dtype, autocast)
        return self._frames[key]

    @torch.no_grad()
    def _capture(
        self,
        noisy: torch.Tensor,
        rays: torch.Tensor,
        actions: torch.Tensor,
        t: torch.Tensor,
        cache_dtype: torch.dtype,
        autocast: bool,
    ) -> FrameStep:
        cache = KVCache.allocate(self.net.config, noisy.shape[0], noisy.device, cache_dtype)
        every = torch.ones(noisy.shape[0], dtype=torch.bool, device=noisy.device)
        frame_noisy, previous, frame_rays, action, frame_t = (
            torch.zeros_like(x[:, 0]) for x in (noisy, noisy, rays, actions, t)
        )
        x0: list[torch.Tensor] = []  # allocated by the first warm-up call, outside the graph's memory

        def step() -> None:
            # Autocast's weight cache must be off in a graph: the cast copies are made inside it.
            with torch.autocast(noisy.device.type, dtype=torch.bfloat16, enabled=autocast, cache_enabled=False):
                velocity = self.net.step(frame_noisy, previous, frame_rays, action, frame_t, cache, commit=every)
                frame_x0 = velocity_to_x0(frame_noisy, velocity, frame_t)
            if not x0:
                x0.append(torch.empty_like(frame_x0))
            x0[0].copy_(frame_x0)

        graph = cuda_graphs.capture(step)
        return FrameStep(graph, cache, every, frame_noisy, previous, frame_rays, action, frame_t, x0[0])
