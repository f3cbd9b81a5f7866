"""LM training: the semi-autoregressive objective on token datasets (or on videos through a frozen tokenizer).

Every token of block k predicts its counterpart in block k+1 (the hybrid first row token by token); condition
dropout trains the unconditional embedding used by classifier-free guidance. AdamW (betas 0.9/0.95, weight decay
on matrices only), cosine schedule with linear warmup, gradient clipping and accumulation, bf16, top-1/top-5 token
accuracy. Strategies: single device, DDP, DeepSpeed ZeRO 1/2/3 (`strategy=deepspeed_stage_2`, ...), including on
CPU processes (`CPUDeepSpeedStrategy`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from nbp.checkpoint import save_model
from nbp.config import ConfigError, from_preset
from nbp.data.classes import class_text
from nbp.data.tokens import TokenDataset
from nbp.models.transformer import Transformer, TransformerConfig, build_sequence
from nbp.models.world import training_window, world_logits
from nbp.training.runner import build_trainer, fit, latest_checkpoint, resumable_loader

log = logging.getLogger(__name__)


@dataclass
class LMTrainConfig:
    run_dir: str = "runs/lm"
    model: str = "tiny"  # TransformerConfig preset
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train: str = "???"  # token dataset folder (`nbp tokenize`)
    val: str | None = None
    steps: int = 1000  # batches
    batch_size: int = 8
    num_workers: int = 0
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.05  # on matrices only (not norms, biases, embeddings of positions)
    grad_clip: float = 1.0
    accumulate: int = 1
    cond_dropout: float = 0.1  # probability of replacing the condition by the unconditional embedding
    fused_loss: bool = True  # head fused with the cross-entropy (nbp.models.fused_ce): ~25% less peak memory
    precision: str = "32-true"  # "bf16-mixed" on GPUs
    accelerator: str = "auto"  # Lightning accelerator: "auto", "cpu", "gpu"
    strategy: str = "auto"  # "ddp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3"
    devices: int = 1
    num_nodes: int = 1
    seed: int = 0
    checkpoint_every: int = 500
    keep_last: int = 3
    val_every: int = 0  # batches between validation passes (0: none)
    log_every: int = 10

    def model_config(self, dataset: TokenDataset) -> TransformerConfig:
        cfg = from_preset(TransformerConfig, self.model, **self.model_overrides)
        if list(dataset.latent_shape) != list(cfg.latent_shape) or dataset.vocab_size != cfg.video_vocab:
            raise ConfigError(f"token dataset {dataset.folder} has latent {list(dataset.latent_shape)} and vocabulary "
                              f"{dataset.vocab_size}; model preset {self.model!r} expects latent {cfg.latent_shape} "
                              f"and vocabulary {cfg.video_vocab}: set model_overrides.latent_shape / video_vocab")
        if cfg.condition == "class" and len(dataset.classes) > cfg.num_classes:
            raise ConfigError(f"the dataset has {len(dataset.classes)} classes; the model {cfg.num_classes}: "
                              f"set model_overrides.num_classes={len(dataset.classes)}")
        return cfg


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (2-D+ weights of linear layers and token embeddings), not on vectors."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class LMSystem(L.LightningModule):
    def __init__(self, cfg: LMTrainConfig, model_config: TransformerConfig, train_set=None, val_set=None,
                 classes: list[str] | None = None):
        super().__init__()
        self.cfg, self.train_set, self.val_set = cfg, train_set, val_set
        self.model = Transformer(model_config)
        self.classes = classes or []
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from dataclasses import asdict

        from nbp.convert import CONFIG_KEY

        checkpoint[CONFIG_KEY] = asdict(self.model.config)  # lets `nbp convert` rebuild the model

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse to resume a run of another architecture, naming what differs."""
        from dataclasses import asdict

        from nbp.convert import CONFIG_KEY

        saved, current = checkpoint.get(CONFIG_KEY, {}), asdict(self.model.config)
        changed = {k: (saved[k], current[k]) for k in current if k in saved and saved[k] != current[k]}
        if changed:
            details = ", ".join(f"{k}: checkpoint {a} vs run {b}" for k, (a, b) in changed.items())
            raise ConfigError(f"the checkpoint in {self.cfg.run_dir} is of another model ({details}); "
                              "use a new run_dir or the original model settings")

    def train_dataloader(self):
        cfg = self.cfg
        return resumable_loader(self.train_set, cfg.batch_size, cfg.num_workers, cfg.seed, int(self.batches_seen))

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return torch.utils.data.DataLoader(self.val_set, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers)

    def configure_optimizers(self):
        cfg = self.cfg
        optimizer = torch.optim.AdamW(decay_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                                      fused=True)  # one kernel per step instead of a loop over the parameters
        total = max(1, cfg.steps // cfg.accumulate)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, cfg.warmup_steps, total, cfg.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def condition(self, labels: torch.Tensor) -> dict:
        cfg = self.model.config
        if cfg.condition == "class":
            return {"class_ids": labels}
        if cfg.condition == "text":
            return {"text_ids": self.model.text_to_ids([class_text(self.classes[i]) for i in labels.tolist()])}
        return {}

    def loss(self, batch, drop_rate: float) -> dict[str, torch.Tensor]:
        model, cfg = self.model, self.model.config
        if cfg.world:
            return self.world_loss(batch, drop_rate)
        codes = batch["tokens"]
        cond = model.condition_ids(len(codes), **self.condition(batch["label"]))
        sequence = build_sequence(cfg, codes, cond)
        drop = self.dropout_mask(len(codes), drop_rate).to(codes.device) if cond is not None and drop_rate > 0 else None
        targets = (codes if cfg.begin else codes[:, cfg.block:]) + cfg.video_offset
        if self.cfg.fused_loss:
            states = model(sequence[:, :-cfg.block], drop_condition=drop, hidden=True)[:, cfg.cond_len:]
            losses, top1, top5 = model.head(states, targets)
            return {"loss": losses.mean(), "acc1": top1.float().mean(), "acc5": top5.float().mean()}
        logits = model(sequence[:, :-cfg.block], drop_condition=drop)[:, cfg.cond_len:]
        return scores(logits, targets)

    def world_loss(self, batch, drop_rate: float) -> dict[str, torch.Tensor]:
        """Frame prediction with actions (dropped like a condition) and, for long-short models, a random number
        of compressed frames before the full ones (nbp.models.world.training_window)."""
        model, cfg = self.model, self.model.config
        codes = batch["tokens"].view(len(batch["tokens"]), -1, cfg.block)  # (B, F, h*w)
        actions = batch.get("actions") if cfg.num_actions else None
        draws = self.batch_generator(1)
        first, compressed = training_window(codes.shape[1], cfg.short_frames, cfg.long_frames, draws)
        drop = None
        if actions is not None and drop_rate > 0:
            drop = self.dropout_mask(len(codes), drop_rate).to(codes.device)
        codes, actions = codes[:, first:], None if actions is None else actions[:, first:]
        logits = world_logits(model, codes, actions, compressed, drop)
        return scores(logits, codes[:, compressed + 1:].flatten(1) + cfg.video_offset)

    def dropout_mask(self, batch: int, rate: float) -> torch.Tensor:
        """Which samples lose their condition: drawn from (seed, batch, rank), so a resumed run draws the same."""
        return torch.rand(batch, generator=self.batch_generator(0)) < rate

    def batch_generator(self, stream: int) -> torch.Generator:
        """A generator seeded by (seed, batch, rank, stream): the same draws after a resume."""
        seed = ((self.cfg.seed * 1_000_003 + int(self.batches_seen)) * 8191 + self.global_rank) * 7 + stream
        return torch.Generator().manual_seed(seed)

    def training_step(self, batch, batch_idx):
        try:
            out = self.loss(batch, self.cfg.cond_dropout)
        except torch.OutOfMemoryError as error:
            cfg = self.cfg
            raise RuntimeError(
                f"out of memory at batch {int(self.batches_seen)} (batch_size={cfg.batch_size}, "
                f"{batch['tokens'].shape[1]} tokens, model {cfg.model!r}, precision {cfg.precision}, strategy "
                f"{cfg.strategy}): lower batch_size and raise accumulate to keep the effective batch, use "
                "precision=bf16-mixed, or shard with strategy=deepspeed_stage_2 / deepspeed_stage_3") from error
        if not torch.isfinite(out["loss"]):
            raise FloatingPointError(f"loss is {out['loss'].item()} at batch {int(self.batches_seen)}; "
                                     "lower lr or use bf16 instead of fp16; the last good checkpoint is kept")
        self.batches_seen += 1
        self.log("train/loss", out["loss"], prog_bar=True)
        self.log_dict({"train/acc1": out["acc1"], "train/acc5": out["acc5"], "train/batch": float(self.batches_seen)})
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        out = self.loss(batch, 0.0)
        self.log_dict({"val/loss": out["loss"], "val/acc1": out["acc1"], "val/acc5": out["acc5"]}, sync_dist=True)


def scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy and top-1 / top-5 accuracy of logits (B, L, V) for targets (B, L)."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    target_logit = logits.gather(-1, targets[..., None])
    rank = (logits > target_logit).sum(dim=-1)  # codes scoring above the target
    return {"loss": loss, "acc1": (rank == 0).float().mean(), "acc5": (rank < 5).float().mean()}


def strategy_for(name: str, devices: int):
    """Lightning strategy from a recipe name; DeepSpeed runs on CPU processes too (see CPUDeepSpeedStrategy)."""
    if not name.startswith("deepspeed"):
        return name
    from nbp.training.deepspeed_cpu import deepspeed_strategy

    return deepspeed_strategy(int(name.rsplit("_", 1)[-1]))


def open_tokens(cfg: LMTrainConfig, folder: str):
    """A token dataset, or windows of tokenized episodes (world models) as long as the model's clip."""
    from nbp.world import EpisodeTokens, is_episode_tokens

    if is_episode_tokens(folder):
        return EpisodeTokens(folder, from_preset(TransformerConfig, cfg.model, **cfg.model_overrides).latent_shape[0])
    return TokenDataset(folder)


def train_lm(cfg: LMTrainConfig, callbacks=()) -> Path:
    """Train (or resume) the run in `cfg.run_dir`; returns the exported model file."""
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    train_set, val_set = open_tokens(cfg, cfg.train), open_tokens(cfg, cfg.val) if cfg.val else None
    system = LMSystem(cfg, cfg.model_config(train_set), train_set, val_set, train_set.classes)
    trainer = build_trainer(run_dir, cfg.steps, cfg.checkpoint_every, cfg.keep_last, cfg.precision, cfg.devices,
                            strategy_for(cfg.strategy, cfg.devices), accelerator=cfg.accelerator,
                            callbacks=callbacks, log_every=cfg.log_every,
                            grad_clip=cfg.grad_clip,
                            accumulate=cfg.accumulate, val_every=cfg.val_every if val_set is not None else 0,
                            num_nodes=cfg.num_nodes)
    fit(trainer, system, run_dir)
    out = run_dir / "lm.safetensors"
    if trainer.is_global_zero:
        if cfg.strategy.startswith("deepspeed"):  # parameters may be partitioned: gather from the last checkpoint
            from nbp.convert import convert

            convert(latest_checkpoint(run_dir / "checkpoints"), out)
        else:
            save_model(system.model, out)
    return out
