"""`WorldSession`: play a world model one frame at a time, as a person pressing keys would. Both families:

    s = WorldSession.from_files(model="world.safetensors", autoencoder="tokenizer.safetensors", seed=0, greedy=True)
    s = WorldSession.from_files(model="far.safetensors", autoencoder="dcae.safetensors", steps=1, seed=0)  # FAR_Long
    frame = s.reset(video, actions)   # context: video (T, 3, H, W) in [0, 1] and its actions (T,); or an episode file
    frame = s.step(action)            # the next frame (3, H, W) in [0, 1], made with `action`
    frame = s.step(action, noise=n)   # FAR: the frame's initial noise (C, h, w), for reproducible sessions
    s.stats                           # frames, seconds per frame (model, decoding, total), peak memory
    s.undo()                          # back one step (with `undo_steps`): the state before it, restored
    s.save("session")                 # the played episode: session.mp4 + session.actions.npy (nbp's episode format)

The frames are the offline pipeline's for the same context, actions and seed or noise: one stepper drives both
(`FrameStepper` for token world models, `LatentStepper` for FAR), and a step costs the same however long the session
runs, since the stepper keeps only the frames its window still reaches. FAR_Long sees every older frame as long-term
context; a session keeps the newest `long_frames` of them (`SESSION_LONG_FRAMES` unless set), so that it stops
growing. Undoing restores a copy of the stepper taken before each step (the last `undo_steps` of them; the model
is shared, not copied), so playing on after an undo branches the session.
"""
from __future__ import annotations

import copy
import resource
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nbp.checkpoint.files import CheckpointError, is_nbp_file, read_metadata
from nbp.checkpoint.folders import model_file
from nbp.config import InputError, with_settings
from nbp.data.episodes import load_episode
from nbp.generation.far import FARSamplingConfig, LatentStepper
from nbp.generation.frames import FrameStepper
from nbp.generation.guidance import is_guided
from nbp.io import write_array
from nbp.io.media import save_video, to_uint8
from nbp.pipelines.far import FARPipeline
from nbp.pipelines.tokens import WorldPipeline
from nbp.runtime import release_free_memory
from nbp.settings.generation import SamplingConfig

SESSION_LONG_FRAMES = 64  # FAR_Long's long-term frames a session keeps (4 tokens each at 8x8 latents, c = 4)
TRIM_EVERY = 100  # steps between giving glibc's free pages back (`release_free_memory`): flat resident memory


def names_far(model: str | Path) -> bool:
    """Whether a model argument names a FAR model: nbp's files say what they hold; a file of another format is an
    official FAR_Long's (official NBP has no world models)."""
    try:
        path = model_file(model, "far")
    except CheckpointError:  # a pipeline folder without a FAR component
        path = model_file(model, "transformer")
    return read_metadata(path).get("kind") == "far" if is_nbp_file(path) else True


