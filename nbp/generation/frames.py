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


class FrameStepper:
    """A world model's next frame, one call at a time, over the window `predict_frames` slides: the state between
    frames holds only the frames the window can still reach, so time and memory per frame stay flat however long
    it runs (a played session, `nbp.pipelines.session`). `step(action)` makes frame t from `action` (B,), the
    action producing it (None: the null action)."""

    def __init__(self, model: WorldTransformer, context: torch.Tensor, context_actions: torch.Tensor | None = None,
                 *, guided: bool = False, short_frames: int | None = None, long_frames: int | None = None,
                 max_frames: int | None = None, greedy: bool = False, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None):
        cfg = model.config
        self.model, self.hw, self.guided = model, cfg.block, guided
        self.short = cfg.short_frames if short_frames is None else short_frames
        self.long = (cfg.long_frames if long_frames is None else long_frames) if self.short else 0
        if not self.short and max_frames is None:
            raise InputError("a world model without a window (short_frames=0) sees every frame: give max_frames")
        context = model.check_codes(torch.as_tensor(context).flatten(1), "context").view(len(context), -1, self.hw)
        self.batch, given = context.shape[:2]
        if given < 1:
            raise InputError("give at least one context frame")
        self.frames = double_rows(context, guided)  # (B', kept, h*w): frames start .. t - 1
        self.start, self.t = 0, given
        # the action each kept frame is the input for (the one producing its successor); the last one is set by step
        known = None if context_actions is None or given == 1 else context_actions[:, 1:]
        inputs = model.action_inputs(known, self.batch, given - 1)  # null actions where none are known
        self.inputs = None if inputs is None else self.null_doubled(
            torch.cat([inputs, inputs.new_full((self.batch, 1), cfg.num_actions)], dim=1))
        self.capacity = self.long * cfg.compressed_tokens + (self.short or max_frames) * self.hw + self.hw
        self.sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, generator=generator)
        self.cache, self.window = None, None
        self.tokens_fed = 0  # input tokens of the last step (flat once the window slides)

    def null_doubled(self, ids: torch.Tensor) -> torch.Tensor:
        return with_null_rows(ids, self.model.config.num_actions) if self.guided else ids

    @torch.no_grad()
    def step(self, action: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
        """Codes (B, h*w) of frame t, made with `action` (B,); `scale` guides it (with `guided`)."""
        model, cfg, t = self.model, self.model.config, self.t
        if self.inputs is not None:
            self.inputs[:, -1] = self.null_doubled(model.action_inputs(None if action is None else
                                                                        torch.as_tensor(action)[:, None], self.batch, 1))[:, 0]
        elif action is not None:
            raise InputError("this model takes no actions (num_actions=0)")
        first, compressed = window_of(t, self.short, self.long)
        if self.short == 0 and t + 1 > self.capacity // self.hw:
            raise InputError(f"this model sees every frame: room was made for {self.capacity // self.hw - 1} frames")
        fresh = self.window != (first, compressed)  # the first step, or the window slid: encode it afresh
        if fresh:  # the buffers are reused: a new cache each step past the window would churn the allocator
            if self.cache is None:
                self.cache = KVCache(cfg, len(self.frames), self.capacity, self.frames.device, model.tok_emb.weight.dtype)
            self.cache.clear()
            self.window = (first, compressed)
        lo = first if fresh else t - 1  # else the window only grew: feed the newest frame
        acts = None if self.inputs is None else self.inputs[:, lo - self.start:t - self.start]
        self.tokens_fed = (t - lo) * self.hw
        logits = model.window_logits(self.frames[:, lo - self.start:t - self.start], acts, lo,
                                     compressed if fresh else 0, self.cache)[..., cfg.video_offset:]
        if self.guided:
            logits = guide_rows(logits, scale)
        codes = sample_logits(logits, **self.sampling)  # (B, h*w)
        self.append(codes)
        return codes

    def append(self, codes: torch.Tensor) -> None:
        """Frame t into the state; frames the next window cannot reach out of it."""
        self.frames = torch.cat([self.frames, double_rows(codes, self.guided)[:, None]], dim=1)
        if self.inputs is not None:
            self.inputs = torch.cat([self.inputs, self.inputs[:, -1:]], dim=1)
        self.t += 1
        if self.short:
            drop = window_of(self.t, self.short, self.long)[0] - self.start
            self.frames, self.start = self.frames[:, drop:], self.start + drop
            self.inputs = None if self.inputs is None else self.inputs[:, drop:]


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
    c = torch.as_tensor(context).flatten(1).shape[1] // model.config.block
    if actions is not None and actions.shape[1] < c + num_frames:
        raise InputError(f"actions must be ({len(context)}, {c + num_frames}) here, got {tuple(actions.shape)}")
    doubled = is_guided(cfg_scale, model.config.num_actions > 0 and actions is not None)
    stepper = FrameStepper(model, context, None if actions is None else actions[:, :c], guided=doubled,
                           short_frames=short_frames, long_frames=long_frames, max_frames=c + num_frames,
                           greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    frames = [stepper.step(None if actions is None else actions[:, t],
                           guidance_scale(cfg_scale, t - c, num_frames, cfg_schedule) if doubled else None)
              for t in progress(range(c, c + num_frames))]
    return torch.stack(frames, dim=1)
