"""The typed configs of the FAR family's models (the FAR transformer and the DC-AE) with their named presets."""
from __future__ import annotations

from dataclasses import dataclass, field

from nbp.config import ConfigError, check_at_least, register_presets


def _sizes(layers: int, heads: int, **extra) -> dict:
    return dict(num_layers=layers, num_heads=heads, **extra)


LONG = dict(long=True, condition="action", num_classes=4)  # the released long models are action-conditioned


@register_presets({
    "far-b": _sizes(12, 12), "far-m": _sizes(12, 16), "far-l": _sizes(24, 16), "far-xl": _sizes(28, 18),
    "far-b-long": _sizes(12, 12, **LONG), "far-m-long": _sizes(12, 16, **LONG),
    # test and CPU sizes (the goldens' shapes: 2 layers x 2 heads = 128 wide)
    "far-tiny": _sizes(2, 2), "far-tiny-long": _sizes(2, 2, **LONG, short_window=4),
})
@dataclass
class FARConfig:
    preset: str | None = None  # the preset these values started from
    num_layers: int = 12  # transformer blocks
    num_heads: int = 12  # attention heads
    head_dim: int = 64  # width of a head
    in_channels: int = 32  # latent channels (DC-AE: 32)
    patch_size: int = 1  # latent pixels per token side
    rope_axes: list[int] = field(default_factory=lambda: [16, 24, 24])  # rotary channels for (frame, row, column)
    condition: str = "none"  # "none", "label" (one class per video) or "action" (one per frame)
    num_classes: int = 0  # labels or actions; id num_classes is the null id (guidance)
    slope_scale: float = 0.0  # attention bias slope * (key frame - query frame): a decay over frame distance
    long: bool = False  # FAR_Long's long-short context
    short_window: int = 16  # W: frames kept in full (BAIR: 30)
    context_patch_size: int = 4  # c: long-term frames are cut into c x c patches
    sample_size: int = 8  # latent height and width the model is used at

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    def validate(self) -> None:
        if self.condition not in ("none", "label", "action"):
            raise ConfigError(f"condition must be 'none', 'label' or 'action', got {self.condition!r}")
        if (self.condition != "none") != (self.num_classes > 0):
            raise ConfigError(f"condition={self.condition!r} needs num_classes > 0 exactly when conditioned "
                              f"(got {self.num_classes})")
        if sum(self.rope_axes) != self.head_dim:
            raise ConfigError(f"rope_axes {self.rope_axes} must add up to head_dim={self.head_dim}")
        if self.long and self.condition == "label":
            raise ConfigError("FAR_Long supports actions or no condition, not labels (as the official model)")
        check_at_least(self, 1, "num_layers", "num_heads", "head_dim", "in_channels", "patch_size", "short_window",
                       "context_patch_size", "sample_size")
        if self.long and self.context_patch_size % self.patch_size:
            raise ConfigError(f"context_patch_size {self.context_patch_size} must be a multiple of patch_size")


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
