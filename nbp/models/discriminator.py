"""PatchGAN discriminators: 3D over the whole clip, 2D over single frames. Each outputs a map of logits."""
from __future__ import annotations

import torch
from torch import nn

from nbp.config import InputError
from nbp.settings.models import DiscriminatorConfig


def _block(conv, in_ch: int, out_ch: int, groups: int, stride, norm: bool) -> list[nn.Module]:
    # 3d kernels span 3 frames: with padding 1 any clip length, even a single frame, stays valid
    kernel = (3, 4, 4) if conv is nn.Conv3d else 4
    layers = [conv(in_ch, out_ch, kernel, stride=stride, padding=1)]
    if norm:
        layers.append(nn.GroupNorm(min(groups, out_ch), out_ch))
    return layers + [nn.LeakyReLU(0.2, inplace=True)]


def patch_discriminator(dims: int, in_channels: int, cfg: DiscriminatorConfig) -> nn.Sequential:
    """pix2pix's N-layer PatchGAN, GroupNorm instead of BatchNorm (batch sizes are small)."""
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    widths = [cfg.channels * min(2**i, 8) for i in range(cfg.layers + 1)]

    def stride(i: int):
        if i == cfg.layers:
            return 1
        return 2 if dims == 2 else (2 if i < 2 else 1, 2, 2)

    layers = _block(conv, in_channels, widths[0], cfg.norm_groups, stride(0), norm=False)
    for i in range(1, cfg.layers + 1):
        layers += _block(conv, widths[i - 1], widths[i], cfg.norm_groups, stride(i), norm=True)
    layers.append(conv(widths[-1], 1, (3, 4, 4) if dims == 3 else 4, stride=1, padding=1))
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """Logits for a video (B, 3, T, H, W) in [0, 1]: a list with one map per discriminator."""

    def __init__(self, cfg: DiscriminatorConfig, in_channels: int = 3):
        super().__init__()
        if cfg.kind not in ("3d", "2d", "both"):
            raise InputError(f"discriminator kind must be '3d', '2d' or 'both', got {cfg.kind!r}")
        self.clip = patch_discriminator(3, in_channels, cfg) if cfg.kind in ("3d", "both") else None
        self.frames = patch_discriminator(2, in_channels, cfg) if cfg.kind in ("2d", "both") else None

    def forward(self, video: torch.Tensor) -> list[torch.Tensor]:
        x = video * 2 - 1
        out = []
        if self.clip is not None:
            out.append(self.clip(x))
        if self.frames is not None:
            out.append(self.frames(x.transpose(1, 2).flatten(0, 1)))  # (B*T, 3, H, W)
        return out
