"""DC-AE (Chen et al. 2024), FAR's per-frame autoencoder: diffusers' `AutoencoderDC`, the official model's own class.

Frames go in one at a time (as a batch): video (B, T, 3, H, W) in [0, 1] -> latents (B, T, 32, H/f, W/f), scaled by
0.2889 as FAR maps them, f = 2^(stages - 1). The state dict keys are AutoencoderDC's (`encoder.*`, `decoder.*`), so
the released `DCAE_*.pth` load as they are.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderDC
from einops import rearrange
from torch import nn

from nbp.models.pretrained import Pretrained
from nbp.settings.far_models import DCAEConfig


class DCAE(Pretrained, nn.Module):
    kind = "dcae"
    config_class = DCAEConfig

    def __init__(self, config: DCAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        autoencoder = AutoencoderDC(**config.diffusers_config())
        self.encoder, self.decoder = autoencoder.encoder, autoencoder.decoder  # AutoencoderDC's own key names

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [0, 1] -> its reconstruction in the same layout, unclamped (nbp's tokenizer interface,
        which the autoencoder training and the reconstruction metrics use)."""
        frames = video.transpose(1, 2)  # (B, T, 3, H, W), FAR's layout
        return self.decode_video(self.encode_video(frames), clamp=False).transpose(1, 2)

    def encode_video(self, video: torch.Tensor, frames_per_batch: int | None = None) -> torch.Tensor:
        """(B, T, 3, H, W) in [0, 1] -> scaled latents (B, T, C, h, w)."""
        b = video.shape[0]
        frames = rearrange(video, "b t c h w -> (b t) c h w").contiguous() * 2 - 1
        z = torch.cat([self.encoder(chunk) for chunk in chunks(frames, frames_per_batch)])
        return rearrange(z * self.config.scaling_factor, "(b t) c h w -> b t c h w", b=b)

    def decode_video(self, latents: torch.Tensor, frames_per_batch: int | None = None, clamp: bool = True) -> torch.Tensor:
        """Scaled latents (B, T, C, h, w) -> video (B, T, 3, H, W) in [0, 1] (unclamped with `clamp=False`)."""
        b = latents.shape[0]
        z = rearrange(latents, "b t c h w -> (b t) c h w") / self.config.scaling_factor
        video = torch.cat([self.decoder(chunk) for chunk in chunks(z, frames_per_batch)]) / 2 + 0.5
        video = video.clamp(0, 1) if clamp else video
        return rearrange(video, "(b t) c h w -> b t c h w", b=b)


def chunks(x: torch.Tensor, size: int | None) -> tuple[torch.Tensor, ...]:
    return (x,) if not size else x.split(size)
