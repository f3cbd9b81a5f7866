"""Packages only some commands need (the extras of pyproject.toml): imported when those commands run, with the
install line as the error where one is missing."""
from __future__ import annotations

import importlib
from types import ModuleType

from nbp.config import UserError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the package {module!r}, which is not installed: "
                        f"pip install 'nbp-video[{extra}]'") from None
