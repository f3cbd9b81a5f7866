"""LPIPS (v0.1) perceptual distance over VGG16 or AlexNet, their feature stacks rebuilt under torchvision's keys.

Weights are files the user has: torchvision's state dict (`vgg16-397923af.pth` or `alexnet-owt-7be5be79.pth`, keys
`features.N.*`; the classifier is ignored) and LPIPS's linear layers (`vgg.pth` or `alex.pth` from the LPIPS
release, keys `linK.model.1.weight`). VGG is the training loss (taming, MAGVIT); AlexNet is the metric FAR and
most video papers report.
"""
from __future__ import annotations

import torch
from torch import nn

VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's `features`
VGG16_CHANNELS = (64, 128, 256, 512, 512)
ALEXNET_TAPS = (1, 4, 7, 9, 11)  # relu1 .. relu5
ALEXNET_CHANNELS = (64, 192, 384, 256, 256)


def vgg16_features() -> nn.Sequential:
    layers, channels = [], 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet `features` (the 'one weird trick' variant LPIPS uses)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True))


BACKBONES = {"vgg": (vgg16_features, VGG16_TAPS, VGG16_CHANNELS),
             "alex": (alexnet_features, ALEXNET_TAPS, ALEXNET_CHANNELS)}


class LinearHead(nn.Module):
    """LPIPS's per-layer 1x1 conv (`model.1`; `model.0` was a dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


class LPIPS(nn.Module):
    """Distance between images in [-1, 1] (B, 3, H, W) -> (B,); frozen, eval mode."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"LPIPS net must be one of {sorted(BACKBONES)}, got {net!r}")
        self.net = net
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        build, self.tap_indices, tap_channels = BACKBONES[net]
        self.features = build()
        for i, channels in enumerate(tap_channels):
            self.add_module(f"lin{i}", LinearHead(channels))
        self.requires_grad_(False).eval()

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, x = [], (x - self.shift) / self.scale
        for index, layer in enumerate(self.features[: self.tap_indices[-1] + 1]):
            x = layer(x)
            if index in self.tap_indices:
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
