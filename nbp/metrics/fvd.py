"""Fréchet Video Distance: I3D features of videos and the Fréchet distance between their Gaussian fits.

    i3d = load_i3d("i3d_pretrained_400.pt")            # or StyleGAN-V's "i3d_torchscript.pt"
    real = i3d_features(i3d, real_videos)              # uint8 (N, T, H, W, 3) -> float64 (N, 400)
    fake = i3d_features(i3d, fake_videos)
    fvd = frechet_distance(real, fake)

Preprocessing is the standard one (official-formats.md §3): every frame resized bilinearly to 224x224,
scaled to [-1, 1]. FVD values are comparable only under one protocol (same frame count, resolution,
sample counts, data split; §4): record it in the `meta` of `save_features` when caching real-data features.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nbp.checkpoint import CheckpointError, load_state_dict_strict, read_torch_checkpoint, require_file
from nbp.config import InputError
from nbp.io import atomic_write
from nbp.io.progress import progress_bar
from nbp.metrics.i3d import MIN_FRAMES, NUM_CLASSES, InceptionI3d

RESOLUTION = 224
# Largest imaginary part tolerated on the diagonal of sqrtm(sigma_a @ sigma_b), as pytorch-fid does.


# --- loading the network -------------------------------------------------------------------------

class TorchScriptI3D(nn.Module):
    """StyleGAN-V's `i3d_torchscript.pt` behind the interface of `InceptionI3d`.

    StyleGAN-V calls its detector as `model(videos, rescale=False, resize=False, return_features=True)`
    on float videos (N, 3, T, 224, 224) already scaled to [-1, 1] and resized; `return_features=True`
    gives the 400 pre-softmax logits, the FVD feature. With `rescale` and `resize` off the module does no
    preprocessing of its own, so `preprocess`'s output feeds it unchanged, exactly like `InceptionI3d`.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.module(videos, rescale=False, resize=False, return_features=True)


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a TorchScript zip (it holds `code/` and `constants.pkl`); torch.save zips hold neither."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def load_i3d(path: str | Path, device="cpu", trust: bool | None = None) -> nn.Module:
    """The FVD I3D, in eval mode: (N, 3, T, 224, 224) in [-1, 1] -> (N, 400) logits.

    `path` is VideoGPT's `i3d_pretrained_400.pt` (a plain state dict saved with torch.save) or
    StyleGAN-V's TorchScript `i3d_torchscript.pt` (wrapped in `TorchScriptI3D`).
    """
    path = require_file(path)
    if is_torchscript_archive(path):
        return TorchScriptI3D(torch.jit.load(str(path), map_location=device)).eval()
    state = read_torch_checkpoint(path, trust)  # CheckpointError for anything that is not a torch checkpoint dict
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} is not an I3D state dict (a flat dict of tensors like "
                              f"i3d_pretrained_400.pt): entries {bad[:3]} are not tensors")
    model = InceptionI3d(NUM_CLASSES)
    load_state_dict_strict(model, state, source=path)
    return model.to(device).eval()


# --- videos -> features --------------------------------------------------------------------------

def check_videos(videos, name: str = "videos", min_frames: int = MIN_FRAMES) -> None:
    """Raise a clear error unless `videos` is a uint8 (N, T>=min_frames, H, W, 3) array or tensor."""
    if not isinstance(videos, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(videos).__name__}")
    shape = tuple(videos.shape)
    if len(shape) != 5:
        hint = " (one video? add a batch axis)" if len(shape) == 4 else ""
        raise InputError(f"{name} must have shape (N, T, H, W, C), got {shape}{hint}")
    _check_uint8(videos, name)
    if shape[-1] != 3:
        raise InputError(f"{name} must have 3 (RGB) channels on the last axis, (N, T, H, W, 3); got {shape}")
    if 0 in shape:
        raise InputError(f"{name} is empty: shape {shape}")
    if shape[1] < min_frames:
        raise InputError(f"{name} have {shape[1]} frames; the I3D needs at least {min_frames} "
                         f"(FVD protocols use 16)")


def _check_uint8(videos, name: str) -> None:
    dtype = videos.dtype
    if dtype in (np.uint8, torch.uint8):
        return
    is_float = videos.is_floating_point() if isinstance(videos, torch.Tensor) else np.issubdtype(dtype, np.floating)
    if is_float and bool(torch.as_tensor(videos).isnan().any()):
        raise InputError(f"{name} contain NaN values (and must be uint8 in [0, 255] anyway)")
    hint = " (for floats in [0, 1]: (x * 255).round().clip(0, 255) as uint8)" if is_float else ""
    raise InputError(f"{name} must be uint8 in [0, 255], got dtype {dtype}{hint}")


