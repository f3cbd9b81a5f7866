"""The token family's pipelines: a tokenizer composed with a model, video in and video out (the pattern of
diffusers' `DiTPipeline`; `nbp.pipelines.far.FARPipeline` is FAR's).

`NBPPipeline` encodes the given frames, generates the rest of the clip with a next-block-prediction LM and decodes
it; `WorldPipeline` continues episodes frame by frame from context frames and actions. Like every pipeline, each
is called as `pipeline(num_frames, context, sampling=...)` with `num_frames` the frames to generate, and returns a
`VideoOutput`. Jobs (`nbp sample`, prediction and world evaluation, the demo) use these instead of each chaining
encode -> generate -> decode.
"""
from __future__ import annotations

from dataclasses import asdict, fields

import numpy as np
import torch

from nbp.checkpoint import load_magvit2, load_transformer
from nbp.config import InputError, with_settings
from nbp.generation.frames import predict_frames
from nbp.generation.tokens import generate
from nbp.models.tokenizer import VideoTokenizer
from nbp.models.transformer import Transformer
from nbp.models.world import WorldTransformer
from nbp.pipelines.base import PipelineFolder, VideoOutput, bf16_dtype
from nbp.settings.generation import SamplingConfig

SAMPLING_FIELDS = {f.name for f in fields(SamplingConfig)}


def sampling_arguments(sampling: SamplingConfig | None, arguments: dict) -> dict:
    """The sampler's keyword arguments: `sampling` with the fields given among `arguments`, and the other
    arguments (conditions, batch size) as they are."""
    settings = {k: v for k, v in arguments.items() if k in SAMPLING_FIELDS}
    rest = {k: v for k, v in arguments.items() if k not in SAMPLING_FIELDS}
    return asdict(with_settings(sampling or SamplingConfig(), settings)) | rest


