"""Finite scalar quantization (FSQ) with the bound of the official NBP checkpoints as an option.

vector-quantize-pytorch's FSQ bounds each channel with `tanh(z + atanh(offset / half_l)) * half_l - offset`
where `half_l = (L - 1) * (1 + eps) / 2`. The official NBP tokenizer used `tan` instead of `atanh` and
`(1 - eps)` instead of `(1 + eps)`, which moves about 2% of the indices; checkpoints trained with it
need it back. Everything else (index packing, codes <-> indices) is vector-quantize-pytorch's.
"""
from __future__ import annotations

import torch
from vector_quantize_pytorch import FSQ
from vector_quantize_pytorch.finite_scalar_quantization import round_ste

from nbp.config import InputError
from nbp.settings.models import BOUNDS


class BoundedFSQ(FSQ):
    """FSQ whose bound is `"standard"` (vector-quantize-pytorch) or `"official"` (NBP's release)."""

    def __init__(self, levels: list[int], bound: str = "standard", eps: float = 1e-3):
        if bound not in BOUNDS:
            raise InputError(f"fsq_bound must be one of {BOUNDS}, got {bound!r}")
        super().__init__(levels=list(levels), channel_first=True)
        self.bound_mode = bound
        self.eps = eps

    def bound(self, z: torch.Tensor, eps: float = 1e-3, hard_clamp: bool = False) -> torch.Tensor:
        if self.bound_mode == "standard":
            return super().bound(z, eps=self.eps, hard_clamp=hard_clamp)
        return round_ste(self.unrounded(z)) / (self._levels // 2)

    def unrounded(self, z: torch.Tensor) -> torch.Tensor:
        """The bounded latent (..., d) before rounding: a code is its nearest integer, so a value near k + 1/2 sits
        on a bin edge."""
        sign = 1 if self.bound_mode == "standard" else -1
        half_l = (self._levels - 1) * (1 + sign * self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l) if self.bound_mode == "standard" else torch.tan(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset
