"""Hugging Face-style model folders, and where a model argument points.

`save_pretrained(model, folder)` writes `config.json` (the model's config, readable) and `model.safetensors` (the
weights, carrying nbp's metadata as every nbp file does, so the weights file alone also loads). A DC-AE folder is
diffusers' own layout (`config.json` of `AutoencoderDC`, `diffusion_pytorch_model.safetensors`): diffusers'
`AutoencoderDC.from_pretrained` loads it. A pipeline folder holds `model_index.json` and one such folder per
component.

`model_file(source, component)` turns what a user names into the file to read: nbp's file or an official file as
it is; a model folder (its weights file); a pipeline folder (the component's subfolder); or a repo id
("org/name") found in the local Hugging Face cache (`local_files_only=True`, the default, never downloads).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from nbp.checkpoint.files import CheckpointError, save_model
from nbp.config import to_dict
from nbp.io import atomic_write

WEIGHTS = ("model.safetensors", "diffusion_pytorch_model.safetensors")  # nbp's and diffusers' names
CONFIG, PIPELINE_INDEX = "config.json", "model_index.json"
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def save_pretrained(model: torch.nn.Module, folder: str | Path) -> Path:
    """`model` as a folder: `config.json` + its weights file (see the module's docstring)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from nbp import __version__

    config = {"nbp_kind": model.kind, "nbp_version": __version__, **to_dict(model.config)}
    if model.kind == "dcae":  # diffusers reads its own keys and leaves nbp's alone
        import diffusers

        config = {"_class_name": "AutoencoderDC", "_diffusers_version": diffusers.__version__,
                  **model.config.diffusers_config(), "nbp_kind": "dcae", "nbp_config": to_dict(model.config)}
    save_model(model, folder / WEIGHTS[model.kind == "dcae"])
    write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    return folder


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def model_file(source: str | Path, component: str | None = None, local_files_only: bool = True) -> Path:
    """The file a model argument names (see the module's docstring); `component` picks a pipeline's subfolder."""
    path = Path(source)
    if not path.exists() and REPO_ID.match(str(source)):
        path = cached_snapshot(str(source), local_files_only)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {source} does not exist (a file, a model folder, or a repo id in the "
                                "local Hugging Face cache)")
    if (path / PIPELINE_INDEX).is_file():
        return model_file(path / pipeline_component(path, component), local_files_only=local_files_only)
    found = next((path / name for name in WEIGHTS if (path / name).is_file()), None)
    if found is None:
        raise CheckpointError(f"{source} is a folder without a model: expected {' or '.join(WEIGHTS)} (a folder "
                              "written by save_pretrained) or model_index.json (a pipeline's)")
    return found


def pipeline_component(folder: Path, component: str | None) -> str:
    subfolders = sorted(json.loads((folder / PIPELINE_INDEX).read_text())["components"].values())
    if component not in subfolders:
        raise CheckpointError(f"{folder} is a pipeline folder with components {subfolders}: name one "
                              f"(e.g. {folder}/{subfolders[0]})" if component is None else
                              f"{folder} is a pipeline folder without a {component!r} component "
                              f"(it holds {subfolders})")
    return component


def cached_snapshot(repo_id: str, local_files_only: bool = True) -> Path:
    """A repo's folder from the local Hugging Face cache (downloaded first only with local_files_only=False)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=local_files_only))
    except (LocalEntryNotFoundError, HFValidationError):  # not cached, or no valid repo id: a missing path
        from huggingface_hub.constants import HF_HUB_CACHE

        raise FileNotFoundError(f"checkpoint {repo_id} does not exist: no such file or folder, and no repo of that "
                                f"id in the local Hugging Face cache ({HF_HUB_CACHE}; a repo is cached with `hf "
                                "download ID`, or read with local_files_only=False)") from None


def diffusers_folder_config(weights: Path) -> dict | None:
    """The AutoencoderDC config beside a weights file in a diffusers folder (not written by nbp), else None."""
    config = weights.parent / CONFIG
    if weights.name != WEIGHTS[1] or not config.is_file():
        return None
    values = json.loads(config.read_text())
    return values if values.get("_class_name") == "AutoencoderDC" else None


def save_pipeline(pipeline, folder: str | Path, components: dict[str, tuple[str, torch.nn.Module]], **settings) -> Path:
    """A pipeline folder: `model_index.json` (its class, {argument: subfolder} and settings) and a folder per
    component."""
    folder = Path(folder)
    for subfolder, model in components.values():
        save_pretrained(model, folder / subfolder)
    from nbp import __version__

    index = {"_class_name": type(pipeline).__name__, "nbp_version": __version__,
             "components": {argument: subfolder for argument, (subfolder, _) in components.items()}, **settings}
    write_text(folder / PIPELINE_INDEX, json.dumps(index, indent=2) + "\n")
    return folder


def pipeline_folder(source: str | Path, cls_name: str, local_files_only: bool = True) -> tuple[Path, dict]:
    """(folder, model_index) of a saved pipeline: a folder or a repo id in the local cache."""
    path = Path(source)
    if not path.exists() and REPO_ID.match(str(source)):
        path = cached_snapshot(str(source), local_files_only)
    if not (path / PIPELINE_INDEX).is_file():
        raise CheckpointError(f"{source} is not a pipeline folder (no {PIPELINE_INDEX}); a pipeline is saved with "
                              f"{cls_name}.save_pretrained(folder)")
    index = json.loads((path / PIPELINE_INDEX).read_text())
    if index.get("_class_name") != cls_name:
        raise CheckpointError(f"{source} holds a {index.get('_class_name')}, not a {cls_name}")
    return path, index
