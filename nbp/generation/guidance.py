"""Classifier-free guidance, shared by both families.

A guided step runs every row twice in one batch: the conditional rows first, then the same rows unconditional (the
null class, text or action; `double_rows`). The model's outputs of the two halves, logits or velocities, combine as
u + cfg_scale * (c - u) (`guide_rows`). `cfg_scale` is the one name of the scale: 1 is the conditional model alone;
the token family also takes None (off) and a schedule over the steps, FAR also -1 (action-free sampling).
"""
from __future__ import annotations

import torch

from nbp.config import InputError
from nbp.settings.generation import SCHEDULES


def guide(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance: u + scale * (c - u)."""
    return unconditional + scale * (conditional - unconditional)


def guide_rows(out: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Guided output (B, ...) of a doubled batch's output (2B, ...): conditional rows, then unconditional."""
    conditional, unconditional = out.chunk(2)
    return guide(conditional, unconditional, scale)


def is_guided(cfg_scale: float | None, has_condition: bool) -> bool:
    """Whether a step runs doubled: a condition to drop, and a scale other than 1 (None: off)."""
    return cfg_scale is not None and cfg_scale != 1.0 and has_condition


def double_rows(x: torch.Tensor | None, doubled: bool) -> torch.Tensor | None:
    """Guidance runs every row twice: the conditional rows, then the same rows unconditional."""
    return torch.cat([x, x]) if doubled and x is not None else x


def with_null_rows(ids: torch.Tensor | None, null_id: int) -> torch.Tensor | None:
    """Condition ids (B, ...) doubled as guidance runs them: the ids, then the null id in every place."""
    return None if ids is None else torch.cat([ids, torch.full_like(ids, null_id)])


def guidance_scale(scale: float, step: int, steps: int, schedule: str = "constant") -> float:
    """`constant`, or `linear`: rising from 1 at the first step to `scale` at the last (as MUSE/NBP-style samplers)."""
    if schedule == "constant" or steps <= 1:
        return scale
    if schedule == "linear":
        return 1 + (scale - 1) * step / (steps - 1)
    raise InputError(f"guidance schedule must be one of {SCHEDULES}, got {schedule!r}")
