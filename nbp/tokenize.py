"""`nbp tokenize`: run a tokenizer over a clip dataset once and store the codes as a token dataset."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from nbp.data.dataset import VideoDataset, collate_clips
from nbp.data.tokens import write_token_dataset
from nbp.download import load_magvit2

log = logging.getLogger(__name__)
CLIP_SETTINGS = ("sequence_length", "resolution", "fps", "resize", "short", "windows")


@dataclass
class TokenizeConfig:
    tokenizer: str = "???"  # tokenizer file (official magvit2_*.pt or nbp .safetensors)
    root: str = "???"  # video folder
    out: str = "???"  # token dataset folder to write (resumed if it exists)
    annotations: str | None = None  # annotation list; None = every video under root
    sequence_length: int = 17
    resolution: int = 128
    fps: float | None = None
    resize: str = "squash"
    short: str = "skip"
    windows: int = 1  # clips per video, evenly spaced from its start to its end (1: the centre clip)
    shard_size: int = 1024
    batch_size: int = 4
    num_workers: int = 2
    device: str = "cpu"
    bf16: bool = False  # bf16 autocast (a few indices move across FSQ bin edges; see docs/benchmarks.md)


def window_key(clip: int, windows: int) -> tuple[int, float] | int:
    """Dataset key of clip number `clip`: video clip // windows, at position (clip % windows) / (windows - 1)."""
    if windows == 1:
        return clip
    video, k = divmod(clip, windows)
    return video, k / (windows - 1)


def tokenize(cfg: TokenizeConfig) -> dict:
    """Write the token dataset; returns counts (shards written/kept, clips stored, files skipped by reason)."""
    if cfg.windows < 1:
        raise ValueError(f"windows must be at least 1 (clips per video), got {cfg.windows}")
    tokenizer = load_magvit2(cfg.tokenizer, resolution=cfg.resolution, device=cfg.device)
    annotations = Path(cfg.root) / cfg.annotations if cfg.annotations else None
    dataset = VideoDataset(cfg.root, annotations, sequence_length=cfg.sequence_length, resolution=cfg.resolution,
                           fps=cfg.fps, sampling="centre", resize=cfg.resize, short=cfg.short, on_error="skip")
    latent = tokenizer.config.latent_shape(cfg.sequence_length, cfg.resolution, cfg.resolution)
    meta = {"vocab_size": tokenizer.codebook_size, "latent_shape": list(latent), "classes": dataset.classes,
            "clip": {k: v for k, v in asdict(cfg).items() if k in CLIP_SETTINGS},
            "tokenizer": Path(cfg.tokenizer).name, "tokenizer_config": asdict(tokenizer.config)}
    dropped = []

    def encode_shard(clips: range):
        keys = [window_key(j, cfg.windows) for j in clips]
        loader = DataLoader(Subset(dataset, keys), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                            collate_fn=collate_clips)
        tokens, labels, paths = [], [], []
        for batch in loader:
            if batch is None:
                dropped.append(cfg.batch_size)
                continue
            dropped.append(batch["dropped"])
            with torch.no_grad(), torch.autocast(torch.device(cfg.device).type, torch.bfloat16, enabled=cfg.bf16):
                _, indices = tokenizer.encode(batch["video"].to(cfg.device))
            tokens.append(indices.flatten(1).cpu().numpy())
            labels.append(batch["label"].numpy())
            paths += batch["path"]
        width = int(np.prod(latent))
        return (np.concatenate(tokens) if tokens else np.zeros((0, width), np.uint16),
                np.concatenate(labels) if labels else np.zeros(0, np.int32), paths)

    def progress(shards):
        return tqdm(shards, desc=f"tokenize {len(dataset) * cfg.windows} clips", unit="shard")

    counts = write_token_dataset(cfg.out, meta, len(dataset) * cfg.windows, cfg.shard_size, encode_shard, progress)
    counts["skipped_at_probe"] = dataset.skip_counts()
    counts["dropped_while_decoding"] = int(sum(dropped))
    return counts
