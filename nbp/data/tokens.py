"""Token datasets: tokenizer codes of every clip, stored once in memory-mapped shards.

Layout of a token dataset folder:
    meta.json                      vocabulary, latent grid (T', h, w), classes, clip settings, shard size
    shard_00000.tokens.npy         uint16 (n, T'*h*w) codes in raster order (t, h, w)
    shard_00000.labels.npy         int32 (n,) class indices
    shard_00000.paths.json         source file of each row
Disk cost: 2 bytes per token (+4 per label), i.e. 2,560 bytes for a 17x128x128 clip (5x16x16 tokens).
A shard is written to a temporary name and renamed when complete, so an interrupted run keeps every finished
shard and `write_token_dataset` resumes at the first missing one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from nbp.checkpoint import atomic_write

META = "meta.json"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def shard_ranges(num_clips: int, shard_size: int) -> list[range]:
    return [range(start, min(start + shard_size, num_clips)) for start in range(0, num_clips, shard_size)]


def write_meta(folder: Path, meta: dict) -> None:
    """Write meta.json, or check that an existing one (a run being resumed) describes the same dataset."""
    path = folder / META
    if path.exists():
        old = json.loads(path.read_text())
        changed = {k for k in meta if old.get(k) != meta[k]}
        if changed:
            raise ValueError(f"{folder} holds a token dataset made with other settings ({sorted(changed)}); "
                             "use a new output folder or delete it")
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


def write_shard(folder: Path, index: int, tokens: np.ndarray, labels: np.ndarray, paths: list[str]) -> None:
    """Write one shard; the paths file is renamed last and marks the shard complete."""
    if tokens.size and tokens.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"token id {tokens.max()} does not fit in uint16")
    name = shard_name(index)
    atomic_write(folder / f"{name}.tokens.npy", lambda tmp: _save_npy(tmp, tokens.astype(np.uint16)))
    atomic_write(folder / f"{name}.labels.npy", lambda tmp: _save_npy(tmp, labels.astype(np.int32)))
    atomic_write(folder / f"{name}.paths.json", lambda tmp: Path(tmp).write_text(json.dumps(paths)))


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def shard_done(folder: Path, index: int) -> bool:
    return (folder / f"{shard_name(index)}.paths.json").exists()


def write_token_dataset(folder: str | Path, meta: dict, num_clips: int, shard_size: int,
                        encode_shard: Callable[[range], tuple[np.ndarray, np.ndarray, list[str]]],
                        progress: Callable[[Iterable], Iterable] = iter) -> dict:
    """Encode clips shard by shard with `encode_shard(clip_range) -> (tokens, labels, paths)`, skipping
    shards already complete. Returns counts: written, kept (from an earlier run), clips."""
    folder = Path(folder)
    write_meta(folder, {**meta, "shard_size": shard_size, "num_source_clips": num_clips})
    counts = {"written": 0, "kept": 0, "clips": 0}
    for index, clips in progress(list(enumerate(shard_ranges(num_clips, shard_size)))):
        if shard_done(folder, index):
            counts["kept"] += 1
            continue
        tokens, labels, paths = encode_shard(clips)
        write_shard(folder, index, tokens, labels, paths)
        counts["written"] += 1
    counts["clips"] = len(TokenDataset(folder))
    return counts


class TokenDataset(Dataset):
    """Reader of a token dataset: items {"tokens": int64 (T'*h*w,), "label": int}, memory-mapped."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / META).is_file():
            raise FileNotFoundError(f"{self.folder} is not a token dataset (no {META}); make one with `nbp tokenize`")
        self.meta = json.loads((self.folder / META).read_text())
        names = sorted(p.name[: -len(".paths.json")] for p in self.folder.glob("shard_*.paths.json"))
        self.tokens = [np.load(self.folder / f"{n}.tokens.npy", mmap_mode="r") for n in names]
        self.labels = [np.load(self.folder / f"{n}.labels.npy") for n in names]
        self.offsets = np.cumsum([0] + [len(t) for t in self.tokens])

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["latent_shape"])

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
        row = index - self.offsets[shard]
        tokens = torch.from_numpy(self.tokens[shard][row].astype(np.int64))
        return {"tokens": tokens, "label": int(self.labels[shard][row])}
