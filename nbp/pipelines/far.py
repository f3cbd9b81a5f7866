"""`FARPipeline`: a DC-AE composed with a FAR model, video in and video out (`nbp.generation.far` samples the latents).

Videos are nbp's (B, 3, T, H, W) in [0, 1]; latents FAR's (B, T, C, h, w), scaled.
"""
from __future__ import annotations

import torch

from nbp.config import InputError
from nbp.download import load_dcae, load_far
from nbp.generation.far import FARSamplingConfig, generate_latents
from nbp.models.dcae import DCAE
from nbp.models.far import FAR
from nbp.pipelines.base import PipelineFolder, VideoOutput, bf16_dtype


class FARPipeline(PipelineFolder):
    """DC-AE + FAR: frames in, frames out."""

    def __init__(self, dcae: DCAE, far: FAR):
        if dcae.config.latent_channels != far.config.in_channels:
            raise InputError(f"the DC-AE makes {dcae.config.latent_channels}-channel latents, the FAR model reads "
                             f"{far.config.in_channels}")
        self.dcae, self.far = dcae, far

    def components(self) -> dict:
        return {"dcae": ("dcae", self.dcae), "far": ("far", self.far)}

    @classmethod
    def from_files(cls, dcae: str, far: str, device="cpu", bf16: bool = False, resolution: int | None = None,
                   **far_fields) -> FARPipeline:
        dtype = bf16_dtype(bf16, device)
        return cls(load_dcae(dcae, device=device, dtype=dtype, resolution=resolution),
                   load_far(far, device=device, dtype=dtype, **far_fields))

    @property
    def device(self) -> torch.device:
        return next(self.far.parameters()).device

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [0, 1] -> latents (B, T, C, h, w)."""
        weight = next(self.dcae.parameters())
        return self.dcae.encode_video(video.transpose(1, 2).to(weight.device, weight.dtype))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, T, C, h, w) -> (B, 3, T, H, W) in [0, 1]."""
        weight = next(self.dcae.parameters())
        return self.dcae.decode_video(latents.to(weight.device, weight.dtype)).float().transpose(1, 2)

    def __call__(self, num_frames: int, context: torch.Tensor | None = None, *,
                 sampling: FARSamplingConfig | None = None, **generate_args) -> VideoOutput:
        """`num_frames` new frames after the `context` videos (B, 3, Tc, H, W) (None: from nothing); `sampling` and
        the other arguments (conditions, noise, generator, sampling fields as keywords) are `generate_latents`'s."""
        context_latents = None if context is None else self.encode(context)
        if context is None:  # from nothing: the DC-AE's latent size at its resolution, unless the noise says
            generate_args.setdefault("latent_size", self.dcae.config.latent_size)
        latents = generate_latents(self.far, num_frames, context_latents, sampling=sampling, **generate_args)
        return VideoOutput(self.decode(latents), latents)
