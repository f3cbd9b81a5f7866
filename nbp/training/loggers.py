"""What a training run shows: its experiment loggers (`run.loggers`: csv, tensorboard, wandb), sample pictures every
`run.sample_every` batches (written under `samples/` and sent to every logger that takes images), and the loss
curve of the whole run (`loss_curve.png`) when it ends.

The CSV log (`logs/version_N/metrics.csv`) is always written: resumes, the demo and the plots read it. TensorBoard
writes its event files beside it (`logs/version_N/events.*`); W&B writes `wandb/` in the run folder, offline unless
credentials are set (WANDB_API_KEY, or `wandb login`) or WANDB_MODE=online.
"""
from __future__ import annotations

import csv
import netrc
import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
from PIL import Image

from nbp.extras import require
from nbp.io.plot import line_chart, metric_series


def make_loggers(run_dir: Path, names: list[str], flush_every: int) -> list:
    """Lightning loggers: CSV always (a resumed run adds a version, flushed every `flush_every` logged steps, so a
    kill loses no point), then the others named, in the CSV log's version folder."""
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(str(run_dir), name="logs", flush_logs_every_n_steps=flush_every)]
    if "tensorboard" in names:
        require("tensorboard", "loggers", "run.loggers=[tensorboard]")
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(run_dir), name="logs", version=loggers[0].version,
                                         default_hp_metric=False))
    if "wandb" in names:
        require("wandb", "loggers", "run.loggers=[wandb]")
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(project=os.environ.get("WANDB_PROJECT", "nbp"), name=run_dir.name,
                                   save_dir=str(run_dir), offline=not wandb_online()))
    return loggers


def wandb_online() -> bool:
    """W&B online only where it can be: WANDB_MODE=online, an API key, or a `wandb login` entry in ~/.netrc."""
    mode = os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled", "dryrun"):
        return False
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def log_picture(trainer: L.Trainer, key: str, picture: np.ndarray, step: int) -> None:
    """A uint8 (H, W, 3) picture to every logger that takes images."""
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            logger.experiment.add_image(key, picture, step, dataformats="HWC")
        elif kind == "WandbLogger":
            logger.log_image(key=key, images=[picture], step=step)


class SamplePictures(L.Callback):
    """Every `every` batches (and at the end): `draw(system, path)` writes a picture of what the model makes
    (reconstructions, samples) to `samples/step_N.png`; it goes to the loggers too."""

    def __init__(self, folder: Path, every: int, draw: Callable[[L.LightningModule, Path], Path | None]):
        self.folder, self.every, self.draw = Path(folder), every, draw

    def on_train_batch_end(self, trainer, system, outputs, batch, batch_idx) -> None:
        step = int(system.batches_seen)
        if self.every > 0 and step % self.every == 0:
            self.show(trainer, system, step)

    def show(self, trainer, system, step: int) -> None:
        if not trainer.is_global_zero:
            return
        path = self.draw(system, self.folder / f"step_{step:08d}.png")
        if path is not None:
            log_picture(trainer, "samples", np.asarray(Image.open(path).convert("RGB")), step)


class LossCurve(L.Callback):
    """At the end of the run: `loss_curve.png` of the training (and validation) loss over every logged batch,
    resumed versions included."""

    def __init__(self, run_dir: Path, keys: tuple[str, ...] = ("train/loss", "val/loss")):
        self.run_dir, self.keys = Path(run_dir), keys

    def on_train_end(self, trainer, system) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.save()  # the CSV rows still in memory
        rows = read_metrics(self.run_dir)
        series = {key: metric_series(rows, key) for key in self.keys}
        series = {key: s for key, s in series.items() if len(s[0])}
        if series:
            line_chart(series, self.run_dir / "loss_curve.png", f"{self.run_dir.name}: loss per batch")


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of every logged metrics.csv of a run (resumed runs add versions), in order."""
    rows = []
    for path in sorted((Path(run_dir) / "logs").glob("version_*/metrics.csv"),
                       key=lambda p: int(p.parent.name.split("_")[1])):
        with open(path, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def token_samples_picture(decoder: str, classes: int, resolution: int | None = None):
    """A `SamplePictures` drawer for an LM: a few samples of the model being trained (one per class, up to 4),
    decoded by the tokenizer file `decoder`."""
    import torch

    from nbp.checkpoint import load_magvit2
    from nbp.io.media import contact_sheet, to_uint8
    from nbp.pipelines import NBPPipeline

    tokenizer = load_magvit2(decoder, resolution=resolution)

    @torch.no_grad()
    def draw(system, path: Path) -> Path:
        model = system.exported().eval()
        t = model.config.latent_shape[0]
        frames = 1 + (t - 1) * tokenizer.config.temporal_factor
        pipeline = NBPPipeline(tokenizer.to(system.device), model, tokenizer.config.resolution)
        labels = {"class_ids": list(range(min(4, classes)))} if classes else {"batch_size": 2}
        videos = pipeline(frames, None, generator=torch.Generator(system.device).manual_seed(0), top_k=20,
                          **labels).videos
        system.trained.train()
        return contact_sheet(to_uint8(videos.cpu()), path)
    return draw


def far_samples_picture(decoder: str, first_item: dict, classes: int, frames: int):
    """A `SamplePictures` drawer for FAR: `frames` frames from nothing (one clip per class up to 4, or with the
    actions of the first training item), decoded by the DC-AE file `decoder`."""
    import torch

    from nbp.checkpoint import load_dcae
    from nbp.io.media import contact_sheet, to_uint8
    from nbp.pipelines import FARPipeline

    dcae = load_dcae(decoder)

    @torch.no_grad()
    def draw(system, path: Path) -> Path:
        far = system.exported().eval()
        condition = far.config.condition
        arguments = {}
        if condition == "label":
            arguments["labels"] = torch.arange(min(4, classes), device=system.device)
        elif condition == "action":
            arguments["actions"] = first_item["actions"][None, :frames].to(system.device)
        pipeline = FARPipeline(dcae.to(system.device), far)
        noise = torch.randn((max(1, len(arguments.get("labels", [0]))), frames, far.config.in_channels,
                             dcae.config.latent_size, dcae.config.latent_size),
                            generator=torch.Generator().manual_seed(0)).to(system.device)
        videos = pipeline(frames, None, noise=noise, steps=10, **arguments).videos
        system.trained.train()
        return contact_sheet(to_uint8(videos.cpu()), path)
    return draw


def world_prediction_picture(decoder: str, item: dict):
    """A `SamplePictures` drawer for a world model: the first training window's second half predicted greedily
    from its first half and its actions (bottom row) under the window itself (top row), decoded by `decoder`."""
    import torch

    from nbp.checkpoint import load_magvit2
    from nbp.io.media import contact_sheet, to_uint8
    from nbp.pipelines import WorldPipeline

    tokenizer = load_magvit2(decoder)

    @torch.no_grad()
    def draw(system, path: Path) -> Path:
        model = system.exported().eval()
        pipeline = WorldPipeline(tokenizer.to(system.device), model)
        codes = item["tokens"].view(1, -1, model.config.block).to(system.device)  # (1, F, h*w)
        given = codes.shape[1] // 2
        actions = item["actions"][None].to(system.device) if model.config.num_actions else None
        predicted = pipeline.continue_codes(codes[:, :given], codes.shape[1] - given, actions, greedy=True)
        rows = pipeline.decode(torch.cat([codes, torch.cat([codes[:, :given], predicted], dim=1)]))
        system.trained.train()
        return contact_sheet(to_uint8(rows.cpu()), path)
    return draw