def given_codes(tokenizer_config, context_frames: int, per_latent_frame: int) -> int:
    """Codes of the latent frames that cover the first `context_frames` frames (causal: 1 + 4k frames each)."""
    return (1 + (context_frames - 1) // tokenizer_config.temporal_factor) * per_latent_frame


class NBPPipeline(PipelineFolder):
    def __init__(self, tokenizer: VideoTokenizer, lm: Transformer, resolution: int):
        self.tokenizer, self.lm, self.resolution = tokenizer, lm, resolution

    def components(self) -> dict:
        return {"tokenizer": ("tokenizer", self.tokenizer), "lm": ("transformer", self.lm)}

    def settings(self) -> dict:
        return {"resolution": self.resolution}

    @classmethod
    def from_files(cls, tokenizer: str, lm: str, resolution: int, device="cpu", bf16: bool = False) -> NBPPipeline:
        return cls(load_magvit2(tokenizer, resolution=resolution, device=device),
                   load_transformer(lm, device=device, dtype=bf16_dtype(bf16, device)), resolution)

    @property
    def device(self) -> torch.device:
        return self.lm.tok_emb.weight.device

    def latent_shape(self, frames: int) -> tuple[int, int, int]:
        return self.tokenizer.config.latent_shape(frames, self.resolution, self.resolution)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Codes (B, n) in raster order of videos (B, 3, T, H, W) in [0, 1]."""
        _, ids = self.tokenizer.encode(video.to(self.device), quantize=True)
        return ids.flatten(1).long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, frames: int) -> torch.Tensor:
        """Videos (B, 3, frames, H, W) in [0, 1] of codes (B, n)."""
        ids = codes.view(len(codes), *self.latent_shape(frames)).to(self.device)
        return self.tokenizer.decode_from_code_indices(ids).float().clamp(0, 1)

    def given_codes(self, context_frames: int) -> int:
        _, h, w = self.latent_shape(1)
        return given_codes(self.tokenizer.config, context_frames, h * w)

    def continue_codes(self, context: torch.Tensor | None, frames: int, generator=None,
                       sampling: SamplingConfig | None = None, **arguments) -> torch.Tensor:
        """The codes (B, n) of `frames`-frame clips starting with the `context` codes (B, given) (or none):
        conditions (`class_ids`, `text`, `batch_size`) and sampling fields go to `nbp.generation.generate`."""
        total = int(np.prod(self.latent_shape(frames)))
        given = 0 if context is None else context.shape[1]
        codes = generate(self.lm, total - given, context=context, generator=generator,
                         **sampling_arguments(sampling, arguments))
        return codes if context is None else torch.cat([context, codes], dim=1)

    def __call__(self, num_frames: int, context: torch.Tensor | None = None, *,
                 sampling: SamplingConfig | None = None, generator=None, **arguments) -> VideoOutput:
        """`num_frames` new frames after the `context` videos (B, 3, Tc, H, W) (None: from nothing), as clips of
        Tc + num_frames frames (1 + 4k for a tokenizer that merges 4 frames); `arguments`: conditions (`class_ids`,
        `text`, `batch_size`) and sampling fields as keywords."""
        frames = num_frames + (0 if context is None else context.shape[2])
        context_codes = None if context is None else self.encode(context)
        codes = self.continue_codes(context_codes, frames, generator, sampling, **arguments)
        return VideoOutput(self.decode(codes, frames), codes)


class WorldPipeline(PipelineFolder):
    def __init__(self, tokenizer: VideoTokenizer, model: WorldTransformer):
        if tokenizer.config.temporal_factor != 1:
            raise InputError(f"world models need one latent frame per frame; this tokenizer merges "
                             f"{tokenizer.config.temporal_factor} frames (use a preset like tiny-frames)")
        if not isinstance(model, WorldTransformer):
            raise InputError(f"{type(model).__name__} is not a world model (train one with a world-* preset)")
        self.tokenizer, self.model = tokenizer, model

    def components(self) -> dict:
        return {"tokenizer": ("tokenizer", self.tokenizer), "model": ("transformer", self.model)}

    def settings(self) -> dict:
        return {"resolution": self.tokenizer.config.resolution}

    @classmethod
    def from_files(cls, tokenizer: str, model: str, resolution: int | None = None, device="cpu",
                   bf16: bool = False) -> WorldPipeline:
        return cls(load_magvit2(tokenizer, resolution=resolution, device=device),
                   load_transformer(model, device=device, dtype=bf16_dtype(bf16, device)))

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Codes (B, T, h*w) of videos (B, 3, T, H, W)."""
        _, ids = self.tokenizer.encode(video)
        return ids.flatten(2).long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, T, h*w) codes -> (B, 3, T, H, W) in [0, 1]."""
        side = int(codes.shape[-1] ** 0.5)
        return self.tokenizer.decode_from_code_indices(codes.reshape(len(codes), -1, side, side)).float().clamp(0, 1)

    def continue_codes(self, context: torch.Tensor, horizon: int, actions: torch.Tensor | None = None,
                       generator=None, sampling: SamplingConfig | None = None, **settings) -> torch.Tensor:
        """Codes (B, horizon, h*w) of the frames after context codes (B, C, h*w), under `actions` (B, C + horizon)."""
        device = self.model.tok_emb.weight.device
        return predict_frames(self.model, context.to(device), horizon,
                              actions=None if actions is None else actions.to(device), generator=generator,
                              **sampling_arguments(sampling, settings))

    def __call__(self, num_frames: int, context: torch.Tensor, *, actions: torch.Tensor | None = None,
                 sampling: SamplingConfig | None = None, generator=None, **settings) -> VideoOutput:
        """`num_frames` new frames after the context videos (B, 3, C, H, W), under `actions` (B, C + num_frames)."""
        given = self.encode(context)
        codes = torch.cat([given, self.continue_codes(given, num_frames, actions, generator, sampling, **settings)], 1)
        return VideoOutput(self.decode(codes), codes)
