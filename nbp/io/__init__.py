"""Writing files safely: every file nbp writes goes through `atomic_write` (a temporary name, then a rename), so a
crash never leaves a half-written checkpoint, array, shard or JSON file. `media` writes what people look at
(videos, contact sheets), `plot` draws curves."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def atomic_write(path: str | Path, write) -> Path:
    """Call `write(tmp_path)`, then rename into place, so a crash never leaves a half-written `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (and writers such as safetensors) make it private: make it like any new file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def remove_stale_temporaries(folder: str | Path) -> None:
    """Temporary files a killed or failed write left in `folder` (never complete ones): `atomic_write`'s
    (`.NAME.XXXX.tmp`) and checkpoints' (`.step_*.tmp`, files or DeepSpeed folders). Call it only while no other
    process writes there (a run folder's lock)."""
    folder = Path(folder)
    for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()


def write_array(path: str | Path, array: np.ndarray) -> Path:
    """A .npy file, atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a temporary name
            np.save(f, array)

    return atomic_write(path, write)


def write_json(path: str | Path, value, indent: int | None = 1) -> Path:
    """A JSON file, atomically."""
    text = json.dumps(value, indent=indent)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
