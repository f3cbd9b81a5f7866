"""Frame-wise reconstruction / prediction metrics for videos: PSNR and SSIM.

Videos are float tensors (B, C, T, H, W) or one video (C, T, H, W), values in [0, data_range]. Each
metric is computed per frame and averaged over frames, giving one value per video, (B,) (a 0-d tensor
for a single video); `per_frame_*` return the frame curves (B, T). Everything is vectorised over
videos and frames. SSIM matches skimage's `structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=...)` per frame, with channels averaged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nbp.config import InputError

SSIM_SIGMA = 1.5
SSIM_WIN = 11  # skimage's window for sigma 1.5: 2 * int(3.5 * sigma + 0.5) + 1
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_batch(a: torch.Tensor, b: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both videos as (B, C, T, H, W) in a common float dtype, and whether the input was a single video."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"videos must be torch tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise InputError(f"videos differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim not in (4, 5):
        raise InputError(f"videos must be (B, C, T, H, W) or (C, T, H, W), got shape {tuple(a.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise InputError(f"videos must be float in [0, data_range], got {a.dtype} and {b.dtype}")
    if a.isnan().any() or b.isnan().any():
        raise InputError("videos contain NaN values")
    if not data_range > 0:
        raise InputError(f"data_range must be positive, got {data_range}")
    single = a.ndim == 4
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    return (a[None], b[None], True) if single else (a, b, False)


# The PSNR of 8-bit rounding noise (uniform, variance (1/255)^2 / 12): frames of 8-bit videos closer than this are
# as good as identical, and one identical frame (a static clip copied) would otherwise make a mean over clips inf.
UINT8_PSNR = 10 * math.log10(12 * 255**2)  # 58.92 dB


def per_frame_psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, max_db: float | None = None) -> torch.Tensor:
    """PSNR of every frame, (B, T) (or (T,) for one video); +inf for identical frames unless capped at `max_db`."""
    a, b, single = _as_batch(a, b, data_range)
    mse = (a - b).pow(2).mean(dim=(1, 3, 4))  # over channels and pixels: (B, T)
    psnr = 10 * torch.log10(data_range ** 2 / mse)
    psnr = psnr if max_db is None else psnr.clamp(max=max_db)
    return psnr[0] if single else psnr


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, max_db: float | None = None) -> torch.Tensor:
    """Frame-averaged PSNR in dB of each video, (B,) (0-d for one video)."""
    return per_frame_psnr(a, b, data_range, max_db).mean(dim=-1)


def gaussian_window(size: int = SSIM_WIN, sigma: float = SSIM_SIGMA, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, as scipy's gaussian_filter uses them (size = 2 * radius + 1)."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    w = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return w / w.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of each channel of (N, K, H, W), valid region only (no padding)."""
    k = x.shape[1]
    x = F.conv2d(x, window.view(1, 1, -1, 1).expand(k, 1, -1, 1), groups=k)  # along H
    return F.conv2d(x, window.view(1, 1, 1, -1).expand(k, 1, 1, -1), groups=k)  # along W


def per_frame_ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM of every frame (channels averaged), (B, T) (or (T,) for one video)."""
    a, b, single = _as_batch(a, b, data_range)
    bsz, c, t, h, w = a.shape
    if min(h, w) < SSIM_WIN:
        raise InputError(f"SSIM needs frames of at least {SSIM_WIN}x{SSIM_WIN} pixels, got {h}x{w}")
    a = a.transpose(1, 2).reshape(bsz * t * c, 1, h, w)  # one single-channel image per (video, frame, channel)
    b = b.transpose(1, 2).reshape(bsz * t * c, 1, h, w)
    # The five local moments in one grouped convolution: (N, 5, H, W) -> (N, 5, H-10, W-10).
    moments = _blur(torch.cat([a, b, a * a, b * b, a * b], dim=1), gaussian_window(dtype=a.dtype, device=a.device))
    mu_a, mu_b, e_aa, e_bb, e_ab = moments.unbind(dim=1)
    var_a, var_b, cov = e_aa - mu_a ** 2, e_bb - mu_b ** 2, e_ab - mu_a * mu_b  # population (not sample) moments
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    ssim = ssim_map.mean(dim=(1, 2)).view(bsz, t, c).mean(dim=2)  # (B*T*C,) -> (B, T, C) -> (B, T)
    return ssim[0] if single else ssim


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Frame-averaged SSIM of each video, (B,) (0-d for one video)."""
    return per_frame_ssim(a, b, data_range).mean(dim=-1)


def best_of_n(values: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Best of N sampled trajectories: the maximum over the samples axis `dim` of e.g. (B, N) scores.

    For higher-is-better metrics (PSNR, SSIM); negate lower-is-better ones. Pass per-video scores
    (B, N) to pick whole trajectories; per-frame scores (B, N, T) give the per-frame maximum instead.
    """
    values = torch.as_tensor(values)
    if values.ndim < 2 or values.shape[dim] == 0:
        raise InputError(f"best_of_n expects (B, N, ...) values with N >= 1 samples on axis {dim}, "
                         f"got shape {tuple(values.shape)}")
    if values.is_floating_point() and values.isnan().any():
        raise InputError("best_of_n got NaN values")
    return values.amax(dim=dim)
