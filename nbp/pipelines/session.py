"""`WorldSession`: play a world model one frame at a time, as a person pressing keys would.

    s = WorldSession.from_files(model="world.safetensors", autoencoder="tokenizer.safetensors", seed=0, greedy=True)
    frame = s.reset(video, actions)   # context: video (T, 3, H, W) in [0, 1] and its actions (T,); or an episode file
    frame = s.step(action)            # the next frame (3, H, W) in [0, 1], made with `action`
    s.stats                           # frames, seconds per frame (model, decoding, total), peak memory
    s.save("session")                 # the played episode: session.mp4 + session.actions.npy (nbp's episode format)

The frames are `WorldPipeline`'s for the same context, actions and seed (one `FrameStepper` drives both), and a
step costs the same however long the session runs: the stepper keeps only the frames its window still reaches.
Token world models only so far; FAR's sessions are to come (issue 33).
"""
from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import torch

from nbp.checkpoint.files import is_nbp_file, read_metadata
from nbp.checkpoint.folders import model_file
from nbp.config import InputError
from nbp.data.episodes import load_episode
from nbp.generation.frames import FrameStepper
from nbp.generation.guidance import is_guided
from nbp.generation.sampling import SamplingConfig
from nbp.io import write_array
from nbp.io.media import save_video, to_uint8
from nbp.pipelines.tokens import WorldPipeline


class WorldSession:
    def __init__(self, pipeline: WorldPipeline, sampling: SamplingConfig | None = None, seed: int = 0,
                 fps: float = 10):
        self.pipeline, self.sampling, self.seed, self.fps = pipeline, sampling or SamplingConfig(), seed, fps
        self.stepper: FrameStepper | None = None

    @classmethod
    def from_files(cls, model: str, autoencoder: str, *, resolution: int | None = None, device="cpu", seed: int = 0,
                   fps: float = 10, **sampling_fields) -> WorldSession:
        """A session of a token world model file and its tokenizer; `sampling_fields` are `SamplingConfig`'s."""
        path = model_file(model, "transformer")
        if is_nbp_file(path) and read_metadata(path).get("kind") == "far":  # official files: the loader says what they are
            raise InputError(f"{model} is a FAR model: sessions play token world models so far")
        pipeline = WorldPipeline.from_files(autoencoder, model, resolution, device)  # None: the tokenizer's own
        return cls(pipeline, SamplingConfig(**sampling_fields), seed, fps)

    @property
    def device(self) -> torch.device:
        return self.pipeline.model.tok_emb.weight.device

    def reset(self, video: torch.Tensor | np.ndarray | str | Path, actions=None) -> torch.Tensor:
        """Start from `video` (T, 3, H, W) in [0, 1] (or uint8 (T, H, W, 3), or an episode file) and the actions
        (T,) that produced its frames; returns its last frame (3, H, W)."""
        if isinstance(video, (str, Path)):
            video, actions = load_episode(video, self.pipeline.tokenizer.config.resolution)
        video = torch.as_tensor(video)
        if video.dtype == torch.uint8:
            video = video.permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
        codes = self.pipeline.encode(video.transpose(0, 1)[None].to(self.device))  # (1, T, h*w)
        model = self.pipeline.model
        actions = None if actions is None else torch.as_tensor(np.asarray(actions)).long()[None].to(self.device)
        self.guided = is_guided(self.sampling.cfg_scale, model.config.num_actions > 0 and actions is not None)
        self.stepper = FrameStepper(
            model, codes, actions, guided=self.guided, greedy=self.sampling.greedy,
            temperature=self.sampling.temperature, top_k=self.sampling.top_k, top_p=self.sampling.top_p,
            generator=torch.Generator(self.device).manual_seed(self.seed))
        self.frames = [to_uint8(video[-1][:, None])[0]]  # uint8 (H, W, 3) each
        self.actions = [int(actions[0, -1]) if actions is not None else 0]
        self.codes, self.times = [], []
        return video[-1]

    @torch.no_grad()
    def step(self, action: int | None = None) -> torch.Tensor:
        """The next frame (3, H, W) in [0, 1], made with `action` (None: the null action)."""
        if self.stepper is None:
            raise InputError("call reset(video, actions) first: a session starts from context frames")
        start = time.perf_counter()
        chosen = None if action is None else torch.tensor([int(action)], device=self.device)
        codes = self.stepper.step(chosen, self.sampling.cfg_scale if self.guided else None)  # (1, h*w)
        made = time.perf_counter()
        frame = self.pipeline.decode(codes[:, None])[0, :, 0]  # (3, H, W)
        done = time.perf_counter()
        self.codes.append(codes[0])
        self.frames.append(to_uint8(frame[:, None].cpu())[0])
        self.actions.append(0 if action is None else int(action))
        self.times.append((made - start, done - made))
        return frame

    @property
    def stats(self) -> dict:
        """Frames played, seconds per frame (model, decoding, total; median over the session) and peak memory."""
        times = np.array(self.times) if self.times else np.zeros((1, 2))
        return {"frames": len(self.times), "model_seconds": float(np.median(times[:, 0])),
                "decode_seconds": float(np.median(times[:, 1])), "seconds": float(np.median(times.sum(1))),
                "tokens_fed": 0 if self.stepper is None else self.stepper.tokens_fed,
                "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    def save(self, path: str | Path) -> Path:
        """The played frames (the last context frame, then every step) as `PATH.mp4` + `PATH.actions.npy`, nbp's
        episode format: `world-eval`, `far-eval` and `reset` read it."""
        stem = Path(path).with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        save_video(stem.with_suffix(".mp4"), np.stack(self.frames), fps=self.fps, lossless=True)
        write_array(stem.with_suffix(".actions.npy"), np.asarray(self.actions, dtype=np.int64))
        return stem.with_suffix(".mp4")
