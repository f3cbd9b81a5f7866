"""Loading pretrained models: the official NBP release's files and nbp's own (`nbp.download` re-exports these).

Nothing is downloaded here (the official files are fetched by the user; see ckpt/README.md): these
functions recognise the format of a local file and rebuild the model in eval mode.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nbp.checkpoint.files import TRANSFORMERS, CheckpointError, is_nbp_file, load_model, load_state_dict_strict
from nbp.checkpoint.folders import model_file
from nbp.checkpoint.torch_files import read_torch_checkpoint
from nbp.config import from_preset
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer
from nbp.models.transformer import Transformer, TransformerConfig

OFFICIAL_TOKENIZER_PRESET = "nbp-magvit2"


def load_magvit2(path: str | Path, resolution: int | None = None, device="cpu", trust: bool | None = None) -> VideoTokenizer:
    """A video tokenizer from an official `magvit2_*.pt`, a file written by `nbp.checkpoint.save_model`,
    or a folder or cached repo id written by `save_pretrained` (nbp.checkpoint.folders).

    `resolution` is the frame size the tokenizer will see; it unflattens 1-D index sequences in
    `decode_from_code_indices`. The architecture does not depend on it. None: the one nbp's file was saved with,
    128 for an official file (UCF-101's). Torch files are read without
    running code from them; `trust=True` unpickles a file you trust in full (nbp.checkpoint.torch_files).
    """
    path = model_file(path, "tokenizer")
    if is_nbp_file(path):
        return load_model(path, kind="tokenizer", device=device, **({} if resolution is None else {"resolution": resolution}))
    state = official_tokenizer_state_dict(read_torch_checkpoint(path, trust), path)
    model = VideoTokenizer(from_preset(TokenizerConfig, OFFICIAL_TOKENIZER_PRESET, resolution=resolution or 128))
    load_state_dict_strict(model, state, source=path)
    return model.to(device).eval()


def official_tokenizer_state_dict(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    """The tokenizer weights of an official checkpoint, without the DDP `module.` prefix."""
    state = obj.get("model_state_dict", obj)
    if not isinstance(state, dict) or not any(str(k).removeprefix("module.").startswith("encoder_layers.") for k in state):
        raise CheckpointError(f"{path} is not a MAGVITv2 tokenizer checkpoint: expected 'model_state_dict' with "
                              f"'encoder_layers.*' weights, found keys {sorted(map(str, obj))[:5]}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_transformer(path: str | Path, device="cpu", dtype: torch.dtype | None = None,
                     trust: bool | None = None) -> Transformer:
    """A next-block-prediction LM (or world model) from nbp's own file or an official NBP Lightning `.ckpt`
    (hybrid text models and unconditional block models), in eval mode; `dtype` casts the weights (e.g. bf16)."""
    path = model_file(path, "transformer")
    if is_nbp_file(path):
        model = load_model(path, kind=TRANSFORMERS, device=device)
    else:
        checkpoint = read_torch_checkpoint(path, trust)
        state = official_transformer_state_dict(checkpoint, path)
        model = Transformer(official_transformer_config(checkpoint, state))
        load_state_dict_strict(model, state, source=path)
    return model.to(device=device, dtype=dtype).eval()


def official_transformer_state_dict(checkpoint: dict, path: Path) -> dict[str, torch.Tensor]:
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not any(k.startswith("transformer.") for k in state):
        found = sorted(map(str, state or checkpoint))[:5]
        raise CheckpointError(f"{path} is not an NBP language-model checkpoint: expected 'state_dict' with "
                              f"'transformer.*' weights, found {found}")
    return {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")}


def official_transformer_config(checkpoint: dict, state: dict) -> TransformerConfig:
    """The architecture of an official checkpoint, from its hyper-parameters and weight shapes."""
    args = (checkpoint.get("hyper_parameters") or {}).get("args")
    args = vars(args) if hasattr(args, "__dict__") else dict(args or {})
    block, cond_len = int(args.get("token_number_per_step", 16)), int(args.get("cond_token_num", 0))
    vocab, width = state["tok_emb.weight"].shape
    begin = bool(args.get("starts_with_bov", cond_len > 0))
    text = args.get("cond_stage_key") == "text" and not args.get("unconditional", False)
    video_vocab = 64000
    return TransformerConfig(
        arch="nbp-gpt", n_layer=int(args.get("n_layer", 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks.")))),
        n_head=int(args["n_head"]), n_embd=width, video_vocab=video_vocab, block=block,
        hybrid=bool(args.get("hybrid", False)), begin=begin, condition="text" if text else "none",
        cond_len=cond_len if text else 0, text_vocab=vocab - video_vocab - (block if begin else 0) if text else 0,
        context=state["pos_emb"].shape[1], latent_shape=[5, 16, 16], sample_full_vocab=True)
