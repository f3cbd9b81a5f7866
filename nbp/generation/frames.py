"""Generating frames with a world model, one frame per step over a sliding long-short window.

While the window fills, the KV cache grows by the newest frame each step; once it slides (more than
`short_frames` frames), the window is re-encoded each step, so time and memory per frame stay constant however
long the video. Action guidance runs each row twice, with the true and with the null actions (`double_rows`).
"""
from __future__ import annotations

import torch

from nbp.config import ConfigError, InputError
from nbp.generation.guidance import double_rows, guidance_scale, guide_rows, is_guided, with_null_rows
from nbp.generation.sampling import sample_logits
from nbp.models.transformer import KVCache
from nbp.models.world import WorldTransformer


def window_of(t: int, short: int, long: int) -> tuple[int, int]:
    """(first frame, compressed frames) of the context that predicts frame t."""
    if not short:
        return 0, 0
    full_start = max(0, t - short)
    first = max(0, full_start - long)
    return first, full_start - first


def frame_actions(model: WorldTransformer, actions, batch: int, total: int, doubled: bool):
    """Action ids (rows, total) of every input frame (the action producing its successor), or None."""
    nexts = model.action_inputs(None if actions is None else actions[:, 1:], batch, total - 1)
    if nexts is None:
        return None
    nexts = torch.cat([nexts, nexts[:, -1:]], dim=1)  # (B, total): the last frame is never an input
    return with_null_rows(nexts, model.config.num_actions) if doubled else nexts


@torch.no_grad()
def predict_frames(model: WorldTransformer, context: torch.Tensor, num_frames: int, *,
                   actions: torch.Tensor | None = None, short_frames: int | None = None,
                   long_frames: int | None = None, greedy: bool = False, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None, cfg_scale: float | None = None,
                   cfg_schedule: str = "constant", generator: torch.Generator | None = None,
                   progress=iter, decoding: str = "auto") -> torch.Tensor:
    """Continue context codes (B, C, h*w) by `num_frames` frames, one step each -> (B, num_frames, h*w).

    `actions` (B, C + num_frames): actions[:, t] produced frame t. `cfg_scale` guides with the null action (FAR
    uses 1.5), following `cfg_schedule` over the frames. The window is re-encoded as it slides, so `decoding` is the
    dynamic cache's ("auto" or "dynamic")."""
    if decoding not in ("auto", "dynamic"):
        raise ConfigError(f"world models decode with the dynamic cache (the window is re-encoded as it slides): "
                          f"decoding must be 'auto' or 'dynamic', got {decoding!r}")
    cfg = model.config
    hw = cfg.block
    short = cfg.short_frames if short_frames is None else short_frames
    long = (cfg.long_frames if long_frames is None else long_frames) if short else 0
    context = model.check_codes(torch.as_tensor(context).flatten(1), "context").view(len(context), -1, hw)
    b, c = context.shape[:2]
    if c < 1:
        raise InputError("give at least one context frame")
    total = c + num_frames
    doubled = is_guided(cfg_scale, cfg.num_actions > 0 and actions is not None)
    nexts = frame_actions(model, actions, b, total, doubled)
    video = double_rows(torch.zeros(b, total, hw, dtype=torch.long, device=context.device), doubled)
    video[:, :c] = double_rows(context, doubled)
    capacity = long * cfg.compressed_tokens + (short or total) * hw + hw
    acts = lambda lo, hi: None if nexts is None else nexts[:, lo:hi]
    cache, window = None, None
    for t in progress(range(c, total)):
        first, compressed = window_of(t, short, long)
        if window == (first, compressed):  # the window only grew: feed the newest frame
            logits = model.window_logits(video[:, t - 1:t], acts(t - 1, t), t - 1, 0, cache)
        else:  # first step, or the window slid: encode it afresh
            cache = KVCache(cfg, len(video), capacity, video.device, model.tok_emb.weight.dtype)
            logits = model.window_logits(video[:, first:t], acts(first, t), first, compressed, cache)
            window = (first, compressed)
        logits = logits[..., cfg.video_offset:]
        if doubled:
            logits = guide_rows(logits, guidance_scale(cfg_scale, t - c, num_frames, cfg_schedule))
        codes = sample_logits(logits, temperature, top_k, top_p, greedy, generator)  # (B, h*w)
        video[:, t] = double_rows(codes, doubled)
    return video[:b, c:]
