"""Loading FAR's models: the official `FAR_*.pth` and `DCAE_*.pth` plain state dicts, or nbp's own files.

The official transformer files carry weights only: the architecture follows from their shapes (depth, width,
heads, patch, condition and its classes, long-short context), and the fields no file carries (`short_window`,
`slope_scale`, `sample_size`) are arguments. The DC-AE files are matched against FAR's three configurations.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from nbp.checkpoint.files import CheckpointError, is_nbp_file, load_model, load_state_dict_strict
from nbp.checkpoint.folders import diffusers_folder_config, model_file
from nbp.checkpoint.torch_files import read_torch_checkpoint
from nbp.checkpoint.zero import CONFIG_KEY
from nbp.config import from_preset, presets
from nbp.models.dcae import DCAE, DCAEConfig
from nbp.models.far import FAR, FARConfig

BLOCK_KEY = "transformer_blocks.{}.norm1.linear.weight"


def load_far(path: str | Path, device="cpu", dtype: torch.dtype | None = None, trust: bool | None = None,
             **config_fields) -> FAR:
    """A FAR transformer in eval mode from an official `FAR_*.pth` or nbp's file. `config_fields` set what the
    official file does not carry, e.g. `short_window=30` (BAIR) or `slope_scale=0.5`; `dtype` casts the weights."""
    path = model_file(path, "far")
    if is_nbp_file(path):
        model = load_model(path, kind="far", device=device, **config_fields)
    else:
        state = official_state_dict(read_torch_checkpoint(path, trust), path, "x_embedder.weight", "FAR transformer")
        model = FAR(far_config_from_state(state, **config_fields))
        load_state_dict_strict(model, state, source=path)
    return model.to(device=device, dtype=dtype).eval()


def official_state_dict(obj: dict, path: Path, marker: str, what: str) -> dict[str, torch.Tensor]:
    if "state_dict" in obj and CONFIG_KEY in obj:
        raise CheckpointError(f"{path} is a training checkpoint of an nbp run, not a model file: give the run's "
                              "export (far.safetensors / dcae.safetensors in the run folder), or make one with "
                              f"`nbp convert {path} out.safetensors`")
    if marker not in obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not an official {what} file: expected a plain state dict with "
                              f"'{marker}', found keys {sorted(map(str, obj))[:5]}")
    return obj


def far_config_from_state(state: dict[str, torch.Tensor], in_channels: int = 32, **fields) -> FARConfig:
    """The FAR architecture that has these weights (a preset's name when one matches)."""
    width, patch_input = state["x_embedder.weight"].shape
    head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    layers = sum(1 for i in range(len(state)) if BLOCK_KEY.format(i) in state)
    values = dict(num_layers=layers, num_heads=width // head_dim, head_dim=head_dim, in_channels=in_channels,
                  patch_size=math.isqrt(patch_input // in_channels), long="context_embedder.weight" in state)
    for condition in ("label", "action"):
        table = state.get(f"{condition}_embedder.embedding_table.weight")
        if table is not None:
            values.update(condition=condition, num_classes=table.shape[0] - 1)
    if values["long"]:
        values["context_patch_size"] = math.isqrt(state["context_embedder.weight"].shape[1] // in_channels)
    config = FARConfig(**values, **fields)
    config.preset = matching_preset(config)
    return config


def matching_preset(config: FARConfig) -> str | None:
    """The official size this architecture is (`far-b`, ..., `far-m-long`), or None."""
    for name in presets(FARConfig):
        preset = from_preset(FARConfig, name)
        if (preset.num_layers, preset.num_heads, preset.long) == (config.num_layers, config.num_heads, config.long):
            return name
    return None


def load_dcae(path: str | Path, device="cpu", dtype: torch.dtype | None = None, trust: bool | None = None,
              resolution: int | None = None, config: str | Path | dict | None = None) -> DCAE:
    """A DC-AE in eval mode from an official `DCAE_*.pth` or nbp's file. The official file's configuration is
    recognised among FAR's (8x/16x/32x, and the test size), or given as `config`: a preset name, FAR's diffusers
    config .json or its dict. `resolution` is the frame size it will see (default: the configuration's)."""
    path = model_file(path, "dcae")
    fields = {} if resolution is None else {"resolution": resolution}
    if is_nbp_file(path):
        model = load_model(path, kind="dcae", device=device, **fields)
    elif (diffusers_config := diffusers_folder_config(path)) is not None:  # a diffusers AutoencoderDC folder
        model = DCAE(dcae_config(config if config is not None else diffusers_config, **fields))
        load_state_dict_strict(model, load_file(str(path)), source=path)
    else:
        state = official_state_dict(read_torch_checkpoint(path, trust), path, "encoder.conv_in.conv.weight", "DC-AE")
        model = DCAE(dcae_config(config, **fields) if config is not None else
                     from_preset(DCAEConfig, dcae_preset_of(state, path), **fields))
        load_state_dict_strict(model, state, source=path)
    return model.to(device=device, dtype=dtype).eval()


def dcae_config(config: str | Path | dict, **fields) -> DCAEConfig:
    """A DC-AE config from a preset name, a diffusers AutoencoderDC config file, or its dict."""
    if isinstance(config, str) and not config.endswith(".json"):
        return from_preset(DCAEConfig, config, **fields)
    values = config if isinstance(config, dict) else json.loads(Path(config).read_text())
    ours = DCAEConfig(channels=list(values["encoder_block_out_channels"]),
                      encoder_layers=list(values["encoder_layers_per_block"]),
                      decoder_layers=list(values["decoder_layers_per_block"]),
                      latent_channels=values.get("latent_channels", 32),
                      attention_head_dim=values.get("attention_head_dim", 32),
                      scaling_factor=values.get("scaling_factor", 0.2889), **fields)
    different = {k: v for k, v in ours.diffusers_config().items() if k in values and list_of(values[k]) != list_of(v)}
    if different:
        raise CheckpointError(f"this AutoencoderDC config differs from FAR's block layout in {sorted(different)}; "
                              "nbp's DCAE builds FAR's (ResBlock stages, then EfficientViT stages)")
    return ours


def list_of(value):
    return [list_of(v) for v in value] if isinstance(value, (list, tuple)) else value


def dcae_preset_of(state: dict[str, torch.Tensor], path: Path) -> str:
    """The DC-AE preset whose keys and shapes are exactly these (compared on the meta device: nothing allocated)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name in presets(DCAEConfig):
        with torch.device("meta"):
            expected = DCAE(from_preset(DCAEConfig, name)).state_dict()
        if shapes == {k: tuple(v.shape) for k, v in expected.items()}:
            return name
    raise CheckpointError(f"{path} is a DC-AE of none of FAR's configurations ({', '.join(presets(DCAEConfig))}): "
                          f"{len(state)} tensors, first {next(iter(state))} {tuple(next(iter(state.values())).shape)}")
