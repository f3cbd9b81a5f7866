"""Reading torch pickles without running code from them.

A `.pt`/`.ckpt`/`.pth` file is a pickle: unpickling an arbitrary one can import and call anything, so a file
downloaded from anywhere could run code through `load_transformer` or `nbp convert`. nbp reads every torch file
with `weights_only=True`: tensors, containers and plain values, plus the few types the files it supports hold
(`ALLOWED`: the `argparse.Namespace` of the official NBP checkpoints, the loss scaler, ZeRO stage and fragment
records of DeepSpeed checkpoints). Anything else is refused with the type it would have had to import. For a file
the user trusts, `trust=True` on the loaders (`--trust-checkpoints` on the command line) unpickles it in full.

DeepSpeed reads its own checkpoint files with `weights_only=False`; `safe_unpickling()` forces every torch.load
inside it (resuming a run, converting a ZeRO folder) to the same safe mode.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

import torch

from nbp.checkpoint import TRUST_FLAG
from nbp.checkpoint.files import CheckpointError
from nbp.extras import deepspeed_quietly
from nbp.io import atomic_write

log = logging.getLogger(__name__)

_trusted: ContextVar[bool] = ContextVar("nbp_trust_checkpoints", default=False)


@lru_cache(maxsize=1)
def allowed_globals() -> tuple:
    """The non-container types that files nbp supports hold: official NBP's hyper-parameters, DeepSpeed's records."""
    allowed = [argparse.Namespace]
    try:
        with deepspeed_quietly():
            from deepspeed.runtime.fp16.loss_scaler import LossScaler
            from deepspeed.runtime.zero.config import ZeroStageEnum
            from deepspeed.utils.tensor_fragment import fragment_address
        allowed += [LossScaler, ZeroStageEnum, fragment_address]
    except ImportError:  # no DeepSpeed: no DeepSpeed checkpoints to read
        pass
    return tuple(allowed)


@contextmanager
def trusting(trust: bool = True):
    """Within this block, torch files are unpickled in full (for files the user trusts)."""
    token = _trusted.set(trust)
    try:
        yield
    finally:
        _trusted.reset(token)


def trusted(trust: bool | None = None) -> bool:
    return _trusted.get() if trust is None else trust


# globals that torch's weights-only unpickler accepts itself: never the reason for a refusal
PLAIN_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set", "numpy.")


def pickled_globals(path) -> list[str]:
    """The `module.name` globals a torch file's pickle would import, read from its opcodes (nothing is run)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if zipfile.is_zipfile(io.BytesIO(raw)):
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                raw = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        found, strings = [], []
        for opcode, arg, _ in pickletools.genops(raw):
            if opcode.name == "GLOBAL":
                found.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
        return found
    except (OSError, ValueError, KeyError, StopIteration, zipfile.BadZipFile):
        return []


def refusal(path, error: Exception) -> CheckpointError:
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    allowed = {f"{kind.__module__}.{kind.__qualname__}" for kind in allowed_globals()}
    other = [name for name in pickled_globals(path) if name not in allowed and not name.startswith(PLAIN_GLOBALS)]
    what = found.group(1) if found else other[0] if other else "an object that is not plain data"
    return CheckpointError(f"{path} holds {what}, which unpickling would have to import and call; nbp loads only "
                           "tensors, containers and the types of official NBP/FAR/I3D/LPIPS/Lightning/DeepSpeed "
                           f"files. If you trust this file, pass trust=True to the loader ({TRUST_FLAG} on the "
                           "command line)")


def load_torch(path: str | Path, trust: bool | None = None):
    """torch.load on CPU: weights only with nbp's allowlist, or in full for a trusted file."""
    if trusted(trust):
        log.warning("unpickling %s in full (trusted): it may run code", path)
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(list(allowed_globals())), warnings.catch_warnings():
            # the protocol of a plain pickle is not a reason to warn: what it holds is checked either way
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise refusal(path, error) from None


def write_official_state(path: str | Path, state: dict) -> Path:
    """An official-format file (a state dict, or the dict the official code saves around one), written atomically:
    the exports every training run leaves beside nbp's own file."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return Path(path)


def read_torch_checkpoint(path: str | Path, trust: bool | None = None) -> dict:
    """A torch checkpoint dict, read safely (see the module's docstring); a clear error for anything else."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # a torch zip archive or a legacy pickle
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (starts with {magic!r})")
    try:
        obj = load_torch(path, trust)
    except (RuntimeError, EOFError, ValueError, KeyError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({str(error).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


@contextmanager
def safe_unpickling(source="a checkpoint file", trust: bool | None = None):
    """Every torch.load inside the block (DeepSpeed's and Lightning's included) reads weights only, with nbp's
    allowlist; nothing changes for a trusted run. `source` names what is read, for the refusal."""
    if trusted(trust):
        yield
        return
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(list(allowed_globals())):
            yield
    except pickle.UnpicklingError as error:
        raise refusal(source, error) from None
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous
