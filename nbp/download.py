"""Loading pretrained models: the official NBP release's files and nbp's own.

Nothing is downloaded here (the official files are fetched by the user; see ckpt/README.md): these
functions recognise the format of a local file and rebuild the model in eval mode.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from nbp.checkpoint import CheckpointError, is_nbp_file, load_model, load_state_dict_strict, require_file
from nbp.config import from_preset
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer

OFFICIAL_TOKENIZER_PRESET = "nbp-magvit2"


def load_magvit2(path: str | Path, resolution: int = 128, device="cpu") -> VideoTokenizer:
    """A video tokenizer from an official `magvit2_*.pt` or a file written by `nbp.checkpoint.save_model`.

    `resolution` is the frame size the tokenizer will see; it unflattens 1-D index sequences in
    `decode_from_code_indices`. The official architecture does not depend on it.
    """
    path = require_file(path)
    if is_nbp_file(path):
        return load_model(path, kind="tokenizer", device=device, resolution=resolution)
    state = official_tokenizer_state_dict(read_torch_checkpoint(path), path)
    model = VideoTokenizer(from_preset(TokenizerConfig, OFFICIAL_TOKENIZER_PRESET, resolution=resolution))
    load_state_dict_strict(model, state, source=path)
    return model.to(device).eval()


def read_torch_checkpoint(path: Path) -> dict:
    """torch.load on CPU; falls back to full unpickling for files holding e.g. an argparse Namespace."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # a torch zip archive or a legacy pickle
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (starts with {magic!r})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({error})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def official_tokenizer_state_dict(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    """The tokenizer weights of an official checkpoint, without the DDP `module.` prefix."""
    state = obj.get("model_state_dict", obj)
    if not isinstance(state, dict) or not any(str(k).removeprefix("module.").startswith("encoder_layers.") for k in state):
        raise CheckpointError(f"{path} is not a MAGVITv2 tokenizer checkpoint: expected 'model_state_dict' with "
                              f"'encoder_layers.*' weights, found keys {sorted(map(str, obj))[:5]}")
    return {k.removeprefix("module."): v for k, v in state.items()}