def preprocess(videos) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float32 (N, 3, T, 224, 224) in [-1, 1], the I3D input of FVD."""
    check_videos(videos, min_frames=1)
    x = torch.as_tensor(videos)
    n, t, h, w, c = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(n * t, c, h, w).float()  # frames as an image batch (N*T, 3, H, W)
    x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False, antialias=False)
    x = 2 * x / 255 - 1
    return x.reshape(n, t, c, RESOLUTION, RESOLUTION).permute(0, 2, 1, 3, 4).contiguous()  # (N, 3, T, 224, 224)


def _module_device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _batch_tensor(videos, start: int, stop: int, device) -> torch.Tensor:
    batch = videos[start:stop]
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(batch).copy())  # the copy also accepts read-only arrays
    return batch.to(device)


@torch.no_grad()
def i3d_features(i3d: nn.Module, videos, batch_size: int = 16, device=None, progress: bool = True) -> np.ndarray:
    """I3D features of uint8 videos (N, T>=9, H, W, 3), as float64 (N, 400).

    Videos are preprocessed one batch at a time on `device` (default: the network's), so a large set
    never exists at 224 px in memory at once.
    """
    check_videos(videos)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = torch.device(device) if device is not None else _module_device(i3d)
    i3d.eval()  # BatchNorm must use its running statistics
    n = len(videos)
    feats = []
    with progress_bar(n, "I3D features", "video", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = preprocess(_batch_tensor(videos, start, start + batch_size, device))
            feats.append(i3d(batch).double().cpu().numpy())
            bar.update(len(batch))
    feats = np.concatenate(feats)
    if feats.shape != (n, NUM_CLASSES) or not np.isfinite(feats).all():
        raise InputError(f"the I3D returned {'non-finite' if feats.shape == (n, NUM_CLASSES) else 'badly shaped'} "
                         f"features, shape {feats.shape} (expected ({n}, {NUM_CLASSES}))")
    return feats


# --- Fréchet distance ----------------------------------------------------------------------------

def _as_features(feats, name: str) -> np.ndarray:
    feats = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise InputError(f"{name} must be a (num_samples >= 2, dim) array, got shape {feats.shape}")
    feats = feats.astype(np.float64)
    if not np.isfinite(feats).all():
        raise InputError(f"{name} contain NaN or infinite values")
    return feats


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    feats = _as_features(feats, "feats")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """||mu_a - mu_b||^2 + tr(sigma_a + sigma_b - 2 (sigma_a sigma_b)^(1/2)), in float64.

    tr((sigma_a sigma_b)^(1/2)) is the sum of the square roots of the eigenvalues of the symmetric positive
    semi-definite sigma_a^(1/2) sigma_b sigma_a^(1/2) (the same eigenvalues): well-defined for singular covariances
    (fewer videos than feature dimensions, as FAR's 256-video DMLab protocol against I3D's 400), and equal to the
    official `scipy.linalg.sqrtm` value where that is well-conditioned. sqrtm's absolute tolerance on the imaginary
    part (pytorch-fid's 1e-3) refused valid large-magnitude sets on round-off alone.
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != mu_a.shape * 2:
        raise InputError(f"statistics do not match: means {mu_a.shape}, {mu_b.shape}; "
                         f"covariances {sigma_a.shape}, {sigma_b.shape}")
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * trace_of_sqrt_product(sigma_a, sigma_b))


def trace_of_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """tr((sigma_a sigma_b)^(1/2)) of two symmetric PSD matrices, by eigenvalues (negative round-off clipped)."""
    w, v = np.linalg.eigh((sigma_a + sigma_a.T) / 2)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root_a @ sigma_b @ root_a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D); float64.

    Warns when a set has fewer samples than dimensions: its covariance is then singular and the value
    is mostly noise (FVD protocols use 2,048 or 10,000 videos for D = 400).
    """
    feats_a, feats_b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise InputError(f"feature sets differ in dimension: {feats_a.shape} vs {feats_b.shape}")
    for name, feats in (("feats_a", feats_a), ("feats_b", feats_b)):
        if feats.shape[0] < feats.shape[1]:
            warnings.warn(f"{name} has {feats.shape[0]} samples for {feats.shape[1]} dimensions: its covariance "
                          f"is singular and the Fréchet distance is unreliable", stacklevel=2)
    return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


# --- feature cache -------------------------------------------------------------------------------

def save_features(path: str | Path, feats, meta: dict | None = None) -> Path:
    """Write features (N, D) and a JSON-serialisable `meta` (the protocol: dataset, split, count,
    resolution, frames, I3D file, ...) to an .npz file, atomically."""
    feats = _as_features(feats, "feats")
    meta_json = json.dumps(meta or {}, sort_keys=True)  # TypeError here, not at load time, if not JSON

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, features=feats, meta=np.array(meta_json))

    atomic_write(path, write)
    return Path(path)


def load_features(path: str | Path, expect: dict | None = None) -> tuple[np.ndarray, dict]:
    """(features, meta) written by `save_features`; `expect` entries must equal the stored meta's, so
    cached real-data features of another protocol are never used by mistake."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            feats, meta = data["features"], json.loads(str(data["meta"]))
    except (ValueError, OSError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        raise InputError(f"{path} is not a feature file written by save_features ({error})") from None
    differ = {k: (meta.get(k), v) for k, v in (expect or {}).items() if meta.get(k) != v}
    if differ:
        raise InputError(f"{path} was computed under another protocol: " +
                         ", ".join(f"{k}={stored!r} (expected {wanted!r})" for k, (stored, wanted) in differ.items()))
    return feats, meta
