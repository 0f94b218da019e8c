"""Capture a no-argument function that reads and writes fixed tensors as a CUDA graph."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

WARMUP_CALLS = 3  # eager calls on a side stream before capture, as torch.cuda.graphs asks


def capture(fn: Callable[[], object], generators: Sequence[torch.Generator] = ()) -> torch.cuda.CUDAGraph:
    """Warm ``fn`` up, then record it; ``graph.replay()`` re-runs its kernels on the same memory.

    Random draws from ``generators`` inside ``fn`` advance on every replay. The warm-up calls
    run ``fn`` for real, so callers reset any state it mutates.
    """
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        fn()
    return graph
