"""Typed configs: dataclasses with named presets, overridden by YAML recipes and `key=value` strings.

Every model config is a dataclass registered with `@register_presets({...})`. `build_config` starts
from a preset, applies YAML files and dotlist overrides through omegaconf (which type-checks them and
rejects unknown keys), and returns the dataclass again.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

C = TypeVar("C")

_PRESETS: dict[type, dict[str, dict[str, Any]]] = {}


class ConfigError(ValueError):
    """An invalid preset, recipe or override, with a message saying how to fix it."""


def register_presets(presets: dict[str, dict[str, Any]]):
    """Class decorator: attach named presets (field overrides of the dataclass defaults)."""

    def decorate(cls):
        _PRESETS[cls] = presets
        return cls

    return decorate


def presets(cls: type) -> list[str]:
    return sorted(_PRESETS.get(cls, {}))


def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
    """The preset `name` of config class `cls`, with keyword overrides."""
    table = _PRESETS.get(cls, {})
    if name not in table:
        raise ConfigError(f"unknown {cls.__name__} preset {name!r}; choose one of {presets(cls)}")
    return from_dict(cls, {**table[name], **overrides})


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Validate `values` against `cls` (types, unknown keys) and build it."""
    return _merge(cls, [values])


def build_config(cls: type[C], preset: str | None = None, recipes: list[str | Path] = (), overrides: list[str] = ()) -> C:
    """Preset, then YAML recipe files in order, then `a.b=value` overrides."""
    layers: list[Any] = []
    if preset is not None:
        layers.append(dataclasses.asdict(from_preset(cls, preset)))
    for path in recipes:
        if not Path(path).is_file():
            raise ConfigError(f"recipe {path} does not exist")
        layers.append(OmegaConf.load(path))
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    return _merge(cls, layers)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _merge(cls: type[C], layers: list[Any]) -> C:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), *layers)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        fields = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"invalid {cls.__name__}: {error}\nvalid fields: {fields}") from None
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config
