"""LPIPS (v0.1, VGG16) perceptual distance, with VGG16's feature stack rebuilt under torchvision's key names.

Weights are files the user has: torchvision's VGG16 state dict (`vgg16-397923af.pth`, keys `features.N.*`;
the classifier is ignored) and LPIPS's linear layers (`vgg.pth` from the LPIPS release, keys `linK.model.1.weight`).
"""
from __future__ import annotations

import torch
from torch import nn

VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's `features`
TAP_CHANNELS = (64, 128, 256, 512, 512)


def vgg16_features() -> nn.Sequential:
    layers, channels = [], 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


class LinearHead(nn.Module):
    """LPIPS's per-layer 1x1 conv (`model.1`; `model.0` was a dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


class LPIPS(nn.Module):
    """Distance between images in [-1, 1] (B, 3, H, W) -> (B,); frozen, eval mode."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.features = vgg16_features()
        for i, channels in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{i}", LinearHead(channels))
        self.requires_grad_(False).eval()

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, x = [], (x - self.shift) / self.scale
        for index, layer in enumerate(self.features[: TAPS[-1] + 1]):
            x = layer(x)
            if index in TAPS:
                out.append(x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))  # unit length per pixel
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        distance = 0
        for i, (fa, fb) in enumerate(zip(self.taps(a), self.taps(b))):
            distance = distance + getattr(self, f"lin{i}")((fa - fb).square()).mean(dim=(1, 2, 3))
        return distance

    def video(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mean over frames of videos (B, 3, T, H, W) in [0, 1] -> (B,)."""
        frames = lambda v: v.transpose(1, 2).flatten(0, 1) * 2 - 1  # (B*T, 3, H, W) in [-1, 1]
        return self(frames(a), frames(b)).view(a.shape[0], -1).mean(dim=1)
