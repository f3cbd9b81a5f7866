"""World models: action-conditioned, long-context video prediction with frame blocks (FAR's tasks).

A `WorldTransformer` is a `Transformer` with frame blocks (block = h*w), no begin block and no class or text
condition. Its input is a run of latent frames z_0 .. z_{F-1}; the tokens of frame k predict frame k + 1 (block k ->
block k + 1, as in every NBP model), so one step generates one frame.

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
import torch.nn.functional as F
from torch import nn

from nbp.config import InputError
from nbp.models.transformer import KVCache, Transformer
from nbp.models.transformer_attention import AttentionMask, causal_by_group
from nbp.settings.models import WorldConfig


def frame_layout(cfg: WorldConfig, first: int, frames: int, compressed: int, device=None):
    """Group ids (n,) and rotary coordinates (n, 3) of the input frames first .. first + frames - 1, the first
    `compressed` of them compressed. A frame's tokens sit at time t + 1, the frame they predict (as in
    `SequenceLayout.positions`); a compressed token sits at the centre of its patch."""
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
def _mask(shape: tuple[int, int, int], pool: int, frames: int, compressed: int, device: str) -> AttentionMask:
    cfg = WorldConfig(latent_shape=list(shape), block=shape[1] * shape[2], long_pool=pool)
    groups, _ = frame_layout(cfg, 0, frames, compressed, torch.device(device))
    return AttentionMask(causal_by_group(groups))


def frame_mask(cfg: WorldConfig, frames: int, compressed: int, device) -> AttentionMask:
    """Frame-causal mask of a layout (full attention inside a frame), built once per layout and device."""
    return _mask(tuple(cfg.latent_shape), cfg.long_pool, frames, compressed, str(device))


class WorldTransformer(Transformer):
    kind = "world"
    config_class = WorldConfig

    def add_input_modules(self, cfg: WorldConfig) -> None:
        if cfg.num_actions:  # the last row is the null action (dropout, guidance)
            self.action_emb = nn.Embedding(cfg.num_actions + 1, cfg.n_embd)
        if cfg.short_frames:  # an older frame's p x p token patches -> one token each (FAR's long context)
            self.compress = nn.Linear(cfg.long_pool**2 * cfg.n_embd, cfg.n_embd, bias=False)

    def action_inputs(self, actions: torch.Tensor | None, batch: int, frames: int,
                      drop: torch.Tensor | None = None) -> torch.Tensor | None:
        """Action ids (B, F) added to F input frames (the action producing each one's successor); None, or
        dropped rows (drop (B,) bool), become the null action."""
        cfg = self.config
        if not cfg.num_actions:
            if actions is not None:
                raise InputError("this model takes no actions (num_actions=0)")
            return None
        device = self.tok_emb.weight.device
        if actions is None:
            return torch.full((batch, frames), cfg.num_actions, dtype=torch.long, device=device)
        actions = torch.as_tensor(actions, device=device).long()
        if actions.shape != (batch, frames):
            raise InputError(f"actions must be ({batch}, {frames}) here, got {tuple(actions.shape)}")
        if actions.min() < 0 or actions.max() >= cfg.num_actions:
            raise InputError(f"actions must lie in [0, {cfg.num_actions}), "
                             f"got [{actions.min().item()}, {actions.max().item()}]")
        if drop is not None:
            actions = torch.where(drop.to(device)[:, None], cfg.num_actions, actions)
        return actions

    def embed_frames(self, codes: torch.Tensor, next_actions: torch.Tensor | None, compressed: int) -> torch.Tensor:
        """codes (B, F, h*w) and their actions (B, F) -> inputs (B, n, C): the first `compressed` frames pooled."""
        cfg = self.config
        b, f, _ = codes.shape
        _, h, w = cfg.latent_shape
        p = cfg.long_pool
        x = self.tok_emb(codes + cfg.video_offset)  # (B, F, h*w, C)
        if next_actions is not None:
            x = x + self.action_emb(next_actions)[:, :, None]  # one action per frame, on each of its tokens
        recent = x[:, compressed:].flatten(1, 2)  # (B, (F - m) * h*w, C)
        if not compressed:
            return recent
        old = x[:, :compressed].reshape(b, compressed, h // p, p, w // p, p, -1)  # (B, m, h/p, p, w/p, p, C)
        old = old.permute(0, 1, 2, 4, 3, 5, 6).flatten(4)  # (B, m, h/p, w/p, p*p*C)
        return torch.cat([self.compress(old.flatten(1, 3)), recent], dim=1)  # (B, m*c + (F-m)*h*w, C)

    def frame_logits(self, codes: torch.Tensor, actions: torch.Tensor | None = None, compressed: int = 0,
                     drop_actions: torch.Tensor | None = None, hidden: bool = False) -> torch.Tensor:
        """codes (B, F, h*w) of F frames, actions (B, F) -> outputs predicting frames compressed + 1 .. F - 1:
        logits (B, (F - compressed - 1) * h*w, V), or normalised states with `hidden`."""
        cfg = self.config
        b, f, _ = codes.shape
        nexts = self.action_inputs(None if actions is None else actions[:, 1:], b, f - 1, drop_actions)
        x = self.embed_frames(codes[:, :-1], nexts, compressed)
        _, coords = frame_layout(cfg, 0, f - 1, compressed, codes.device)
        out = self.run_layers(x, frame_mask(cfg, f - 1, compressed, codes.device), coords, hidden=hidden)
        return out[:, compressed * cfg.compressed_tokens:]

    def window_logits(self, frames: torch.Tensor, actions: torch.Tensor | None, first: int, compressed: int,
                      cache: KVCache | None) -> torch.Tensor:
        """Logits (B, h*w, V) of the frame after the input frames (B, F, h*w), which start at frame `first`
        (the first `compressed` pooled), with the actions (B, F) they predict under; fills `cache`."""
        cfg = self.config
        x = self.embed_frames(frames, actions, compressed)
        _, coords = frame_layout(cfg, first, frames.shape[1], compressed, frames.device)
        mask = frame_mask(cfg, frames.shape[1], compressed, frames.device) if cache is None or not cache.length else None
        return self.run_layers(x, mask, coords, cache, last=cfg.block)

    def nll(self, codes: torch.Tensor, *, actions=None) -> torch.Tensor:
        """Per-token negative log-likelihood (B, L - S) of codes (B, L) (every frame but the first), given
        `actions` (B, L / S), one per frame."""
        cfg = self.config
        codes = self.check_codes(codes)
        logits = self.frame_logits(codes.view(len(codes), -1, cfg.block), actions)
        return F.cross_entropy(logits.float().transpose(1, 2), codes[:, cfg.block:] + cfg.video_offset, reduction="none")
