"""A run folder's safety: one run at a time (a lock), only intact checkpoints resumed (a broken newest one is set
aside and named), no stale temporary files, and the settings of a resumed run compared with the recorded ones."""
from __future__ import annotations

import fcntl
import logging
import os
import zipfile
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from nbp.config import UserError
from nbp.io import atomic_write

log = logging.getLogger(__name__)

LOCK, CONFIG = ".lock", "config.yaml"


def first_process() -> bool:
    """The process that owns the run folder: rank 0 of node 0 (or a run without a launcher)."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


@contextmanager
def locked(run_dir: Path):
    """Hold the run folder for this run; a second run on the same folder is refused (the lock dies with the
    process, so a killed run never leaves it held)."""
    if not first_process():
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise UserError(f"{run_dir} is in use by another run (pid {handle.read().strip() or '?'}): wait for it "
                            "or choose another run.run_dir") from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def intact(checkpoint: Path) -> bool:
    """Whether a checkpoint reads back as written: a torch zip (file) whose every member matches its CRC-32, or a
    DeepSpeed folder whose `latest` tag names a folder of such zips. (A zip end record alone says nothing of the
    bytes before it: zeroed blocks mid-file or in a tensor's payload fail here, not at load time or silently.)"""
    if checkpoint.is_dir():
        tag = checkpoint / "latest"
        states = list((checkpoint / tag.read_text().strip()).glob("*.pt")) if tag.is_file() else []
        return bool(states) and all(zip_verified(p) for p in states)
    return zip_verified(checkpoint)


def zip_verified(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return False


def set_aside_broken(found: list[Path]) -> list[Path]:
    """The intact checkpoints of `found` (oldest first); broken ones renamed `*.broken`, with a warning naming them."""
    status = {path: intact(path) for path in found}
    kept = [path for path in found if status[path]]
    for path in found:
        if status[path]:
            continue
        aside = path.with_name(path.name + ".broken")
        path.rename(aside)
        fallback = f"resuming from {kept[-1].name}" if kept else "no intact checkpoint is left: the run starts over"
        log.warning("checkpoint %s is incomplete or corrupt: set aside as %s; %s", path, aside.name, fallback)
    return kept


def record_settings(run_dir: Path, settings: dict) -> None:
    """Write the run's settings on its first start; on a resume, name every setting that changed (the recorded
    file is kept: it describes how the run began)."""
    path = run_dir / CONFIG
    if not path.is_file():
        atomic_write(path, lambda tmp: Path(tmp).write_text(OmegaConf.to_yaml(settings)))
        return
    recorded = OmegaConf.to_container(OmegaConf.load(path))
    changed = sorted(key for key in set(flatten(recorded)) | set(flatten(settings))
                     if flatten(recorded).get(key) != flatten(settings).get(key))
    if changed:
        log.warning("resuming %s with settings changed since it began (%s): %s", run_dir, path.name,
                    ", ".join(f"{k}: {flatten(recorded).get(k)!r} -> {flatten(settings).get(k)!r}" for k in changed))


def flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
