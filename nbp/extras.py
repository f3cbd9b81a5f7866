"""Packages only some commands need (the extras of pyproject.toml): imported when those commands run, with the
install line as the error where one is missing."""
from __future__ import annotations

import importlib
import logging
import os
from contextlib import contextmanager
from types import ModuleType

from nbp.config import UserError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the package {module!r}, which is not installed: "
                        f"pip install 'nbp-video[{extra}]'") from None


@contextmanager
def deepspeed_quietly():
    """Import DeepSpeed inside this block without its accelerator banner (logged as a warning when it is first
    imported); on a machine without CUDA it is told to use the CPU, as it would decide itself."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
