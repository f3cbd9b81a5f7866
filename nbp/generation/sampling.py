"""Samplers as small pure functions over logits (..., V), and the token family's sampling settings."""
from __future__ import annotations

import numpy as np
import torch

from nbp.config import InputError
from nbp.settings.generation import SamplingConfig as SamplingConfig  # importable from here as before


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering, independently at every position."""
    logits = logits.float() / max(temperature, 1e-8)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative - sorted_logits.softmax(dim=-1) > top_p  # keep the token that crosses p
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def sample(logits: torch.Tensor, greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """One id per position from filtered logits (..., V)."""
    if greedy:
        return logits.float().argmax(dim=-1)  # exact; bf16 argmax on CPU is 5x slower (16 x 64,000: 1.9 ms, `bench/decode.py`)
    probs = logits.softmax(dim=-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.view(probs.shape[:-1])


def nucleus_threshold(probs: torch.Tensor, top_p: float, iterations: int = 24) -> torch.Tensor:
    """Per row, the largest probability t such that the tokens with probability >= t hold at least `top_p` of the
    mass: the nucleus of top-p sampling, found by bisection (no sort, no host sync: the GPU path). Returns (..., 1)."""
    low = torch.zeros_like(probs[..., :1])
    high = probs.amax(dim=-1, keepdim=True)
    for _ in range(iterations):
        middle = (low + high) / 2
        enough = (probs * (probs >= middle)).sum(dim=-1, keepdim=True) >= top_p
        low, high = torch.where(enough, middle, low), torch.where(enough, high, middle)
    return low


def top_k_numpy(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest logits of every row (R, V) and their ids, unordered, by NumPy's SIMD selection: 16 x 64,000
    with k = 16,000 takes 2.9 ms where `torch.topk` takes 12-15 ms (Intel AMX, one thread, `bench/decode_step.py`)."""
    ids = torch.from_numpy(np.argpartition(logits.numpy(), logits.shape[-1] - k, axis=-1)[:, -k:])
    return logits.gather(-1, ids), ids


def nucleus_floor_numpy(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Per row (R, n), the smallest logit of the nucleus: going down the sorted logits, the one at which the
    softmax mass first reaches `top_p` (NumPy's SIMD sort: ~1 ms for 16 x 16,000). Returns (R, 1)."""
    descending = torch.from_numpy(np.sort(logits.numpy(), axis=-1)).flip(-1)
    mass = (descending - descending[:, :1]).exp().cumsum(-1, dtype=torch.float64)
    crossing = (mass < top_p * mass[:, -1:]).sum(-1, keepdim=True).clamp_max(logits.shape[-1] - 1)
    return descending.gather(-1, crossing)


def kept_numpy(logits: torch.Tensor, top_k: int | None, top_p: float | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`kept_weights` on a CPU: NumPy's selection for top-k, its sort of the k candidates for the nucleus."""
    logits = logits.detach().contiguous()
    logits, candidates = top_k_numpy(logits, top_k) if narrows(logits, top_k) else (logits, None)
    weights = (logits - logits.amax(-1, keepdim=True)).exp()
    if top_p is not None and top_p < 1.0:
        weights = weights * (logits >= nucleus_floor_numpy(logits, top_p))
    return weights, candidates


def kept_torch(logits: torch.Tensor, top_k: int | None, top_p: float | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`kept_weights` with torch operations only and no host sync, so that a CUDA graph can hold it."""
    logits, candidates = torch.topk(logits, top_k, dim=-1, sorted=False) if narrows(logits, top_k) else (logits, None)
    probs = logits.softmax(dim=-1)
    if top_p is not None and top_p < 1.0:
        probs = probs * (probs >= nucleus_threshold(probs, top_p))
    return probs, candidates


def narrows(logits: torch.Tensor, top_k: int | None) -> bool:
    return top_k is not None and top_k < logits.shape[-1]


def kept_weights(logits: torch.Tensor, top_k: int | None, top_p: float | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unnormalised probabilities of the tokens that top-k and top-p keep (zero elsewhere) over rows (R, V), and
    the candidates' ids when top-k has narrowed the rows to its k candidates (else None)."""
    keep = kept_numpy if logits.device.type == "cpu" else kept_torch
    return keep(logits, top_k, top_p)


def uniforms(shape: tuple[int, ...], generator, device) -> torch.Tensor:
    """Uniform numbers of `shape`, from one generator, or from one generator per row (a list): then a row's draws
    depend on its own seed only, whatever else is in the batch."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise InputError(f"{len(generator)} generators for {shape[0]} rows")
        return torch.stack([torch.rand(shape[1:], generator=g, device=device) for g in generator])
    return torch.rand(shape, generator=generator, device=device)


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, greedy: bool = False,
                  generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
    """The distribution of `sample(filter_logits(...))`, computed without sorting the vocabulary.

    Top-k takes its k candidates unsorted, the nucleus is a threshold (on a CPU from the sorted candidates, on a
    GPU by bisection, without a host sync), and the draw inverts the cumulative sum of the kept probabilities with
    one uniform number per position (no multinomial over the vocabulary): a 16-position step over 64,000 codes with
    top-k 16,000 and top-p 0.9 takes 8-9 ms on one CPU core, against 28 ms with `torch.topk` and the bisection and
    ~90 ms for a sort of the vocabulary (Intel Xeon, `bench/decode_step.py`).
    """
    if greedy:
        return logits.float().argmax(dim=-1)
    leading = logits.shape[:-1]
    logits = logits.float().reshape(-1, logits.shape[-1])  # (R, V)
    if temperature != 1.0:  # one pass over the logits fewer in the common case
        logits = logits / max(temperature, 1e-8)
    weights, candidates = kept_weights(logits, top_k, top_p)
    cumulative = weights.cumsum(dim=-1)
    u = uniforms(leading + (1,), generator, cumulative.device).reshape(-1, 1)
    choice = torch.searchsorted(cumulative, u * cumulative[:, -1:]).clamp_max(cumulative.shape[-1] - 1)
    return (candidates.gather(-1, choice) if candidates is not None else choice).view(leading)
