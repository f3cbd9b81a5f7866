"""Keys and values kept between forward passes, one room for both families: each layer's keys and values at
positions along the sequence, appended as a video is generated so that earlier positions are computed once.

- `KVCache` (the token family): one preallocated buffer per layer of a fixed capacity, filled left to right (the
  `TransformerConfig`'s layers and heads); `nbp.generation.tokens_static.StaticKVCache` is its fixed-shape twin,
  written at device-side positions for CUDA graphs.
- `KVLevel` (FAR): the keys and values of some frames with each key's frame index (the frame-causal mask reads
  them); FAR_Long keeps two levels (long-term frames, the window's clean frames), `nbp.generation.far_context`
  holds them, and its `StaticContext` is the fixed-shape twin.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nbp.config import InputError
from nbp.models.transformer_attention import matmul_decoding


class KVCache:
    """Preallocated keys and values of every layer, (layers, B, H, capacity, d); `length` positions filled.
    Attention reads a layer's filled prefix in place. Keys are stored transposed, (layers, B, H, d, capacity),
    where decoding steps attend by matmuls (`matmul_decoding`: bf16 on CPUs without AMX), whose q @ k^T then reads a
    unit-stride matrix (a (capacity, d) prefix slice is copied first: 0.31 against 0.10 ms per layer for 16
    queries over 528 keys, AMD EPYC); SDPA reads them untransposed."""

    def __init__(self, cfg, batch: int, capacity: int, device, dtype,
                 transposed_keys: bool | None = None):
        head_dim = cfg.n_embd // cfg.n_head
        if transposed_keys is None:
            transposed_keys = matmul_decoding(dtype, torch.device(device).type)
        self.transposed_keys = transposed_keys
        keys = (head_dim, capacity) if transposed_keys else (capacity, head_dim)
        self.keys = torch.empty(cfg.n_layer, batch, cfg.n_head, *keys, device=device, dtype=dtype)
        self.values = torch.empty(cfg.n_layer, batch, cfg.n_head, capacity, head_dim, device=device, dtype=dtype)
        self.length = 0
        self.pending = 0

    @property
    def capacity(self) -> int:
        return self.values.shape[3]

    @property
    def nbytes(self) -> int:
        return 2 * self.values.numel() * self.values.element_size()

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, H, n, d) after the filled positions; return all keys and values (B, H, filled + n, d)."""
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

    def commit(self) -> None:
        """After all layers have appended one step's positions."""
        self.length += self.pending
        self.pending = 0

    def clear(self) -> None:
        """Empty, keeping its buffers (a world model's window re-encoded as it slides)."""
        self.length = self.pending = 0


@dataclass
class KVLevel:
    """Keys (after qk-norm and RoPE) and values of some frames in every layer, with each key's frame."""
    keys: list[torch.Tensor]  # per layer (B, heads, L, head_dim)
    values: list[torch.Tensor]
    frames: torch.Tensor  # (L,)

    @staticmethod
    def concat(levels: list[KVLevel], layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not levels:
            return None
        if len(levels) == 1:
            return levels[0].keys[layer], levels[0].values[layer]
        return (torch.cat([level.keys[layer] for level in levels], dim=2),
                torch.cat([level.values[layer] for level in levels], dim=2))

    def extend(self, other: KVLevel) -> KVLevel:
        return KVLevel([torch.cat(p, dim=2) for p in zip(self.keys, other.keys)],
                       [torch.cat(p, dim=2) for p in zip(self.values, other.values)],
                       torch.cat([self.frames, other.frames]))
