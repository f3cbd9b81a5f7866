"""LM training: the semi-autoregressive objective on token datasets, and frame prediction for world models.

Every token of block k predicts its counterpart in block k+1 (the hybrid first row token by token; the model's
`SequenceLayout` says which inputs predict which targets); condition dropout trains the unconditional embedding used
by classifier-free guidance. AdamW (betas 0.9/0.95, weight decay on matrices only), cosine schedule with linear
warmup, gradient clipping and accumulation, bf16, top-1/top-5 token accuracy. Strategies: single device, DDP,
DeepSpeed ZeRO 1/2/3 (`run.strategy=deepspeed_stage_2`, ...), including on CPU processes (`CPUDeepSpeedStrategy`).
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from nbp.config import ConfigError, to_dict
from nbp.data.classes import class_text
from nbp.data.text import text_ids_for
from nbp.data.tokens import EpisodeTokens, TokenDataset, is_episode_tokens
from nbp.models.transformer import Transformer, TransformerConfig
from nbp.models.world import WorldConfig, WorldTransformer
from nbp.settings.training import LMTrainConfig
from nbp.training.loggers import SamplePictures, token_samples_picture, world_prediction_picture
from nbp.training.runner import build_trainer, fit_and_export
from nbp.training.system import TrainingSystem, scheduled, warmup_cosine


def check_dataset(model: TransformerConfig, dataset) -> None:
    """The token dataset must fit the model's latent grid, vocabulary and classes."""
    if list(dataset.latent_shape) != list(model.latent_shape) or dataset.vocab_size != model.video_vocab:
        raise ConfigError(f"token dataset {dataset.folder} has latent {list(dataset.latent_shape)} and vocabulary "
                          f"{dataset.vocab_size}; the model expects latent {model.latent_shape} and vocabulary "
                          f"{model.video_vocab}: set model.latent_shape / model.video_vocab")
    if model.condition == "class" and len(dataset.classes) > model.num_classes:
        raise ConfigError(f"the dataset has {len(dataset.classes)} classes; the model {model.num_classes}: "
                          f"set model.num_classes={len(dataset.classes)}")


NO_DECAY = ("pos_emb",)  # learned positions: matrices, but not weights of a map


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (weights of linear layers and token embeddings), not on vectors or positions."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for name, p in named if p.ndim >= 2 and name.rsplit(".", 1)[-1] not in NO_DECAY]
    rest = [p for name, p in named if p.ndim < 2 or name.rsplit(".", 1)[-1] in NO_DECAY]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy and top-1 / top-5 accuracy of logits (B, L, V) for targets (B, L)."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    target_logit = logits.gather(-1, targets[..., None])
    rank = (logits > target_logit).sum(dim=-1)  # codes scoring above the target
    return {"loss": loss, "acc1": (rank == 0).float().mean(), "acc5": (rank < 5).float().mean()}


