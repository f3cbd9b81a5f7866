"""What every pipeline shares: its output type and the dtype its models load in."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nbp.runtime import use_bf16


@dataclass
class VideoOutput:
    """Every pipeline's output: the clip, given frames and new ones, as videos and as the model saw it."""
    videos: torch.Tensor  # (B, 3, T, H, W) in [0, 1]: the given frames as the autoencoder reconstructs them, then new
    latents: torch.Tensor  # the same frames as the model sees them: token codes (B, n) or FAR latents (B, T, C, h, w)

    @property
    def codes(self) -> torch.Tensor:
        """The token family's name for `latents`."""
        return self.latents


def bf16_dtype(bf16: bool, device) -> torch.dtype | None:
    """bf16 weights when asked for and native here (nbp.runtime.use_bf16), else the file's float32."""
    return torch.bfloat16 if use_bf16(bf16, device, "sampling") else None
