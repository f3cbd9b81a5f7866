"""Model files in and out: nbp's own (one safetensors file with its config), the official NBP releases, DeepSpeed
ZeRO folders converted to one fp32 file, FAR's transformer and DC-AE files, and third-party weights (the perceptual metric's)."""
from nbp.checkpoint.far import load_dcae, load_far
from nbp.checkpoint.files import (
                                  CheckpointError,
                                  is_nbp_file,
                                  load_model,
                                  load_state_dict_strict,
                                  require_file,
                                  save_model,
)
from nbp.checkpoint.official import load_magvit2, load_transformer
from nbp.checkpoint.torch_files import read_torch_checkpoint, trusting
from nbp.checkpoint.zero import convert

__all__ = ["CheckpointError", "is_nbp_file", "load_model", "load_state_dict_strict", "require_file", "save_model",
           "load_dcae", "load_far",
           "load_magvit2", "load_transformer", "read_torch_checkpoint", "trusting", "convert"]
