"""DC-AE (Chen et al. 2024), FAR's per-frame autoencoder: diffusers' `AutoencoderDC`, the official model's own class.

Frames go in one at a time (as a batch): video (B, T, 3, H, W) in [0, 1] -> latents (B, T, 32, H/f, W/f), scaled by
0.2889 as FAR maps them, f = 2^(stages - 1). The state dict keys are AutoencoderDC's (`encoder.*`, `decoder.*`), so
the released `DCAE_*.pth` load as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderDC
from einops import rearrange
from torch import nn

from nbp.config import ConfigError, register_presets
from nbp.models.pretrained import Pretrained

RESNET_STAGES = 3  # FAR's configs: residual stages first, then EfficientViT stages (at 1/8 resolution and below)


def _stages(stages: int, resolution: int) -> dict:
    return dict(channels=[128, 256, 512, 512, 1024, 1024][:stages], encoder_layers=[0, 4, 8, 2, 2, 2][:stages],
                decoder_layers=[0, 5, 10, 2, 2, 2][:stages], resolution=resolution)


@register_presets({
    # FAR's model_{8x,16x,32x}_c32_config.json: 250, 306 and 362 tensors, 127.9 M, 215.8 M and 323.4 M numbers
    "dcae-8x": _stages(4, 64), "dcae-16x": _stages(5, 128), "dcae-32x": _stages(6, 256),
    # the goldens' shrunken 8x model (CPU tests and recipes)
    "dcae-tiny": dict(channels=[16, 32, 64, 64], encoder_layers=[0, 1, 2, 1], decoder_layers=[0, 1, 2, 1], resolution=64),
})
@dataclass
class DCAEConfig:
    preset: str | None = None  # the preset these values started from
    channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])  # width of each stage
    encoder_layers: list[int] = field(default_factory=lambda: [0, 4, 8, 2])  # blocks per encoder stage
    decoder_layers: list[int] = field(default_factory=lambda: [0, 5, 10, 2])  # blocks per decoder stage
    latent_channels: int = 32  # channels of the latents
    attention_head_dim: int = 32  # width of an attention head in the linear-attention stages
    scaling_factor: float = 0.2889  # latents are multiplied by it (1 / their std on training data)
    resolution: int = 64  # frame size the model is used at

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.spatial_factor

    def validate(self) -> None:
        stages = len(self.channels)
        if not len(self.encoder_layers) == len(self.decoder_layers) == stages or stages <= RESNET_STAGES:
            raise ConfigError(f"channels, encoder_layers and decoder_layers need one entry per stage (more than "
                              f"{RESNET_STAGES}); got {self.channels}, {self.encoder_layers}, {self.decoder_layers}")
        if self.resolution % self.spatial_factor:
            raise ConfigError(f"resolution {self.resolution} must be divisible by {self.spatial_factor}")

    def diffusers_config(self) -> dict:
        """AutoencoderDC's arguments, as in FAR's config files."""
        stages, vit = len(self.channels), len(self.channels) - RESNET_STAGES
        types = ["ResBlock"] * RESNET_STAGES + ["EfficientViTBlock"] * vit
        return dict(in_channels=3, latent_channels=self.latent_channels, attention_head_dim=self.attention_head_dim,
                    encoder_block_types=types, decoder_block_types=types,
                    encoder_block_out_channels=list(self.channels), decoder_block_out_channels=list(self.channels),
                    encoder_layers_per_block=list(self.encoder_layers), decoder_layers_per_block=list(self.decoder_layers),
                    encoder_qkv_multiscales=[[]] * stages, decoder_qkv_multiscales=[[]] * stages,
                    upsample_block_type="pixel_shuffle", downsample_block_type="pixel_unshuffle",
                    decoder_norm_types=["batch_norm"] * RESNET_STAGES + ["rms_norm"] * vit,
                    decoder_act_fns=["relu"] * RESNET_STAGES + ["silu"] * vit, scaling_factor=self.scaling_factor)


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
