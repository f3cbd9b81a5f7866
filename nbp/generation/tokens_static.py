"""Decoding with shapes that never change, so a GPU can replay each step as one CUDA graph (gpt-fast's recipe).

A dynamic `KVCache` attends over the filled prefix, which grows every step: every step has new shapes and
host-side positions, so each of its kernels is launched from Python (about 15 per layer), and on a GPU a small
model's step then costs many times the time it takes to read its weights. Here instead:
- the `KVCache` is of fixed shape: a step writes at device-side positions (`write_at`), and attention covers the
  whole capacity, the columns not yet written masked out by their positions;
- `StaticDecoder` runs the prompt eagerly, then captures each step width's forward and sampling once as a CUDA
  graph (optionally of the `torch.compile`d step, whose fused kernels are fewer) and replays it: one launch per
  step, and no host sync until the codes are read at the end.
Without CUDA the same static step runs eagerly: that is how the tests check it against the dynamic path. Its
logits equal the dynamic path's to rounding, so greedy and plain sampled codes agree; with top-k the order of the
unsorted candidates follows the values, so the same seed may draw other (equally distributed) codes.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from nbp.config import InputError
from nbp.generation.decoding import capture_graph, compiled_if, replays_graphs, resolve_decoding
from nbp.models.kv_cache import KVCache
from nbp.models.transformer import Transformer


def static_cache(model: Transformer, rows: int, capacity: int) -> KVCache:
    """A `KVCache` of fixed shape for `rows` sequences, in the model's dtype."""
    weight = model.tok_emb.weight
    return KVCache(model.config, rows, capacity, weight.device, weight.dtype, transposed_keys=False, fixed_shape=True)


def static_prefill(model: Transformer, prompt: torch.Tensor, cache: KVCache, drop: torch.Tensor | None,
                   last: int, coords: torch.Tensor | None) -> torch.Tensor:
    """Logits (B, last, V) of the prompt (B, n) run into the empty cache under the layout's mask; `coords`
    (capacity, 3): every position's rotary coordinates (None: the official model's learned positions)."""
    n = prompt.shape[1]
    mask = torch.zeros(n, cache.capacity, dtype=torch.bool, device=prompt.device)
    mask[:, :n] = model.layout.mask(n, prompt.device).dense
    positions = cache.columns[:n]
    cache.write_at(positions)
    return model.run_layers(model.embed(prompt, 0, drop), mask, coords_at(coords, positions), cache, last)


def static_step(model: Transformer, ids: torch.Tensor, positions: torch.Tensor, cache: KVCache,
                last: int, coords: torch.Tensor | None) -> torch.Tensor:
    """Logits (B, last, V) after feeding ids (B, n) at device positions (n,), the cached positions before them
    visible (a step's inputs see each other: the block is attended in full). Decode steps come after the
    condition prefix, so no condition is dropped here."""
    x = model.embed(ids, positions, None)
    cache.write_at(positions)
    visible = (cache.positions <= positions[-1])[None]  # (1, capacity): unwritten columns are at UNWRITTEN
    return model.run_layers(x, visible, coords_at(coords, positions), cache, last)


def coords_at(coords: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor | None:
    return None if coords is None else coords[positions]


class StaticDecoder:
    """A static cache and the decode step for `rows` sequences; `sample` (logits (rows, width, V) -> ids (B, width))
    is part of the step, which samples as many positions as it feeds. With `graphs`, each step width is captured
    once as a CUDA graph and replayed; the `generators` that `sample` draws from (one, one per row, or none: the
    default CUDA generator) are then registered with the graphs, so each replay draws new numbers from them.
    `decoding` is "static" (eager), "cuda-graphs" or "compiled" (`nbp.generation.decoding`)."""

    def __init__(self, model: Transformer, rows: int, capacity: int, sample: Callable, decoding: str = "static",
                 generators: list[torch.Generator] = ()):
        self.model, self.sample, self.generators = model, sample, list(generators)
        self.graphs = replays_graphs(resolve_decoding(decoding, model.tok_emb.weight.device))
        self.cache = static_cache(model, rows, capacity)
        # (capacity, 3) rotary coordinates of every position (None: the official model's learned positions)
        self.coords = model.layout.positions(capacity, model.tok_emb.weight.device) if model.config.arch == "modern" \
            else None
        self.length = 0
        self.step_fn = compiled_if(self.run_step, decoding)
        self.captured: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def run_step(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        return self.sample(static_step(self.model, ids, positions, self.cache, n, self.coords))

    def prefill(self, prompt: torch.Tensor, drop: torch.Tensor | None, width: int) -> torch.Tensor:
        """Sampled ids (B, width) of the prompt's last `width` positions."""
        logits = static_prefill(self.model, prompt, self.cache, drop, width, self.coords)
        self.length = prompt.shape[1]
        return self.sample(logits)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ids (rows, n) after the cached positions; the sampled ids of the step's logits."""
        n = ids.shape[1]
        if self.length + n > self.cache.capacity:
            raise InputError(f"KV cache holds {self.cache.capacity} positions; {self.length + n} needed")
        positions = self.cache.columns[self.length:self.length + n]
        self.length += n
        if not self.graphs:
            return self.step_fn(ids, positions)
        if n not in self.captured:
            self.captured[n] = self.capture(ids, positions)
        graph, ids_in, positions_in, out = self.captured[n]
        ids_in.copy_(ids)
        positions_in.copy_(positions)
        graph.replay()
        return out.clone()  # the next replay overwrites `out`

    def capture(self, ids: torch.Tensor, positions: torch.Tensor):
        """A CUDA graph of one step of width n, its static inputs and output. The warm-up runs write the cache at
        the step's own positions, which the replay then writes again."""
        ids_in, positions_in = ids.clone(), positions.clone()
        graph, out = capture_graph(lambda: self.step_fn(ids_in, positions_in), self.generators)
        return graph, ids_in, positions_in, out
