"""Sampling FAR models: one frame at a time, each by N Euler steps of the flow from noise to data.

Flow convention (FAR, diffusers' FlowMatchEulerDiscreteScheduler): x_sigma = sigma * noise + (1 - sigma) * data, the
model predicts v = noise - data, sigma runs from 1 to 0 on the scheduler's schedule (timestep = 1000 sigma).
Earlier frames are clean context (timestep -1). With `use_cache`, each context frame is computed once: its keys and
values are kept and every denoising step feeds only the noisy frame's tokens. FAR_Long past its window keeps two
levels: the long-term frames' keys (computed once, when a frame leaves the window) and the window's clean frames
(recomputed once per generated frame, since their long-term context changed), so the cost per frame stays flat.

Guidance (FAR's pipeline): scale > 1 doubles the batch into [null, conditioned], the null branch with the null id
for the label, or for the action of every frame (context included); v = v_null + scale (v_cond - v_null). For
actions, scale -1 samples action-free (every action the null id); any other scale <= 1 is plain conditional.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from nbp.config import ConfigError, InputError
from nbp.io.progress import progress_bar
from nbp.models.far import FAR, KVLevel

CLEAN = -1.0  # the timestep of a clean context frame


@dataclass
class FARSamplingConfig:
    steps: int = 50  # Euler steps per frame (FAR: 50)
    guidance: float = 1.0  # FAR: 2.0 for labels, 1.5 for actions; -1: action-free
    use_cache: bool = True

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.guidance < 0 and self.guidance != -1:
            raise ConfigError(f"guidance must be >= 0, or -1 (action-free sampling), got {self.guidance}")


def flow_schedule(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps (N,), sigmas (N + 1,)) of FAR's scheduler (1,000 training timesteps, shift 1)."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.float(), scheduler.sigmas.float()


@dataclass
class Conditions:
    """What the model is given besides latents, already doubled for guidance where it applies."""
    labels: torch.Tensor | None
    actions: torch.Tensor | None  # (B', all frames)
    doubled: bool
    scale: float


def conditions_for(model: FAR, labels, actions, guidance: float) -> Conditions:
    cfg = model.config
    if cfg.condition == "label" and labels is None:
        raise InputError("this FAR model is class-conditional: give labels (one class id per video)")
    if cfg.condition == "action" and actions is None:
        raise InputError("this FAR model is action-conditional: give actions (one id per frame, context included)")
    if guidance == -1:
        if cfg.condition != "action":
            raise ConfigError("guidance -1 (action-free sampling) needs an action-conditioned model")
        return Conditions(None, torch.full_like(actions, model.null_id), False, 1.0)
    if guidance <= 1 or cfg.condition == "none":
        return Conditions(labels, actions, False, 1.0)
    if labels is not None:
        labels = torch.cat([torch.full_like(labels, model.null_id), labels])
    if actions is not None:
        actions = torch.cat([torch.full_like(actions, model.null_id), actions])
    return Conditions(labels, actions, True, guidance)


class ContextCache:
    """Keys and values of the clean frames before the noisy one (module docstring)."""

    def __init__(self, model: FAR):
        self.model = model
        self.long: KVLevel | None = None  # long-term frames 0 .. long_count - 1
        self.recent: KVLevel | None = None  # clean window frames recent_from .. recent_to - 1
        self.long_count = self.recent_from = self.recent_to = 0

    def levels(self) -> list[KVLevel]:
        return [level for level in (self.long, self.recent) if level is not None]

    def update(self, context: torch.Tensor, cond: Conditions) -> None:
        """Cover frames 0 .. j - 1 of `context` (B', j, C, H, W), the context of noisy frame j."""
        model, frames = self.model, context.shape[1]
        old = model.long_term_frames(frames + 1)
        if old > self.long_count:
            self.long = self.extend(self.long, context, self.long_count, old, cond, long_term=True)
            self.long_count, self.recent, self.recent_from = old, None, old  # the window's context changed
        start = self.recent_to if self.recent is not None else self.recent_from
        if frames > start:
            self.recent = self.extend(self.recent, context, start, frames, cond, long_term=False)
        self.recent_to = frames

    def extend(self, level: KVLevel | None, context, start: int, end: int, cond: Conditions, long_term: bool) -> KVLevel:
        batch = context.shape[0]
        clean = torch.full((batch, end - start), CLEAN, device=context.device)
        tokens = self.model.embed(context[:, start:end], clean, start, cond.labels, frame_slice(cond.actions, start, end),
                                  long_term)
        # long-term frames see only long-term frames; window frames see those and the window's earlier frames
        past = [level] if long_term else [self.long, level]
        _, new = self.model.run([tokens], [p for p in past if p is not None], keep=True)
        return new if level is None else level.extend(new)


def frame_slice(actions: torch.Tensor | None, start: int, end: int) -> torch.Tensor | None:
    return None if actions is None else actions[:, start:end]


def noisy_frame_velocity(model: FAR, context: torch.Tensor, x: torch.Tensor, timestep: torch.Tensor,
                         cond: Conditions, cache: ContextCache | None) -> torch.Tensor:
    """The velocity (B', C, H, W) of noisy frame j = context.shape[1] at `timestep`."""
    batch, j = x.shape[0], context.shape[1]
    t = timestep.to(x.device).expand(batch)
    if cache is None:  # the whole sequence again, as the official pipeline without a cache
        timesteps = torch.cat([torch.full((batch, j), CLEAN, device=x.device), t[:, None]], dim=1)
        return model(torch.cat([context, x[:, None]], dim=1), timesteps, cond.labels,
                     frame_slice(cond.actions, 0, j + 1))[:, -1]
    tokens = model.embed(x[:, None], t[:, None], j, cond.labels, frame_slice(cond.actions, j, j + 1))
    runs, _ = model.run([tokens], cache.levels())
    return model.velocity(runs[0], 1)[:, 0]


def guided(v: torch.Tensor, cond: Conditions) -> torch.Tensor:
    if not cond.doubled:
        return v
    v_null, v_cond = v.chunk(2)
    return v_null + cond.scale * (v_cond - v_null)


@torch.no_grad()
def generate_latents(model: FAR, frames: int, context: torch.Tensor | None = None, *, batch: int | None = None,
                     labels: torch.Tensor | None = None, actions: torch.Tensor | None = None,
                     sampling: FARSamplingConfig | None = None, noise: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, show_progress: bool = False,
                     on_frame: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """`frames` new latent frames after `context` (B, Tc, C, h, w) (None or Tc = 0: from nothing; then `batch`).
    `actions` (B, Tc + frames) cover every frame. The noise (B, frames, C, h, w) is drawn once from `generator`
    unless given; `on_frame(index, latent)` is called after each new frame. Returns (B, Tc + frames, C, h, w): the
    context unchanged, then the new frames."""
    sampling = sampling or FARSamplingConfig()
    sampling.validate()
    cfg = model.config
    param = next(model.parameters())
    if context is None:
        context = torch.zeros(batch or (len(labels) if labels is not None else 1), 0, cfg.in_channels,
                              cfg.sample_size, cfg.sample_size, device=param.device)
    b, given = context.shape[:2]
    if actions is not None and actions.shape[1] < given + frames:
        raise InputError(f"actions cover {actions.shape[1]} frames; {given} given + {frames} generated need one each")
    if noise is None:
        noise = torch.randn((b, frames, *context.shape[2:]), generator=generator, device="cpu").to(param.device)
    timesteps, sigmas = flow_schedule(sampling.steps)
    cond = conditions_for(model, labels, actions, sampling.guidance)
    video = context.to(param.dtype)
    cache = ContextCache(model) if sampling.use_cache else None
    with progress_bar(frames, "FAR frames", "frame", disable=not show_progress) as bar:
        for k in range(frames):
            past = torch.cat([video, video]) if cond.doubled else video
            if cache is not None:
                cache.update(past, cond)
            x = noise[:, k].to(param.dtype)
            for i, t in enumerate(timesteps):
                xs = torch.cat([x, x]) if cond.doubled else x
                v = guided(noisy_frame_velocity(model, past, xs, t, cond, cache), cond)
                x = (x.float() + (sigmas[i + 1] - sigmas[i]) * v.float()).to(v.dtype)
            video = torch.cat([video, x[:, None]], dim=1)
            bar.update(1)
            if on_frame is not None:
                on_frame(given + k, x)
    return video
