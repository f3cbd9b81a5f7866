"""The perceptual metric's weight files (LPIPS over VGG16 or AlexNet): found in the user's folders and where the
libraries keep them (torchvision's downloads in the torch hub cache, the weights the `lpips` package ships), never
downloaded."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from nbp.checkpoint.files import load_state_dict_strict
from nbp.checkpoint.torch_files import read_torch_checkpoint
from nbp.models.lpips import LPIPS
from nbp.settings.models import BACKBONE_FILES, PerceptualConfig

log = logging.getLogger(__name__)

LPIPS_FILES = {"vgg": ("vgg.pth", "lpips_vgg.pth"), "alex": ("alex.pth", "lpips_alex.pth")}


def library_folders() -> list[Path]:
    """Where the libraries keep these files: torchvision's downloads (the torch hub cache, TORCH_HOME aware) and
    the `lpips` package's shipped weights (found without importing it: it needs torchvision)."""
    import torch

    folders = [Path(torch.hub.get_dir()) / "checkpoints"]
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.submodule_search_locations:
        folders.append(Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1")
    return folders


def find_file(explicit: str | None, names: tuple[str, ...], search: list[str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"perceptual weight file {path} does not exist")
        return path
    folders = [Path(d) for d in search] + library_folders()
    return next((d / n for d in folders for n in names if (d / n).is_file()), None)


def build_lpips(backbone_state: dict, lpips_state: dict, net: str = "vgg") -> LPIPS:
    """LPIPS from torchvision's VGG16 or AlexNet state dict and LPIPS's linear-layer state dict."""
    model = LPIPS(net)
    state = {k: v for k, v in backbone_state.items() if k.startswith("features.")}
    state.update(lpips_state)
    state.update({"shift": model.shift, "scale": model.scale})
    load_state_dict_strict(model, state, source=f"{net} + LPIPS weights")
    return model.requires_grad_(False).eval()


def load_perceptual(cfg: PerceptualConfig) -> LPIPS | None:
    """LPIPS from the user's weight files, or None (the perceptual term is then off, and the log says so)."""
    cfg.validate()
    explicit = cfg.vgg if cfg.net == "vgg" else cfg.alexnet
    backbone = find_file(explicit, BACKBONE_FILES[cfg.net], cfg.search)
    lpips = find_file(cfg.lpips, LPIPS_FILES[cfg.net], cfg.search)
    if backbone is None or lpips is None:
        name, field_name = ("VGG16", "vgg") if cfg.net == "vgg" else ("AlexNet", "alexnet")
        log.warning("perceptual loss OFF: need torchvision's %s weights (%s) and LPIPS's linear layers (%s) "
                    "in %s (or the torch hub cache / the lpips package) or set perceptual.%s / perceptual.lpips; "
                    "training then uses reconstruction + GAN losses "
                    "only, evaluation reports no LPIPS", name, " or ".join(BACKBONE_FILES[cfg.net]),
                    " or ".join(LPIPS_FILES[cfg.net]), ", ".join(cfg.search), field_name)
        return None
    log.info("perceptual loss: LPIPS (%s) with %s and %s", cfg.net, backbone, lpips)
    return build_lpips(read_torch_checkpoint(backbone), read_torch_checkpoint(lpips), cfg.net)
