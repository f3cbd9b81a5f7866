"""Extracting data once: a tokenizer's codes of every clip (`nbp tokenize`), of every frame of every episode
(`nbp tokenize-episodes`), and the real clips of a split as one uint8 array (`nbp export-clips`, FVD's real set)."""
from __future__ import annotations

import logging
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from nbp.checkpoint import load_magvit2
from nbp.config import InputError
from nbp.data.dataset import collate_clips
from nbp.data.episodes import list_episodes, load_episode
from nbp.data.tokens import EPISODES, write_token_dataset
from nbp.data.video import frames_to_video
from nbp.io import write_array, write_json
from nbp.io.media import to_uint8
from nbp.io.progress import progress
from nbp.runtime import use_bf16
from nbp.settings.data import ExportClipsConfig, TokenizeConfig, TokenizeEpisodesConfig

log = logging.getLogger(__name__)


# --- clips -> token dataset ------------------------------------------------------------------------------

def window_key(clip: int, windows: int) -> tuple[int, float] | int:
    """Dataset key of clip number `clip`: video clip // windows, at position (clip % windows) / (windows - 1)."""
    if windows == 1:
        return clip
    video, k = divmod(clip, windows)
    return video, k / (windows - 1)


def tokenize(cfg: TokenizeConfig) -> dict:
    """Write the token dataset; returns counts (shards written/kept, clips stored, files skipped by reason)."""
    cfg.validate()
    tokenizer = load_magvit2(cfg.tokenizer, resolution=cfg.clips.resolution, device=cfg.device)
    dataset = cfg.clips.dataset("centre", on_error="skip")
    latent = tokenizer.config.latent_shape(cfg.clips.frames, cfg.clips.resolution, cfg.clips.resolution)
    meta = {"vocab_size": tokenizer.codebook_size, "latent_shape": list(latent), "classes": dataset.classes,
            "clip": cfg.clip_settings(), "tokenizer": Path(cfg.tokenizer).name,
            "tokenizer_config": asdict(tokenizer.config)}
    dropped, bf16 = [], use_bf16(cfg.bf16, cfg.device, "tokenizing")

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
            with torch.no_grad(), torch.autocast(torch.device(cfg.device).type, torch.bfloat16, enabled=bf16):
                _, indices = tokenizer.encode(batch["video"].to(cfg.device))
            tokens.append(indices.flatten(1).cpu().numpy())
            labels.append(batch["label"].numpy())
            paths += batch["path"]
        width = int(np.prod(latent))
        return (np.concatenate(tokens) if tokens else np.zeros((0, width), np.uint16),
                np.concatenate(labels) if labels else np.zeros(0, np.int32), paths)

    def shards_progress(shards):
        return progress(shards, f"tokenize {len(dataset) * cfg.windows} clips", "shard")

    counts = write_token_dataset(cfg.out, meta, len(dataset) * cfg.windows, cfg.shard_size, encode_shard,
                                 shards_progress)
    counts["skipped_at_probe"] = dataset.skip_counts()
    counts["dropped_while_decoding"] = int(sum(dropped))
    return counts


# --- episodes -> episode tokens --------------------------------------------------------------------------

def encode_frames(tokenizer, frames: np.ndarray, chunk: int = 64, device="cpu") -> np.ndarray:
    """Per-frame tokenizer codes (T, h*w) of uint8 frames (T, H, W, 3), `chunk` frames per call."""
    out = []
    for start in range(0, len(frames), chunk):
        with torch.no_grad():
            _, ids = tokenizer.encode(frames_to_video(frames[start:start + chunk], device))  # (1, t, h, w)
        out.append(ids[0].flatten(1).cpu().numpy())
    return np.concatenate(out)


def require_per_frame(tokenizer) -> None:
    if tokenizer.config.temporal_factor != 1:
        raise InputError(f"world models need one latent frame per frame; this tokenizer merges "
                         f"{tokenizer.config.temporal_factor} frames (use a preset like tiny-frames)")


def tokenize_episodes(cfg: TokenizeEpisodesConfig) -> dict:
    """Tokenize every episode of `cfg.episodes` into `cfg.out`; episodes shorter than `min_frames` are skipped
    and counted."""
    tokenizer = load_magvit2(cfg.tokenizer, resolution=cfg.resolution, device=cfg.device)
    require_per_frame(tokenizer)
    tokens, actions, episodes, skipped = [], [], [], {}
    start = 0
    for path in progress(list_episodes(cfg.episodes), "tokenize episodes", "episode"):
        try:
            frames, acts = load_episode(path, cfg.resolution)
        except ValueError as error:
            log.warning("skipped %s", error)
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            continue
        if len(frames) < cfg.min_frames:
            skipped["short"] = skipped.get("short", 0) + 1
            continue
        tokens.append(encode_frames(tokenizer, frames, device=cfg.device))
        actions.append(acts)
        episodes.append({"path": str(path), "start": start, "frames": len(frames)})
        start += len(frames)
    if not episodes:
        raise InputError(f"no usable episode in {cfg.episodes} (skipped: {skipped})")
    out = Path(cfg.out)
    write_array(out / "tokens.npy", np.concatenate(tokens).astype(np.uint16))
    write_array(out / "actions.npy", np.concatenate(actions))
    _, h, w = tokenizer.config.latent_shape(1, cfg.resolution, cfg.resolution)
    meta = {"episodes": episodes, "vocab_size": tokenizer.codebook_size, "frame_shape": [h, w],
            "resolution": cfg.resolution, "tokenizer": str(cfg.tokenizer), "skipped": skipped}
    write_json(out / EPISODES, meta)
    return {"episodes": len(episodes), "frames": start, "skipped": skipped}


# --- clips -> one array (FVD's real set) -----------------------------------------------------------------

def export_clips(cfg: ExportClipsConfig) -> Path:
    """A real-data set for FVD: `count` clips (uint8 (N, T, H, W, 3) .npy) of a dataset split, in a seeded order
    that cycles a split smaller than the count."""
    dataset = cfg.clips.dataset(cfg.sampling)
    order = list(range(len(dataset)))
    random.Random(cfg.seed).shuffle(order)
    picks = [order[i % len(order)] for i in range(cfg.count or len(dataset))]
    clips = [to_uint8(dataset[(i, cfg.seed * 7919 + n)]["video"])
             for n, i in enumerate(progress(picks, "real clips", "clip"))]
    return write_array(cfg.out, np.stack(clips))
