"""Rollout evaluation, shared by every prediction protocol (`predict-eval`, `world-eval`, `far-eval`): a predictor
continues clips from their first frames, and each continuation is scored frame by frame against the truth, beside
copying the last given frame (the baseline) and the autoencoder's reconstruction (the ceiling).

A predictor wraps one family's pipeline behind three calls on videos (B, 3, T, H, W) in [0, 1]:
    encoded = predictor.encode(video)                       # what the model sees of the whole clip
    frames = predictor.predict(encoded, context, horizon, actions, generator)   # (B, 3, horizon, H, W)
    ceiling = predictor.reconstruct(encoded, context)       # the clip after the context, as the autoencoder gives it
The protocols (`nbp.eval.prediction`, `nbp.eval.world`, `nbp.eval.far`) are tables over `rollouts`: which clips, which
action runs, how many trajectories (FAR keeps the best of N), which metrics.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from nbp.data.extract import encode_frames
from nbp.generation.far import FARSamplingConfig, generate_latents
from nbp.pipelines.far import FARPipeline
from nbp.pipelines.tokens import NBPPipeline, WorldPipeline
from nbp.settings.generation import SamplingConfig


class Predictor(Protocol):
    def encode(self, video: torch.Tensor) -> torch.Tensor: ...

    def predict(self, encoded: torch.Tensor, context: int, horizon: int, actions: torch.Tensor | None,
                generator: torch.Generator | None, **conditions) -> torch.Tensor: ...

    def reconstruct(self, encoded: torch.Tensor, context: int) -> torch.Tensor: ...


class TokenPredictor:
    """A next-block-prediction LM: the codes of the latent frames covering the context, the rest of the clip."""

    def __init__(self, pipeline: NBPPipeline, sampling: SamplingConfig):
        self.pipeline, self.sampling, self.frames = pipeline, sampling, 0

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.frames = video.shape[2]
        return self.pipeline.encode(video)

    def predict(self, encoded, context, horizon, actions=None, generator=None, **conditions) -> torch.Tensor:
        given = self.pipeline.given_codes(context)
        codes = self.pipeline.continue_codes(encoded[:, :given], context + horizon, generator, self.sampling,
                                             **conditions)
        return self.pipeline.decode(codes, context + horizon)[:, :, context:]

    def reconstruct(self, encoded, context) -> torch.Tensor:
        return self.pipeline.decode(encoded, self.frames)[:, :, context:]


class WorldPredictor:
    """nbp's world model: per-frame tokens, the next frames' tokens under actions, tokens -> frames."""

    def __init__(self, pipeline: WorldPipeline, sampling: SamplingConfig, device="cpu"):
        self.pipeline, self.sampling, self.device = pipeline, sampling, device

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Codes (B, T, h*w), a frame at a time (as the episodes were tokenized)."""
        frames = [(v.permute(1, 2, 3, 0).cpu().numpy() * 255).round().astype(np.uint8) for v in video]
        return torch.stack([torch.from_numpy(encode_frames(self.pipeline.tokenizer, f, device=self.device))
                            for f in frames])

    def predict(self, encoded, context, horizon, actions=None, generator=None, **conditions) -> torch.Tensor:
        codes = self.pipeline.continue_codes(encoded[:, :context], horizon, actions, generator, self.sampling)
        return self.pipeline.decode(codes)

    def reconstruct(self, encoded, context) -> torch.Tensor:
        return self.pipeline.decode(encoded[:, context:].to(self.device))


class FARPredictor:
    """A FAR model: DC-AE latents, the next frames' latents by flow, latents -> frames."""

    def __init__(self, pipeline: FARPipeline, sampling: FARSamplingConfig):
        self.pipeline, self.sampling = pipeline, sampling

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.pipeline.encode(video.to(self.pipeline.device))

    def predict(self, encoded, context, horizon, actions=None, generator=None, **conditions) -> torch.Tensor:
        device = self.pipeline.device
        out = generate_latents(self.pipeline.far, horizon, encoded[:, :context], sampling=self.sampling,
                               actions=None if actions is None else actions.to(device), generator=generator,
                               **conditions)
        return self.pipeline.decode(out[:, context:])

    def reconstruct(self, encoded, context) -> torch.Tensor:
        return self.pipeline.decode(encoded[:, context:])


def copy_last(video: torch.Tensor, context: int, horizon: int) -> torch.Tensor:
    """The baseline: the last given frame (B, 3, 1, H, W) repeated over the horizon."""
    return video[:, :, context - 1:context].expand(-1, -1, horizon, -1, -1)


def rollouts(predictor: Predictor, encoded: torch.Tensor, context: int, horizon: int,
             runs: dict[str, torch.Tensor | None], trajectories: int,
             generator_of: Callable[[str, int], torch.Generator | None], **conditions) -> dict[str, list[torch.Tensor]]:
    """Every run's (actions: the clip's, shuffled, none) `trajectories` continuations (B, 3, horizon, H, W), in
    order, trajectory n drawing from `generator_of(run, n)`."""
    return {name: [predictor.predict(encoded, context, horizon, actions, generator_of(name, n), **conditions)
                   for n in range(trajectories)] for name, actions in runs.items()}
