"""Typed configs: dataclasses with named presets, overridden by YAML recipes and `key=value` strings.

Every model config is a dataclass registered with `@register_presets({...})` and has a `preset` field. A job's
config nests it typed (`model: TransformerConfig`); a recipe picks the architecture with `model.preset: tiny`
and overrides any field beside it. `build_config` resolves the layers in order: the chosen preset's values (a
preset of a registered subclass, e.g. a world model's, makes the field that subclass), then the YAML files, then
the dotlist overrides, through omegaconf (which type-checks them and rejects unknown keys), and returns the
dataclass again, validated.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

C = TypeVar("C")

_PRESETS: dict[type, dict[str, dict[str, Any]]] = {}
_PROTOCOLS: dict[type, dict[str, dict[str, Any]]] = {}


class UserError(Exception):
    """A mistake in what the user gave nbp (a config, a file, an input), with a message saying how to fix it: the
    command line prints the message alone and exits with `exit_code`. Anything else is a bug and keeps its
    traceback."""
    exit_code = 2


class ConfigError(UserError, ValueError):
    """An invalid preset, recipe or override."""


class InputError(UserError, ValueError):
    """Input that a model or a job cannot take: a shape, an id out of range, a file's content."""


def register_presets(presets: dict[str, dict[str, Any]]):
    """Class decorator: attach named presets (field overrides of the dataclass defaults)."""

    def decorate(cls):
        _PRESETS[cls] = presets
        return cls

    return decorate


def preset_owners(cls: type) -> list[type]:
    """`cls` and its registered subclasses, each with presets of its own."""
    return [owner for owner in _PRESETS if issubclass(owner, cls)]


def presets(cls: type) -> list[str]:
    return sorted(name for owner in preset_owners(cls) for name in _PRESETS[owner])


def preset_class(cls: type, name: str) -> type:
    """The class among `cls` and its subclasses that defines preset `name`."""
    for owner in preset_owners(cls):
        if name in _PRESETS[owner]:
            return owner
    raise ConfigError(f"unknown {cls.__name__} preset {name!r}; choose one of {presets(cls)}")


def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
    """The preset `name` of config class `cls` (or of a subclass), with keyword overrides."""
    owner = preset_class(cls, name)
    return from_dict(owner, {**_PRESETS[owner][name], "preset": name, **overrides})


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Validate `values` against `cls` (types, unknown keys) and build it."""
    return _merge(cls, [values])


def build_config(cls: type[C], preset: str | None = None, recipes: list[str | Path] = (), overrides: list[str] = ()) -> C:
    """Preset, then YAML recipe files in order, then `a.b=value` overrides."""
    layers: list[Any] = [{"preset": preset}] if preset is not None else []
    for path in recipes:
        if not Path(path).is_file():
            raise ConfigError(f"recipe {path} does not exist")
        layers.append(OmegaConf.load(path))
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:
        raise ConfigError(f"invalid override in {list(overrides)}: {error}") from None
    return _merge(cls, layers)


def resolved_yaml(cls: type, preset: str | None = None, recipes: list[str | Path] = (),
                  overrides: list[str] = ()) -> str:
    """The config the layers resolve to, as YAML; settings left to the command line print as ??? (the others are
    validated as when the command runs, with a stand-in for each missing one)."""
    try:
        return to_yaml(build_config(cls, preset, recipes, overrides))
    except ConfigError as error:
        if "missing required setting" not in str(error):
            raise
    layers = [OmegaConf.create({"preset": preset})] if preset is not None else []
    layers += [OmegaConf.load(path) for path in recipes] + [OmegaConf.from_dotlist(list(overrides))]
    layered = _layered(cls, layers)
    stand_ins = OmegaConf.from_dotlist([f"{key}=required-setting" for key in OmegaConf.missing_keys(layered)])
    try:
        _merge(cls, [*layers, stand_ins])  # refuses a bad value as the command would
    except InputError:  # what else is missing (e.g. one of two sources), said when the command runs
        pass
    return OmegaConf.to_yaml(layered)


def register_protocols(protocols: dict[str, dict[str, Any]]):
    """Class decorator of a job config with a `protocol` field: named protocols, each the settings it fixes (nested
    dicts for nested configs). A protocol is a layer between the config's defaults and the recipes: it fills what it
    fixes, and a recipe or override that sets one of those fields to another value is refused, naming the conflict,
    so that `nbp config` prints what runs and a protocol's numbers are the protocol's."""

    def decorate(cls):
        _PROTOCOLS[cls] = protocols
        return cls

    return decorate


def protocol_names(cls: type) -> list[str]:
    return sorted(_PROTOCOLS.get(cls, {})) + ["custom"]


def _protocol_layer(cls: type, name: str | None) -> dict[str, Any]:
    """The settings protocol `name` fixes, flat as {"a.b": value} ({} for "custom" or no protocol)."""
    if cls not in _PROTOCOLS or name in (None, "custom"):
        return {}
    if name not in _PROTOCOLS[cls]:
        raise ConfigError(f"protocol must be one of {protocol_names(cls)}, got {name!r}")
    return _flatten(_PROTOCOLS[cls][name])


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        flat |= _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
    return flat


def _check_protocol_conflicts(name: str, fixed: dict[str, Any], layers: list[DictConfig]) -> None:
    for layer in layers:
        for key, value in fixed.items():
            given = OmegaConf.select(layer, key, default=None)
            if given is not None and given != value:
                raise ConfigError(f"protocol {name} fixes {key}={value}, but {key}={given} was given: drop the "
                                  "setting, or set protocol=custom and give every setting yourself")


def with_protocol(config: C) -> C:
    """`config` as its protocol runs it, for configs built in Python: the fields the protocol fixes that still hold
    their defaults take the protocol's values; another value is refused (a config resolved from recipes and the
    command line already holds them)."""
    cls = type(config)
    fixed = _protocol_layer(cls, config.protocol)
    if not fixed:
        return config
    values, defaults = OmegaConf.create(to_dict(config)), OmegaConf.create(to_dict(cls()))
    for key, value in fixed.items():
        if OmegaConf.select(values, key) == OmegaConf.select(defaults, key):
            OmegaConf.update(values, key, value)
    return from_dict(cls, OmegaConf.to_container(values))


def with_settings(config: C, settings: dict[str, Any]) -> C:
    """`config` with some fields replaced (keyword arguments of a function that takes the config or its fields),
    validated; an unknown name is refused with the valid ones."""
    if not settings:
        return config
    names = [f.name for f in dataclasses.fields(config)]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ConfigError(f"unknown {type(config).__name__} settings {unknown}; valid: {', '.join(names)}")
    config = dataclasses.replace(config, **settings)
    validate_all(config)
    return config


def check_at_least(config: Any, minimum: float, *names: str, prefix: str = "") -> None:
    """Refuse a setting among `names` below `minimum` (None passes: not set), naming it."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{prefix}{name} must be at least {minimum}, got {value}")


