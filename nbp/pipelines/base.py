"""What every pipeline shares: its output type, the dtype its models load in, and its folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nbp.runtime import use_bf16


@dataclass
class VideoOutput:
    """Every pipeline's output: the clip, given frames and new ones, as videos and as the model saw it."""
    videos: torch.Tensor  # (B, 3, T, H, W) in [0, 1]: the given frames as the autoencoder reconstructs them, then new
    latents: torch.Tensor  # the same frames as the model sees them: token codes (B, n) or FAR latents (B, T, C, h, w)

    @property
    def codes(self) -> torch.Tensor:
        """The token family's name for `latents`."""
        return self.latents


def bf16_dtype(bf16: bool, device) -> torch.dtype | None:
    """bf16 weights when asked for and native here (nbp.runtime.use_bf16), else the file's float32."""
    return torch.bfloat16 if use_bf16(bf16, device, "sampling") else None


class PipelineFolder:
    """`save_pretrained(folder)` / `from_pretrained(folder or repo id)` for a pipeline: `model_index.json` and a
    folder per component (diffusers' layout). A pipeline names its components as {`from_files` argument: (subfolder,
    model)} and the settings `from_files` needs besides them."""

    def components(self) -> dict[str, tuple[str, torch.nn.Module]]:
        raise NotImplementedError

    def settings(self) -> dict:
        return {}

    def save_pretrained(self, folder: str | Path) -> Path:
        from nbp.checkpoint.folders import save_pipeline

        return save_pipeline(self, folder, self.components(), **self.settings())

    @classmethod
    def from_pretrained(cls, source: str | Path, *, local_files_only: bool = True, device="cpu", bf16: bool = False,
                        **options):
        from nbp.checkpoint.folders import pipeline_folder

        folder, index = pipeline_folder(source, cls.__name__, local_files_only)
        files = {argument: str(folder / subfolder) for argument, subfolder in index["components"].items()}
        settings = {k: v for k, v in index.items() if k not in ("_class_name", "nbp_version", "components")}
        return cls.from_files(**files, **settings, device=device, bf16=bf16, **options)
