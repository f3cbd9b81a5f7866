"""`save_pretrained` / `from_pretrained` on every model class, as Hugging Face users expect; the formats live in
`nbp.checkpoint.folders`, and each kind's loader (named here, imported when called) reads every file it takes."""
from __future__ import annotations

import importlib
from pathlib import Path

from nbp.checkpoint.files import CheckpointError
from nbp.checkpoint.folders import model_file, save_pretrained

# the loader of each model kind: it reads nbp's files, folders and cached repo ids, and the official files
LOADERS = {"tokenizer": "nbp.checkpoint.official:load_magvit2", "transformer": "nbp.checkpoint.official:load_transformer",
           "world": "nbp.checkpoint.official:load_transformer", "far": "nbp.checkpoint.far:load_far",
           "dcae": "nbp.checkpoint.far:load_dcae"}
COMPONENTS = {"world": "transformer"}  # the pipeline subfolder of a kind, where it differs from the kind


class Pretrained:
    kind: str

    def save_pretrained(self, folder: str | Path) -> Path:
        """`config.json` + `model.safetensors` in `folder` (a DC-AE: diffusers' AutoencoderDC layout)."""
        return save_pretrained(self, folder)

    @classmethod
    def from_pretrained(cls, source: str | Path, *, local_files_only: bool = True, device="cpu", **options):
        """A model from a folder, a pipeline folder, a repo id in the local Hugging Face cache (downloaded first
        only with `local_files_only=False`), nbp's file or an official file; `options` go to the kind's loader
        (e.g. `resolution=` for a tokenizer, `dtype=` for a transformer)."""
        path = model_file(source, COMPONENTS.get(cls.kind, cls.kind), local_files_only)
        module, name = LOADERS[cls.kind].split(":")
        model = getattr(importlib.import_module(module), name)(path, device=device, **options)
        if not isinstance(model, cls):
            raise CheckpointError(f"{source} holds a {type(model).__name__}, not a {cls.__name__}")
        return model
