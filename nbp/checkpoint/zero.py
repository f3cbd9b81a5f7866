"""`nbp convert` / `zero_to_fp32.py`: a DeepSpeed ZeRO checkpoint folder -> one fp32 nbp model file.

DeepSpeed's own converter (through Lightning's wrapper) gathers the partitioned fp32 weights; nbp then rebuilds
the model from the config stored in the checkpoint and writes it with `save_model`, so `load_transformer` reads it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from nbp.checkpoint.files import CheckpointError, build_model, save_model
from nbp.checkpoint.torch_files import read_torch_checkpoint, safe_unpickling
from nbp.settings.training import ConvertConfig

CONFIG_KEY, KIND_KEY = "nbp_model_config", "nbp_model_kind"
EXPORT_KEY = "nbp_export_prefix"  # whose weights a checkpoint exports: "model." (default) or "ema." (FAR)


def zero_to_state(checkpoint_dir: str | Path, trust: bool | None = None) -> dict:
    """The Lightning checkpoint dict (fp32 `state_dict` + client state) of a DeepSpeed checkpoint folder."""
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / "latest").is_file():
        raise CheckpointError(f"{checkpoint_dir} is not a DeepSpeed checkpoint folder (no 'latest' file)")
    with tempfile.TemporaryDirectory() as tmp, safe_unpickling(checkpoint_dir, trust):
        convert_zero_checkpoint_to_fp32_state_dict(str(checkpoint_dir), f"{tmp}/fp32.ckpt")
        return read_torch_checkpoint(f"{tmp}/fp32.ckpt", trust)


def model_from_lightning_checkpoint(checkpoint: dict, source) -> torch.nn.Module:
    if CONFIG_KEY not in checkpoint:
        raise CheckpointError(f"{source} holds no nbp model config ('{CONFIG_KEY}'): not an nbp LM training run")
    model = build_model(checkpoint.get(KIND_KEY, "transformer"), checkpoint[CONFIG_KEY])
    prefix = checkpoint.get(EXPORT_KEY, "model.")
    state = {k.removeprefix(prefix): v.float() for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return model


def convert(checkpoint: str | Path, out: str | Path, trust: bool | None = None) -> Path:
    """A ZeRO folder or a plain Lightning `.ckpt` of an LM run -> `out` (.safetensors), read without running code
    from them unless `trust`."""
    checkpoint = Path(checkpoint)
    state = zero_to_state(checkpoint, trust) if checkpoint.is_dir() else read_torch_checkpoint(checkpoint, trust)
    return save_model(model_from_lightning_checkpoint(state, checkpoint), out)


def convert_run(cfg: ConvertConfig) -> Path:
    return convert(cfg.checkpoint, cfg.out)
