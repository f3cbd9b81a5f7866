"""Keys and values kept between forward passes: one cache for both families, so that earlier positions are
computed once as a video is generated.

`KVCache` holds every layer's keys and values in preallocated columns, and each column's position: the token's index
in the sequence (the token family), or its frame (FAR, whose frame-causal mask reads them). It is written in one of
two ways, one per decoding mode (`nbp.generation.decoding`):
- dynamic: `append` writes a step after the `length` filled columns and attention reads the filled prefix;
  `commit(positions)` counts the step in, and a step not committed (a FAR denoising step, which the next one
  replaces) leaves the cache as it was;
- fixed shapes: after `write_at(columns, positions)`, `append` writes at those device-side columns and attention
  reads every column, the ones never written at position UNWRITTEN (after any query, so every causal mask hides
  them): the shapes never change and no position crosses to the host, so a GPU can replay the step as one CUDA graph.
A world model's window (`nbp.generation.frames`) clears it as it slides; FAR's context (`nbp.generation.far_context`)
keeps the long-term frames first and the window's clean frames after them, truncated when the window slides.
"""
from __future__ import annotations

import torch

from nbp.config import InputError
from nbp.models.transformer_attention import matmul_decoding

UNWRITTEN = 1 << 30  # the position of a column never written: after every query, so masked out


def attention_shape(cfg) -> tuple[int, int, int]:
    """(layers, heads, head width) of a `TransformerConfig` or a `FARConfig`."""
    if hasattr(cfg, "n_layer"):
        return cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
    return cfg.num_layers, cfg.num_heads, cfg.head_dim


class KVCache:
    """Keys and values of every layer, (layers, B, H, capacity, d), and `positions` (capacity,) (module docstring).
    Keys may be stored transposed, (layers, B, H, d, capacity), where the token family's decoding steps attend by
    matmuls (`matmul_decoding`: bf16 on CPUs without AMX), whose q @ k^T then reads a unit-stride matrix (a
    (capacity, d) prefix slice is copied first: 0.31 against 0.10 ms per layer for 16 queries over 528 keys, AMD
    EPYC). With `fixed_shape` the buffers start at zero, so that a masked column's weight is exactly 0 (0 x garbage
    could be NaN)."""

    def __init__(self, cfg, batch: int, capacity: int, device, dtype, transposed_keys: bool | None = None,
                 fixed_shape: bool = False):
        if transposed_keys is None:
            transposed_keys = matmul_decoding(dtype, torch.device(device).type)
        self.transposed_keys, self.fixed_shape = transposed_keys, fixed_shape
        self.shape = (*attention_shape(cfg), batch)
        self.keys, self.values = self.buffers(capacity, device, dtype)
        self.columns = torch.arange(capacity, device=device)
        self.positions = torch.full((capacity,), UNWRITTEN, device=device)
        self.length = 0
        self.pending = 0
        self.at: torch.Tensor | None = None  # the columns a fixed-shape step writes (`write_at`)

    def buffers(self, capacity: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        layers, heads, head_dim, batch = self.shape
        keys = (head_dim, capacity) if self.transposed_keys else (capacity, head_dim)
        new = torch.zeros if self.fixed_shape else torch.empty
        return (new(layers, batch, heads, *keys, device=device, dtype=dtype),
                new(layers, batch, heads, capacity, head_dim, device=device, dtype=dtype))

    @property
    def capacity(self) -> int:
        return self.values.shape[3]

    @property
    def nbytes(self) -> int:
        return 2 * self.values.numel() * self.values.element_size()

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, n, d); return the keys and values attention reads: (B, H, filled + n, d), or every
        column (B, H, capacity, d) in a fixed-shape step."""
        if self.at is not None:
            return self.append_at(layer, k, v)
        start, n = self.length, k.shape[2]
        if start + n > self.capacity:
            raise InputError(f"KV cache holds {self.capacity} positions; {start + n} needed")
        if self.transposed_keys:
            self.keys[layer, ..., start:start + n] = k.transpose(-2, -1)
            keys = self.keys[layer, ..., :start + n].transpose(-2, -1)
        else:
            self.keys[layer, :, :, start:start + n] = k
            keys = self.keys[layer, :, :, :start + n]
        self.values[layer, :, :, start:start + n] = v
        self.pending = n
        return keys, self.values[layer, :, :, :start + n]

    def append_at(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transposed_keys:
            self.keys[layer].index_copy_(3, self.at, k.transpose(-2, -1))
            keys = self.keys[layer].transpose(-2, -1)
        else:
            self.keys[layer].index_copy_(2, self.at, k)
            keys = self.keys[layer]
        self.values[layer].index_copy_(2, self.at, v)
        return keys, self.values[layer]

    def key_positions(self, query_positions: torch.Tensor) -> torch.Tensor:
        """The position of every key the step's queries (at `query_positions`, (n,)) read, in `append`'s order."""
        if self.at is not None:
            return self.positions
        return torch.cat([self.positions[:self.length], query_positions])

    def commit(self, positions: torch.Tensor | None = None) -> None:
        """After all layers have appended one step: its columns are filled, at `positions` (n,) (by default their
        indices). A fixed-shape step's columns were placed by `write_at`."""
        if self.at is None:
            end = self.length + self.pending
            self.positions[self.length:end] = self.columns[self.length:end] if positions is None else positions
            self.length = end
        self.pending = 0

    def discard(self) -> None:
        """Forget the step appended last: the next one writes over it."""
        self.pending = 0

    def write_at(self, columns: torch.Tensor | None, positions: torch.Tensor | None = None) -> None:
        """Make the next steps fixed-shape ones writing at `columns` (n,), device-side, at `positions` (n,) (by
        default the columns' indices); None returns to dynamic steps."""
        self.at = columns
        if columns is not None:
            self.positions.index_copy_(0, columns, columns if positions is None else positions)

    def truncate(self, length: int) -> None:
        """Keep the first `length` columns (their buffers stay allocated)."""
        self.length, self.pending = length, 0
        self.positions[length:] = UNWRITTEN

    def clear(self) -> None:
        """Empty, keeping its buffers (a world model's window re-encoded as it slides)."""
        self.truncate(0)

    def reserve(self, capacity: int) -> None:
        """Room for `capacity` columns: a dynamic cache grows (at least doubling, the filled columns copied); a
        fixed-shape one cannot (a captured CUDA graph reads its buffers)."""
        if capacity <= self.capacity:
            return
        if self.fixed_shape:
            raise InputError(f"the fixed-shape KV cache holds {self.capacity} positions; {capacity} needed")
        old_keys, old_values, filled = self.keys, self.values, self.length
        capacity = max(capacity, 2 * self.capacity)
        self.keys, self.values = self.buffers(capacity, old_values.device, old_values.dtype)
        key_axis = 4 if self.transposed_keys else 3
        self.keys.narrow(key_axis, 0, filled).copy_(old_keys.narrow(key_axis, 0, filled))
        self.values[:, :, :, :filled] = old_values[:, :, :, :filled]
        positions = self.positions
        self.columns = torch.arange(capacity, device=positions.device)
        self.positions = torch.full((capacity,), UNWRITTEN, device=positions.device)
        self.positions[:filled] = positions[:filled]
