"""Sampling FAR models: one frame at a time, each by N Euler steps of the flow from noise to data.

The flow convention is `nbp.generation.flow`'s (sigma from 1 to 0 on FAR's scheduler; earlier frames are clean
context, timestep -1), the caches `nbp.generation.far_context`'s. With `use_cache`, each context frame is computed once: its keys and
values are kept and every denoising step feeds only the noisy frame's tokens. FAR_Long past its window keeps two
levels: the long-term frames' keys (computed once, when a frame leaves the window) and the window's clean frames
(recomputed once per generated frame, since their long-term context changed), so the cost per frame stays flat.
With `context_noise` sigma > 0, generated frames enter the window noised to sigma (at timestep 1000 sigma, as training
shows context frames), while the given frames and the long-term ones stay clean.

On a GPU (`decoding`), a frame's N steps run over fixed shapes instead: the context's keys and values are copied
into buffers of a fixed capacity (the columns not written masked out by the frame-causal mask), and the N steps,
guidance and Euler updates included, are captured once as a CUDA graph and replayed for every frame, with the
frame's noise, positions and action copied into the graph's inputs: one launch per frame instead of about
20 x layers x N launched from Python.

Guidance (FAR's pipeline, through `nbp.generation.guidance`): cfg_scale > 1 doubles the batch into [conditioned,
null], the null rows with the null id for the label, or for the action of every frame (context included);
v = v_null + cfg_scale (v_cond - v_null). For actions, cfg_scale -1 samples action-free (every action the null id);
any other scale <= 1 is plain conditional.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from nbp.config import ConfigError, InputError, with_settings
from nbp.generation.decoding import fixed_shapes
from nbp.generation.far_context import (
    Conditions,
    Context,
    ContextCache,
    FrameDenoiser,
    add_generated,
    clean_context,
    context_capacity,
    long_term_span,
    noisy_frame_velocity,
)
from nbp.generation.flow import euler_step, flow_schedule
from nbp.generation.guidance import is_guided, with_null_rows
from nbp.io.progress import progress_bar
from nbp.models.far import FAR
from nbp.settings.generation import FARSamplingConfig


def check_latents(far: FAR, latents: torch.Tensor, what: str = "latents") -> None:
    cfg = far.config
    if latents.ndim != 5 or latents.shape[2] != cfg.in_channels or latents.shape[-1] % cfg.patch_size \
            or latents.shape[-2] % cfg.patch_size:
        raise InputError(f"{what} must be (B, T, {cfg.in_channels}, h, w) with h and w multiples of the patch "
                         f"{cfg.patch_size}; got {tuple(latents.shape)}")
    if cfg.long and (latents.shape[-1] % cfg.context_patch_size or latents.shape[-2] % cfg.context_patch_size):
        raise InputError(f"{what} of {latents.shape[-2]}x{latents.shape[-1]} do not split into the long-term "
                         f"context's {cfg.context_patch_size}x{cfg.context_patch_size} patches")


def check_conditions(far: FAR, labels: torch.Tensor | None, actions: torch.Tensor | None, cfg_scale: float = 1.0) -> None:
    cfg = far.config
    if cfg.condition == "label" and labels is None:
        raise InputError("this FAR model is class-conditional: give labels (one class id per video)")
    if cfg.condition == "action" and actions is None:
        raise InputError("this FAR model is action-conditional: give actions (one id per frame, context included)")
    if cfg_scale == -1 and cfg.condition != "action":
        raise ConfigError("cfg_scale -1 (action-free sampling) needs an action-conditioned model")
    for name, ids, expected in (("labels", labels, "label"), ("actions", actions, "action")):
        if ids is None or not ids.numel():
            continue
        if cfg.condition != expected:
            raise InputError(f"{name} given to a FAR model conditioned on {cfg.condition!r}")
        if ids.min() < 0 or ids.max() > cfg.num_classes:
            raise InputError(f"{name} must lie in [0, {cfg.num_classes - 1}] ({cfg.num_classes} is the null id); "
                             f"got {int(ids.min())}..{int(ids.max())}")


def conditions_for(model: FAR, labels, actions, cfg_scale: float) -> Conditions:
    cfg = model.config
    check_conditions(model, labels, actions, cfg_scale)
    if cfg_scale == -1:
        return Conditions(None, torch.full_like(actions, model.null_id), False, 1.0)
    if not is_guided(cfg_scale, cfg.condition != "none") or cfg_scale < 1:
        return Conditions(labels, actions, False, 1.0)
    return Conditions(with_null_rows(labels, model.null_id), with_null_rows(actions, model.null_id), True, cfg_scale)


def denoise(model: FAR, past: Context, noise: torch.Tensor, timesteps: torch.Tensor, sigmas: torch.Tensor,
            cond: Conditions, cache: ContextCache | None, long_frames: int | None = None) -> torch.Tensor:
    """Frame j = past.frames from its noise (B, C, H, W) by the schedule's Euler steps."""
    x = noise
    for i, t in enumerate(timesteps):
        xs = torch.cat([x, x]) if cond.doubled else x
        v = cond.guided(noisy_frame_velocity(model, past, xs, t, cond, cache, long_frames))
        x = euler_step(x, v, sigmas[i + 1] - sigmas[i])
    return x


