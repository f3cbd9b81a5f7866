"""Decoding modes, shared by both families: how a cached step runs.

- "dynamic": the cache grows with the video; every step has new shapes (the CPU's path);
- "static": fixed shapes over a cache of full capacity, the columns not yet written masked out, run eagerly;
- "cuda-graphs": the static step captured once as a CUDA graph and replayed (one launch per step: a block of
  tokens, or a FAR frame's Euler steps);
- "compiled": the same, of the `torch.compile`d step;
- "auto": CUDA graphs on a GPU, dynamic elsewhere.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from nbp.config import InputError
from nbp.settings.generation import check_decoding

T = TypeVar("T")


def resolve_decoding(decoding: str, device: torch.device, cached: bool = True) -> str:
    """The mode that runs: "auto" resolved for `device` (without a cache, always "dynamic"); a graph mode off CUDA is
    a clear error."""
    check_decoding(decoding)
    if decoding == "auto":
        return "cuda-graphs" if device.type == "cuda" and cached else "dynamic"
    if replays_graphs(decoding) and device.type != "cuda":
        raise InputError("CUDA graphs need the model on a CUDA device")
    return decoding


def replays_graphs(decoding: str) -> bool:
    return decoding in ("cuda-graphs", "compiled")


def fixed_shapes(decoding: str) -> bool:
    return decoding != "dynamic"


def compiled_if(step: Callable, decoding: str) -> Callable:
    """The step, `torch.compile`d for "compiled" (fixed shapes: one compilation per step width)."""
    return torch.compile(step, dynamic=False) if decoding == "compiled" else step


def capture_graph(step: Callable[[], T], generators: list[torch.Generator] = ()) -> tuple[torch.cuda.CUDAGraph, T]:
    """A CUDA graph of `step()` over its fixed input buffers, and its output (overwritten by every replay). Two
    warm-up runs go first on a side stream (compilation, cuDNN's choices); they run the step for real, so it must
    write only what its replay writes again. `generators` that the step draws from are registered with the graph,
    so each replay draws new numbers."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        out = step()
    return graph, out