def check_out_folder(out: str, name: str = "out") -> None:
    """`out` names a folder to write into: an existing file there is refused (nothing overwritten)."""
    if Path(out).is_file():
        raise ConfigError(f"{name}={out} is a file; give a folder to write into")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return OmegaConf.to_yaml(to_dict(config))


def _chosen_value(layers: list[DictConfig], key: str) -> Any:
    """The last value the layers give at `key` (e.g. "model.preset"), or None."""
    chosen = None
    for layer in layers:
        value = OmegaConf.select(layer, key, default=None)
        chosen = value if value is not None else chosen
    return chosen


def _chosen_preset(layers: list[DictConfig], path: str) -> str | None:
    """The last `preset` value the layers give at `path` (e.g. "model.")."""
    return _chosen_value(layers, path + "preset")


def _preset_fields(cls: type) -> dict[str, type]:
    """Fields of `cls` typed by a config class with presets (a nested model config)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if isinstance(hints[f.name], type) and preset_owners(hints[f.name])}


def _base(cls: type, layers: list[DictConfig], path: str = "") -> DictConfig:
    """The structured node the layers merge into: `cls` with its defaults, or the chosen preset's class and values;
    nested model configs resolved the same way."""
    name = _chosen_preset(layers, path) if any(f.name == "preset" for f in dataclasses.fields(cls)) else None
    if name is not None:
        owner = preset_class(cls, name)
        node = OmegaConf.structured(owner(**{**_PRESETS[owner][name], "preset": name}))
    else:
        owner, node = cls, OmegaConf.structured(cls)
    for field_name, field_type in _preset_fields(owner).items():
        if _chosen_preset(layers, f"{path}{field_name}.") is not None:  # else the field keeps its default
            node[field_name] = _base(field_type, layers, f"{path}{field_name}.")
    return node


def _layered(cls: type, layers: list[DictConfig]) -> DictConfig:
    """The layers merged in order over the defaults (or the chosen preset's) and the chosen protocol's settings."""
    protocol = _chosen_value(layers, "protocol")
    fixed = _protocol_layer(cls, protocol)
    _check_protocol_conflicts(protocol, fixed, layers)
    protocol_layer = OmegaConf.create({})
    for key, value in fixed.items():
        OmegaConf.update(protocol_layer, key, value)
    return OmegaConf.merge(_base(cls, layers), protocol_layer, *layers)


def _merge(cls: type[C], layers: list[Any]) -> C:
    try:
        layers = [OmegaConf.create(layer) if isinstance(layer, dict) else layer for layer in layers]
        layered = _layered(cls, layers)
        missing = sorted(OmegaConf.missing_keys(layered))
        if missing:
            raise ConfigError(f"missing required setting{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
                              f"(give each as key=value; `nbp COMMAND --help` says what they are)")
        config = OmegaConf.to_object(layered)
    except OmegaConfBaseException as error:
        fields = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"invalid {cls.__name__}: {error}\nvalid fields: {fields}") from None
    validate_all(config)
    return config


def validate_all(config: Any) -> None:
    """`validate()` of a config and of every config nested in it; a nested config's refusal names its place
    ("far_sampling: steps must be at least 1")."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            try:
                validate_all(value)
            except ConfigError as error:
                message = str(error)
                raise ConfigError(message if message.startswith(f"{f.name}") else f"{f.name}: {message}") from None
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
