"""Sampling FAR models: one frame at a time, each by N Euler steps of the flow from noise to data.

Flow convention (FAR, diffusers' FlowMatchEulerDiscreteScheduler): x_sigma = sigma * noise + (1 - sigma) * data, the
model predicts v = noise - data, sigma runs from 1 to 0 on the scheduler's schedule (timestep = 1000 sigma).
Earlier frames are clean context (timestep -1). With `use_cache`, each context frame is computed once: its keys and
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
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from nbp.config import ConfigError, InputError
from nbp.generation.decoding import capture_graph, check_decoding, compiled_if, fixed_shapes, replays_graphs, resolve_decoding
from nbp.generation.guidance import guide_rows, is_guided, with_null_rows
from nbp.io.progress import progress_bar
from nbp.models.far import FAR, KVLevel

CLEAN = -1.0  # the timestep of a clean context frame
UNWRITTEN = 1 << 30  # the frame of a static context column not written: after every query, so masked out


@dataclass
class FARSamplingConfig:
    steps: int = 50  # Euler steps per frame (FAR: 50)
    cfg_scale: float = 1.0  # classifier-free guidance; FAR: 2.0 for labels, 1.5 for actions; -1: action-free
    use_cache: bool = True
    # with the cache: "dynamic" (its shapes grow), "static" (fixed shapes, eager), "cuda-graphs" (a frame's steps
    # replayed as one CUDA graph), "compiled" (the same of the torch.compile'd step); "auto": CUDA graphs on a GPU
    decoding: str = "auto"
    # the noise level sigma at which generated frames enter the window as context (timestep 1000 sigma; 0: clean,
    # FAR's sampler). Training shows the model noisy context frames, so a little noise here can hide the artifacts
    # of its own frames before a long rollout compounds them (GameNGen's noise augmentation, at sampling only; on
    # the tiny Crafter model it moved PSNR by < 0.1 dB). The given context and the long-term frames stay clean.
    context_noise: float = 0.0

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.cfg_scale < 0 and self.cfg_scale != -1:
            raise ConfigError(f"cfg_scale must be >= 0, or -1 (action-free sampling), got {self.cfg_scale}")
        check_decoding(self.decoding)
        if not 0 <= self.context_noise < 1:
            raise ConfigError(f"context_noise must be in [0, 1), got {self.context_noise}")
        if not self.use_cache and self.decoding not in ("auto", "dynamic"):
            raise ConfigError(f"decoding={self.decoding!r} runs over the cache: it needs use_cache")

    def resolved_decoding(self, device: torch.device) -> str:
        return resolve_decoding(self.decoding, device, cached=self.use_cache)


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

    def guided(self, v: torch.Tensor) -> torch.Tensor:
        """The velocity (B, ...) of the rows' velocities (B', ...)."""
        return guide_rows(v, self.scale) if self.doubled else v


def conditions_for(model: FAR, labels, actions, cfg_scale: float) -> Conditions:
    cfg = model.config
    if cfg.condition == "label" and labels is None:
        raise InputError("this FAR model is class-conditional: give labels (one class id per video)")
    if cfg.condition == "action" and actions is None:
        raise InputError("this FAR model is action-conditional: give actions (one id per frame, context included)")
    if cfg_scale == -1:
        if cfg.condition != "action":
            raise ConfigError("cfg_scale -1 (action-free sampling) needs an action-conditioned model")
        return Conditions(None, torch.full_like(actions, model.null_id), False, 1.0)
    if not is_guided(cfg_scale, cfg.condition != "none") or cfg_scale < 1:
        return Conditions(labels, actions, False, 1.0)
    return Conditions(with_null_rows(labels, model.null_id), with_null_rows(actions, model.null_id), True, cfg_scale)


@dataclass
class Context:
    """Frames 0 .. j - 1 before noisy frame j, as the model sees them: `clean` (B', j, C, h, w) for the long-term
    frames, `seen` and its `timesteps` (B', j) for the window (generated frames noised by `context_noise`)."""
    clean: torch.Tensor
    seen: torch.Tensor
    timesteps: torch.Tensor

    @property
    def frames(self) -> int:
        return self.clean.shape[1]

    def window(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.seen[:, start:end], self.timesteps[:, start:end]

    def long_term(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean = self.clean[:, start:end]
        return clean, torch.full(clean.shape[:2], CLEAN, device=clean.device)

    def doubled(self) -> Context:
        return Context(*(torch.cat([x, x]) for x in (self.clean, self.seen, self.timesteps)))

    def append(self, clean: torch.Tensor, seen: torch.Tensor, timestep: float) -> Context:
        """With one more frame (B, C, h, w), seen as `seen` at `timestep`."""
        t = torch.full((len(clean), 1), timestep, device=clean.device)
        return Context(torch.cat([self.clean, clean[:, None]], 1), torch.cat([self.seen, seen[:, None]], 1),
                       torch.cat([self.timesteps, t], 1))


def clean_context(video: torch.Tensor) -> Context:
    return Context(video, video, torch.full(video.shape[:2], CLEAN, device=video.device))


class ContextCache:
    """Keys and values of the context frames before the noisy one (module docstring)."""

    def __init__(self, model: FAR):
        self.model = model
        self.long: KVLevel | None = None  # long-term frames 0 .. long_count - 1
        self.recent: KVLevel | None = None  # clean window frames recent_from .. recent_to - 1
        self.long_count = self.recent_from = self.recent_to = 0

    def levels(self) -> list[KVLevel]:
        return [level for level in (self.long, self.recent) if level is not None]

    def update(self, context: Context, cond: Conditions) -> None:
        """Cover frames 0 .. j - 1 of `context`, the context of noisy frame j."""
        model, frames = self.model, context.frames
        old = model.long_term_frames(frames + 1)
        if old > self.long_count:
            self.long = self.extend(self.long, context, self.long_count, old, cond, long_term=True)
            self.long_count, self.recent, self.recent_from = old, None, old  # the window's context changed
        start = self.recent_to if self.recent is not None else self.recent_from
        if frames > start:
            self.recent = self.extend(self.recent, context, start, frames, cond, long_term=False)
        self.recent_to = frames

    def extend(self, level: KVLevel | None, context: Context, start: int, end: int, cond: Conditions,
               long_term: bool) -> KVLevel:
        frames, timesteps = (context.long_term if long_term else context.window)(start, end)
        tokens = self.model.embed(frames, timesteps, start, cond.labels, frame_slice(cond.actions, start, end),
                                  long_term)
        # long-term frames see only long-term frames; window frames see those and the window's earlier frames
        past = [level] if long_term else [self.long, level]
        _, new = self.model.run([tokens], [p for p in past if p is not None], keep=True)
        return new if level is None else level.extend(new)


def frame_slice(actions: torch.Tensor | None, start: int, end: int) -> torch.Tensor | None:
    return None if actions is None else actions[:, start:end]


def noisy_frame_velocity(model: FAR, context: Context, x: torch.Tensor, timestep: torch.Tensor,
                         cond: Conditions, cache: ContextCache | None) -> torch.Tensor:
    """The velocity (B', C, H, W) of noisy frame j = context.frames at `timestep`."""
    batch, j = x.shape[0], context.frames
    t = timestep.to(x.device).expand(batch)
    if cache is None:  # the whole sequence again, as the official pipeline without a cache
        old = model.long_term_frames(j + 1)
        parts = [context.long_term(0, old), context.window(old, j), (x[:, None], t[:, None])]
        frames, timesteps = (torch.cat([part[k] for part in parts], dim=1) for k in (0, 1))
        return model(frames, timesteps, cond.labels, frame_slice(cond.actions, 0, j + 1))[:, -1]
    tokens = model.embed(x[:, None], t[:, None], j, cond.labels, frame_slice(cond.actions, j, j + 1))
    runs, _ = model.run([tokens], cache.levels())
    return model.velocity(runs[0], 1)[:, 0]


def denoise(model: FAR, past: Context, noise: torch.Tensor, timesteps: torch.Tensor, sigmas: torch.Tensor,
            cond: Conditions, cache: ContextCache | None) -> torch.Tensor:
    """Frame j = past.frames from its noise (B, C, H, W) by the schedule's Euler steps."""
    x = noise
    for i, t in enumerate(timesteps):
        xs = torch.cat([x, x]) if cond.doubled else x
        v = cond.guided(noisy_frame_velocity(model, past, xs, t, cond, cache))
        x = (x.float() + (sigmas[i + 1] - sigmas[i]) * v.float()).to(v.dtype)
    return x


def context_capacity(model: FAR, first: int, end: int, height: int, width: int) -> int:
    """The most context tokens the cache holds for a noisy frame j in [first, end)."""
    cfg = model.config
    window = (height // cfg.patch_size) * (width // cfg.patch_size)
    long_term = (height // cfg.context_patch_size) * (width // cfg.context_patch_size)
    return max((j - old) * window + old * long_term for j in range(first, end) for old in [model.long_term_frames(j + 1)])


class StaticContext:
    """The context's keys and values of every layer at a fixed capacity, as one `KVLevel` whose shapes never change:
    columns past the written ones keep their old (finite) values and frame UNWRITTEN, so the mask gives them weight 0."""

    def __init__(self, model: FAR, rows: int, capacity: int, like: torch.Tensor):
        cfg = model.config
        shape = (rows, cfg.num_heads, capacity, cfg.head_dim)
        self.level = KVLevel([like.new_zeros(shape) for _ in range(cfg.num_layers)],
                             [like.new_zeros(shape) for _ in range(cfg.num_layers)],
                             torch.full((capacity,), UNWRITTEN, dtype=torch.long, device=like.device))

    def load(self, levels: list[KVLevel]) -> None:
        """Copy the cache's levels in (once per frame)."""
        length, capacity = sum(len(level.frames) for level in levels), len(self.level.frames)
        if length > capacity:
            raise InputError(f"the static context holds {capacity} tokens; {length} needed")
        self.level.frames.fill_(UNWRITTEN)
        if not levels:  # the first frame of a video from nothing
            return
        for layer, (keys, values) in enumerate(zip(self.level.keys, self.level.values)):
            k, v = KVLevel.concat(levels, layer)
            keys[:, :, :length].copy_(k)
            values[:, :, :length].copy_(v)
        self.level.frames[:length].copy_(torch.cat([level.frames for level in levels]))


class FrameDenoiser:
    """`denoise` over a `StaticContext`, every input of its steps in a fixed buffer: run eagerly, or captured once as
    a CUDA graph (with `compile`, of the torch.compile'd step) and replayed for every frame."""

    def __init__(self, model: FAR, cond: Conditions, steps: int, capacity: int, noise: torch.Tensor,
                 decoding: str = "static"):
        self.model, self.cond = model, cond
        self.graphs = replays_graphs(resolve_decoding(decoding, noise.device))
        rows = noise.shape[0] * (2 if cond.doubled else 1)
        self.context = StaticContext(model, rows, capacity, noise)
        self.x = noise.clone()  # (B, C, H, W) the noise in, the graph's input
        self.actions = None if cond.actions is None else cond.actions[:, :1].clone()  # (B', 1) the noisy frame's
        self.rope, self.frames = model.positions(0, 1, *noise.shape[-2:], False, noise.device)
        timesteps, sigmas = flow_schedule(steps)
        self.timesteps, self.deltas = timesteps.to(noise.device), (sigmas[1:] - sigmas[:-1]).to(noise.device)
        self.step_fn = compiled_if(self.step, decoding)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    def step(self, x: torch.Tensor, t: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """One Euler step at timestep t (0-d), of size delta (0-d)."""
        xs = torch.cat([x, x]) if self.cond.doubled else x
        tokens = self.model.tokens(xs[:, None], t.expand(len(xs))[:, None], self.cond.labels, self.actions, self.rope,
                                   self.frames)
        runs, _ = self.model.run([tokens], [self.context.level])
        v = self.cond.guided(self.model.velocity(runs[0], 1)[:, 0])
        return (x.float() + delta * v.float()).to(v.dtype)

    def denoise(self) -> torch.Tensor:
        x = self.x
        for t, delta in zip(self.timesteps, self.deltas):
            x = self.step_fn(x, t, delta)
        return x

    def __call__(self, noise: torch.Tensor, frame: int, levels: list[KVLevel]) -> torch.Tensor:
        """Frame `frame` from its noise (B, C, H, W), its context in `levels` (the cache's)."""
        self.context.load(levels)
        rope, _ = self.model.positions(frame, 1, *noise.shape[-2:], False, noise.device)
        for buffer, value in zip((*self.rope, self.x), (*rope, noise)):
            buffer.copy_(value)
        self.frames.fill_(frame)
        if self.actions is not None:
            self.actions.copy_(self.cond.actions[:, frame:frame + 1])
        if not self.graphs:
            return self.denoise()
        if self.graph is None:
            self.graph, self.out = capture_graph(self.denoise)
        self.graph.replay()
        return self.out.clone()  # the next replay overwrites `out`


@torch.no_grad()
def generate_latents(model: FAR, frames: int, context: torch.Tensor | None = None, *, batch: int | None = None,
                     labels: torch.Tensor | None = None, actions: torch.Tensor | None = None,
                     sampling: FARSamplingConfig | None = None, noise: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, show_progress: bool = False,
                     on_frame: Callable[[int, torch.Tensor], None] | None = None,
                     latent_size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """`frames` new latent frames after `context` (B, Tc, C, h, w) (None or Tc = 0: from nothing; then `batch`, and
    the latent size (h, w) from `noise` or `latent_size`: a model runs at any size its patches divide).
    `actions` (B, Tc + frames) cover every frame. The noise (B, frames, C, h, w) is drawn once from `generator`
    unless given; `on_frame(index, latent)` is called after each new frame. Returns (B, Tc + frames, C, h, w): the
    context unchanged, then the new frames."""
    sampling = sampling or FARSamplingConfig()
    sampling.validate()
    param = next(model.parameters())
    cond = conditions_for(model, labels, actions, sampling.cfg_scale)
    decoding = sampling.resolved_decoding(param.device)
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
    timesteps, sigmas = flow_schedule(sampling.steps)
    video = clean_context(context.to(param.dtype))
    cache = ContextCache(model) if sampling.use_cache else None
    denoiser = None
    if fixed_shapes(decoding):
        capacity = context_capacity(model, given, given + frames, *context.shape[-2:])
        denoiser = FrameDenoiser(model, cond, sampling.steps, max(capacity, 1), noise[:, 0], decoding)
    with progress_bar(frames, "FAR frames", "frame", disable=not show_progress) as bar:
        for k in range(frames):
            past = video.doubled() if cond.doubled else video
            if cache is not None:
                cache.update(past, cond)
            if denoiser is not None:
                x = denoiser(noise[:, k], given + k, cache.levels())
            else:
                x = denoise(model, past, noise[:, k], timesteps, sigmas, cond, cache)
            video = add_generated(video, x, None if context_noise is None else context_noise[:, k],
                                  sampling.context_noise)
            bar.update(1)
            if on_frame is not None:
                on_frame(given + k, x)
    return video.clean


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


def add_generated(video: Context, x: torch.Tensor, noise: torch.Tensor | None, sigma: float) -> Context:
    """The context with generated frame x (B, C, h, w), seen noised to `sigma` by `noise` when given."""
    if noise is None:
        return video.append(x, x, CLEAN)
    seen = (sigma * noise.float() + (1 - sigma) * x.float()).to(x.dtype)
    return video.append(x, seen, sigma * 1000)