class LatentStepper:
    """FAR's next latent frame, one call at a time: `generate_latents` loops it, and a played session
    (`nbp.pipelines.session`) drives it with an action per frame. With `sampling.long_frames`, the state between
    frames holds only the frames the next one sees, so time and memory per frame stay flat however long it runs."""

    def __init__(self, model: FAR, context: torch.Tensor, sampling: FARSamplingConfig, *,
                 labels: torch.Tensor | None = None, actions: torch.Tensor | None = None, end: int | None = None):
        """`context`: clean latents (B, Tc, C, h, w), Tc >= 0; `actions` (B, Tc) theirs. `end`: the frames there will
        be, when known (fixed-shape decoding sizes its buffers by it; else by the most a bounded context holds)."""
        param = next(model.parameters())
        self.model, self.sampling = model, sampling
        self.cond = conditions_for(model, labels, actions, sampling.cfg_scale)
        self.video = clean_context(context.to(param.device, param.dtype))
        self.timesteps, self.sigmas = flow_schedule(sampling.steps)
        self.frame_tokens = (context.shape[-2] // model.config.patch_size) * (context.shape[-1] // model.config.patch_size)
        self.tokens_fed = 0  # tokens (of one video) through the model for the last frame, with the cache
        self.cache, self.denoiser = None, None
        decoding = sampling.resolved_decoding(param.device)
        if sampling.use_cache:
            given, fixed = context.shape[1], fixed_shapes(decoding)
            capacity = context_capacity(model, given, self.end_of(given, end, growing=not fixed), *context.shape[-2:],
                                        sampling.long_frames)
            rows = len(context) * (2 if self.cond.doubled else 1)
            self.cache = ContextCache(model, rows, capacity, self.video.clean, sampling.long_frames, fixed)
        if fixed_shapes(decoding):
            like = self.video.clean.new_zeros(len(context), *context.shape[2:])
            self.denoiser = FrameDenoiser(model, self.cond, sampling.steps, self.cache, like, decoding)

    def end_of(self, given: int, end: int | None, growing: bool = False) -> int:
        """`end`, or for an endless run the frame from which a bounded context is as large as it gets (a `growing`
        cache: the next frame, when it is not bounded)."""
        if end is not None:
            return end
        cfg = self.model.config
        if not cfg.long or self.sampling.long_frames is None:
            if growing:
                return given + 1
            raise InputError("fixed-shape decoding of an open-ended run needs FAR_Long with long_frames set (so that "
                             "its context stops growing), or the frame count")
        return given + cfg.short_window + self.sampling.long_frames + 1

    def action_rows(self, action: torch.Tensor) -> torch.Tensor:
        """The new frame's actions (B,) as the rows take them (B', 1)."""
        column = torch.as_tensor(action, device=self.cond.actions.device).view(-1, 1).long()
        check_conditions(self.model, None, column)
        if self.sampling.cfg_scale == -1:  # action-free: every action the null id
            column = torch.full_like(column, self.model.null_id)
        return with_null_rows(column, self.model.null_id) if self.cond.doubled else column

    @torch.no_grad()
    def step(self, noise: torch.Tensor, action: torch.Tensor | None = None,
             context_noise: torch.Tensor | None = None) -> torch.Tensor:
        """The next frame (B, C, h, w) from its noise (B, C, h, w), made with `action` (B,) (action-conditioned
        models: the frame's own); `context_noise` (B, C, h, w) noises it as context when `sampling.context_noise`."""
        cond, j = self.cond, self.video.frames
        if (action is None) != (cond.actions is None):
            raise InputError("give each new frame its action exactly when the FAR model is action-conditioned")
        if action is not None:
            cond.actions = torch.cat([cond.actions, self.action_rows(action)], dim=1)
        past = self.video.doubled() if cond.doubled else self.video
        if self.cache is not None:
            self.cache.update(past, cond)
            self.tokens_fed = self.cache.tokens_fed + self.sampling.steps * self.frame_tokens
        noise = noise.to(self.video.clean.device, self.video.clean.dtype)
        if self.denoiser is not None:
            x = self.denoiser(noise, j, self.cache)
        else:
            x = denoise(self.model, past, noise, self.timesteps, self.sigmas, cond, self.cache,
                        self.sampling.long_frames)
        if context_noise is not None:
            context_noise = context_noise.to(x.device, x.dtype)
        self.video = add_generated(self.video, x, context_noise, self.sampling.context_noise)
        self.forget()
        return x

    def forget(self) -> None:
        """Drop the frames (and actions) the next frame no longer sees."""
        first, _ = long_term_span(self.model, self.video.frames + 1, self.sampling.long_frames)
        if first > self.video.first:
            self.video = self.video.since(first)
            if self.cond.actions is not None:
                self.cond.actions, self.cond.first = self.cond.actions[:, first - self.cond.first:], first


@torch.no_grad()
def generate_latents(model: FAR, frames: int, context: torch.Tensor | None = None, *,
                     sampling: FARSamplingConfig | None = None, batch: int | None = None,
                     labels: torch.Tensor | None = None, actions: torch.Tensor | None = None,
                     noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     latent_size: int | tuple[int, int] | None = None, show_progress: bool = False,
                     on_frame: Callable[[int, torch.Tensor], None] | None = None, **settings) -> torch.Tensor:
    """`frames` new latent frames after `context` (B, Tc, C, h, w) (None or Tc = 0: from nothing; then `batch`, and
    the latent size (h, w) from `noise` or `latent_size`: a model runs at any size its patches divide).
    `sampling`, and any of its fields as keywords (`steps=4, cfg_scale=1.5`), say how. `actions` (B, Tc + frames)
    cover every frame. The noise (B, frames, C, h, w) is drawn once from `generator` unless given; `on_frame(index,
    latent)` is called after each new frame. Returns (B, Tc + frames, C, h, w): the context unchanged, then the new
    frames."""
    sampling = with_settings(sampling or FARSamplingConfig(), settings)
    sampling.validate()
    for what, latents in (("context", context), ("noise", noise)):
        if latents is not None:
            check_latents(model, latents, what)
    check_conditions(model, labels, actions, sampling.cfg_scale)
    param = next(model.parameters())
    sampling.resolved_decoding(param.device)  # a mode this device lacks is refused before any work
    if context is None:
        rows = batch or next((len(x) for x in (noise, labels, actions) if x is not None), 1)
        context = empty_context(model, rows, noise, latent_size, param.device)
    b, given = context.shape[:2]
    if noise is not None and tuple(noise.shape[-3:]) != tuple(context.shape[-3:]):
        raise InputError(f"noise of frames {tuple(noise.shape[-3:])} for latents of {tuple(context.shape[-3:])}: "
                         "give noise (B, frames, C, h, w) of the context's latent size")
    if actions is not None and actions.shape[1] < given + frames:
        raise InputError(f"actions cover {actions.shape[1]} frames; {given} given + {frames} generated need one each")
    if noise is None:
        noise = torch.randn((b, frames, *context.shape[2:]), generator=generator, device="cpu")
    noise = noise.to(param.device, param.dtype)
    # drawn after the frames' noise, and only when used, so that clean-context sampling draws what it always did
    context_noise = None if not sampling.context_noise else \
        torch.randn(noise.shape, generator=generator, device="cpu").to(param.device, param.dtype)
    stepper = LatentStepper(model, context, sampling, labels=labels,
                            actions=None if actions is None else actions[:, :given], end=given + frames)
    made = [stepper.video.clean]
    with progress_bar(frames, "FAR frames", "frame", disable=not show_progress) as bar:
        for k in range(frames):
            x = stepper.step(noise[:, k], None if actions is None else actions[:, given + k],
                             None if context_noise is None else context_noise[:, k])
            made.append(x[:, None])
            bar.update(1)
            if on_frame is not None:
                on_frame(given + k, x)
    return torch.cat(made, dim=1)


def empty_context(model: FAR, rows: int, noise: torch.Tensor | None, latent_size: int | tuple[int, int] | None,
                  device: torch.device) -> torch.Tensor:
    """No frames (rows, 0, C, h, w), at the size the noise has or `latent_size` says: never a default size."""
    if noise is not None:
        height, width = noise.shape[-2:]
    elif latent_size is not None:
        height, width = (latent_size, latent_size) if isinstance(latent_size, int) else latent_size
    else:
        raise InputError("sampling FAR from nothing needs the latent size: give `noise` (B, frames, C, h, w) or "
                         "`latent_size` (h, w)")
    return torch.zeros(rows, 0, model.config.in_channels, height, width, device=device)
