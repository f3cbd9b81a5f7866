"""Tokenizer training: a Lightning system with a generator and a discriminator (manual optimization).

Loss of the generator (tokenizer): l1 * |x - x'| + l2 * (x - x')^2 + perceptual * LPIPS
                                   + adversarial * w * hinge generator loss (from `disc_start` on),
with w the adaptive weight (gradient-norm ratio at the decoder's last layer) when `adaptive_weight`.
Discriminator: hinge loss + `lecam` * LeCam regulariser, from `disc_start` on.

Defaults and their sources:
- perceptual_weight 0.1, adversarial_weight 0.1, Adam, linear schedule with 1% warmup: the NBP paper's tokenizer
  (Ren et al. 2025, appendix: MAGVIT-v2 style tokenizer trained with these weights).
- l1 1.0 (reconstruction), betas (0.9, 0.99), lecam 0.001, EMA 0.999, adaptive weight, disc hinge loss,
  gradient clip 1.0: MAGVIT / MAGVIT-v2 (Yu et al. 2023) and taming-transformers (Esser et al. 2021) practice.
- disc_start: 20% of the steps in the paper-scale recipes (the discriminator joins once reconstructions are
  reasonable, as in taming-transformers); tiny recipe: 40%.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch

from nbp.checkpoint import load_magvit2, save_model
from nbp.checkpoint.perceptual import load_perceptual
from nbp.checkpoint.torch_files import write_official_state
from nbp.config import to_dict
from nbp.data.dataset import VideoDataset
from nbp.io.media import contact_sheet, to_uint8
from nbp.metrics import psnr
from nbp.models.discriminator import Discriminator
from nbp.models.tokenizer import VideoTokenizer
from nbp.settings.training import TokenizerTrainConfig
from nbp.training.loggers import SamplePictures
from nbp.training.losses import adaptive_weight, generator_adv_loss, hinge_d_loss, lecam_loss
from nbp.training.run_folder import locked, record_settings
from nbp.training.runner import build_trainer, fit
from nbp.training.system import TrainingSystem, scheduled, warmup_linear_decay

log = logging.getLogger(__name__)


def lr_lambda(steps: int, warmup_fraction: float):
    """Linear warmup over `warmup_fraction` of the steps, then linear decay to 0."""
    warmup = max(1, math.ceil(steps * warmup_fraction))
    return lambda step: warmup_linear_decay(step, warmup, steps)


class AutoencoderSystem(TrainingSystem):
    """An autoencoder against reconstruction, perceptual and GAN losses: the video tokenizer, and FAR's DC-AE
    (`nbp.training.dcae.DCAESystem`)."""
    trained_attribute = "tokenizer"
    loader_draws = True

    def __init__(self, cfg: TokenizerTrainConfig, dataset: VideoDataset | None = None,
                 val_set: VideoDataset | None = None):
        super().__init__(cfg, dataset, val_set)
        self.automatic_optimization = False
        self.tokenizer = self.initial_tokenizer(cfg)
        self.discriminator = Discriminator(cfg.discriminator) if cfg.adversarial_weight > 0 else None
        self.make_ema(cfg.ema_decay)
        lpips = load_perceptual(cfg.perceptual) if cfg.perceptual_weight > 0 else None
        self.__dict__["lpips"] = lpips  # frozen and not ours: kept out of the state dict and the optimizers
        self.register_buffer("bad_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("lecam_ema", torch.zeros(2))  # running means of D(real), D(fake)

    @staticmethod
    def initial_tokenizer(cfg: TokenizerTrainConfig) -> VideoTokenizer:
        if cfg.init_from is None:
            return VideoTokenizer(cfg.tokenizer_config())
        return load_magvit2(cfg.init_from, resolution=cfg.data.resolution).train()

    # --- data and optimizers ----------------------------------------------------------------------------
    @property
    def dataset(self) -> VideoDataset | None:
        return self.train_set

    def loader_settings(self) -> tuple[int, int]:
        return self.cfg.data.batch_size, self.cfg.data.num_workers

    @torch.no_grad()
    def validation_step(self, batch, batch_idx):
        """Reconstruction of the validation split's centre clips by the weights that would be exported."""
        video = batch["video"]
        recon = self.exported_tokenizer()(video).float().clamp(0, 1)
        self.log_dict({"val/psnr": psnr(recon, video).mean(), "val/mse": (recon - video).square().mean()},
                      sync_dist=True, batch_size=len(video))

    def on_validation_end(self) -> None:
        self.tokenizer.train()

    def configure_optimizers(self):
        cfg, schedule = self.cfg, lr_lambda(self.cfg.run.steps, self.cfg.warmup_fraction)
        opt_g = torch.optim.Adam(self.tokenizer.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        optimizers, schedulers = [opt_g], [scheduled(opt_g, schedule)]
        if self.discriminator is not None:
            opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr, betas=tuple(cfg.betas))
            optimizers.append(opt_d)
            schedulers.append(scheduled(opt_d, schedule))
        return optimizers, schedulers

    # --- what another autoencoder (nbp.training.dcae) replaces ----------------------------------------------
    def reconstruct(self, video: torch.Tensor, gan: bool) -> torch.Tensor:
        return self.tokenizer(video)

    def last_layer(self) -> torch.Tensor:
        """The decoder's output weight, where the adaptive weight compares the gradients."""
        return self.tokenizer.decoder_layers[-1].conv.weight

    # --- one step -------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        cfg, step = self.cfg, int(self.batches_seen)
        video = batch["video"]
        if step < cfg.image_steps:
            video = video[:, :, :1]  # a causal tokenizer encodes a single frame as a 1-frame clip
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        gan = self.discriminator is not None and step >= cfg.disc_start

        recon = self.reconstruct(video, gan)
        losses = self.generator_losses(video, recon, gan)
        if not self.finite_or_skip(losses["loss"], step) or \
                not self.optimize(optimizers[0], schedulers[0], losses["loss"], self.tokenizer):
            return
        self.bad_steps.zero_()
        self.update_ema(cfg.ema_decay)
        if gan:
            losses.update(self.discriminator_step(video, recon.detach(), optimizers[1], schedulers[1]))
        self.count_batch()
        self.log_dict({f"train/{k}": v.detach().float() for k, v in losses.items() if k != "rec"})
        self.log("train/rec", losses["rec"].detach().float(), prog_bar=True)
        self.log("train/lr", schedulers[0].get_last_lr()[0])

    def generator_losses(self, video, recon, gan: bool) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        diff = recon.float() - video
        rec = cfg.l1_weight * diff.abs().mean() + cfg.l2_weight * diff.square().mean()
        nll = rec
        out = {"rec": rec, "psnr": -10 * torch.log10(diff.detach().square().mean().clamp_min(1e-10))}
        if self.lpips is not None:
            self.lpips.to(video.device)
            out["perceptual"] = self.lpips.video(recon.float(), video).mean()
            nll = nll + cfg.perceptual_weight * out["perceptual"]
        out["loss"] = nll
        if gan:
            out["g_adv"] = generator_adv_loss(self.discriminator(recon))
            weight = (adaptive_weight(nll, out["g_adv"], self.last_layer())
                      if cfg.adaptive_weight else torch.ones(()))
            out["d_weight"] = weight
            out["loss"] = nll + cfg.adversarial_weight * weight * out["g_adv"]
        return out

    def discriminator_step(self, video, fake, optimizer, scheduler) -> dict[str, torch.Tensor]:
        real_logits, fake_logits = self.discriminator(video), self.discriminator(fake)
        d_loss = hinge_d_loss(real_logits, fake_logits)
        lecam = lecam_loss(real_logits, fake_logits, self.lecam_ema[0], self.lecam_ema[1])
        loss = d_loss + self.cfg.lecam_weight * lecam
        if not self.finite_or_skip(loss, int(self.batches_seen)) or \
                not self.optimize(optimizer, scheduler, loss, self.discriminator):
            return {}
        with torch.no_grad():
            means = torch.stack([torch.cat([r.flatten() for r in real_logits]).mean(),
                                 torch.cat([f.flatten() for f in fake_logits]).mean()]).float()
            self.lecam_ema.lerp_(means, 0.01)
        return {"d_loss": d_loss, "lecam": lecam, "logits_real": means[0], "logits_fake": means[1]}

    def optimize(self, optimizer, scheduler, loss, module) -> bool:
        """Backward, clip, step; an update whose gradient is not finite is skipped and counted like a bad loss."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        limit = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), limit)
        if not self.finite_or_skip(norm, int(self.batches_seen), what="gradient norm"):
            optimizer.zero_grad(set_to_none=True)
            return False
        optimizer.step()
        scheduler.step()
        return True

    def finite_or_skip(self, value: torch.Tensor, step: int, what: str = "loss") -> bool:
        """Count a non-finite loss (or gradient) and skip its update; stop after `max_bad_steps` in a row."""
        if torch.isfinite(value):
            return True
        self.bad_steps += 1
        log.warning("step %d: %s is %s, update skipped (%d in a row)", step, what, value.item(), int(self.bad_steps))
        if int(self.bad_steps) >= self.cfg.max_bad_steps:
            raise FloatingPointError(f"training stopped at step {step}: {int(self.bad_steps)} non-finite values in "
                                     f"a row (last {what} {value.item()}); the last good checkpoint is kept")
        return False

    def exported_tokenizer(self) -> VideoTokenizer:
        return self.exported().eval()


def reconstruction_picture(videos: torch.Tensor):
    """A `SamplePictures` drawer: the fixed clips `videos` and their reconstructions, in row pairs."""
    @torch.no_grad()
    def draw(system: AutoencoderSystem, path: Path) -> Path:
        recon = system.exported_tokenizer()(videos.to(system.device)).clamp(0, 1).cpu()
        system.tokenizer.train()
        rows = torch.stack([videos, recon], dim=1).flatten(0, 1)  # (2N, 3, T, H, W): input, recon, ...
        return contact_sheet(to_uint8(rows), path)
    return draw


def export(system: AutoencoderSystem, run_dir: Path) -> Path:
    """nbp's own file (config + weights) and the official `model_state_dict` layout beside it."""
    tokenizer = system.exported_tokenizer()
    path = save_model(tokenizer, run_dir / "tokenizer.safetensors")
    official = {"model_state_dict": {"module." + k: v.contiguous() for k, v in tokenizer.state_dict().items()}}
    write_official_state(run_dir / "tokenizer_official.pt", official)
    return path


