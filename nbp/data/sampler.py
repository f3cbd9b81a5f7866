"""A resumable, endless shuffling sampler: the sample stream follows from the seed alone.

The stream is epoch after epoch of permutations drawn from (seed, epoch). `start` skips the samples already
consumed, so a run restarted at batch b with `start = b * batch_size` (per rank) continues exactly where it
stopped: no sample is seen twice or skipped. With `draws=True` each index comes with a random seed drawn from
(seed, epoch, index), which `VideoDataset` uses to place its random window: the whole stream is reproducible.
Training loops stop by step count (`max_steps`), not by epochs.
"""
from __future__ import annotations

import itertools

import torch
from torch.utils.data import Sampler

from nbp.config import InputError
from nbp.seeds import generator_for


class ResumableSampler(Sampler):
    def __init__(self, length: int, seed: int = 0, start: int = 0, shuffle: bool = True, draws: bool = False,
                 rank: int = 0, world_size: int = 1):
        if length < world_size:
            raise InputError(f"{length} samples cannot be shared by {world_size} ranks")
        self.length, self.seed, self.start, self.shuffle, self.draws = length, seed, start, shuffle, draws
        self.rank, self.world_size = rank, world_size

    def epoch_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        generator = generator_for(self.seed, epoch)
        return torch.randperm(self.length, generator=generator).tolist()

    def stream(self):
        """(epoch, index) pairs of this rank, forever."""
        per_rank = self.length // self.world_size
        for epoch in itertools.count():
            for index in self.epoch_order(epoch)[self.rank::self.world_size][:per_rank]:
                yield epoch, index

    def __iter__(self):
        for epoch, index in itertools.islice(self.stream(), self.start, None):
            yield (index, hash((self.seed, epoch, index)) & 0x7FFFFFFF) if self.draws else index
