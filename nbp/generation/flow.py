"""The flow convention of FAR, both ways (the pattern of diffusers' FlowMatchEulerDiscreteScheduler, whose schedule
FAR samples with): rectified flow from data (sigma 0) to noise (sigma 1),

    x_sigma = sigma * noise + (1 - sigma) * data,   the model predicts v = noise - data,   timestep = 1000 sigma.

Training draws noise levels on the 1,000-step grid and noises frames (`noise_levels`, `scale_noise`); sampling
walks the scheduler's sigmas from 1 to 0 by Euler steps (`flow_schedule`, `euler_step`). A clean context frame has
timestep -1 (`CLEAN`).
"""
from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

TRAIN_TIMESTEPS = 1000
CLEAN = -1.0  # the timestep of a clean context frame


def noise_levels(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform draws u in [0, 1) (logit-normal in training) -> FAR's (timesteps, sigmas) on the training grid."""
    k = (u * TRAIN_TIMESTEPS).long()
    sigmas = (TRAIN_TIMESTEPS - k).float() / TRAIN_TIMESTEPS
    return sigmas * TRAIN_TIMESTEPS, sigmas


def scale_noise(data: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """x_sigma: `data` noised to level `sigma` (broadcast over the trailing dimensions)."""
    return sigma * noise + (1 - sigma) * data


def velocity_target(data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - data


def flow_schedule(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps (N,), sigmas (N + 1,)) of FAR's scheduler (1,000 training timesteps, shift 1)."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=TRAIN_TIMESTEPS)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.float(), scheduler.sigmas.float()


def euler_step(x: torch.Tensor, v: torch.Tensor, delta: torch.Tensor | float) -> torch.Tensor:
    """x moved by `delta` = sigma_next - sigma along the velocity v, in float32, returned in v's dtype."""
    return (x.float() + delta * v.float()).to(v.dtype)