def train_tokenizer(cfg: TokenizerTrainConfig, callbacks=()) -> Path:
    """Train (or resume) the run in `cfg.run.run_dir`; returns the exported tokenizer file."""
    return train_autoencoder(cfg, AutoencoderSystem, export, callbacks)


def train_autoencoder(cfg: TokenizerTrainConfig, system_class: type[AutoencoderSystem], export_to, callbacks=()) -> Path:
    """The tokenizer's training loop for `system_class` (an AutoencoderSystem); `export_to(system, run_dir)` writes
    the final files and returns the main one."""
    cfg.validate()
    L.seed_everything(cfg.run.seed, workers=True)
    run_dir = Path(cfg.run.run_dir)
    dataset = cfg.data.dataset(cfg.data.train, training=True)
    val_set = cfg.data.dataset(cfg.data.val, training=False) if cfg.data.val and cfg.run.val_every else None
    system = system_class(cfg, dataset, val_set)
    fixed = torch.stack([dataset.load_clip(i, draw=i)["video"] for i in range(min(4, len(dataset)))])
    samples = SamplePictures(run_dir / "samples", cfg.run.sample_every, reconstruction_picture(fixed))
    trainer = build_trainer(cfg.run, [samples, *callbacks], validate=val_set is not None)
    with locked(run_dir):  # held until the last file is written
        record_settings(run_dir, to_dict(cfg))
        fit(trainer, system, run_dir)
        if dataset.skipped:
            log.warning("files skipped during training: %s", dataset.skip_counts())
        return export_to(system, run_dir)
