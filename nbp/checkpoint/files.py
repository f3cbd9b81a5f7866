"""nbp's own model files: one safetensors file holding the weights and, in its metadata, the config.

`save_model(model, path)` writes atomically (temporary file, then rename); `load_model(path)` rebuilds the
model from the stored config, so any preset or custom architecture reloads with one call.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from nbp.config import UserError, from_dict, to_dict
from nbp.io import atomic_write

FORMAT = "nbp"
# the model class of each kind a file says it holds, imported when a file of that kind is read (so that reading a
# token model's file, or only naming a checkpoint error, does not import every family's modules and diffusers)
MODELS = {"tokenizer": "nbp.models.tokenizer:VideoTokenizer", "transformer": "nbp.models.transformer:Transformer",
          "world": "nbp.models.world:WorldTransformer", "far": "nbp.models.far:FAR", "dcae": "nbp.models.dcae:DCAE"}
TRANSFORMERS = ("transformer", "world")  # what `load_transformer` reads
WORLD_FIELDS = ("num_actions", "short_frames", "long_frames", "long_pool")


class CheckpointError(UserError, ValueError):
    """A file that is missing, not a checkpoint of the expected kind, or does not fit the architecture."""


def model_class(kind: str, config: dict) -> type:
    """The model class of a saved (kind, config). Files of nbp before world models had a class of their own
    say "transformer" and carry the world fields in every transformer config (zero for plain models)."""
    if kind == "transformer" and any(config.get(k) for k in WORLD_FIELDS[:3]):
        kind = "world"
    elif kind == "transformer":
        for key in WORLD_FIELDS:
            config.pop(key, None)
    if kind not in MODELS:
        raise CheckpointError(f"unknown model kind {kind!r}; nbp knows {sorted(MODELS)}")
    module, name = MODELS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def build_model(kind: str, config: dict, **config_overrides) -> torch.nn.Module:
    """A model with fresh weights from a saved (kind, config dict)."""
    config = dict(config)
    cls = model_class(kind, config)
    return cls(from_dict(cls.config_class, {**config, **config_overrides}))


def save_model(model: torch.nn.Module, path: str | Path) -> Path:
    """Write `model`'s weights and config (`model.config`, a dataclass) to one safetensors file."""
    metadata = {"format": FORMAT, "kind": model.kind, "config": json.dumps(to_dict(model.config))}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return Path(path)


def is_nbp_file(path: str | Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError, ValueError):
        if looks_like_safetensors(path):  # its header says so, but it does not open: cut short or damaged
            raise CheckpointError(f"{path} is a damaged or truncated safetensors file (it does not open as one): "
                                  "copy or export it again") from None
        return False


def looks_like_safetensors(path: str | Path) -> bool:
    """A safetensors header: 8 bytes of little-endian length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def load_model(path: str | Path, kind: str | tuple[str, ...] | None = None, device="cpu",
               **config_overrides) -> torch.nn.Module:
    """Rebuild a model saved by `save_model` (or `save_pretrained`: a folder, or a repo id in the local Hugging Face
    cache); `kind` ("tokenizer", ...) checks what the file holds."""
    from nbp.checkpoint.folders import model_file  # it builds on this module

    path = model_file(path)
    if not is_nbp_file(path):
        raise CheckpointError(f"{path} is not an nbp model file (safetensors with nbp metadata)")
    meta = read_metadata(path)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and meta.get("kind") not in kinds:
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r} model, not a {' or '.join(map(repr, kinds))}")
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: its metadata holds no valid model config ({error}): export it again") from None
    model = build_model(meta["kind"], config, **config_overrides)
    load_state_dict_strict(model, load_file(str(path)), source=path)
    return model.to(device).eval()


def require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    return path


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """Load all of `state` into `model`, or say which keys and shapes do not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (first: {'; '.join(wrong[:3])})")
        raise CheckpointError(f"{source} does not match the {type(model).__name__} architecture: " + "; ".join(parts))
    broken = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:
        raise CheckpointError(f"{source}: weight {broken} holds NaN or infinite values (a diverged run's, or a "
                              "damaged file): use an earlier checkpoint or export")
    model.load_state_dict(state, strict=True)
