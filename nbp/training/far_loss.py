"""FAR's training loss (official-formats.md §5.6) with its random draws as arguments: per-frame flow matching
(`nbp.generation.flow`'s convention) with clean context frames, over the last W frames.

    from nbp.training.far_loss import far_loss
    loss = far_loss(far, x0, u=u, noise=eps, clean=clean, labels=labels)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nbp.generation.far import check_conditions, check_latents
from nbp.generation.flow import CLEAN, noise_levels, scale_noise, velocity_target
from nbp.models.far import FAR


@dataclass
class FARLoss:
    loss: torch.Tensor  # () the mean over videos of the mean squared error over their noisy frames
    timesteps: torch.Tensor  # (B, T) what the model saw (-1: clean)
    prediction: torch.Tensor  # (B, T, C, h, w) the model's velocity
    frame_errors: torch.Tensor  # (B, W) mean squared error per frame of the last W frames


def far_loss_terms(far: FAR, x0: torch.Tensor, u: torch.Tensor, noise: torch.Tensor, clean: torch.Tensor,
                   labels: torch.Tensor | None = None, actions: torch.Tensor | None = None) -> FARLoss:
    """FAR's training loss on scaled latents x0 (B, T, C, h, w) with the random draws as arguments: `u` (B, T)
    noise-level draws (logit-normal in training), `noise` like x0, `clean` (B, T) bool clean-context frames
    (timestep -1, input x0, out of the loss). Labels and actions arrive already dropped for guidance."""
    check_latents(far, x0, "x0")
    check_conditions(far, labels, actions)
    b, t = x0.shape[:2]
    timesteps, sigmas = noise_levels(u.reshape(b, t).to(x0.device))
    noisy = torch.where(clean[:, :, None, None, None], x0, scale_noise(x0, noise, sigmas[:, :, None, None, None]))
    timesteps = timesteps.masked_fill(clean, CLEAN)
    prediction = far(noisy, timesteps, labels, actions)
    window = far.config.short_window
    target = velocity_target(x0, noise)
    errors = (prediction[:, -window:].float() - target[:, -window:].float()).square().mean(dim=(2, 3, 4))
    counted = (~clean[:, -window:]).float()
    loss = ((errors * counted).sum(1) / (counted.sum(1) + 1e-9)).mean()
    return FARLoss(loss, timesteps, prediction, errors)


def far_loss(far: FAR, x0: torch.Tensor, u: torch.Tensor, noise: torch.Tensor, clean: torch.Tensor,
             labels: torch.Tensor | None = None, actions: torch.Tensor | None = None) -> torch.Tensor:
    return far_loss_terms(far, x0, u, noise, clean, labels, actions).loss
