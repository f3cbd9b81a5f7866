"""Inception-v1 I3D (Kinetics-400), the network behind FVD.

The module layout is that of VideoGPT's `i3d_pretrained_400.pt` (the widely used pytorch-i3d port of the
TF-Hub model): units `<name>.conv3d` + `<name>.bn`, mixed blocks with branches `b0`, `b1a`/`b1b`,
`b2a`/`b2b`, `b3b` (after the parameter-free max-pool `b3a`), and a final `logits` 1x1x1 conv with bias.
Its semantics follow that port exactly (official-formats.md §3): TensorFlow "SAME" padding computed from
the input size (zeros, also before max-pools), BatchNorm eps 1e-5, ReLU.

Input: float (N, 3, T, 224, 224) in [-1, 1]. Output: the 400 logits averaged over time, (N, 400).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nbp.config import InputError

NUM_CLASSES = 400
# Time is halved (rounded up) by Conv3d_1a, MaxPool3d_4a and MaxPool3d_5a; the final average pool then
# needs 2 frames: ceil(T / 8) >= 2, i.e. T >= 9. Space: 224 -> 7 after the same three halvings plus two
# more (Conv3d_1a, MaxPool3d_2a, MaxPool3d_3a, 4a, 5a: ceil(H / 32) >= 7), i.e. H, W >= 193.
MIN_FRAMES = 9
MIN_SIZE = 193

# Output channels of each mixed block: [b0, b1a, b1b, b2a, b2b, b3b].
MIXED_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _triple(value) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TF "SAME" padding for F.pad on (T, H, W): the extra element goes after, as in TensorFlow."""
    pad = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):  # F.pad lists the last dim first
        total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        pad += [total // 2, total - total // 2]
    return pad


class MaxPool3dSame(nn.Module):
    """Max-pool with TF "SAME" zero padding (zeros are harmless: inputs come out of a ReLU)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class Unit3D(nn.Module):
    """SAME-padded conv3d, then (optionally) BatchNorm and ReLU; `logits` is the plain conv with bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel=1, stride=1, norm_act: bool = True):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=not norm_act)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5) if norm_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)))
        return x if self.bn is None else F.relu(self.bn(x))


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; max-pool -> 1x1), concatenated."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]):
        super().__init__()
        c0, c1, c2, c3, c4, c5 = channels
        self.b0 = Unit3D(in_channels, c0)
        self.b1a = Unit3D(in_channels, c1)
        self.b1b = Unit3D(c1, c2, kernel=3)
        self.b2a = Unit3D(in_channels, c3)
        self.b2b = Unit3D(c3, c4, kernel=3)
        self.b3a = MaxPool3dSame(3, 1)
        self.b3b = Unit3D(in_channels, c5)
        self.out_channels = c0 + c2 + c4 + c5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """The Kinetics-400 I3D of FVD; `forward` maps (N, 3, T>=9, 224, 224) in [-1, 1] to (N, 400) logits."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3):
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        # `logits` is registered first and the layers are plain attributes (no container level), so the
        # state dict has the official keys in the official order.
        self.logits = Unit3D(1024, num_classes, norm_act=False)
        layers = self._layers(in_channels)
        self.endpoints = list(layers)
        for name, layer in layers.items():
            self.add_module(name, layer)

    @staticmethod
    def _layers(in_channels: int) -> dict[str, nn.Module]:
        """The feature layers in execution order, up to Mixed_5c (1024 channels)."""
        layers = {
            "Conv3d_1a_7x7": Unit3D(in_channels, 64, kernel=7, stride=2),
            "MaxPool3d_2a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, kernel=3),
            "MaxPool3d_3a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
        }
        channels = 192
        for name, block_channels in MIXED_CHANNELS.items():
            if name == "Mixed_4b":
                layers["MaxPool3d_4a_3x3"] = MaxPool3dSame(3, 2)
            elif name == "Mixed_5b":
                layers["MaxPool3d_5a_2x2"] = MaxPool3dSame(2, 2)
            layers[name] = InceptionBlock(channels, block_channels)
            channels = layers[name].out_channels
        return layers

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise InputError(f"I3D expects (N, {self.in_channels}, T, H, W) videos, got shape {tuple(x.shape)}")
        if x.shape[2] < MIN_FRAMES or min(x.shape[3:]) < MIN_SIZE:
            raise InputError(f"I3D needs at least {MIN_FRAMES} frames of at least {MIN_SIZE}x{MIN_SIZE} pixels "
                             f"(it is meant for 224x224), got T, H, W = {tuple(x.shape[2:])}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c activations, (N, 1024, ceil(T/8), ceil(H/32), ceil(W/32))."""
        self._check_input(x)
        for name in self.endpoints:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool3d(self.features(x), kernel_size=(2, 7, 7), stride=1)  # (N, 1024, T'-1, 1, 1) at 224 px
        x = self.logits(x)  # (N, 400, T'-1, 1, 1)
        return x.squeeze(4).squeeze(3).mean(dim=2)  # (N, 400, T'-1) -> (N, 400)
