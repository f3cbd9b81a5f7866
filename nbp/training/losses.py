"""GAN losses as small functions (the perceptual one is nbp.models.lpips, loaded by nbp.checkpoint.perceptual)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
