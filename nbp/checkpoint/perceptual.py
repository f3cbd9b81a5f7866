"""The perceptual metric's weight files (LPIPS over VGG16): found in the user's folders, never downloaded."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from nbp.checkpoint.files import load_state_dict_strict
from nbp.checkpoint.torch_files import read_torch_checkpoint
from nbp.models.lpips import LPIPS

log = logging.getLogger(__name__)

VGG16_FILES = ("vgg16-397923af.pth", "vgg16.pth")
LPIPS_FILES = ("vgg.pth", "lpips_vgg.pth")


@dataclass
class PerceptualConfig:
    vgg: str | None = None  # torchvision VGG16 state dict; None: search `search`
    lpips: str | None = None  # LPIPS linear layers (vgg.pth)
    search: list[str] = field(default_factory=lambda: ["ckpt"])


def find_file(explicit: str | None, names: tuple[str, ...], search: list[str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"perceptual weight file {path} does not exist")
        return path
    return next((Path(d) / n for d in search for n in names if (Path(d) / n).is_file()), None)


def build_lpips(vgg_state: dict, lpips_state: dict) -> LPIPS:
    """LPIPS from torchvision's VGG16 state dict and LPIPS's linear-layer state dict."""
    model = LPIPS()
    state = {k: v for k, v in vgg_state.items() if k.startswith("features.")}
    state.update(lpips_state)
    state.update({"shift": model.shift, "scale": model.scale})
    load_state_dict_strict(model, state, source="VGG16 + LPIPS weights")
    return model.requires_grad_(False).eval()


def load_perceptual(cfg: PerceptualConfig) -> LPIPS | None:
    """LPIPS from the user's weight files, or None (the perceptual term is then off, and the log says so)."""
    vgg_path, lpips_path = find_file(cfg.vgg, VGG16_FILES, cfg.search), find_file(cfg.lpips, LPIPS_FILES, cfg.search)
    if vgg_path is None or lpips_path is None:
        log.warning("perceptual loss OFF: need torchvision's VGG16 weights (%s) and LPIPS's linear layers (%s) "
                    "in %s or set perceptual.vgg / perceptual.lpips; training then uses reconstruction + GAN losses "
                    "only, evaluation reports no LPIPS",
                    " or ".join(VGG16_FILES), " or ".join(LPIPS_FILES), ", ".join(cfg.search))
        return None
    log.info("perceptual loss: LPIPS with %s and %s", vgg_path, lpips_path)
    return build_lpips(read_torch_checkpoint(vgg_path), read_torch_checkpoint(lpips_path))
