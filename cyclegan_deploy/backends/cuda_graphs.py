"""CUDA graphs for the torch backend: one graph captured per (call kind, input shape) after warm-up calls on a
side stream (so cuDNN's algorithm search and lazy inits are done), with a static device input, its outputs,
and pinned host buffers for the copies; the last GRAPH_SHAPES are kept (a video uses one shape, bench a few).
The capture is thread-local: it runs in video's inference thread, and other threads' CUDA calls are not its
error. Torch is passed in, never imported here."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

GRAPH_SHAPES = 4  # captured graphs (and their buffers) kept: a video uses one shape, bench a few
GRAPH_WARMUP = 3  # eager calls on a side stream before capture (cuDNN's algorithm search, lazy inits)


@dataclass
class Captured:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: Any  # static device input the graph reads
    outputs: tuple[Any, ...]  # static device outputs it writes
    host_in: Any  # pinned host staging buffers
    host_out: tuple[Any, ...]


class GraphCache:
    def __init__(self, torch: Any, device: str) -> None:
        self.torch, self.device = torch, device
        self.graphs: OrderedDict[tuple[str, tuple[int, ...]], Captured] = OrderedDict()

    def get(self, kind: str, host: np.ndarray, fn: Callable[[Any], tuple[Any, ...]]) -> Captured:
        """The graph of `fn` for `host`'s shape, captured on first use (`host` gives its example input)."""
        key = (kind, tuple(host.shape))
        if (hit := self.graphs.get(key)) is not None:
            self.graphs.move_to_end(key)
            return hit
        torch = self.torch
        static = torch.from_numpy(host).to(self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                fn(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = fn(static)
        captured = Captured(graph, static, outputs, torch.empty_like(static, device="cpu").pin_memory(),
                            tuple(torch.empty(o.shape, dtype=o.dtype).pin_memory() for o in outputs))
        self.graphs[key] = captured
        while len(self.graphs) > GRAPH_SHAPES:
            self.graphs.popitem(last=False)
        return captured

    def __getitem__(self, key: tuple[str, tuple[int, ...]]) -> Captured:
        return self.graphs[key]

    def clear(self) -> None:
        self.graphs.clear()
