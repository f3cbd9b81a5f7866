"""What every sampling job shares (`nbp sample`, `nbp sample-far`): each sample's own random stream, the split of
the samples over ranks in fixed batches, reading context videos, and writing the samples.

Every sample draws from a generator seeded by (seed, sample index), so a sample does not depend on its batch or
rank. Sharded runs (`sharded`: torchrun or the deepspeed launcher's RANK / WORLD_SIZE) write one lossless array per
sample under out/samples/ and skip the batches already written: a resumed run regenerates a missing sample exactly
as it was first drawn. Otherwise the samples are written as mp4s, a grid video, a contact sheet and one array.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nbp.data.video import clip_indices, probe, read_frames
from nbp.io import write_array, write_json
from nbp.io.media import contact_sheet, save_video, video_grid
from nbp.io.progress import progress
from nbp.seeds import generator_for


def rank_and_world() -> tuple[int, int]:
    """This process's share of the samples when launched by torchrun (or the deepspeed launcher)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def cycled(values: list, count: int) -> list | None:
    return [values[i % len(values)] for i in range(count)] if values else None


def read_context(paths: list[str], frames: int, resolution: int) -> torch.Tensor:
    """The first `frames` frames of each video (B, 3, frames, H, W) in [0, 1]."""
    clips = []
    for path in paths:
        info = probe(path)
        clip = read_frames(path, clip_indices(info.frames, info.fps, frames, None, 0), resolution)
        clips.append(torch.from_numpy(clip).permute(3, 0, 1, 2).float() / 255)
    return torch.stack(clips)


def sample_generators(seed: int, indices: list[int], device="cpu") -> list[torch.Generator]:
    """One generator per sample, seeded by (seed, sample index)."""
    return [generator_for(seed, i, device=device) for i in indices]


def sample_file(out: str | Path, index: int) -> Path:
    return Path(out) / "samples" / f"{index:06d}.npy"


def batches(cfg, rank: int, world: int) -> list[list[int]]:
    """This rank's samples in fixed batches; sharded runs keep only the batches with a sample not yet written."""
    mine = list(range(rank, cfg.num_samples, world))
    cut = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    return [b for b in cut if not cfg.sharded or not all(sample_file(cfg.out, i).exists() for i in b)]


def run_batches(cfg, name: str, generate_batch) -> dict:
    """`generate_batch(sample indices)` -> uint8 videos (B, T, H, W, 3) over this rank's batches, written as the
    module docstring says; the summary of what was written."""
    rank, world = rank_and_world() if cfg.sharded else (0, 1)
    todo, videos = batches(cfg, rank, world), []
    for ids in progress(todo, f"{name} (rank {rank}/{world})", "batch"):
        batch = generate_batch(ids)
        if cfg.sharded:
            for i, video in zip(ids, batch):
                write_array(sample_file(cfg.out, i), video)
        else:
            videos.append(batch)
    if cfg.sharded:
        return {"samples": sum(map(len, todo)), "rank": rank, "world": world,
                "folder": str(Path(cfg.out) / "samples")}
    return write_samples(Path(cfg.out), np.concatenate(videos), cfg)


def write_samples(out: Path, videos: np.ndarray, cfg) -> dict:
    """mp4s, a grid video, a contact sheet and the lossless array of uint8 videos (N, T, H, W, 3)."""
    for i, video in enumerate(videos):
        save_video(out / f"sample_{i:04d}.mp4", video, cfg.fps)
    save_video(out / "grid.mp4", video_grid(videos), cfg.fps)
    contact_sheet(videos, out / "contact_sheet.png")
    write_array(out / "samples_uint8.npy", videos)  # lossless, for evaluation
    summary = {"samples": len(videos), "shape": list(videos.shape), "folder": str(out), "settings": asdict(cfg)}
    write_json(out / "samples.json", summary)
    return summary
