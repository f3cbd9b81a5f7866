"""`nbp eval-tokenizer`: reconstruct a dataset split and report rFVD, PSNR, SSIM, LPIPS and codebook usage."""
from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from nbp.checkpoint import load_magvit2
from nbp.checkpoint.perceptual import load_perceptual
from nbp.data.dataset import collate_clips
from nbp.io import write_json
from nbp.io.media import contact_sheet, save_video, to_uint8, video_grid
from nbp.io.progress import progress
from nbp.metrics import frechet_distance, i3d_features, load_i3d, psnr, ssim
from nbp.runtime import use_bf16
from nbp.settings.eval import TokenizerEvalConfig

log = logging.getLogger(__name__)

FVD_FRAMES = 16  # the FVD protocols compare 16-frame clips


def codebook_usage(counts: np.ndarray) -> dict[str, float]:
    """Fraction of codes used, entropy of the code distribution (bits) and its perplexity."""
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    return {"codes_used": int((counts > 0).sum()), "usage": float((counts > 0).mean()),
            "entropy_bits": entropy, "perplexity": float(2**entropy), "max_entropy_bits": math.log2(len(counts))}


def evaluate_tokenizer(cfg: TokenizerEvalConfig) -> dict:
    tokenizer = load_magvit2(cfg.tokenizer, resolution=cfg.clips.resolution, device=cfg.device)
    dataset = cfg.clips.dataset("centre", on_error="skip")
    indices = range(min(len(dataset), cfg.max_clips or len(dataset)))
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=cfg.batch_size,
                        num_workers=cfg.num_workers, collate_fn=collate_clips)
    lpips = load_perceptual(cfg.perceptual)
    i3d = load_i3d(cfg.i3d, device=cfg.device) if cfg.i3d else None
    if i3d is None:
        log.warning("rFVD not computed: pass i3d=path/to/i3d_pretrained_400.pt")

    # Trivial baselines: every frame replaced by the clip's mean frame, or by its mean colour.
    scores = {"psnr": [], "ssim": [], "lpips": [], "baseline_mean_frame_psnr": [], "baseline_mean_colour_psnr": []}
    features = {"real": [], "recon": []}
    counts = np.zeros(tokenizer.codebook_size, np.int64)
    shown, dropped = [], 0
    bf16 = use_bf16(cfg.bf16, cfg.device, "tokenizer evaluation")
    for batch in progress(loader, "reconstruct", "batch"):
        if batch is None:
            dropped += cfg.batch_size
            continue
        dropped += batch["dropped"]
        video = batch["video"].to(cfg.device)
        with torch.no_grad(), torch.autocast(torch.device(cfg.device).type, torch.bfloat16, enabled=bf16):
            _, ids = tokenizer.encode(video)
            recon = tokenizer.decode_from_code_indices(ids).float().clamp(0, 1)
        counts += np.bincount(ids.flatten().cpu().numpy(), minlength=len(counts))
        scores["psnr"] += psnr(recon, video).tolist()
        scores["ssim"] += ssim(recon, video).tolist()
        for name, dims in (("frame", (2,)), ("colour", (2, 3, 4))):
            scores[f"baseline_mean_{name}_psnr"] += psnr(video.mean(dims, keepdim=True).expand_as(video), video).tolist()
        if lpips is not None:
            scores["lpips"] += lpips.to(cfg.device).video(recon, video).tolist()
        if i3d is not None:
            for name, clip in (("real", video), ("recon", recon)):
                features[name].append(i3d_features(i3d, to_uint8(clip[:, :, :FVD_FRAMES]), progress=False))
        if len(shown) < cfg.samples:
            shown += list(zip(video.cpu(), recon.cpu()))[: cfg.samples - len(shown)]

    results = {"clips": len(scores["psnr"]), "dropped": dropped, "skipped_at_probe": dataset.skip_counts(),
               **{k: float(np.mean(v)) for k, v in scores.items() if v}, **codebook_usage(counts),
               "settings": asdict(cfg)}
    if i3d is not None:
        results["rfvd"] = frechet_distance(np.concatenate(features["real"]), np.concatenate(features["recon"]))
        results["rfvd_protocol"] = f"custom: {results['clips']} clips, first {FVD_FRAMES} frames, {cfg.clips.resolution}px"
    write_outputs(Path(cfg.out), results, shown)
    return results


def write_outputs(out: Path, results: dict, shown: list) -> None:
    write_json(out / "metrics.json", results)
    if shown:
        pairs = torch.stack([torch.stack(pair) for pair in shown]).flatten(0, 1)  # input, recon, input, ...
        contact_sheet(to_uint8(pairs), out / "reconstructions.png")
        side_by_side = to_uint8(torch.cat([torch.stack([a for a, _ in shown]), torch.stack([b for _, b in shown])], dim=-1))
        save_video(out / "reconstructions.mp4", video_grid(side_by_side, columns=2), fps=8)
