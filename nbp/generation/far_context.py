"""FAR's context as the sampler keeps it: the frames before the noisy one (`Context`), their keys and values computed
once (`ContextCache`: the window's clean frames, and past FAR_Long's window the long-term frames as a second
level), and the same at a fixed capacity for the fixed-shape step a GPU replays as one CUDA graph (`StaticContext`,
`FrameDenoiser`). `nbp.generation.far` drives them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nbp.config import InputError
from nbp.generation.decoding import capture_graph, compiled_if, replays_graphs, resolve_decoding
from nbp.generation.flow import CLEAN, TRAIN_TIMESTEPS, euler_step, flow_schedule, scale_noise
from nbp.generation.guidance import guide_rows
from nbp.models.far import FAR
from nbp.models.kv_cache import KVLevel

UNWRITTEN = 1 << 30  # the frame of a static context column not written: after every query, so masked out


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
    """Keys and values of the context frames before the noisy one (module docstring). With `long_frames`, the
    long-term level holds the newest `long_frames` long-term frames, recomputed as it slides (each sees only the
    kept ones, as without the cache), so it stops growing."""

    def __init__(self, model: FAR, long_frames: int | None = None):
        self.model, self.long_frames = model, long_frames
        self.long: KVLevel | None = None  # long-term frames long_from .. long_to - 1
        self.recent: KVLevel | None = None  # clean window frames recent_from .. recent_to - 1
        self.long_from = self.long_to = self.recent_from = self.recent_to = 0
        self.tokens_fed = 0  # context tokens (of one video) computed by the last update

    def levels(self) -> list[KVLevel]:
        return [level for level in (self.long, self.recent) if level is not None]

    def update(self, context: Context, cond: Conditions) -> None:
        """Cover the frames before noisy frame j = context.frames that it sees."""
        frames, self.tokens_fed = context.frames, 0
        first, old = long_term_span(self.model, frames + 1, self.long_frames)
        if (first, old) != (self.long_from, self.long_to):  # the long-term frames changed, so did the window's context
            if first != self.long_from:  # the bounded level slid: its frames' context changed too
                self.long, self.long_to = None, first
            if old > self.long_to:
                self.long = self.extend(self.long, context, self.long_to, old, cond, long_term=True)
            self.long_from, self.long_to, self.recent, self.recent_from = first, old, None, old
        start = self.recent_to if self.recent is not None else self.recent_from
        if frames > start:
            self.recent = self.extend(self.recent, context, start, frames, cond, long_term=False)
        self.recent_to = frames

    def extend(self, level: KVLevel | None, context: Context, start: int, end: int, cond: Conditions,
               long_term: bool) -> KVLevel:
        frames, timesteps = (context.long_term if long_term else context.window)(start, end)
        tokens = self.model.embed(frames, timesteps, start, cond.labels, cond.actions_of(start, end), long_term)
        self.tokens_fed += len(tokens)
        # long-term frames see only long-term frames; window frames see those and the window's earlier frames
        past = [level] if long_term else [self.long, level]
        _, new = self.model.run([tokens], [p for p in past if p is not None], keep=True)
        return new if level is None else level.extend(new)


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
    runs, _ = model.run([tokens], cache.levels())
    return model.velocity(runs[0], 1)[:, 0]


def context_capacity(model: FAR, first: int, end: int, height: int, width: int, long_frames: int | None = None) -> int:
    """The most context tokens the cache holds for a noisy frame j in [first, end)."""
    cfg = model.config
    window = (height // cfg.patch_size) * (width // cfg.patch_size)
    long_term = (height // cfg.context_patch_size) * (width // cfg.context_patch_size)
    spans = ((j, *long_term_span(model, j + 1, long_frames)) for j in range(first, end))
    return max((j - old) * window + (old - start) * long_term for j, start, old in spans)


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
        self.actions = None if cond.actions is None else cond.actions.new_zeros(len(cond.actions), 1)  # the noisy frame's
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
        return euler_step(x, v, delta)

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
            self.actions.copy_(self.cond.actions_of(frame, frame + 1))
        if not self.graphs:
            return self.denoise()
        if self.graph is None:
            self.graph, self.out = capture_graph(self.denoise)
        self.graph.replay()
        return self.out.clone()  # the next replay overwrites `out`


def add_generated(video: Context, x: torch.Tensor, noise: torch.Tensor | None, sigma: float) -> Context:
    """The context with generated frame x (B, C, h, w), seen noised to `sigma` by `noise` when given."""
    if noise is None:
        return video.append(x, x, CLEAN)
    seen = scale_noise(x.float(), noise.float(), sigma).to(x.dtype)
    return video.append(x, seen, sigma * TRAIN_TIMESTEPS)
