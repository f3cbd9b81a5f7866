"""FAR training: per-frame flow matching with clean context frames, on pre-extracted DC-AE latents (or on episode
videos, each batch encoded by a frozen DC-AE, as FAR's 'video' batches).

Each batch (FAR's `train_step`, official-formats.md §5.6): noise levels u = sigmoid(N(0, 1)) per frame (logit-normal;
`logit_mean` / `logit_std` move it), a share `clean_context_ratio` of the frames kept clean (timestep -1, out of the
loss), labels or actions replaced by the null id with probability `cond_dropout` (for guidance), the loss over the
last W frames (`far_loss`). FAR_Long
(`model.long`) trains on clips of random length L in [W, clip_frames - 1] at a random start (FAR's clip sampler),
the frames before the last W being clean long-term context. Every draw comes from a generator seeded by (seed,
batch, rank), so a resumed run draws what the uninterrupted one would. AdamW with FAR's recipe (lr 1e-4, betas 0.9 /
0.999, no weight decay, constant after warmup), gradient clipping, an EMA of the weights (what FAR releases: the
export), bf16 where native, DDP and DeepSpeed through nbp's runner.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from nbp.checkpoint import load_dcae, load_model
from nbp.checkpoint.torch_files import write_official_state
from nbp.config import ConfigError, to_dict
from nbp.data.latents import EpisodeClips, LatentDataset
from nbp.models.dcae import DCAE
from nbp.models.far import FAR
from nbp.settings.training import FARTrainConfig
from nbp.training.far_loss import far_loss_terms
from nbp.training.loggers import SamplePictures, far_samples_picture
from nbp.training.runner import build_trainer, fit_and_export
from nbp.training.system import TrainingSystem, scheduled, warmup_constant


@dataclass
class Draws:
    """The random draws of one batch (far_loss's arguments besides the model and the latents)."""
    u: torch.Tensor  # (B, T)
    noise: torch.Tensor  # like the latents
    clean: torch.Tensor  # (B, T) bool
    dropped: torch.Tensor  # (B,) labels or (B, T) actions set to the null id


def clip_window(frames: int, window: int, generator: torch.Generator) -> tuple[int, int]:
    """FAR_Long's clip sampler: (start, length) with length in [window, frames - 1], start in [0, frames - length]."""
    length = int(torch.randint(window, frames, (1,), generator=generator))
    start = int(torch.randint(0, frames - length + 1, (1,), generator=generator))
    return start, length


def draw(cfg: FARTrainConfig, latents: torch.Tensor, per_frame_condition: bool,
         generators: list[torch.Generator]) -> Draws:
    """Each clip's draws from its own generator, so that they do not depend on how the batch is split over ranks."""
    t, shape = latents.shape[1], latents.shape[1:]
    u, noise, clean, dropped = [], [], [], []
    for generator in generators:
        u.append(torch.sigmoid(torch.randn(t, generator=generator) * cfg.logit_std + cfg.logit_mean))
        noise.append(torch.randn(shape, generator=generator))
        clean.append(torch.rand(t, generator=generator) < cfg.clean_context_ratio)
        dropped.append(torch.rand(t if per_frame_condition else 1, generator=generator) < cfg.cond_dropout)
    clean = torch.stack(clean)
    if cfg.model.long:
        clean[:, : max(0, t - cfg.model.short_window)] = True  # the long-term context
    dropped = torch.stack(dropped) if per_frame_condition else torch.cat(dropped)
    device = latents.device
    return Draws(torch.stack(u).to(device), torch.stack(noise).to(device, latents.dtype), clean.to(device),
                 dropped.to(device))


class FARSystem(TrainingSystem):
    loader_draws = True

    def __init__(self, cfg: FARTrainConfig, train_set=None, val_set=None):
        super().__init__(cfg, train_set, val_set)
        self.model = FAR(cfg.model)
        dcae = load_dcae(cfg.dcae, resolution=cfg.resolution).requires_grad_(False) if cfg.dcae else None
        self.__dict__["dcae"] = dcae  # frozen and not trained: kept out of the state dict and the optimizer
        self.make_ema(cfg.ema_decay)

    def configure_optimizers(self):
        cfg = self.cfg
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                      weight_decay=cfg.weight_decay)
        schedule = scheduled(optimizer, lambda step: warmup_constant(step, cfg.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def batch_generators(self, batch: int) -> tuple[torch.Generator, list[torch.Generator]]:
        """The batch's generator (the clip window, alike on every rank) and one per clip, seeded by the clip's place
        in the global stream (the sampler deals clip p of a rank's stream to global place p * world + rank)."""
        step, world = int(self.batches_seen), self.trainer.world_size
        places = [(step * batch + j) * world + self.global_rank for j in range(batch)]
        return self.draw_generator(step), [self.draw_generator(place, 1) for place in places]

    def loss(self, batch: dict, generators: tuple[torch.Generator, list[torch.Generator]], drop: bool) -> torch.Tensor:
        cfg, model = self.cfg, self.model.config
        latents, actions = self.latents_of(batch), batch.get("actions")
        if model.long:
            start, length = clip_window(latents.shape[1], model.short_window, generators[0])
            latents = latents[:, start:start + length]
            actions = None if actions is None else actions[:, start:start + length]
        draws = draw(cfg, latents, model.condition == "action", generators[1])
        labels = batch["label"] if model.condition == "label" else None
        actions = actions if model.condition == "action" else None
        null = torch.tensor(model.num_classes, device=latents.device)
        if drop and labels is not None:
            labels = torch.where(draws.dropped, null, labels)
        if drop and actions is not None:
            actions = torch.where(draws.dropped, null, actions)
        return far_loss_terms(self.model, latents, draws.u, draws.noise, draws.clean, labels, actions).loss

    def latents_of(self, batch: dict) -> torch.Tensor:
        """The batch's latents: extracted ones, or the frozen DC-AE's encoding of its videos."""
        if "latents" in batch:
            return batch["latents"]
        with torch.no_grad():
            return self.dcae.to(batch["video"].device).encode_video(batch["video"])

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch, self.batch_generators(len(batch["label"])), drop=True)
        self.check_finite(loss)
        self.count_batch()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """The update, then the EMA's (here, before the batch-end hooks that may checkpoint the run)."""
        super().optimizer_step(*args, **kwargs)
        self.update_ema(self.cfg.ema_decay)

    def validation_step(self, batch, batch_idx):
        seed = self.cfg.run.seed * 7919 + batch_idx * 131  # the same draws at every validation
        generators = (torch.Generator().manual_seed(seed),
                      [torch.Generator().manual_seed(seed + j + 1) for j in range(len(batch["label"]))])
        self.log("val/loss", self.loss(batch, generators, drop=False), sync_dist=True, batch_size=len(batch["label"]))


def training_sets(cfg: FARTrainConfig, dcae: DCAE | None):
    """(train, val or None): latent datasets, or episode clips for the `dcae` to encode; the latent shape checked
    against the model."""
    model = cfg.model
    expected = [model.in_channels, model.sample_size, model.sample_size]
    if dcae is not None:
        shape = [dcae.config.latent_channels, dcae.config.latent_size, dcae.config.latent_size]
        sets = [EpisodeClips(f, cfg.clip_frames, cfg.resolution) if f else None for f in (cfg.train, cfg.val)]
    else:
        sets = [LatentDataset(f, cfg.clip_frames) if f else None for f in (cfg.train, cfg.val)]
        shape = list(sets[0].meta["latent_shape"])
        for dataset in filter(None, sets):  # before the first step, not mid-run
            dataset.check_conditions(model.condition, model.num_classes)
    if shape != expected:
        raise ConfigError(f"{cfg.dcae or cfg.train} makes latents {shape}; the model reads {expected} "
                          "(model.in_channels, model.sample_size)")
    return sets


def train_far(cfg: FARTrainConfig, callbacks=()) -> Path:
    """Train (or resume) the run in `cfg.run.run_dir`; returns the exported model (`far.safetensors`, the EMA
    weights; `far_official.pth` holds the same as the official plain state dict)."""
    cfg.validate()
    L.seed_everything(cfg.run.seed, workers=True)
    run_dir = Path(cfg.run.run_dir)
    system = FARSystem(cfg)  # the model first: its initialization draws from the seeded generator
    system.train_set, system.val_set = training_sets(cfg, system.dcae)
    pictures = []
    if (cfg.decoder or cfg.dcae) and cfg.run.sample_every:
        draw = far_samples_picture(cfg.decoder or cfg.dcae, system.train_set[0], cfg.model.num_classes,
                                   min(8, cfg.clip_frames))
        pictures.append(SamplePictures(run_dir / "samples", cfg.run.sample_every, draw))
    trainer = build_trainer(cfg.run, [*callbacks, *pictures], grad_clip=cfg.grad_clip,
                            validate=system.val_set is not None)
    return fit_and_export(trainer, system, cfg.run, to_dict(cfg), system.exported(), run_dir / "far.safetensors",
                          also=lambda out: write_official_state(run_dir / "far_official.pth", official_far_state(out)))


def official_far_state(exported: Path) -> dict:
    """FAR's plain float32 state dict of the exported model (read back: under ZeRO it was gathered into the file)."""
    return {k: v.detach().float().cpu() for k, v in load_model(exported, kind="far").state_dict().items()}