class TokenPlayer:
    """A token world model's side of a session: codes of the frames, one step of `FrameStepper`, the tokenizer."""

    def __init__(self, pipeline: WorldPipeline, sampling: SamplingConfig | None, seed: int):
        self.pipeline, self.sampling, self.seed = pipeline, sampling or SamplingConfig(), seed
        self.resolution = pipeline.tokenizer.config.resolution
        self.device = pipeline.model.tok_emb.weight.device
        self.stepper: FrameStepper | None = None

    def start(self, video: torch.Tensor, actions: torch.Tensor | None) -> None:
        codes = self.pipeline.encode(video.transpose(0, 1)[None].to(self.device))  # (1, T, h*w)
        self.guided = is_guided(self.sampling.cfg_scale, self.pipeline.model.config.num_actions > 0 and actions is not None)
        s = self.sampling
        self.stepper = FrameStepper(self.pipeline.model, codes, actions, guided=self.guided, greedy=s.greedy,
                                    temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                    generator=torch.Generator(self.device).manual_seed(self.seed))

    def next(self, action: torch.Tensor | None, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is not None:
            raise InputError("token world models draw codes, not noise: give noise to FAR sessions only")
        return self.stepper.step(action, self.sampling.cfg_scale if self.guided else None)[0]  # (h*w,)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.pipeline.decode(codes[None, None])[0, :, 0]  # (3, H, W)

    @property
    def tokens_fed(self) -> int:
        return self.stepper.tokens_fed

    def snapshot(self) -> FrameStepper:
        return copy.deepcopy(self.stepper, {id(self.pipeline.model): self.pipeline.model})

    def restore(self, snapshot: FrameStepper) -> None:
        self.stepper = snapshot


class FARPlayer:
    """A FAR model's side of a session: DC-AE latents of the frames, one step of `LatentStepper`, the DC-AE."""

    def __init__(self, pipeline: FARPipeline, sampling: FARSamplingConfig | None, seed: int):
        sampling = sampling or FARSamplingConfig()
        if pipeline.far.config.long and sampling.long_frames is None:
            sampling = replace(sampling, long_frames=SESSION_LONG_FRAMES)
        sampling.validate()
        self.pipeline, self.sampling, self.seed = pipeline, sampling, seed
        self.resolution, self.device = pipeline.dcae.config.resolution, pipeline.device
        self.stepper: LatentStepper | None = None

    def start(self, video: torch.Tensor, actions: torch.Tensor | None) -> None:
        model = self.pipeline.far
        if model.config.condition == "label":
            raise InputError("a class-conditional FAR model is no world model: sessions play action-conditioned ones")
        latents = self.pipeline.encode(video.transpose(0, 1)[None])  # (1, T, C, h, w)
        if model.config.condition == "action" and actions is None:
            actions = torch.full(latents.shape[:2], model.null_id, device=self.device)
        elif model.config.condition == "none":
            actions = None
        self.generator = torch.Generator().manual_seed(self.seed)
        self.stepper = LatentStepper(model, latents, self.sampling, actions=actions)

    def next(self, action: torch.Tensor | None, noise: torch.Tensor | None) -> torch.Tensor:
        model, shape = self.pipeline.far, self.stepper.video.clean.shape[-3:]
        if noise is None:
            noise = torch.randn(shape, generator=self.generator)
        elif tuple(noise.shape) != tuple(shape):
            raise InputError(f"noise must be one frame's latents {tuple(shape)}, got {tuple(noise.shape)}")
        context_noise = torch.randn(shape, generator=self.generator)[None] if self.sampling.context_noise else None
        if model.config.condition != "action":
            action = None
        elif action is None:
            action = torch.tensor([model.null_id])
        return self.stepper.step(noise[None], action, context_noise)[0]  # (C, h, w)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.pipeline.decode(latent[None, None])[0, :, 0]  # (3, H, W)

    @property
    def tokens_fed(self) -> int:
        return self.stepper.tokens_fed

    def snapshot(self) -> tuple[LatentStepper, torch.Generator]:
        stepper, model = self.stepper, self.pipeline.far
        shared = {id(model): model, id(stepper.denoiser): stepper.denoiser}  # the denoiser keeps no frame's state
        return copy.deepcopy(stepper, shared), copy.deepcopy(self.generator)

    def restore(self, snapshot: tuple[LatentStepper, torch.Generator]) -> None:
        self.stepper, self.generator = snapshot
        if self.stepper.denoiser is not None:
            self.stepper.denoiser.cond = self.stepper.cond  # it reads the frame's action from there


class WorldSession:
    def __init__(self, pipeline: WorldPipeline | FARPipeline,
                 sampling: SamplingConfig | FARSamplingConfig | None = None, seed: int = 0, fps: float = 10,
                 undo_steps: int = 0):
        self.player = (FARPlayer if isinstance(pipeline, FARPipeline) else TokenPlayer)(pipeline, sampling, seed)
        self.pipeline, self.sampling, self.seed, self.fps = pipeline, self.player.sampling, seed, fps
        self.history = deque(maxlen=undo_steps)  # the player's state before each of the last steps
        self.started = False

    @classmethod
    def from_files(cls, model: str, autoencoder: str, *, resolution: int | None = None, device="cpu", seed: int = 0,
                   fps: float = 10, undo_steps: int = 0, sampling: SamplingConfig | FARSamplingConfig | None = None,
                   short_window: int | None = None, **sampling_fields) -> WorldSession:
        """A session of a world model file and its autoencoder: a token world model and its tokenizer
        (`sampling`, or its fields, `SamplingConfig`'s), or FAR_Long and its DC-AE (`FARSamplingConfig`'s;
        `short_window`: the window W an official file does not carry)."""
        if names_far(model):
            fields = {} if short_window is None else {"short_window": short_window}
            pipeline = FARPipeline.from_files(autoencoder, model, device=device, resolution=resolution, **fields)
            default = FARSamplingConfig
        else:
            pipeline = WorldPipeline.from_files(autoencoder, model, resolution, device)  # None: the tokenizer's own
            default = SamplingConfig
        if sampling is not None and not isinstance(sampling, default):
            raise InputError(f"{model} samples with a {default.__name__}, not a {type(sampling).__name__}")
        return cls(pipeline, with_settings(sampling or default(), sampling_fields), seed, fps, undo_steps)

    @property
    def device(self) -> torch.device:
        return self.player.device

    @property
    def resolution(self) -> int:
        return self.player.resolution

    @property
    def stepper(self) -> FrameStepper | LatentStepper | None:
        """The family's stepper: the state between frames."""
        return self.player.stepper

    def reset(self, video: torch.Tensor | np.ndarray | str | Path, actions=None) -> torch.Tensor:
        """Start from `video` (T, 3, H, W) in [0, 1] (or uint8 (T, H, W, 3), or an episode file) and the actions
        (T,) that produced its frames; returns its last frame (3, H, W)."""
        if isinstance(video, (str, Path)):
            video, actions = load_episode(video, self.resolution)
        video = torch.as_tensor(video)
        if video.dtype == torch.uint8:
            video = video.permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
        actions = None if actions is None else torch.as_tensor(np.asarray(actions)).long()[None].to(self.device)
        self.player.start(video, actions)
        self.started = True
        self.frames = [to_uint8(video[-1][:, None])[0]]  # uint8 (H, W, 3) each
        self.actions = [int(actions[0, -1]) if actions is not None else 0]
        self.latents, self.times = [], []
        self.history.clear()
        return video[-1]

    @property
    def codes(self) -> list[torch.Tensor]:
        """The token family's name for `latents`: the codes (h*w,) of each step's frame."""
        return self.latents

    @torch.no_grad()
    def step(self, action: int | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The next frame (3, H, W) in [0, 1], made with `action` (None: the null action); FAR sessions take the
        frame's initial `noise` (C, h, w), else draw it from the session's seed."""
        if not self.started:
            raise InputError("call reset(video, actions) first: a session starts from context frames")
        if self.history.maxlen:
            self.history.append(self.player.snapshot())
        start = time.perf_counter()
        chosen = None if action is None else torch.tensor([int(action)], device=self.device)
        made = self.player.next(chosen, noise)
        modelled = time.perf_counter()
        frame = self.player.decode(made)
        decoded = time.perf_counter()
        self.latents.append(made)
        self.frames.append(to_uint8(frame[:, None].float().cpu())[0])
        self.actions.append(0 if action is None else int(action))
        if len(self.frames) % TRIM_EVERY == 0:
            release_free_memory()
        self.times.append((modelled - start, decoded - modelled, time.perf_counter() - decoded))
        return frame

    @property
    def can_undo(self) -> bool:
        return bool(self.history)

    def undo(self) -> torch.Tensor:
        """Back one step: the state before it restored, its frame and action dropped; returns the frame now last."""
        if not self.history:
            raise InputError("nothing to undo" if self.history.maxlen else
                             "this session keeps no steps to undo: make it with undo_steps > 0")
        self.player.restore(self.history.pop())
        for made in (self.frames, self.actions, self.latents, self.times):
            made.pop()
        return torch.from_numpy(self.frames[-1]).permute(2, 0, 1).float() / 255

    @property
    def stats(self) -> dict:
        """Frames played, seconds per frame (model, decoding, total with the bookkeeping; median over the session),
        the tokens the model computed for the last frame and the peak memory."""
        times = np.array(self.times) if self.times else np.zeros((1, 3))
        return {"frames": len(self.times), "model_seconds": float(np.median(times[:, 0])),
                "decode_seconds": float(np.median(times[:, 1])), "seconds": float(np.median(times.sum(1))),
                "tokens_fed": self.player.tokens_fed if self.started else 0,
                "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    def save(self, path: str | Path) -> Path:
        """The played frames (the last context frame, then every step) as `PATH.mp4` + `PATH.actions.npy`, nbp's
        episode format: `world-eval`, `far-eval` and `reset` read it."""
        stem = Path(path).with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        save_video(stem.with_suffix(".mp4"), np.stack(self.frames), fps=self.fps, lossless=True)
        write_array(stem.with_suffix(".actions.npy"), np.asarray(self.actions, dtype=np.int64))
        return stem.with_suffix(".mp4")
