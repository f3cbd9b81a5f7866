"""`nbp sample`: videos from a language model and a tokenizer, unconditional, class/text-conditional, or
continuing given videos; written as mp4s, a grid video and a PNG contact sheet."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nbp.data.video import clip_indices, probe, read_frames
from nbp.download import load_magvit2, load_transformer
from nbp.export import contact_sheet, save_video, to_uint8, video_grid


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
    context_frames: int = 5  # video frames given (1 + 4k): 5 -> 2 latent frames
    frames: int = 17  # frames of each output video (1 + 4k)
    resolution: int = 128
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float | None = None
    cfg_schedule: str = "constant"
    greedy: bool = False
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False
    fps: float = 8
    context_dir: str | None = None  # continue every video under this folder (sorted), instead of `context`
    sharded: bool = False  # one file per sample under out/samples/, split over ranks (RANK/WORLD_SIZE), resumable


def rank_and_world() -> tuple[int, int]:
    """This process's share of the samples when launched by torchrun (or the deepspeed launcher)."""
    import os

    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def export_clips(root: str, annotations: str | None, out: str, count: int | None, frames: int, resolution: int,
                 sampling: str = "random", fps: float | None = None, seed: int = 0) -> Path:
    """A real-data set for FVD: `count` clips (uint8 (N, T, H, W, 3) .npy) of a dataset split."""
    import random

    from nbp.data.dataset import VideoDataset

    random.seed(seed)
    dataset = VideoDataset(root, Path(root) / annotations if annotations else None, sequence_length=frames,
                           resolution=resolution, fps=fps, sampling=sampling)
    order = list(range(len(dataset)))
    random.shuffle(order)
    picks = [order[i % len(order)] for i in range(count or len(dataset))]  # the protocol's count, cycling a small split
    clips = [to_uint8(dataset[(i, seed * 7919 + n)]["video"]) for n, i in enumerate(tqdm(picks, desc="real clips"))]
    path = Path(out)
    write_array(path, np.stack(clips))
    return path


def cycled(values: list, count: int) -> list | None:
    return [values[i % len(values)] for i in range(count)] if values else None


def context_codes(tokenizer, paths: list[str], frames: int, resolution: int, device) -> torch.Tensor:
    """Codes (B, n) of the first `frames` frames of each video."""
    clips = []
    for path in paths:
        info = probe(path)
        clip = read_frames(path, clip_indices(info.frames, info.fps, frames, None, 0), resolution)
        clips.append(torch.from_numpy(clip).permute(3, 0, 1, 2).float() / 255)
    with torch.no_grad():
        _, ids = tokenizer.encode(torch.stack(clips).to(device))
    return ids.flatten(1).long()


def sample_videos(cfg: SampleConfig) -> dict:
    dtype = torch.bfloat16 if cfg.bf16 else None
    lm = load_transformer(cfg.lm, device=cfg.device, dtype=dtype)
    tokenizer = load_magvit2(cfg.tokenizer, resolution=cfg.resolution, device=cfg.device)
    latent = tokenizer.config.latent_shape(cfg.frames, cfg.resolution, cfg.resolution)
    total = int(np.prod(latent))
    classes, texts = cycled(cfg.class_ids, cfg.num_samples), cycled(cfg.text, cfg.num_samples)
    sources = sorted(str(p) for p in Path(cfg.context_dir).rglob("*") if p.is_file()) if cfg.context_dir else cfg.context
    contexts = cycled(sources, cfg.num_samples)
    rank, world = rank_and_world() if cfg.sharded else (0, 1)
    todo = [i for i in range(rank, cfg.num_samples, world) if not (cfg.sharded and sample_file(cfg, i).exists())]
    videos = []
    for start in tqdm(range(0, len(todo), cfg.batch_size), desc=f"sample (rank {rank}/{world})", unit="batch"):
        ids = todo[start:start + cfg.batch_size]
        generator = torch.Generator(cfg.device).manual_seed(cfg.seed * 1_000_003 + ids[0])  # per batch: resumable
        context = context_codes(tokenizer, [contexts[i] for i in ids], cfg.context_frames, cfg.resolution,
                                cfg.device) if contexts else None
        given = 0 if context is None else context.shape[1]
        codes = lm.generate(total - given, batch_size=len(ids), context=context,
                            class_ids=[classes[i] for i in ids] if classes else None,
                            text=[texts[i] for i in ids] if texts else None,
                            greedy=cfg.greedy, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                            cfg_scale=cfg.cfg_scale, cfg_schedule=cfg.cfg_schedule, generator=generator)
        if context is not None:
            codes = torch.cat([context, codes], dim=1)
        with torch.no_grad():
            decoded = tokenizer.decode_from_code_indices(codes.view(len(codes), *latent).to(cfg.device))
        batch = to_uint8(decoded.float().clamp(0, 1).cpu())
        if cfg.sharded:
            for i, video in zip(ids, batch):
                write_array(sample_file(cfg, i), video)
        videos.append(batch)
    if cfg.sharded:
        return {"samples": len(todo), "rank": rank, "world": world, "folder": str(Path(cfg.out) / "samples")}
    return write_samples(Path(cfg.out), np.concatenate(videos), cfg)


def sample_file(cfg: SampleConfig, index: int) -> Path:
    return Path(cfg.out) / "samples" / f"{index:06d}.npy"


def write_array(path: Path, array: np.ndarray) -> None:
    from nbp.checkpoint import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def write_samples(out: Path, videos: np.ndarray, cfg: SampleConfig) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for i, video in enumerate(videos):
        save_video(out / f"sample_{i:04d}.mp4", video, cfg.fps)
    save_video(out / "grid.mp4", video_grid(videos), cfg.fps)
    contact_sheet(videos, out / "contact_sheet.png")
    np.save(out / "samples_uint8.npy", videos)  # lossless, for evaluation
    summary = {"samples": len(videos), "shape": list(videos.shape), "settings": asdict(cfg)}
    (out / "samples.json").write_text(json.dumps(summary, indent=1))
    return summary
