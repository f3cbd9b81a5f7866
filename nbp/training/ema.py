"""The exponential moving average of a model's weights, one for every training system: what FAR and the tokenizers
release. Under DeepSpeed ZeRO-3 each rank moves its own shard of every parameter (both copies are partitioned
alike); buffers (BatchNorm's running statistics) are the live model's, as FAR exports them."""
from __future__ import annotations

import copy

import torch


def ema_copy(model: torch.nn.Module, decay: float) -> torch.nn.Module | None:
    """A frozen copy of `model` to average into, or None when the decay is 0 (no EMA)."""
    return copy.deepcopy(model).requires_grad_(False) if decay > 0 else None


def shard(parameter: torch.Tensor) -> torch.Tensor:
    """This rank's part of a parameter: the whole of it, or its partition under DeepSpeed ZeRO-3."""
    return getattr(parameter, "ds_tensor", parameter)


@torch.no_grad()
def update_ema(shadow: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    """shadow <- decay * shadow + (1 - decay) * live, parameter by parameter (shard by shard); buffers copied."""
    averaged = [shard(p) for p in shadow.parameters()]
    current = [shard(p).detach().to(a.dtype) for p, a in zip(live.parameters(), averaged)]
    torch._foreach_lerp_(averaged, current, 1 - decay)
    for average, buffer in zip(shadow.buffers(), live.buffers()):
        average.copy_(buffer)
