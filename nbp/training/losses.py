"""GAN and reconstruction losses as small functions, and the perceptual loss's weight files."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from nbp.models.lpips import LPIPS, build_lpips

log = logging.getLogger(__name__)

VGG16_FILES = ("vgg16-397923af.pth", "vgg16.pth")
LPIPS_FILES = ("vgg.pth", "lpips_vgg.pth")


def hinge_d_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss, averaged over the discriminators' logit maps."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits)]
    return torch.stack(terms).mean() / 2


def generator_adv_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    return -torch.stack([f.mean() for f in fake_logits]).mean()


def lecam_loss(real_logits, fake_logits, ema_real: torch.Tensor, ema_fake: torch.Tensor) -> torch.Tensor:
    """LeCam regulariser (Tseng et al. 2021): keep D's outputs near the other side's running mean."""
    real = torch.cat([r.flatten() for r in real_logits])
    fake = torch.cat([f.flatten() for f in fake_logits])
    return F.relu(real - ema_fake).square().mean() + F.relu(ema_real - fake).square().mean()


def adaptive_weight(nll: torch.Tensor, adv: torch.Tensor, last_layer: torch.Tensor, limit: float = 1e4) -> torch.Tensor:
    """|grad nll| / |grad adv| at the decoder's last layer (Esser et al. 2021): balances the two terms."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adv, last_layer, retain_graph=True)[0]
    return (nll_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0, limit).detach()


def find_file(explicit: str | None, names: tuple[str, ...], search: list[str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"perceptual weight file {path} does not exist")
        return path
    return next((Path(d) / n for d in search for n in names if (Path(d) / n).is_file()), None)


def load_perceptual(vgg: str | None, lpips: str | None, search: list[str]) -> LPIPS | None:
    """LPIPS from the user's weight files, or None (the perceptual term is then off, and the log says so)."""
    vgg_path, lpips_path = find_file(vgg, VGG16_FILES, search), find_file(lpips, LPIPS_FILES, search)
    if vgg_path is None or lpips_path is None:
        log.warning("perceptual loss OFF: need torchvision's VGG16 weights (%s) and LPIPS's linear layers (%s) "
                    "in %s or set perceptual.vgg / perceptual.lpips; training then uses reconstruction + GAN losses "
                    "only, evaluation reports no LPIPS",
                    " or ".join(VGG16_FILES), " or ".join(LPIPS_FILES), ", ".join(search))
        return None
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)
    log.info("perceptual loss: LPIPS with %s and %s", vgg_path, lpips_path)
    return build_lpips(load(vgg_path), load(lpips_path))
