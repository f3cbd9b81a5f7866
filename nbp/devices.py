"""Devices in configs: a job's `device` ("auto", "cpu", "cuda", "cuda:N") resolved once its config is made
(`OnDevice`), except while the command line only reads settings (`settings_only`: `--help`, `nbp config`, without
torch), and refused where this torch lacks it (`check_devices`, when a command runs)."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from nbp.config import ConfigError


def check_device(device: str, name: str = "device") -> None:
    """A device torch has here: "cpu", "cuda[:N]" with a CUDA build and a visible GPU, or "auto"."""
    if device in ("cpu", "auto"):
        return
    if not device.startswith("cuda"):
        raise ConfigError(f"{name} must be cpu, cuda, cuda:N or auto, got {device!r}")
    import torch  # only here: the command line prints its help without torch

    if not torch.cuda.is_available():
        raise ConfigError(f"{name}={device}, but this torch sees no CUDA GPU (a CPU build, or none visible): "
                          f"use {name}=cpu")


def resolved_device(device: str) -> str:
    """"auto": the GPU where torch sees one, else the CPU; any other name as given (checked by `check_device`)."""
    if device != "auto":
        return device
    import torch  # only here: the command line prints its help without torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_RESOLVE_DEVICES = ContextVar("resolve_devices", default=True)


@contextmanager
def settings_only():
    """Configs made inside keep `device: auto` as given: their settings read without torch (`nbp COMMAND --help`,
    `nbp config`), to be resolved when the command runs."""
    token = _RESOLVE_DEVICES.set(False)
    try:
        yield
    finally:
        _RESOLVE_DEVICES.reset(token)


class OnDevice:
    """For job configs with a `device` field: "auto" (their default) names the device it resolves to once the
    config is made, so that everything downstream sees a torch device (`settings_only` aside)."""

    def __post_init__(self) -> None:
        if _RESOLVE_DEVICES.get():
            self.device = resolved_device(self.device)


def check_devices(config: Any) -> None:
    """Refuse a CUDA device this torch does not have, wherever a config names one (a job's `device`, a run's
    `accelerator`): checked when a command runs, so that `nbp config` still prints a GPU recipe on a CPU."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_devices(value)
    if isinstance(getattr(config, "device", None), str):
        check_device(config.device)
    if getattr(config, "accelerator", None) in ("gpu", "cuda"):
        check_device("cuda", "run.accelerator")
