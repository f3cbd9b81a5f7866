"""`nbp train-dcae`: FAR's DC-AE recipe on the tokenizer's GAN system (nbp.training.tokenizer).

FAR trains its DC-AEs per frame in two phases (`far/trainers/trainer_dcae.py`):
1. L1 + LPIPS (weight 1.0) on images in [-1, 1];
2. from `disc_start` on, a PatchGAN on frames joins with an adaptive weight, and the encoder is frozen, so the
   latents a FAR model may already be trained on stay as they are and only the decoder sharpens.
An EMA of the weights (with the model's BatchNorm statistics) is what is exported: `dcae.safetensors` (nbp) and
`dcae_official.pth` (FAR's plain state dict); `load_dcae` reads both.

The latents' scale. FAR's flow starts from unit Gaussian noise, so its latents must have about unit variance: the
released DC-AEs are scaled by 0.2889, 1 / the std of their latents. A DC-AE trained here has latents of another
spread, so the export measures it on training clips and stores 1 / std as the model's `scaling_factor` (the tiny
Crafter DC-AE's unscaled latents: std 5.4 after 80 steps, 3.2 after 5,600).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from nbp.checkpoint import load_dcae, save_model
from nbp.checkpoint.torch_files import write_official_state
from nbp.models.dcae import DCAE, DCAEConfig
from nbp.settings.training import DCAETrainConfig
from nbp.training.tokenizer import AutoencoderSystem, train_autoencoder

log = logging.getLogger(__name__)


class DCAESystem(AutoencoderSystem):
    """The tokenizer system with a DC-AE in the `tokenizer` slot."""

    @staticmethod
    def initial_tokenizer(cfg: DCAETrainConfig) -> DCAE:
        if cfg.init_from is None:
            return DCAE(cfg.tokenizer_config())
        return load_dcae(cfg.init_from, resolution=cfg.data.resolution).train()

    def reconstruct(self, video: torch.Tensor, gan: bool) -> torch.Tensor:
        if not (gan and self.cfg.freeze_encoder):
            return self.tokenizer(video)
        with torch.no_grad():
            latents = self.tokenizer.encode_video(video.transpose(1, 2))  # (B, T, C, h, w)
        return self.tokenizer.decode_video(latents, clamp=False).transpose(1, 2)

    def last_layer(self) -> torch.Tensor:
        return self.tokenizer.decoder.conv_out.conv.weight


@torch.no_grad()
def latent_std(dcae: DCAE, dataset, clips: int) -> float:
    """The std of `dcae`'s unscaled latents over the first `clips` clips of `dataset` (windows drawn by index)."""
    total = count = squares = 0.0
    for index in range(min(clips, len(dataset))):
        video = dataset.load_clip(index, draw=index)["video"].transpose(0, 1)[None]  # (1, T, 3, H, W)
        z = dcae.encode_video(video).double() / dcae.config.scaling_factor
        total, squares, count = total + z.sum().item(), squares + z.square().sum().item(), count + z.numel()
    mean = total / count
    return (squares / count - mean * mean) ** 0.5


def scaled_for_far(dcae: DCAE, cfg: DCAETrainConfig, dataset) -> DCAE:
    """`dcae` with the scaling factor the config asks for (see the module's docstring)."""
    if cfg.scaling_factor is not None:
        factor = cfg.scaling_factor
    elif cfg.init_from is not None:
        return dcae
    else:
        std = latent_std(dcae, dataset, cfg.scale_clips)
        factor = 1.0 / std
        log.info("latent std %.4f on %d training clips -> scaling_factor %.4f (FAR's released DC-AEs: 0.2889)",
                 std, min(cfg.scale_clips, len(dataset)), factor)
    dcae.config = replace(dcae.config, scaling_factor=factor)
    return dcae


def export(system: DCAESystem, run_dir: Path) -> Path:
    dcae = scaled_for_far(system.exported_tokenizer(), system.cfg, system.dataset)
    if dcae.config.scaling_factor != DCAEConfig.scaling_factor:
        log.info("dcae_official.pth holds weights only: FAR's own pipeline scales by 0.2889, this model by %.4f "
                 "(dcae.safetensors keeps it)", dcae.config.scaling_factor)
    path = save_model(dcae, run_dir / "dcae.safetensors")
    official = {k: v.contiguous() for k, v in dcae.state_dict().items()}
    write_official_state(run_dir / "dcae_official.pth", official)
    return path


def train_dcae(cfg: DCAETrainConfig, callbacks=()) -> Path:
    """Train (or resume) the run in `cfg.run.run_dir`; returns the exported DC-AE file."""
    return train_autoencoder(cfg, DCAESystem, export, callbacks)
