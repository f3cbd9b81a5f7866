"""`nbp sample-far`: videos from a FAR model and its DC-AE: class-conditional or unconditional generation,
continuation of given videos, or an action rollout from an episode (its first frames and its actions, or actions of
your own). Written as `nbp sample` writes them (`nbp.pipelines.jobs`): mp4s, a grid video, a contact sheet and
lossless arrays, or, sharded over ranks, one resumable array per sample. Every sample draws its noise from its own
generator, seeded by (seed, sample index).
"""
from __future__ import annotations

import numpy as np
import torch

from nbp.config import InputError
from nbp.data.episodes import load_episode
from nbp.io.media import to_uint8
from nbp.pipelines.far import FARPipeline
from nbp.pipelines.jobs import cycled, read_context, run_batches, sample_generators
from nbp.settings.pipelines import FARSampleConfig


def episode_inputs(cfg: FARSampleConfig) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Context (1, 3, Tc, H, W) and actions (1, Tc + frames) from the episode and/or `actions`."""
    total = cfg.context_frames + cfg.frames
    context, actions = None, None
    if cfg.episode:
        video, episode_actions = load_episode(cfg.episode, cfg.resolution)
        if len(video) < cfg.context_frames:
            raise InputError(f"{cfg.episode} has {len(video)} frames, fewer than context_frames={cfg.context_frames}")
        context = torch.from_numpy(video[: cfg.context_frames]).permute(3, 0, 1, 2)[None].float() / 255
        actions = torch.from_numpy(episode_actions[:total])[None]
    if cfg.actions:
        actions = torch.tensor(cfg.actions)[None]
    if actions is not None and actions.shape[1] < total:
        raise InputError(f"{actions.shape[1]} actions for {total} frames ({cfg.context_frames} given + {cfg.frames} "
                         "generated): give one per frame")
    return context, actions


def sample_far(cfg: FARSampleConfig) -> dict:
    cfg.validate()
    fields = {} if cfg.short_window is None else {"short_window": cfg.short_window}
    pipeline = FARPipeline.from_files(cfg.dcae, cfg.far, cfg.device, cfg.bf16, cfg.resolution, **fields)
    classes, sources = cycled(cfg.class_ids, cfg.num_samples), cycled(cfg.context, cfg.num_samples)
    episode_context, actions = episode_inputs(cfg)

    def generate_batch(ids: list[int]) -> np.ndarray:
        context = read_context([sources[i] for i in ids], cfg.context_frames, cfg.resolution) if sources else None
        if episode_context is not None:
            context = episode_context.expand(len(ids), -1, -1, -1, -1)
        out = pipeline(cfg.frames, context, sampling=cfg.sampling,
                       labels=torch.tensor([classes[i] for i in ids], device=pipeline.device) if classes else None,
                       actions=None if actions is None else actions.expand(len(ids), -1).to(pipeline.device),
                       noise=batch_noise(pipeline, cfg, ids), batch=len(ids), show_progress=True)
        return to_uint8(out.videos.cpu())

    return run_batches(cfg, "sample-far", generate_batch)


def batch_noise(pipeline: FARPipeline, cfg: FARSampleConfig, ids: list[int]) -> torch.Tensor:
    """Each sample's noise (frames, C, h, w) from its own generator, so a sample does not depend on its batch."""
    far = pipeline.far.config
    side = cfg.resolution // pipeline.dcae.config.spatial_factor
    shape = (cfg.frames, far.in_channels, side, side)
    noise = [torch.randn(shape, generator=g) for g in sample_generators(cfg.seed, ids)]
    return torch.stack(noise).to(pipeline.device)
