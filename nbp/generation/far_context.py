"""FAR's context as the sampler keeps it: the frames before the noisy one (`Context`), and their keys and values
computed once (`ContextCache`, over the `KVCache` both families share: past FAR_Long's window the long-term frames,
then the window's clean frames). At a fixed capacity, the same cache serves the fixed-shape step a GPU replays as one
CUDA graph (`FrameDenoiser`). `nbp.generation.far` drives them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nbp.generation.decoding import capture_graph, compiled_if, replays_graphs, resolve_decoding
from nbp.generation.flow import CLEAN, TRAIN_TIMESTEPS, euler_step, flow_schedule, scale_noise
from nbp.generation.guidance import guide_rows
from nbp.models.far import FAR
from nbp.models.kv_cache import KVCache


@dataclass
class Conditions:
    """What the model is given besides latents, already doubled for guidance where it applies."""
    labels: torch.Tensor | None
    actions: torch.Tensor | None  # (B', frames first ..): a session keeps only those its next frame can see
    doubled: bool
    scale: float
    first: int = 0  # the frame of actions[:, 0]

    def actions_of(self, start: int, end: int) -> torch.Tensor | None:
        """The actions (B', end - start) of frames start .. end - 1."""
        return None if self.actions is None else self.actions[:, start - self.first:end - self.first]

    def guided(self, v: torch.Tensor) -> torch.Tensor:
        """The velocity (B, ...) of the rows' velocities (B', ...)."""
        return guide_rows(v, self.scale) if self.doubled else v


@dataclass
class Context:
    """Frames first .. j - 1 before noisy frame j, as the model sees them: `clean` (B', j - first, C, h, w) for the
    long-term frames, `seen` and its `timesteps` (B', j - first) for the window (generated frames noised by
    `context_noise`). `first` is 0 unless the frames no later frame can see were dropped (`since`)."""
    clean: torch.Tensor
    seen: torch.Tensor
    timesteps: torch.Tensor
    first: int = 0

    @property
    def frames(self) -> int:
        """j: the frames before the noisy one, dropped ones included."""
        return self.first + self.clean.shape[1]

    def window(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = start - self.first, end - self.first
        return self.seen[:, start:end], self.timesteps[:, start:end]

    def long_term(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean = self.clean[:, start - self.first:end - self.first]
        return clean, torch.full(clean.shape[:2], CLEAN, device=clean.device)

    def doubled(self) -> Context:
        return Context(*(torch.cat([x, x]) for x in (self.clean, self.seen, self.timesteps)), self.first)

    def since(self, first: int) -> Context:
        """Without the frames before `first`."""
        drop = first - self.first
        return Context(self.clean[:, drop:], self.seen[:, drop:], self.timesteps[:, drop:], first)

    def append(self, clean: torch.Tensor, seen: torch.Tensor, timestep: float) -> Context:
        """With one more frame (B, C, h, w), seen as `seen` at `timestep`."""
        t = torch.full((len(clean), 1), timestep, device=clean.device)
        return Context(torch.cat([self.clean, clean[:, None]], 1), torch.cat([self.seen, seen[:, None]], 1),
                       torch.cat([self.timesteps, t], 1), self.first)


def clean_context(video: torch.Tensor) -> Context:
    return Context(video, video, torch.full(video.shape[:2], CLEAN, device=video.device))


def long_term_span(model: FAR, frames: int, long_frames: int | None) -> tuple[int, int]:
    """(first, end) of the long-term frames seen with `frames` input frames: past FAR_Long's window, every older
    frame (`long_frames` None, FAR's sampler) or the newest `long_frames` of them."""
    end = model.long_term_frames(frames)
    return (0 if long_frames is None else max(0, end - long_frames)), end


class ContextCache:
    """The keys and values of the context frames before the noisy one, in one `KVCache` (module docstring): the
    long-term frames (long_from .. long_to - 1) in its first `long_columns` columns, then the window's clean frames
    (long_to .. window_to - 1). With `long_frames`, the long-term frames are the newest `long_frames` of them,
    recomputed as they slide (each sees only the kept ones, as without the cache), so the cache stops growing. A
    fixed-shape cache (`capacity` from `context_capacity`) never reallocates, so a CUDA graph can read it."""

    def __init__(self, model: FAR, rows: int, capacity: int, like: torch.Tensor, long_frames: int | None = None,
                 fixed_shape: bool = False):
        self.model, self.long_frames = model, long_frames
        self.kv = KVCache(model.config, rows, capacity, like.device, like.dtype, transposed_keys=False,
                          fixed_shape=fixed_shape)
        self.long_from = self.long_to = self.long_columns = self.window_to = 0
        self.tokens_fed = 0  # context tokens (of one video) computed by the last update

    def update(self, context: Context, cond: Conditions) -> None:
        """Cover the frames before noisy frame j = context.frames that it sees."""
        frames, self.tokens_fed = context.frames, 0
        first, old = long_term_span(self.model, frames + 1, self.long_frames)
        if (first, old) != (self.long_from, self.long_to):  # the long-term frames changed, so did the window's context
            if first != self.long_from:  # the bounded long-term frames slid: their own context changed too
                self.long_columns, self.long_to = 0, first
            self.kv.truncate(self.long_columns)
            if old > self.long_to:  # long-term frames see only long-term frames
                self.feed(context, self.long_to, old, cond, long_term=True)
            self.long_from, self.long_to, self.long_columns, self.window_to = first, old, self.kv.length, old
        if frames > self.window_to:  # window frames see those and the window's earlier frames
            self.feed(context, self.window_to, frames, cond, long_term=False)
            self.window_to = frames

    def feed(self, context: Context, start: int, end: int, cond: Conditions, long_term: bool) -> None:
        """Frames start .. end - 1 into the cache, after the frames it holds."""
        frames, timesteps = (context.long_term if long_term else context.window)(start, end)
        tokens = self.model.embed(frames, timesteps, start, cond.labels, cond.actions_of(start, end), long_term)
        self.tokens_fed += len(tokens)
        self.kv.reserve(self.kv.length + len(tokens))
        self.model.run([tokens], self.kv, keep=True)


def noisy_frame_velocity(model: FAR, context: Context, x: torch.Tensor, timestep: torch.Tensor,
                         cond: Conditions, cache: ContextCache | None, long_frames: int | None = None) -> torch.Tensor:
    """The velocity (B', C, H, W) of noisy frame j = context.frames at `timestep`."""
    batch, j = x.shape[0], context.frames
    t = timestep.to(x.device).expand(batch)
    if cache is None:  # the whole sequence again, as the official pipeline without a cache
        first, old = long_term_span(model, j + 1, long_frames)
        parts = [context.long_term(first, old), context.window(old, j), (x[:, None], t[:, None])]
        frames, timesteps = (torch.cat([part[k] for part in parts], dim=1) for k in (0, 1))
        return model(frames, timesteps, cond.labels, cond.actions_of(first, j + 1), first_frame=first)[:, -1]
    tokens = model.embed(x[:, None], t[:, None], j, cond.labels, cond.actions_of(j, j + 1))
    cache.kv.reserve(cache.kv.length + len(tokens))
    return model.velocity(model.run([tokens], cache.kv)[0], 1)[:, 0]


def context_capacity(model: FAR, first: int, end: int, height: int, width: int, long_frames: int | None = None) -> int:
    """The most columns a context cache needs for a noisy frame j in [first, end): its context's tokens, and the
    noisy frame's own after them."""
    cfg = model.config
    window = (height // cfg.patch_size) * (width // cfg.patch_size)
    long_term = (height // cfg.context_patch_size) * (width // cfg.context_patch_size)
    spans = ((j, *long_term_span(model, j + 1, long_frames)) for j in range(first, end))
    return window + max(((j - old) * window + (old - start) * long_term for j, start, old in spans), default=0)


class FrameDenoiser:
    """`denoise` over a fixed-shape `ContextCache`, every input of its steps in a fixed buffer: run eagerly, or
    captured once as a CUDA graph (with `compile`, of the torch.compile'd step) and replayed for every frame. The
    noisy frame's keys go in the columns after the context's, which no step commits."""

    def __init__(self, model: FAR, cond: Conditions, steps: int, cache: ContextCache, noise: torch.Tensor,
                 decoding: str = "static"):
        self.model, self.cond, self.kv = model, cond, cache.kv
        self.graphs = replays_graphs(resolve_decoding(decoding, noise.device))
        self.x = noise.clone()  # (B, C, H, W) the noise in, the graph's input
        self.actions = None if cond.actions is None else cond.actions.new_zeros(len(cond.actions), 1)  # the noisy frame's
        self.rope, self.frames = model.positions(0, 1, *noise.shape[-2:], False, noise.device)
        self.columns = torch.arange(len(self.frames), device=noise.device)  # where the noisy frame's keys go
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
        v = self.cond.guided(self.model.velocity(self.model.run([tokens], self.kv)[0], 1)[:, 0])
        return euler_step(x, v, delta)

    def denoise(self) -> torch.Tensor:
        x = self.x
        for t, delta in zip(self.timesteps, self.deltas):
            x = self.step_fn(x, t, delta)
        return x

    def __call__(self, noise: torch.Tensor, frame: int, cache: ContextCache) -> torch.Tensor:
        """Frame `frame` from its noise (B, C, H, W), after the context `cache` holds (the one given at creation)."""
        kv, n = cache.kv, len(self.frames)
        kv.reserve(kv.length + n)
        rope, _ = self.model.positions(frame, 1, *noise.shape[-2:], False, noise.device)
        for buffer, value in zip((*self.rope, self.x, self.columns), (*rope, noise, kv.columns[kv.length:kv.length + n])):
            buffer.copy_(value)
        self.frames.fill_(frame)
        if self.actions is not None:
            self.actions.copy_(self.cond.actions_of(frame, frame + 1))
        kv.write_at(self.columns, self.frames)
        try:
            if not self.graphs:
                return self.denoise()
            if self.graph is None:
                self.graph, self.out = capture_graph(self.denoise)
            self.graph.replay()
            return self.out.clone()  # the next replay overwrites `out`
        finally:
            kv.write_at(None)
            kv.truncate(kv.length)  # the noisy frame's columns are unwritten again


def add_generated(video: Context, x: torch.Tensor, noise: torch.Tensor | None, sigma: float) -> Context:
    """The context with generated frame x (B, C, h, w), seen noised to `sigma` by `noise` when given."""
    if noise is None:
        return video.append(x, x, CLEAN)
    seen = scale_noise(x.float(), noise.float(), sigma).to(x.dtype)
    return video.append(x, seen, sigma * TRAIN_TIMESTEPS)
