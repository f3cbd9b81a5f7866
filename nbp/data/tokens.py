"""Token datasets: tokenizer codes of every clip, stored once in memory-mapped shards; and tokenized episodes.

Layout of a token dataset folder:
    meta.json                      vocabulary, latent grid (T', h, w), classes, clip settings, shard size
    shard_00000.tokens.npy         uint16 (n, T'*h*w) codes in raster order (t, h, w)
    shard_00000.labels.npy         int32 (n,) class indices
    shard_00000.paths.json         source file of each row
Disk cost: 2 bytes per token (+4 per label), i.e. 2,560 bytes for a 17x128x128 clip (5x16x16 tokens).
A shard is written to a temporary name and renamed when complete, so an interrupted run keeps every finished
shard and `write_token_dataset` resumes at the first missing one.

Tokenized episodes (world models, `nbp tokenize-episodes`): `tokens.npy` uint16 (frames, h*w) of every frame of
every episode, `actions.npy` int64 (frames,), `episodes.json` (where each episode starts); `EpisodeTokens`
serves windows of a fixed number of frames from them.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nbp.config import InputError, UserError
from nbp.io import write_array, write_json

META = "meta.json"
EPISODES = "episodes.json"  # the index of a folder of tokenized episodes (`nbp tokenize-episodes`)


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
            raise InputError(f"{folder} holds a token dataset made with other settings ({sorted(changed)}); "
                             "use a new output folder or delete it")
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, meta)


def write_shard(folder: Path, index: int, tokens: np.ndarray, labels: np.ndarray, paths: list[str]) -> None:
    """Write one shard; the paths file is renamed last and marks the shard complete."""
    if tokens.size and tokens.max() > np.iinfo(np.uint16).max:
        raise InputError(f"token id {tokens.max()} does not fit in uint16")
    name = shard_name(index)
    write_array(folder / f"{name}.tokens.npy", tokens.astype(np.uint16))
    write_array(folder / f"{name}.labels.npy", labels.astype(np.int32))
    write_json(folder / f"{name}.paths.json", paths, indent=None)


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
        try:
            write_shard(folder, index, tokens, labels, paths)
        except OSError as error:  # a full disk: the finished shards stay, the half-written one is removed
            raise UserError(f"could not write {shard_name(index)} in {folder} ({error}); the {index} shards before "
                            "it are complete and kept: free space there and run the same command again") from None
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
        for name, tokens, labels in zip(names, self.tokens, self.labels):
            self.check_shard(name, tokens, labels)
        self.offsets = np.cumsum([0] + [len(t) for t in self.tokens])

    def check_shard(self, name: str, tokens: np.ndarray, labels: np.ndarray) -> None:
        """A shard must be what `write_shard` writes for this meta.json, so that no batch fails later."""
        width, vocab, classes = int(np.prod(self.latent_shape)), self.vocab_size, max(1, len(self.classes))
        problems = [f"tokens are {tokens.dtype}, not uint16" if tokens.dtype != np.uint16 else "",
                    f"tokens are {tokens.shape}, not (n, {width})" if tokens.ndim != 2 or tokens.shape[1] != width
                    else "",
                    f"{len(labels)} labels for {len(tokens)} clips" if labels.shape != (len(tokens),) else ""]
        if not any(problems) and len(tokens):
            if int(tokens.max()) >= vocab:
                problems.append(f"token {int(tokens.max())} outside the vocabulary of {vocab}")
            if labels.size and (labels.min() < 0 or labels.max() >= classes):
                problems.append(f"labels outside [0, {classes})")
        if any(problems):
            raise InputError(f"{self.folder}/{name}: " + "; ".join(p for p in problems if p) +
                             " (rewrite it with `nbp tokenize`, which resumes at missing shards)")

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


def is_episode_tokens(folder: str | Path) -> bool:
    return (Path(folder) / EPISODES).is_file()


class EpisodeTokens(Dataset):
    """Windows of `frames` consecutive latent frames (every `stride` frames) of tokenized episodes:
    items {"tokens": int64 (frames*h*w,), "actions": int64 (frames,), "label": 0}."""

    def __init__(self, folder: str | Path, frames: int, stride: int | None = None):
        self.folder = Path(folder)
        if not is_episode_tokens(self.folder):
            raise FileNotFoundError(f"{self.folder} holds no tokenized episodes ({EPISODES}); make them with "
                                    "`nbp tokenize-episodes`")
        self.meta = json.loads((self.folder / EPISODES).read_text())
        self.tokens = np.load(self.folder / "tokens.npy", mmap_mode="r")
        self.actions = np.load(self.folder / "actions.npy")
        self.frames, stride = frames, stride or max(1, frames // 2)
        self.starts = [e["start"] + s for e in self.meta["episodes"]
                       for s in range(0, e["frames"] - frames + 1, stride)]
        if not self.starts:
            raise InputError(f"no episode in {self.folder} has {frames} frames")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.frames, *self.meta["frame_shape"])

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def classes(self) -> list[str]:
        return []

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict:
        s = self.starts[index]
        tokens = torch.from_numpy(self.tokens[s:s + self.frames].astype(np.int64)).flatten()
        return {"tokens": tokens, "actions": torch.from_numpy(self.actions[s:s + self.frames]), "label": 0}
