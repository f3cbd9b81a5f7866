"""FAR as users call it: `generate` and `far_loss` over latents, and `FARPipeline` (DC-AE + FAR: video in, video out).

    from nbp.download import load_far, load_dcae
    from nbp.pipelines.far import generate, far_loss
    z = generate(far, context=z_ctx, num_frames=12, steps=50, cfg_scale=2.0, labels=labels)
    loss = far_loss(far, x0, u=u, noise=eps, clean=clean, labels=labels)

Videos in `FARPipeline` are nbp's (B, 3, T, H, W) in [0, 1]; latents FAR's (B, T, C, h, w), scaled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nbp.config import InputError, with_settings
from nbp.download import load_dcae, load_far
from nbp.generation.far import CLEAN, FARSamplingConfig, generate_latents
from nbp.models.dcae import DCAE
from nbp.models.far import FAR
from nbp.pipelines.video import bf16_dtype


def check_latents(far: FAR, latents: torch.Tensor, what: str = "latents") -> None:
    cfg = far.config
    if latents.ndim != 5 or latents.shape[2] != cfg.in_channels or latents.shape[-1] % cfg.patch_size \
            or latents.shape[-2] % cfg.patch_size:
        raise InputError(f"{what} must be (B, T, {cfg.in_channels}, h, w) with h and w multiples of the patch "
                         f"{cfg.patch_size}; got {tuple(latents.shape)}")
    if cfg.long and (latents.shape[-1] % cfg.context_patch_size or latents.shape[-2] % cfg.context_patch_size):
        raise InputError(f"{what} of {latents.shape[-2]}x{latents.shape[-1]} do not split into the long-term "
                         f"context's {cfg.context_patch_size}x{cfg.context_patch_size} patches")


def check_conditions(far: FAR, labels: torch.Tensor | None, actions: torch.Tensor | None) -> None:
    cfg = far.config
    for name, ids, expected in (("labels", labels, "label"), ("actions", actions, "action")):
        if ids is None:
            continue
        if cfg.condition != expected:
            raise InputError(f"{name} given to a FAR model conditioned on {cfg.condition!r}")
        if ids.min() < 0 or ids.max() > cfg.num_classes:
            raise InputError(f"{name} must lie in [0, {cfg.num_classes - 1}] ({cfg.num_classes} is the null id); "
                             f"got {int(ids.min())}..{int(ids.max())}")


def generate(far: FAR, context: torch.Tensor | None = None, num_frames: int = 16, *,
             sampling: FARSamplingConfig | None = None, labels: torch.Tensor | None = None,
             actions: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None, batch: int | None = None,
             latent_size: int | tuple[int, int] | None = None, show_progress: bool = False, on_frame=None,
             **settings) -> torch.Tensor:
    """Latents of all Tc + `num_frames` frames: `context` (B, Tc, C, h, w) unchanged, then the generated frames
    (nbp.generation.far). `sampling` and any of its fields as keywords (`steps=4, cfg_scale=1.5`) say how; `noise`
    (B, num_frames, C, h, w) overrides the draw from `generator`; from nothing, the latent size is the noise's or
    `latent_size`."""
    for what, latents in (("context", context), ("noise", noise)):
        if latents is not None:
            check_latents(far, latents, what)
    check_conditions(far, labels, actions)
    return generate_latents(far, num_frames, context, batch=batch, labels=labels, actions=actions,
                            sampling=with_settings(sampling or FARSamplingConfig(), settings), noise=noise,
                            generator=generator, show_progress=show_progress, on_frame=on_frame,
                            latent_size=latent_size)


@dataclass
class FARLoss:
    loss: torch.Tensor  # () the mean over videos of the mean squared error over their noisy frames
    timesteps: torch.Tensor  # (B, T) what the model saw (-1: clean)
    prediction: torch.Tensor  # (B, T, C, h, w) the model's velocity
    frame_errors: torch.Tensor  # (B, W) mean squared error per frame of the last W frames


def noise_levels(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform draws u in [0, 1) -> FAR's (timesteps, sigmas) on the 1,000-step training schedule."""
    k = (u * 1000).long()
    sigmas = (1000 - k).float() / 1000
    return sigmas * 1000, sigmas


