"""Seeds of named draws: one integer from a run's seed and the indices that name a draw (a batch, a rank, a sample,
a stream), so that a draw does not depend on what else ran before it: a resumed run, another batch split or
another rank draws the same numbers for the same thing."""
from __future__ import annotations

import torch

MIXERS = (1_000_003, 8191, 7)  # primes: seed * 1,000,003 + first index, then * 8191 + the next, then * 7 + the next


def draw_seed(seed: int, *indices: int) -> int:
    if len(indices) > len(MIXERS):
        raise ValueError(f"a draw is named by at most {len(MIXERS)} indices, got {len(indices)}")
    value = seed
    for mixer, index in zip(MIXERS, indices):
        value = value * mixer + index
    return value


def generator_for(seed: int, *indices: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded by `draw_seed(seed, *indices)`."""
    return torch.Generator(device).manual_seed(draw_seed(seed, *indices))
