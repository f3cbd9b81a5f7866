"""`nbp sample`: videos from a language model and a tokenizer, unconditional, class/text-conditional, or
continuing given videos; written as mp4s, a grid video and a PNG contact sheet, or, sharded, one array per sample
(`nbp.pipelines.jobs`: each sample its own random stream, resumable shards).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nbp.io.media import to_uint8
from nbp.pipelines.jobs import cycled, read_context, run_batches, sample_generators
from nbp.pipelines.tokens import NBPPipeline
from nbp.settings.pipelines import SampleConfig


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
