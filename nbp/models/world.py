"""World models: action-conditioned, long-context video prediction with frame blocks (FAR's tasks).

A world model is a `Transformer` whose config has `world` set: frame blocks (block = h*w), no begin block, no
class or text condition. Its input is a run of latent frames z_0 .. z_{F-1}; the tokens of frame k predict
frame k + 1 (block k -> block k + 1, as in every NBP model), so one step generates one frame.

Actions: `actions[:, t]` is the action that produced frame t (taken just before it; `actions[:, 0]` is never
used). Its embedding is added to the tokens that predict frame t, i.e. to frame t - 1's, so changing it changes
predictions from frame t onward only. A tokenizer that merges 4 frames into one latent frame would need 4
actions per latent frame; nbp's world recipes use the per-frame tokenizer `tiny-frames` instead (one latent
frame per video frame, as FAR's image autoencoder), so one action meets one latent frame.

Long-short context (FAR): the last K = `short_frames` input frames are kept in full; up to M = `long_frames`
older ones are compressed (each p x p patch of token embeddings projected to one token, p = `long_pool`) and
frames older than that are dropped. Rotary coordinates are absolute (t, h, w): only distances inside the
window matter, so generation runs far past the training length at a constant cost per frame.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from nbp.models.masks import causal_by_group
from nbp.models.sampling import guide, sample_logits
from nbp.models.transformer import KVCache, Transformer, TransformerConfig


def compressed_tokens(cfg: TransformerConfig) -> int:
    """Tokens of one compressed frame."""
    _, h, w = cfg.latent_shape
    return (h // cfg.long_pool) * (w // cfg.long_pool)


def frame_layout(cfg: TransformerConfig, first: int, frames: int, compressed: int, device=None):
    """Group ids (n,) and rotary coordinates (n, 3) of the input frames first .. first + frames - 1, the first
    `compressed` of them compressed. A frame's tokens sit at time t + 1, the frame they predict (as in
    `grid_positions`); a compressed token sits at the centre of its patch."""
    _, h, w = cfg.latent_shape
    p = cfg.long_pool
    times = torch.arange(first, first + frames, device=device)
    patch_y, patch_x = torch.meshgrid(torch.arange(h // p, device=device) * p + (p - 1) / 2,
                                      torch.arange(w // p, device=device) * p + (p - 1) / 2, indexing="ij")
    full_y, full_x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    parts = [_grid(times[:compressed], patch_y, patch_x), _grid(times[compressed:], full_y, full_x)]
    return torch.cat([g for g, _ in parts]), torch.cat([c for _, c in parts])


def _grid(times: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor):
    """Group ids (f*c,) and coordinates (f*c, 3) of f frames of c tokens at (ys, xs)."""
    f, c = len(times), ys.numel()
    t = times[:, None].expand(f, c)
    coords = torch.stack([t.float() + 1, ys.flatten().float().expand(f, c), xs.flatten().float().expand(f, c)], -1)
    return t.reshape(-1), coords.reshape(-1, 3)


@lru_cache(maxsize=32)
def _mask(shape: tuple[int, int, int], pool: int, frames: int, compressed: int, device: str) -> torch.Tensor:
    cfg = TransformerConfig(latent_shape=list(shape), block=shape[1] * shape[2], long_pool=pool)
    groups, _ = frame_layout(cfg, 0, frames, compressed, torch.device(device))
    return causal_by_group(groups)


def frame_mask(cfg: TransformerConfig, frames: int, compressed: int, device) -> torch.Tensor:
    """Frame-causal mask of a layout (full attention inside a frame), built once per layout and device."""
    return _mask(tuple(cfg.latent_shape), cfg.long_pool, frames, compressed, str(device))


def action_inputs(model: Transformer, actions: torch.Tensor | None, batch: int, frames: int,
                  drop: torch.Tensor | None = None) -> torch.Tensor | None:
    """Action ids (B, F) added to F input frames (the action producing each one's successor); None, or dropped
    rows (drop (B,) bool), become the null action."""
    cfg = model.config
    if not cfg.num_actions:
        if actions is not None:
            raise ValueError("this model takes no actions (num_actions=0)")
        return None
    device = model.tok_emb.weight.device
    if actions is None:
        return torch.full((batch, frames), cfg.num_actions, dtype=torch.long, device=device)
    actions = torch.as_tensor(actions, device=device).long()
    if actions.shape != (batch, frames):
        raise ValueError(f"actions must be ({batch}, {frames}) here, got {tuple(actions.shape)}")
    if actions.min() < 0 or actions.max() >= cfg.num_actions:
        raise ValueError(f"actions must lie in [0, {cfg.num_actions}), "
                         f"got [{actions.min().item()}, {actions.max().item()}]")
    if drop is not None:
        actions = torch.where(drop.to(device)[:, None], cfg.num_actions, actions)
    return actions


def embed_frames(model: Transformer, codes: torch.Tensor, next_actions: torch.Tensor | None,
                 compressed: int) -> torch.Tensor:
    """codes (B, F, h*w) and their actions (B, F) -> inputs (B, n, C): the first `compressed` frames pooled."""
    cfg = model.config
    b, f, _ = codes.shape
    _, h, w = cfg.latent_shape
    p = cfg.long_pool
    x = model.tok_emb(codes + cfg.video_offset)  # (B, F, h*w, C)
    if next_actions is not None:
        x = x + model.action_emb(next_actions)[:, :, None]  # one action per frame, on each of its tokens
    recent = x[:, compressed:].flatten(1, 2)  # (B, (F - m) * h*w, C)
    if not compressed:
        return recent
    old = x[:, :compressed].reshape(b, compressed, h // p, p, w // p, p, -1)  # (B, m, h/p, p, w/p, p, C)
    old = old.permute(0, 1, 2, 4, 3, 5, 6).flatten(4)  # (B, m, h/p, w/p, p*p*C)
    return torch.cat([model.compress(old.flatten(1, 3)), recent], dim=1)  # (B, m*c + (F-m)*h*w, C)


def world_logits(model: Transformer, codes: torch.Tensor, actions: torch.Tensor | None = None, compressed: int = 0,
                 drop_actions: torch.Tensor | None = None, hidden: bool = False) -> torch.Tensor:
    """codes (B, F, h*w) of F frames, actions (B, F) -> outputs predicting frames compressed + 1 .. F - 1:
    logits (B, (F - compressed - 1) * h*w, V), or normalised states with `hidden`."""
    cfg = model.config
    b, f, hw = codes.shape
    nexts = action_inputs(model, None if actions is None else actions[:, 1:], b, f - 1, drop_actions)
    x = embed_frames(model, codes[:, :-1], nexts, compressed)
    _, coords = frame_layout(cfg, 0, f - 1, compressed, codes.device)
    out = model.run_blocks(x, frame_mask(cfg, f - 1, compressed, codes.device), coords, hidden=hidden)
    return out[:, compressed * compressed_tokens(cfg):]


def training_window(frames: int, short: int, long: int, generator: torch.Generator) -> tuple[int, int]:
    """(first frame, compressed frames) of one training batch from a clip of `frames`: the last `short` input
    frames in full and a random number (0 .. long) of compressed ones before them, so that training sees every
    context a generation meets while its window fills up."""
    if not short:
        return 0, 0
    most = min(long, frames - 1 - short)
    compressed = int(torch.randint(most + 1, (1,), generator=generator))
    return most - compressed, compressed


def window_of(t: int, short: int, long: int) -> tuple[int, int]:
    """(first frame, compressed frames) of the context that predicts frame t."""
    if not short:
        return 0, 0
    full_start = max(0, t - short)
    first = max(0, full_start - long)
    return first, full_start - first


@torch.no_grad()
def predict_frames(model: Transformer, context: torch.Tensor, num_frames: int, *, actions: torch.Tensor | None = None,
                   short_frames: int | None = None, long_frames: int | None = None, greedy: bool = False,
                   temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                   cfg_scale: float | None = None, generator: torch.Generator | None = None,
                   progress=iter) -> torch.Tensor:
    """Continue context codes (B, C, h*w) by `num_frames` frames, one step each -> (B, num_frames, h*w).

    `actions` (B, C + num_frames): actions[:, t] produced frame t. `cfg_scale` guides with the null action
    (FAR uses 1.5). The KV cache grows while the window fills; once it slides (more than `short_frames` frames),
    the window is re-encoded each step, so time and memory per frame stay constant however long the video."""
    cfg = model.config
    hw = cfg.block
    short = cfg.short_frames if short_frames is None else short_frames
    long = (cfg.long_frames if long_frames is None else long_frames) if short else 0
    context = model.check_codes(torch.as_tensor(context).flatten(1), "context").view(len(context), -1, hw)
    b, c = context.shape[:2]
    if c < 1:
        raise ValueError("give at least one context frame")
    total = c + num_frames
    guided = cfg_scale is not None and cfg_scale != 1.0 and cfg.num_actions > 0 and actions is not None
    nexts = action_inputs(model, None if actions is None else actions[:, 1:], b, total - 1)
    if nexts is not None:
        nexts = torch.cat([nexts, nexts[:, -1:]], dim=1)  # (B, total): the last frame is never an input
        if guided:
            nexts = torch.cat([nexts, torch.full_like(nexts, cfg.num_actions)])  # conditional rows, then null
    rows = 2 * b if guided else b
    video = torch.zeros(rows, total, hw, dtype=torch.long, device=context.device)
    video[:, :c] = context.repeat(rows // b, 1, 1)
    capacity = long * compressed_tokens(cfg) + (short or total) * hw + hw
    dtype = model.tok_emb.weight.dtype
    cache, window = None, None
    for t in progress(range(c, total)):
        first, compressed = window_of(t, short, long)
        acts = lambda lo, hi: None if nexts is None else nexts[:, lo:hi]
        if window == (first, compressed):  # the window only grew: feed the newest frame
            _, coords = frame_layout(cfg, t - 1, 1, 0, video.device)
            x = embed_frames(model, video[:, t - 1:t], acts(t - 1, t), 0)
            logits = model.run_blocks(x, None, coords, cache, last=hw)
        else:  # first step, or the window slid: encode it afresh
            cache = KVCache(cfg, rows, capacity, video.device, dtype)
            x = embed_frames(model, video[:, first:t], acts(first, t), compressed)
            _, coords = frame_layout(cfg, first, t - first, compressed, video.device)
            logits = model.run_blocks(x, frame_mask(cfg, t - first, compressed, video.device), coords, cache, last=hw)
            window = (first, compressed)
        logits = logits[..., cfg.video_offset:]
        if guided:
            logits = guide(logits[:b], logits[b:], cfg_scale)
        codes = sample_logits(logits, temperature, top_k, top_p, greedy, generator)  # (B, h*w)
        video[:, t] = codes.repeat(rows // b, 1)
    return video[:b, c:]