class LMSystem(TrainingSystem):
    model_class = Transformer

    def __init__(self, cfg: LMTrainConfig, train_set=None, val_set=None, classes: list[str] | None = None):
        super().__init__(cfg, train_set, val_set)
        self.model = self.model_class(cfg.model)
        self.classes = classes or []

    def configure_optimizers(self):
        cfg = self.cfg
        optimizer = torch.optim.AdamW(decay_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                                      fused=True)  # one kernel per step instead of a loop over the parameters
        total = max(1, cfg.run.steps // cfg.accumulate)
        schedule = scheduled(optimizer, lambda step: warmup_cosine(step, cfg.warmup_steps, total, cfg.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def condition(self, labels: torch.Tensor) -> dict:
        cfg = self.model.config
        if cfg.condition == "class":
            return {"class_ids": labels}
        if cfg.condition == "text":
            return {"text_ids": text_ids_for(cfg, [class_text(self.classes[i]) for i in labels.tolist()])}
        return {}

    def loss(self, batch, drop_rate: float) -> dict[str, torch.Tensor]:
        model, layout = self.model, self.model.layout
        codes = batch["tokens"]
        cond = model.condition_ids(**self.condition(batch["label"]))
        inputs, targets = layout.inputs(codes, cond), layout.targets(codes)
        drop = self.dropout_mask(len(codes), drop_rate).to(codes.device) if cond is not None and drop_rate > 0 else None
        if self.cfg.fused_loss:
            states = layout.video_outputs(model(inputs, drop_condition=drop, hidden=True))
            losses, top1, top5 = model.head(states, targets)
            return {"loss": losses.mean(), "acc1": top1.float().mean(), "acc5": top5.float().mean()}
        return scores(layout.video_outputs(model(inputs, drop_condition=drop)), targets)

    def dropout_mask(self, batch: int, rate: float) -> torch.Tensor:
        """Which samples lose their condition: drawn from (seed, batch, rank), so a resumed run draws the same."""
        return torch.rand(batch, generator=self.batch_generator(0)) < rate

    def batch_generator(self, stream: int) -> torch.Generator:
        """The generator of this batch's draw `stream` on this rank."""
        return self.draw_generator(int(self.batches_seen), self.global_rank, stream)

    def training_step(self, batch, batch_idx):
        try:
            out = self.loss(batch, self.cfg.cond_dropout)
        except torch.OutOfMemoryError as error:
            cfg = self.cfg
            raise RuntimeError(
                f"out of memory at batch {int(self.batches_seen)} (batch_size={cfg.batch_size}, "
                f"{batch['tokens'].shape[1]} tokens, model {cfg.model.preset or 'custom'}, precision "
                f"{cfg.run.precision}, strategy {cfg.run.strategy}): lower batch_size and raise accumulate to keep "
                "the effective batch, use run.precision=bf16-mixed, or shard with "
                "run.strategy=deepspeed_stage_2 / deepspeed_stage_3") from error
        self.check_finite(out["loss"], "lower lr or use bf16 instead of fp16")
        self.count_batch()
        self.log("train/loss", out["loss"], prog_bar=True)
        self.log_dict({"train/acc1": out["acc1"], "train/acc5": out["acc5"]})
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        out = self.loss(batch, 0.0)
        self.log_dict({"val/loss": out["loss"], "val/acc1": out["acc1"], "val/acc5": out["acc5"]}, sync_dist=True)


def training_window(frames: int, short: int, long: int, generator: torch.Generator) -> tuple[int, int]:
    """(first frame, compressed frames) of one training batch from a clip of `frames`: the last `short` input
    frames in full and a random number (0 .. long) of compressed ones before them, so that training sees every
    context a generation meets while its window fills up."""
    if not short:
        return 0, 0
    most = min(long, frames - 1 - short)
    compressed = int(torch.randint(most + 1, (1,), generator=generator))
    return most - compressed, compressed


class WorldSystem(LMSystem):
    """Frame prediction with actions (dropped like a condition) and, for long-short models, a random number of
    compressed frames before the full ones (`training_window`)."""
    model_class = WorldTransformer

    def loss(self, batch, drop_rate: float) -> dict[str, torch.Tensor]:
        model, cfg = self.model, self.model.config
        codes = batch["tokens"].view(len(batch["tokens"]), -1, cfg.block)  # (B, F, h*w)
        actions = batch.get("actions") if cfg.num_actions else None
        first, compressed = training_window(codes.shape[1], cfg.short_frames, cfg.long_frames, self.batch_generator(1))
        drop = None
        if actions is not None and drop_rate > 0:
            drop = self.dropout_mask(len(codes), drop_rate).to(codes.device)
        codes, actions = codes[:, first:], None if actions is None else actions[:, first:]
        logits = model.frame_logits(codes, actions, compressed, drop)
        return scores(logits, codes[:, compressed + 1:].flatten(1) + cfg.video_offset)


def open_tokens(cfg: LMTrainConfig, folder: str):
    """A token dataset, or windows of tokenized episodes (world models) as long as the model's clip."""
    if is_episode_tokens(folder):
        return EpisodeTokens(folder, cfg.model.latent_shape[0])
    return TokenDataset(folder)


def sample_pictures(cfg: LMTrainConfig, run_dir: Path, train_set) -> list:
    """Pictures every run.sample_every batches when a decoder is given: an LM's samples, a world model's
    prediction of its first training window."""
    if not (cfg.decoder and cfg.run.sample_every):
        return []
    if isinstance(cfg.model, WorldConfig):
        draw = world_prediction_picture(cfg.decoder, train_set[0])
    else:
        draw = token_samples_picture(cfg.decoder, cfg.model.num_classes if cfg.model.condition == "class" else 0)
    return [SamplePictures(run_dir / "samples", cfg.run.sample_every, draw)]


def train_lm(cfg: LMTrainConfig, callbacks=()) -> Path:
    """Train (or resume) the run in `cfg.run.run_dir`; returns the exported model file."""
    L.seed_everything(cfg.run.seed, workers=True)
    run_dir = Path(cfg.run.run_dir)
    train_set, val_set = open_tokens(cfg, cfg.train), open_tokens(cfg, cfg.val) if cfg.val else None
    check_dataset(cfg.model, train_set)
    system_class = WorldSystem if isinstance(cfg.model, WorldConfig) else LMSystem
    system = system_class(cfg, train_set, val_set, train_set.classes)
    trainer = build_trainer(cfg.run, [*callbacks, *sample_pictures(cfg, run_dir, train_set)], grad_clip=cfg.grad_clip,
                            accumulate=cfg.accumulate, validate=val_set is not None)
    return fit_and_export(trainer, system, cfg.run, to_dict(cfg), system.model, run_dir / "lm.safetensors")
