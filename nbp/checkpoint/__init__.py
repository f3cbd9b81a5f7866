"""Model files in and out: nbp's own (one safetensors file with its config), the official NBP releases, DeepSpeed
ZeRO folders converted to one fp32 file, FAR's transformer and DC-AE files, and third-party weights (the perceptual
metric's).

The names below load their module when first used (PEP 562), so that `from nbp.checkpoint import CheckpointError`
(the metrics, the command line) does not import every model family and diffusers.
"""
import importlib

TRUST_FLAG = "--trust-checkpoints"  # the command line's switch for unpickling torch files in full

EXPORTS = {
    "load_dcae": "far", "load_far": "far",
    "CheckpointError": "files", "is_nbp_file": "files", "load_model": "files", "load_state_dict_strict": "files",
    "require_file": "files", "save_model": "files",
    "load_magvit2": "official", "load_transformer": "official",
    "read_torch_checkpoint": "torch_files", "trusting": "torch_files",
    "convert": "zero",
}
__all__ = list(EXPORTS)


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{EXPORTS[name]}"), name)