def far_loss_terms(far: FAR, x0: torch.Tensor, u: torch.Tensor, noise: torch.Tensor, clean: torch.Tensor,
                   labels: torch.Tensor | None = None, actions: torch.Tensor | None = None) -> FARLoss:
    """FAR's training loss on scaled latents x0 (B, T, C, h, w) with the random draws as arguments: `u` (B, T)
    noise-level draws (logit-normal in training), `noise` like x0, `clean` (B, T) bool clean-context frames
    (timestep -1, input x0, out of the loss). Labels and actions arrive already dropped for guidance."""
    check_latents(far, x0, "x0")
    check_conditions(far, labels, actions)
    b, t = x0.shape[:2]
    timesteps, sigmas = noise_levels(u.reshape(b, t).to(x0.device))
    sigma = sigmas[:, :, None, None, None]
    noisy = torch.where(clean[:, :, None, None, None], x0, sigma * noise + (1 - sigma) * x0)
    timesteps = timesteps.masked_fill(clean, CLEAN)
    prediction = far(noisy, timesteps, labels, actions)
    window = far.config.short_window
    errors = (prediction[:, -window:].float() - (noise - x0)[:, -window:].float()).square().mean(dim=(2, 3, 4))
    counted = (~clean[:, -window:]).float()
    loss = ((errors * counted).sum(1) / (counted.sum(1) + 1e-9)).mean()
    return FARLoss(loss, timesteps, prediction, errors)


def far_loss(far: FAR, x0: torch.Tensor, u: torch.Tensor, noise: torch.Tensor, clean: torch.Tensor,
             labels: torch.Tensor | None = None, actions: torch.Tensor | None = None) -> torch.Tensor:
    return far_loss_terms(far, x0, u, noise, clean, labels, actions).loss


@dataclass
class FAROutput:
    videos: torch.Tensor  # (B, 3, T, H, W) in [0, 1]: the given frames as the DC-AE reconstructs them, then new ones
    latents: torch.Tensor  # (B, T, C, h, w)


class FARPipeline:
    """DC-AE + FAR: frames in, frames out."""

    def __init__(self, dcae: DCAE, far: FAR):
        if dcae.config.latent_channels != far.config.in_channels:
            raise InputError(f"the DC-AE makes {dcae.config.latent_channels}-channel latents, the FAR model reads "
                             f"{far.config.in_channels}")
        self.dcae, self.far = dcae, far

    @classmethod
    def from_files(cls, dcae: str, far: str, device="cpu", bf16: bool = False, resolution: int | None = None,
                   **far_fields) -> FARPipeline:
        dtype = bf16_dtype(bf16, device)
        return cls(load_dcae(dcae, device=device, dtype=dtype, resolution=resolution),
                   load_far(far, device=device, dtype=dtype, **far_fields))

    @property
    def device(self) -> torch.device:
        return next(self.far.parameters()).device

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [0, 1] -> latents (B, T, C, h, w)."""
        weight = next(self.dcae.parameters())
        return self.dcae.encode_video(video.transpose(1, 2).to(weight.device, weight.dtype))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, T, C, h, w) -> (B, 3, T, H, W) in [0, 1]."""
        weight = next(self.dcae.parameters())
        return self.dcae.decode_video(latents.to(weight.device, weight.dtype)).float().transpose(1, 2)

    def __call__(self, num_frames: int, context: torch.Tensor | None = None, **generate_args) -> FAROutput:
        """`num_frames` new frames after the video `context` (B, 3, Tc, H, W) (None: from nothing); the other
        arguments are `generate`'s."""
        context_latents = None if context is None else self.encode(context)
        if context is None:  # from nothing: the DC-AE's latent size at its resolution, unless the noise says
            generate_args.setdefault("latent_size", self.dcae.config.latent_size)
        latents = generate(self.far, context_latents, num_frames, **generate_args)
        return FAROutput(self.decode(latents), latents)
