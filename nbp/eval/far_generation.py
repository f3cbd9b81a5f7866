"""`nbp far-gen-eval`: FVD of a class-conditional FAR model's samples, Latte's UCF-101 protocol (§5.11).

Per seed: a class-balanced random subset of the real videos (ceil(n / classes) per class, chosen at random, then
shuffled and cut to n: FAR's `get_balanced_dataset`), their first `frames` frames every `frame_interval` from frame
0, and n samples generated with the subset's labels; FVD between the two sets. Seeds 0/2/4/6, mean ± std.

    latte-ucf   2,048 videos, 16 frames every 3, seeds 0/2/4/6, cfg_scale 2.0 (FAR-L/XL on UCF-101)
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from nbp.config import ConfigError, with_protocol
from nbp.data.video import read_frames
from nbp.io import write_json
from nbp.io.media import contact_sheet, to_uint8
from nbp.io.progress import progress
from nbp.metrics import frechet_distance, i3d_features, load_i3d
from nbp.pipelines.far import FARPipeline
from nbp.settings.eval import FARGenerationEvalConfig

log = logging.getLogger(__name__)


def balanced_subset(labels: list[int], n: int, generator: np.random.Generator) -> list[int]:
    """Indices of ceil(n / classes) random videos of each class, shuffled together, the first n."""
    classes = sorted(set(labels))
    per_class = math.ceil(n / len(classes))
    chosen = []
    for label in classes:
        members = [i for i, x in enumerate(labels) if x == label]
        if len(members) < per_class:
            raise ConfigError(f"class {label} has {len(members)} videos; a balanced set of {n} needs {per_class} each")
        chosen += generator.choice(members, per_class, replace=False).tolist()
    return generator.permutation(chosen)[:n].tolist()


def real_clips(dataset, indices: list[int], cfg: FARGenerationEvalConfig) -> np.ndarray:
    """uint8 (n, frames, H, W, 3): each video's frames 0, interval, 2 interval, ... (clamped at its end)."""
    wanted = [k * cfg.frame_interval for k in range(cfg.frames)]
    clips = []
    for i in progress(indices, "real clips", "video"):
        info = dataset.infos[i]
        frames = [min(f, info.frames - 1) for f in wanted]
        clips.append(read_frames(dataset.entries[i].path, frames, cfg.clips.resolution, cfg.clips.resize))
    return np.stack(clips)


def generated_clips(pipeline: FARPipeline, labels: list[int], cfg: FARGenerationEvalConfig, seed: int) -> np.ndarray:
    """uint8 (n, frames, H, W, 3) samples of the given labels, in batches drawn from one seeded generator."""
    generator, out = torch.Generator().manual_seed(seed), []
    batches = [labels[i:i + cfg.batch_size] for i in range(0, len(labels), cfg.batch_size)]
    for batch in progress(batches, f"generate (seed {seed})", "batch"):
        ids = torch.tensor(batch, device=pipeline.device)
        video = pipeline(cfg.frames, sampling=cfg.sampling, labels=ids, generator=generator).videos
        out.append(to_uint8(video))  # (B, 3, T, H, W) -> uint8 (B, T, H, W, 3)
    return np.concatenate(out)


def evaluate_far_generation(cfg: FARGenerationEvalConfig) -> dict:
    cfg = with_protocol(cfg)
    pipeline = FARPipeline.from_files(cfg.dcae, cfg.far, cfg.device, resolution=cfg.clips.resolution)
    if pipeline.far.config.condition != "label":
        raise ConfigError("far-gen-eval samples class-conditional videos; this FAR model has no label condition")
    dataset = replace(cfg.clips, frames=cfg.frames).dataset("centre")
    labels = [dataset.class_to_index[e.class_name] for e in dataset.entries]
    i3d, out, per_seed = load_i3d(cfg.i3d, device=cfg.device), Path(cfg.out), {}
    for seed in cfg.seeds:
        subset = balanced_subset(labels, cfg.videos, np.random.default_rng(seed))
        real = real_clips(dataset, subset, cfg)
        fake = generated_clips(pipeline, [labels[i] for i in subset], cfg, seed)
        per_seed[seed] = frechet_distance(i3d_features(i3d, real, device=cfg.device),
                                          i3d_features(i3d, fake, device=cfg.device))
        log.info("seed %d: FVD %.2f", seed, per_seed[seed])
        contact_sheet(fake[:8], out / f"samples_seed_{seed}.png")
    values = np.array(list(per_seed.values()))
    result = {"protocol": cfg.protocol, "videos": cfg.videos, "fvd": {str(k): v for k, v in per_seed.items()},
              "fvd_mean": float(values.mean()), "fvd_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
              "settings": asdict(cfg)}
    write_json(out / "metrics.json", result)
    return result
