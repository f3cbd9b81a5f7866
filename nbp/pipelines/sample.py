"""`nbp sample`: videos from a language model and a tokenizer, unconditional, class/text-conditional, or
continuing given videos; written as mp4s, a grid video and a PNG contact sheet, or, sharded, one array per sample
(`nbp.pipelines.jobs`: each sample its own random stream, resumable shards).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nbp.config import OnDevice
from nbp.generation.sampling import SamplingConfig
from nbp.io.media import to_uint8
from nbp.pipelines.jobs import cycled, read_context, run_batches, sample_generators
from nbp.pipelines.tokens import NBPPipeline


@dataclass
class SampleConfig(OnDevice):
    lm: str = "???"  # the LM (official .ckpt or nbp file)
    tokenizer: str = "???"  # its tokenizer
    out: str = "runs/samples"  # folder for the videos
    num_samples: int = 8  # videos to generate
    batch_size: int = 8  # videos generated at once
    class_ids: list[int] = field(default_factory=list)  # cycled over the samples (class-conditional models)
    text: list[str] = field(default_factory=list)  # cycled over the samples (text-conditional models)
    context: list[str] = field(default_factory=list)  # videos to continue (cycled)
    context_dir: str | None = None  # continue every video under this folder (sorted), instead of `context`
    context_frames: int = 5  # video frames given (1 + 4k): 5 -> 2 latent frames
    frames: int = 17  # frames of each output video (1 + 4k)
    resolution: int = 128  # frame size
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0  # video i draws from a generator seeded by (seed, i): the same video whatever the batch
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"
    bf16: bool = False  # bf16 autocast
    fps: float = 8  # frame rate of the mp4 files
    sharded: bool = False  # one file per sample under out/samples/, split over ranks (RANK/WORLD_SIZE), resumable


def sample_videos(cfg: SampleConfig) -> dict:
    pipeline = NBPPipeline.from_files(cfg.tokenizer, cfg.lm, cfg.resolution, cfg.device, cfg.bf16)
    classes, texts = cycled(cfg.class_ids, cfg.num_samples), cycled(cfg.text, cfg.num_samples)
    sources = sorted(str(p) for p in Path(cfg.context_dir).rglob("*") if p.is_file()) if cfg.context_dir else cfg.context
    contexts = cycled(sources, cfg.num_samples)

    def generate_batch(ids: list[int]) -> np.ndarray:
        context = read_context([contexts[i] for i in ids], cfg.context_frames, cfg.resolution) if contexts else None
        new_frames = cfg.frames - (0 if context is None else context.shape[2])
        out = pipeline(new_frames, context, sampling=cfg.sampling, generator=sample_generators(cfg.seed, ids, cfg.device),
                       batch_size=len(ids), class_ids=[classes[i] for i in ids] if classes else None,
                       text=[texts[i] for i in ids] if texts else None)
        return to_uint8(out.videos.cpu())

    return run_batches(cfg, "sample", generate_batch)
