"""What every training run shares: its config (`RunConfig`), atomic keep-last-k checkpoints, resume from the
latest, the Trainer.

Runs are counted in batches (`system.batches_seen`, saved in the checkpoint), not Lightning's global_step
(which counts optimizer steps: two per batch for a GAN). The data stream restarts exactly at the saved batch
through `ResumableSampler`.
"""
from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from nbp.checkpoint import convert, save_model
from nbp.checkpoint.torch_files import safe_unpickling, trusted
from nbp.config import UserError
from nbp.data.sampler import ResumableSampler
from nbp.io import remove_stale_temporaries
from nbp.io.progress import ProgressLines, quiet_banners
from nbp.settings.training import RunConfig
from nbp.training.loggers import LossCurve, make_loggers
from nbp.training.run_folder import locked, record_settings, set_aside_broken

log = logging.getLogger(__name__)


class BF16Mixed(MixedPrecision):
    """bf16 autocast without a gradient scaler: gradients are clipped as they are, fused optimizers included."""

    def clip_gradients(self, optimizer, clip_val=0.0, gradient_clip_algorithm=GradClipAlgorithmType.NORM) -> None:
        Precision.clip_gradients(self, optimizer, clip_val, gradient_clip_algorithm)


CHECKPOINT = re.compile(r"step_(\d{8})\.ckpt$")


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first (temporary names are not matched)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if CHECKPOINT.search(p.name)), key=lambda p: p.name)


def latest_checkpoint(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1] if found else None


class AtomicCheckpoint(L.Callback):
    """Every `every` batches and at the end: write `step_NNNNNNNN.ckpt` under a temporary name, rename it, and
    keep only the newest `keep_last`."""

    def __init__(self, folder: Path, every: int, keep_last: int = 3):
        self.folder, self.every, self.keep_last = Path(folder), every, keep_last
        self.last_saved = -1

    def on_train_batch_end(self, trainer, system, outputs, batch, batch_idx) -> None:
        step = int(system.batches_seen)
        if self.every > 0 and step % self.every == 0:
            self.save(trainer, step)

    def on_train_end(self, trainer, system) -> None:
        self.save(trainer, int(system.batches_seen))

    def on_exception(self, trainer, system, exception) -> None:
        """SIGTERM (or a first Ctrl-C, see GracefulStop) ends the run after a whole batch: save it first."""
        if isinstance(exception, SIGTERMException):
            log.warning("stop requested: saving batch %d before exiting", int(system.batches_seen))
            self.save(trainer, int(system.batches_seen))

    def save(self, trainer: L.Trainer, step: int) -> None:
        if step == self.last_saved or step == 0:
            return
        final = self.folder / f"step_{step:08d}.ckpt"
        temporary = self.folder / f".step_{step:08d}.ckpt.tmp"
        if trainer.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
        try:
            trainer.save_checkpoint(temporary, weights_only=False)  # the full state; a file, or a DeepSpeed folder
        except OSError as error:  # a full disk: earlier checkpoints stay as they were
            if temporary.exists():
                shutil.rmtree(temporary) if temporary.is_dir() else temporary.unlink()
            raise UserError(f"could not write checkpoint {final.name} in {self.folder} ({error}); the earlier "
                            "checkpoints are intact: free space there and run the same command again") from None
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            os.replace(temporary, final)
            for old in checkpoints(self.folder)[: -self.keep_last]:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        self.last_saved = step


class BesideCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer without its staging copy: fsspec writes the whole checkpoint to $TMPDIR first
    (a small /tmp fills, and a kill leaves a checkpoint-sized orphan there); here it goes straight to the temporary
    name beside its destination, which `AtomicCheckpoint` renames into place."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, path)


class GracefulStop(L.Callback):
    """A first Ctrl-C asks for the same clean stop as SIGTERM (finish the batch, save, exit); a second one
    interrupts at once."""

    def on_train_start(self, trainer, system) -> None:
        def request_stop(signum, frame):
            log.warning("Ctrl-C: stopping after this batch (press again to interrupt now)")
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's own SIGTERM handling: finish the batch, stop

        signal.signal(signal.SIGINT, request_stop)

    def on_train_end(self, trainer, system) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class PlainProgress(L.Callback):
    """A line every few percent of the run's batches with the rate and the time left, on a terminal and in log
    files alike (Lightning's own bar knows no total for a run counted in batches)."""

    def __init__(self, steps: int):
        self.steps, self.lines = steps, None

    def on_train_start(self, trainer, system) -> None:
        if trainer.is_global_zero:
            self.lines = ProgressLines(self.steps, "training", "batch", initial=int(system.batches_seen))

    def on_train_batch_end(self, trainer, system, outputs, batch, batch_idx) -> None:
        if self.lines is not None:
            self.lines.update(int(system.batches_seen) - self.lines.done)


