"""The base of nbp's Lightning systems (tokenizer and DC-AE, LM and world model, FAR): what each would otherwise
rebuild. A system owns its model, losses and optimizers; the base adds

- the batch counter (`batches_seen`, a buffer: it is saved, and the data stream and every draw resume from it);
- the loaders: the resumable training stream and the validation loader;
- seeded draws (`draw_generator`): named by (seed, batch, ...), so a resumed run draws the same numbers;
- the non-finite guard: a loss that is not finite stops the run, keeping the last good checkpoint;
- the EMA of the trained weights (`nbp.training.ema`), updated after each optimizer step when `ema_decay` > 0;
- the export hook: checkpoints carry the model's config and kind (`nbp convert`) and which weights to export;
- learning-rate schedules as factors of the step (`warmup_cosine`, `warmup_linear_decay`, `warmup_constant`).
"""
from __future__ import annotations

import math
from dataclasses import asdict

import lightning as L
import torch

from nbp.checkpoint.zero import CONFIG_KEY, EXPORT_KEY, KIND_KEY
from nbp.config import ConfigError
from nbp.seeds import generator_for
from nbp.training.ema import ema_copy, update_ema
from nbp.training.runner import resumable_loader


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then a cosine down to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_linear_decay(step: int, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then linear decay to 0 at `total`."""
    warmup = max(1, warmup)
    return min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))


def warmup_constant(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / max(1, warmup))


def scheduled(optimizer: torch.optim.Optimizer, factor) -> torch.optim.lr_scheduler.LambdaLR:
    """The optimizer's learning rate times `factor(step)`, stepped every batch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TrainingSystem(L.LightningModule):
    trained_attribute = "model"  # the attribute holding the model that trains (and exports)
    loader_draws = False  # whether the training sampler deals a seed with each item (per-item random draws)

    def __init__(self, cfg, train_set=None, val_set=None):
        super().__init__()
        self.cfg, self.train_set, self.val_set = cfg, train_set, val_set
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    # --- what the subclass decides --------------------------------------------------------------------------
    @property
    def trained(self) -> torch.nn.Module:
        return getattr(self, self.trained_attribute)

    def loader_settings(self) -> tuple[int, int]:
        """(batch size, workers)."""
        return self.cfg.batch_size, self.cfg.num_workers

    # --- data -------------------------------------------------------------------------------------------------
    def train_dataloader(self):
        batch_size, workers = self.loader_settings()
        return resumable_loader(self.train_set, batch_size, workers, self.cfg.run.seed, int(self.batches_seen),
                                draws=self.loader_draws)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        batch_size, workers = self.loader_settings()
        return torch.utils.data.DataLoader(self.val_set, batch_size=batch_size, num_workers=workers)

    def draw_generator(self, *indices: int) -> torch.Generator:
        """A generator for one named draw of this run, seeded by (run seed, *indices)."""
        return generator_for(self.cfg.run.seed, *indices)

    # --- one step ---------------------------------------------------------------------------------------------
    def check_finite(self, loss: torch.Tensor, advice: str = "lower lr") -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at batch {int(self.batches_seen)}; {advice}; the last "
                                     "good checkpoint is kept")

    def count_batch(self) -> None:
        self.batches_seen += 1
        self.log("train/batch", float(self.batches_seen))

    # --- the EMA and the export -------------------------------------------------------------------------------
    def make_ema(self, decay: float) -> None:
        self.ema = ema_copy(self.trained, decay)

    def update_ema(self, decay: float) -> None:
        if self.ema is not None:
            update_ema(self.ema, self.trained, decay)

    def exported(self) -> torch.nn.Module:
        """What the run releases: the EMA weights when there is an EMA, else the trained ones."""
        return self.ema if getattr(self, "ema", None) is not None else self.trained

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        model = self.trained
        checkpoint[CONFIG_KEY], checkpoint[KIND_KEY] = asdict(model.config), model.kind  # for `nbp convert`
        checkpoint[EXPORT_KEY] = ("ema." if getattr(self, "ema", None) is not None else f"{self.trained_attribute}.")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse to resume a run of another architecture, naming what differs."""
        saved, current = checkpoint.get(CONFIG_KEY, {}), asdict(self.trained.config)
        changed = {k: (saved[k], current[k]) for k in current if k in saved and k != "preset" and saved[k] != current[k]}
        if changed:
            details = ", ".join(f"{k}: checkpoint {a} vs run {b}" for k, (a, b) in changed.items())
            raise ConfigError(f"the checkpoint in {self.cfg.run.run_dir} is of another model ({details}); "
                              "use a new run.run_dir or the original model settings")
