"""`nbp sample`: videos from a language model and a tokenizer, unconditional, class/text-conditional, or
continuing given videos; written as mp4s, a grid video and a PNG contact sheet, or, sharded, one array per sample.

Every sample has its own random stream, seeded by (seed, sample index), and sharded runs cut the samples of each
rank into fixed batches: a resumed run regenerates a missing sample exactly as it was first drawn.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from nbp.data.video import clip_indices, probe, read_frames
from nbp.generation.sampling import SamplingConfig
from nbp.io import write_array, write_json
from nbp.io.media import contact_sheet, save_video, to_uint8, video_grid
from nbp.io.progress import progress
from nbp.pipelines.tokens import NBPPipeline


@dataclass
class SampleConfig:
    lm: str = "???"
    tokenizer: str = "???"
    out: str = "runs/samples"
    num_samples: int = 8
    batch_size: int = 8
    class_ids: list[int] = field(default_factory=list)  # cycled over the samples (class-conditional models)
    text: list[str] = field(default_factory=list)  # cycled over the samples (text-conditional models)
    context: list[str] = field(default_factory=list)  # videos to continue (cycled)
    context_dir: str | None = None  # continue every video under this folder (sorted), instead of `context`
    context_frames: int = 5  # video frames given (1 + 4k): 5 -> 2 latent frames
    frames: int = 17  # frames of each output video (1 + 4k)
    resolution: int = 128
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False
    fps: float = 8
    sharded: bool = False  # one file per sample under out/samples/, split over ranks (RANK/WORLD_SIZE), resumable


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


def sample_generators(cfg: SampleConfig, indices: list[int]) -> list[torch.Generator]:
    return [torch.Generator(cfg.device).manual_seed(cfg.seed * 1_000_003 + i) for i in indices]


def batches(cfg: SampleConfig, rank: int, world: int) -> list[list[int]]:
    """This rank's samples in fixed batches; sharded runs keep only the batches with a sample not yet written."""
    mine = list(range(rank, cfg.num_samples, world))
    cut = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    return [b for b in cut if not cfg.sharded or not all(sample_file(cfg, i).exists() for i in b)]


def sample_videos(cfg: SampleConfig) -> dict:
    pipeline = NBPPipeline.from_files(cfg.tokenizer, cfg.lm, cfg.resolution, cfg.device, cfg.bf16)
    classes, texts = cycled(cfg.class_ids, cfg.num_samples), cycled(cfg.text, cfg.num_samples)
    sources = sorted(str(p) for p in Path(cfg.context_dir).rglob("*") if p.is_file()) if cfg.context_dir else cfg.context
    contexts = cycled(sources, cfg.num_samples)
    rank, world = rank_and_world() if cfg.sharded else (0, 1)
    todo, videos = batches(cfg, rank, world), []
    for ids in progress(todo, f"sample (rank {rank}/{world})", "batch"):
        context = read_context([contexts[i] for i in ids], cfg.context_frames, cfg.resolution) if contexts else None
        new_frames = cfg.frames - (0 if context is None else context.shape[2])
        out = pipeline(new_frames, context, sampling=cfg.sampling, generator=sample_generators(cfg, ids),
                       batch_size=len(ids),
                       class_ids=[classes[i] for i in ids] if classes else None,
                       text=[texts[i] for i in ids] if texts else None)
        batch = to_uint8(out.videos.cpu())
        if cfg.sharded:
            for i, video in zip(ids, batch):
                write_array(sample_file(cfg, i), video)
        videos.append(batch)
    if cfg.sharded:
        return {"samples": sum(map(len, todo)), "rank": rank, "world": world,
                "folder": str(Path(cfg.out) / "samples")}
    return write_samples(Path(cfg.out), np.concatenate(videos), cfg)


def sample_file(cfg: SampleConfig, index: int) -> Path:
    return Path(cfg.out) / "samples" / f"{index:06d}.npy"


def write_samples(out: Path, videos: np.ndarray, cfg: SampleConfig) -> dict:
    for i, video in enumerate(videos):
        save_video(out / f"sample_{i:04d}.mp4", video, cfg.fps)
    save_video(out / "grid.mp4", video_grid(videos), cfg.fps)
    contact_sheet(videos, out / "contact_sheet.png")
    write_array(out / "samples_uint8.npy", videos)  # lossless, for evaluation
    summary = {"samples": len(videos), "shape": list(videos.shape), "folder": str(out), "settings": asdict(cfg)}
    write_json(out / "samples.json", summary)
    return summary