class StopAfter(L.Callback):
    """Stop when the system has seen `steps` batches (Lightning's max_steps counts optimizer steps)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_start(self, trainer, system) -> None:
        if int(system.batches_seen) >= self.steps:  # resumed from the final checkpoint: nothing left to do
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, system, outputs, batch, batch_idx) -> None:
        if int(system.batches_seen) >= self.steps:
            trainer.should_stop = True


def resumable_loader(dataset, batch_size: int, num_workers: int, seed: int, batches_done: int,
                     collate_fn=None, draws: bool = False) -> DataLoader:
    """An endless loader whose stream continues after `batches_done` batches (per rank)."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    sampler = ResumableSampler(len(dataset), seed=seed, start=batches_done * batch_size, draws=draws,
                               rank=rank, world_size=world)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_fn, drop_last=True, persistent_workers=False)


def build_trainer(run: RunConfig, callbacks=(), grad_clip: float | None = None, accumulate: int = 1,
                  validate: bool = False) -> L.Trainer:
    run_dir = Path(run.run_dir)
    quiet_banners()
    val_every = run.val_every if validate else 0
    settings = run.precision_settings()
    # DeepSpeed writes its own checkpoint folders in place; every other strategy through the writer beside them
    plugins = settings.pop("plugins", []) + ([] if run.deepspeed else [BesideCheckpointIO()])
    return L.Trainer(
        default_root_dir=str(run_dir), max_epochs=-1, max_steps=-1, **settings, plugins=plugins, devices=run.devices,
        num_nodes=run.num_nodes, strategy=run.lightning_strategy(), accelerator=run.accelerator,
        logger=make_loggers(run_dir, run.loggers, run.log_every),
        log_every_n_steps=run.log_every,
        callbacks=[AtomicCheckpoint(run_dir / "checkpoints", run.checkpoint_every, run.keep_last),
                   StopAfter(run.steps), GracefulStop(), PlainProgress(run.steps), LossCurve(run_dir), *callbacks],
        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0, use_distributed_sampler=False,
        enable_model_summary=False,
        gradient_clip_val=grad_clip or None, accumulate_grad_batches=accumulate,
        limit_val_batches=1.0 if val_every else 0, val_check_interval=val_every or None,
        check_val_every_n_epoch=None if val_every else 1,
    )


class RunStopped(UserError):
    """Training stopped on request (SIGTERM, Ctrl-C) after saving: the run is resumable, and not finished."""
    exit_code = 3


def fit(trainer: L.Trainer, system: L.LightningModule, run_dir: Path, resume: bool = True) -> Path | None:
    """trainer.fit, resumed from the newest checkpoint in `run_dir/checkpoints` when there is one (read without
    running code from it: nbp.checkpoint.torch_files). A stop on request raises `RunStopped`."""
    folder = run_dir / "checkpoints"
    remove_stale_temporaries(folder)
    remove_stale_temporaries(run_dir)  # exports (`.far.safetensors.XXXX.tmp`) of a run killed while writing them
    found = set_aside_broken(checkpoints(folder)) if resume else []
    latest = found[-1] if found else None
    if latest is not None:
        log.info("resuming from %s", latest)
    # Lightning 2.6 takes `weights_only`; before it, it unpickled in full unless torch was forced to weights only,
    # as safe_unpickling does for an untrusted run
    chosen = {"weights_only": not trusted()} if "weights_only" in inspect.signature(trainer.fit).parameters else {}
    try:
        with safe_unpickling(latest):
            trainer.fit(system, ckpt_path=str(latest) if latest else None, **chosen)
    except SIGTERMException:
        raise RunStopped(f"training stopped at batch {int(system.batches_seen)}, saved in {run_dir}/checkpoints; "
                         "run the same command again to resume") from None
    return latest


def fit_and_export(trainer: L.Trainer, system: L.LightningModule, run: RunConfig, settings: dict,
                   exported: torch.nn.Module, out: Path, also=None) -> Path:
    """Train (or resume) under the run folder's lock, recording `settings`, then write `exported` to `out` from the
    first process; under DeepSpeed, whose parameters may be partitioned, from the last checkpoint instead. `also(out)`
    writes the run's other exports (the official format). The lock is held until the last file is written."""
    run_dir = Path(run.run_dir)
    with locked(run_dir):
        record_settings(run_dir, settings)
        fit(trainer, system, run_dir)
        if trainer.is_global_zero:
            if run.deepspeed:
                convert(latest_checkpoint(run_dir / "checkpoints"), out)
            else:
                save_model(exported, out)
            if also is not None:
                also(out)
    return out
