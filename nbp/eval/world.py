"""`nbp world-eval`: TECO-style evaluation of a world model on test episodes.

From each test episode, C context frames are given and N predicted; per-step PSNR/SSIM curves over the horizon
against the truth, for the model given the true actions, the same model given the actions shuffled in time, and
copying the last context frame; the autoencoder's own reconstruction bounds what any prediction can reach. Writes
curves (PNG), a side-by-side video, and metrics.json; FVD when an I3D file is given.

The model is nbp's discrete world model (`lm` + its `tokenizer`) or a FAR model (`far` + its `dcae`), evaluated on
the same clips with the same metrics, so the two families compare directly.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nbp.config import InputError
from nbp.data.episodes import list_episodes, load_episode
from nbp.data.video import frames_to_video
from nbp.eval.rollout import FARPredictor, Predictor, WorldPredictor, copy_last, rollouts
from nbp.io import write_json
from nbp.io.media import save_video, to_uint8, video_grid
from nbp.io.plot import line_chart
from nbp.io.progress import progress
from nbp.metrics import frechet_distance, i3d_features, load_i3d
from nbp.metrics.video import per_frame_ssim
from nbp.pipelines.far import FARPipeline
from nbp.pipelines.tokens import WorldPipeline
from nbp.settings.eval import WorldEvalConfig

log = logging.getLogger(__name__)


def world_predictor(cfg: WorldEvalConfig) -> Predictor:
    """nbp's world model (`lm` + `tokenizer`) or a FAR model (`far` + `dcae`), behind the rollout room's calls."""
    if cfg.lm:
        pipeline = WorldPipeline.from_files(cfg.tokenizer, cfg.lm, cfg.resolution, cfg.device, cfg.bf16)
        return WorldPredictor(pipeline, cfg.sampling, cfg.device)
    pipeline = FARPipeline.from_files(cfg.dcae, cfg.far, cfg.device, cfg.bf16, resolution=cfg.resolution)
    return FARPredictor(pipeline, cfg.far_sampling)


def frame_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (B, T) of every frame of (B, 3, T, H, W) videos in [0, 1]; identical frames count as 100 dB."""
    mse = (a - b).square().mean(dim=(1, 3, 4))
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def evaluation_clips(cfg: WorldEvalConfig) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(frames, actions, name) windows of context + horizon frames from the test episodes."""
    need, clips, short = cfg.context + cfg.horizon, [], 0
    for path in list_episodes(cfg.episodes)[: cfg.max_episodes]:
        frames, actions = load_episode(path, cfg.resolution)
        if len(frames) < need:
            short += 1
            continue
        last = len(frames) - need
        for start in np.linspace(0, last, cfg.starts_per_episode).round().astype(int):
            clips.append((frames[start:start + need], actions[start:start + need], f"{path.name}@{start}"))
    if short:
        log.warning("%d episodes shorter than %d frames skipped", short, need)
    if not clips:
        raise InputError(f"no episode in {cfg.episodes} has {need} frames (context {cfg.context} + horizon {cfg.horizon})")
    return clips


def shuffled_in_time(actions: torch.Tensor, first: int, generator: torch.Generator) -> torch.Tensor:
    """Each row's actions from `first` on, permuted in time (same actions, wrong moments)."""
    out = actions.clone()
    for row in out:
        tail = row[first:]
        row[first:] = tail[torch.randperm(len(tail), generator=generator)]
    return out


def evaluate_world(cfg: WorldEvalConfig) -> dict:
    cfg.validate()
    predictor = world_predictor(cfg)
    clips = evaluation_clips(cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    curves = {k: [] for k in ("true_actions", "shuffled_actions", "copy_last", "tokenizer")}
    ssim_curves = {k: [] for k in curves}
    shown, seconds, fvd_pairs = [], [], []
    for frames, actions, _ in progress(clips, "predict", "clip"):
        target, predicted = predict_clip(cfg, predictor, frames, actions, generator, seconds)
        for name, video in predicted.items():
            curves[name].append(frame_psnr(video, target)[0])
            ssim_curves[name].append(per_frame_ssim(video, target)[0])
        if cfg.i3d:
            fvd_pairs.append((to_uint8(target[0]), to_uint8(predicted["true_actions"][0])))
        if len(shown) < cfg.videos:
            shown.append((target[0], predicted["true_actions"][0], predicted["shuffled_actions"][0]))
    results = summarize(cfg, curves, ssim_curves, len(clips), float(np.median(seconds)))
    if cfg.i3d:
        results["fvd_true_actions"] = world_fvd(cfg, fvd_pairs)
    write_world_outputs(Path(cfg.out), results, shown)
    return results


def predict_clip(cfg: WorldEvalConfig, predictor: Predictor, frames: np.ndarray, actions: np.ndarray,
                 generator: torch.Generator, seconds: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The true horizon (1, 3, N, H, W) and what each predictor makes of it; prediction times go to `seconds`."""
    truth = frames_to_video(frames, cfg.device)  # (1, 3, C+N, H, W)
    encoded = predictor.encode(truth)
    actions = torch.from_numpy(actions)[None]
    runs = {"true_actions": actions, "shuffled_actions": shuffled_in_time(actions, cfg.context, generator)}
    started = time.perf_counter()
    predicted = {name: videos[0] for name, videos in
                 rollouts(predictor, encoded, cfg.context, cfg.horizon, runs, 1, lambda *_: generator).items()}
    seconds.append((time.perf_counter() - started) / len(runs))
    predicted["tokenizer"] = predictor.reconstruct(encoded, cfg.context)  # the autoencoder's ceiling
    predicted["copy_last"] = copy_last(truth, cfg.context, cfg.horizon)
    return truth[:, :, cfg.context:], predicted


def summarize(cfg: WorldEvalConfig, curves: dict, ssim_curves: dict, clips: int, seconds: float) -> dict:
    psnr = {k: torch.stack(v).mean(0) for k, v in curves.items()}
    ssim = {k: torch.stack(v).mean(0) for k, v in ssim_curves.items()}
    return {"clips": clips, "context": cfg.context, "horizon": cfg.horizon,
            "psnr": {k: float(v.mean()) for k, v in psnr.items()},
            "ssim": {k: float(v.mean()) for k, v in ssim.items()},
            "psnr_curve": {k: [round(float(x), 3) for x in v] for k, v in psnr.items()},
            "ssim_curve": {k: [round(float(x), 4) for x in v] for k, v in ssim.items()},
            "seconds_per_frame": seconds / cfg.horizon, "settings": asdict(cfg)}


def world_fvd(cfg: WorldEvalConfig, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """FVD between the true and the predicted horizons (uint8 (N, T, H, W, 3) each)."""
    i3d = load_i3d(cfg.i3d, device=cfg.device)
    real, fake = (np.stack([pair[k] for pair in pairs]) for k in (0, 1))
    return frechet_distance(i3d_features(i3d, real), i3d_features(i3d, fake))


def write_world_outputs(out: Path, results: dict, shown: list) -> None:
    write_json(out / "metrics.json", results)
    horizon = list(range(1, results["horizon"] + 1))
    for metric in ("psnr", "ssim"):
        series = {k.replace("_", " "): (horizon, v) for k, v in results[f"{metric}_curve"].items()}
        line_chart(series, out / f"{metric}_over_horizon.png", f"{metric.upper()} of predicted frames", "frames ahead")
    rows = [torch.cat(triple, dim=-1) for triple in shown]  # truth | true actions | shuffled actions
    save_video(out / "truth_true_shuffled.mp4", video_grid(to_uint8(torch.stack(rows)), columns=1), fps=8)
