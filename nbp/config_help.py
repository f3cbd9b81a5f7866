"""What each setting means, read from the comments beside the config fields: one source of truth for
`nbp COMMAND --help` and `nbp config COMMAND --comments`.

A field's help is the comment block right above it, the comment on its line and the comment lines that continue
that one (indented further than the field), joined into one line. The class that declares a field documents it;
a subclass that declares it again with a comment replaces that.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from functools import cache
from typing import Any

FIELD = re.compile(r"^(\s*)(\w+)\s*:\s*[^=]")
TRAILING = re.compile(r"""^[^#"']*(?:(?:"[^"]*"|'[^']*')[^#"']*)*#\s?(.*)$""")  # a comment after code, not in a string


@cache
def declared_comments(cls: type) -> dict[str, str]:
    """{field: help} from the source of `cls` itself (not its bases)."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    lines = lines[next(i for i, line in enumerate(lines) if line.lstrip().startswith("class ")) + 1:]  # after decorators
    body = next((len(line) - len(line.lstrip()) for line in lines if line.strip()), 4)
    comments: dict[str, str] = {}
    above: list[str] = []
    current: str | None = None
    for line in lines:
        indent, text = len(line) - len(line.lstrip()), line.strip()
        if text.startswith("#"):
            comment = text.lstrip("#").strip()
            if indent > body and current is not None:
                comments[current] = f"{comments[current]} {comment}".strip()
            elif indent == body:
                above.append(comment)
            continue
        current = None
        match = FIELD.match(line)
        if match and len(match.group(1)) == body:
            trailing = TRAILING.match(line.split(":", 1)[1])
            current = match.group(2)
            comments[current] = " ".join([*above, trailing.group(1).strip() if trailing else ""]).strip()
        above = []
    return comments


def field_help(cls: type) -> dict[str, str]:
    """{field: help} of a config class, its bases' declarations included."""
    merged: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        merged.update({k: v for k, v in declared_comments(klass).items() if v or k not in merged})
    return merged


@dataclasses.dataclass(frozen=True)
class Setting:
    key: str  # dotted, as on the command line
    type: str
    default: Any
    help: str

    @property
    def required(self) -> bool:
        return self.default == "???"


def settings(config: Any, prefix: str = "") -> list[Setting]:
    """Every leaf setting of a config instance (nested configs flattened to dotted keys), with its help."""
    cls = type(config)
    hints, helps = typing.get_type_hints(cls), field_help(cls)
    rows = []
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            rows += settings(value, f"{key}.")
        else:
            rows.append(Setting(key, type_name(hints.get(f.name, Any)), value, helps.get(f.name, "")))
    return rows


def type_name(kind: Any) -> str:
    text = kind.__name__ if isinstance(kind, type) and not typing.get_args(kind) else str(kind)
    return re.sub(r"\b(typing|collections\.abc|nbp(\.\w+)*)\.", "", text).replace("NoneType", "None")


def shown(value: Any) -> str:
    return "required" if value == "???" else repr(value) if isinstance(value, str) else str(value)


def settings_table(config: Any) -> str:
    """`key  type  default  help`, one setting per line, required ones first."""
    rows = sorted(settings(config), key=lambda s: not s.required)
    key_width = max(len(s.key) for s in rows)
    type_width = min(24, max(len(s.type) for s in rows))
    lines = []
    for s in rows:
        default = shown(s.default)
        lines.append(f"  {s.key:<{key_width}}  {s.type:<{type_width}}  {default:<12}  {s.help}".rstrip())
    return "\n".join(lines)


def commented_yaml(yaml: str, config: Any) -> str:
    """The YAML of `config` with each setting's help as a comment on its line."""
    helps = {s.key: s.help for s in settings(config)}
    path: list[tuple[int, str]] = []
    out = []
    for line in yaml.splitlines():
        match = re.match(r"^(\s*)([\w.-]+):", line)
        if match and not line.lstrip().startswith("-"):
            indent = len(match.group(1))
            path = [(i, k) for i, k in path if i < indent] + [(indent, match.group(2))]
            note = helps.get(".".join(k for _, k in path))
            if note:
                line = f"{line}  # {note}"
        out.append(line)
    return "\n".join(out) + "\n"
