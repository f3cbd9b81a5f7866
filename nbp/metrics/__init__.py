"""Evaluation metrics: FVD (I3D features + Fréchet distance) and per-frame PSNR / SSIM."""
from nbp.metrics.fvd import (
    TorchScriptI3D,
    check_videos,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    i3d_features,
    load_features,
    load_i3d,
    preprocess,
    save_features,
)
from nbp.metrics.i3d import MIN_FRAMES, InceptionI3d
from nbp.metrics.video import best_of_n, per_frame_psnr, per_frame_ssim, psnr, ssim

__all__ = [
    "InceptionI3d", "MIN_FRAMES", "TorchScriptI3D", "best_of_n", "check_videos", "frechet_distance",
    "frechet_distance_from_stats", "gaussian_stats", "i3d_features", "load_features", "load_i3d",
    "per_frame_psnr", "per_frame_ssim", "preprocess", "psnr", "save_features", "ssim",
]
