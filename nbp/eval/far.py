"""`nbp far-eval`: FAR's prediction protocols (official-formats.md §5.11) on videos or episodes.

Each evaluation video is continued `trajectories` times from its first `context` frames; on the predicted frames
PSNR and SSIM are averaged over frames, the best trajectory is kept (MCVD/ExtDM's best of N), and the videos are
averaged. Copying the last context frame is the baseline. Named protocols fix the counts:

    ucf-short       4 -> 12 frames, 100 trajectories (FAR-B on UCF-101, 64 px)
    bair-short      2 -> 28 frames, 100 trajectories (FAR-B on BAIR)
    dmlab-long      144 -> 156 frames, 1 trajectory, action guidance 1.5 (TECO's metrics protocol)
    minecraft-long  144 -> 156 frames, 1 trajectory, action guidance 1.5
    dmlab-long-fvd      36 -> 264 frames, action-free (cfg_scale -1): TECO's FVD protocol
    minecraft-long-fvd  36 -> 264 frames, action guidance 1.5
LPIPS (AlexNet, the minimum over trajectories) is reported when its weight files are found (`perceptual.*`), FVD
(per trajectory, averaged) when `i3d` is given; by default FVD sees the predicted frames only. FAR's own metric
pipeline is lossy; its quirks are options, off by default: `uint8_truncation` (x * 255 cast, not rounded),
`mp4_roundtrip` (frames written to mp4 and read back before scoring), `fvd_with_context` (FVD over all frames, the
context as the DC-AE reconstructs it) and `lpips_unnormalized` ([0, 1] images fed where LPIPS expects [-1, 1]).
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nbp.checkpoint.perceptual import load_perceptual
from nbp.config import InputError, with_protocol
from nbp.data.episodes import list_episodes, load_episode
from nbp.data.video import VIDEO_EXTENSIONS, frames_to_video, probe, read_frames
from nbp.eval.rollout import FARPredictor, rollouts
from nbp.io import write_json
from nbp.io.media import save_video
from nbp.io.plot import line_chart
from nbp.io.progress import progress
from nbp.metrics import frechet_distance, i3d_features, load_i3d
from nbp.metrics.video import UINT8_PSNR, per_frame_psnr, per_frame_ssim
from nbp.pipelines.far import FARPipeline
from nbp.seeds import generator_for
from nbp.settings.eval import FAREvalConfig


def evaluation_items(cfg: FAREvalConfig) -> list[tuple[np.ndarray, np.ndarray | None, str]]:
    """(frames uint8 (context + horizon, H, W, 3), actions or None, name) of the first videos of `data`."""
    folder, needed = Path(cfg.data), cfg.context + cfg.horizon
    episodes = list_episodes(folder)
    if episodes:
        items = [(*load_episode(p, cfg.resolution), p.name) for p in episodes]
    else:
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        items = [(read_frames(p, list(range(min(needed, probe(p).frames))), cfg.resolution), None, p.name)
                 for p in paths]
    usable = [(v[:needed], None if a is None else a[:needed], n) for v, a, n in items if len(v) >= needed]
    if not usable:
        raise InputError(f"no video or episode in {folder} has {needed} frames ({cfg.context} + {cfg.horizon})")
    return usable[: cfg.max_videos]


def to_scored_uint8(video: torch.Tensor, cfg: FAREvalConfig) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] -> uint8 (T, H, W, 3) as the protocol scores it."""
    scaled = video.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255
    frames = scaled.astype(np.uint8) if cfg.uint8_truncation else np.round(scaled).astype(np.uint8)
    if not cfg.mp4_roundtrip:
        return frames
    with tempfile.TemporaryDirectory() as tmp:
        save_video(Path(tmp) / "clip.mp4", frames, fps=8)
        return read_frames(Path(tmp) / "clip.mp4", list(range(len(frames))), frames.shape[1])


def frame_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame PSNR and SSIM (T,) of uint8 (T, H, W, 3) frames."""
    a, b = (torch.from_numpy(x).permute(3, 0, 1, 2)[None].double() / 255 for x in (predicted, truth))
    return per_frame_psnr(a, b, max_db=UINT8_PSNR)[0], per_frame_ssim(a, b)[0]


class Scores:
    """Per-video scores over trajectories: best PSNR/SSIM (max), best LPIPS (min); FVD per trajectory."""

    def __init__(self, cfg: FAREvalConfig):
        self.cfg = cfg
        self.lpips = load_perceptual(cfg.perceptual)
        self.i3d = load_i3d(cfg.i3d, device=cfg.device) if cfg.i3d else None
        self.best = {"psnr": [], "ssim": [], "lpips": []}
        self.copy = {"psnr": [], "ssim": []}
        self.curves, self.real_features = [], []
        self.fake_features = [[] for _ in range(cfg.trajectories)]

    def add(self, frames: np.ndarray, videos: list[np.ndarray]) -> None:
        """The truth (context + horizon, H, W, 3) and each trajectory's scored frames (same shape) of one video."""
        c, truth = self.cfg.context, frames[self.cfg.context:]
        scores = [frame_scores(v[c:], truth) for v in videos]
        psnr, ssim = torch.stack([s[0] for s in scores]), torch.stack([s[1] for s in scores])  # (N, horizon)
        self.best["psnr"].append(psnr.mean(1).max())
        self.best["ssim"].append(ssim.mean(1).max())
        self.curves.append(psnr[psnr.mean(1).argmax()])  # the best trajectory's PSNR over the horizon
        copy = frame_scores(np.repeat(frames[c - 1:c], self.cfg.horizon, 0), truth)
        self.copy["psnr"].append(copy[0].mean())
        self.copy["ssim"].append(copy[1].mean())
        if self.lpips is not None:
            self.best["lpips"].append(torch.stack([self.lpips_of(v[c:], truth) for v in videos]).min())
        if self.i3d is not None:
            start = 0 if self.cfg.fvd_with_context else c
            self.real_features.append(self.features(frames[start:]))
            for n, video in enumerate(videos):
                self.fake_features[n].append(self.features(video[start:]))

    def lpips_of(self, predicted: np.ndarray, truth: np.ndarray) -> torch.Tensor:
        """Mean LPIPS over frames; FAR's quirk feeds [0, 1] images where LPIPS expects [-1, 1]."""
        a, b = (torch.from_numpy(x).permute(3, 0, 1, 2)[None].float() / 255 for x in (predicted, truth))
        if self.cfg.lpips_unnormalized:
            a, b = (a + 1) / 2, (b + 1) / 2  # LPIPS.video maps v -> 2v - 1: this hands it v itself
        with torch.no_grad():
            return self.lpips.video(a, b)[0]

    def features(self, video: np.ndarray) -> np.ndarray:
        return i3d_features(self.i3d, video[None], device=self.cfg.device, progress=False)

    def summary(self) -> dict:
        mean = lambda values: float(torch.stack(values).mean())
        out = {"predicted": {k: mean(v) for k, v in self.best.items() if v},
               "copy_last_frame": {k: mean(v) for k, v in self.copy.items()},
               "psnr_curve": [round(float(x), 3) for x in torch.stack(self.curves).mean(0)]}
        if self.i3d is not None:
            real = np.concatenate(self.real_features)
            per_trajectory = [frechet_distance(real, np.concatenate(f)) for f in self.fake_features]
            out["predicted"]["fvd"] = float(np.mean(per_trajectory))  # FAR: FVD per trajectory, averaged
        return out


def evaluate_far(cfg: FAREvalConfig) -> dict:
    cfg = with_protocol(cfg)
    fields = {} if cfg.short_window is None else {"short_window": cfg.short_window}
    pipeline = FARPipeline.from_files(cfg.dcae, cfg.far, cfg.device, resolution=cfg.resolution, **fields)
    items, scores = evaluation_items(cfg), Scores(cfg)
    for index, (frames, actions, _) in enumerate(progress(items, "far-eval", "video")):
        scores.add(frames, trajectories(cfg, pipeline, frames, actions, index))
    result = {"videos": len(items), "protocol": cfg.protocol, "context": cfg.context, "horizon": cfg.horizon,
              "trajectories": cfg.trajectories, **scores.summary(), "settings": asdict(cfg)}
    out = Path(cfg.out)
    write_json(out / "metrics.json", result)
    line_chart({"best trajectory": (list(range(1, cfg.horizon + 1)), result["psnr_curve"])},
               out / "psnr_over_horizon.png", "PSNR of predicted frames", "frames ahead")
    return result


def trajectories(cfg: FAREvalConfig, pipeline: FARPipeline, frames: np.ndarray, actions: np.ndarray | None,
                 index: int) -> list[np.ndarray]:
    """`cfg.trajectories` continuations of one video as scored (uint8 (context + horizon, H, W, 3): the context as
    the DC-AE reconstructs it, then the predictions), each with its own seed."""
    predictor = FARPredictor(pipeline, cfg.sampling)
    encoded = predictor.encode(frames_to_video(frames[: cfg.context]))
    conditioned = actions is not None and pipeline.far.config.condition == "action"
    runs = {"predicted": torch.from_numpy(actions)[None] if conditioned else None}
    videos = rollouts(predictor, encoded, cfg.context, cfg.horizon, runs, cfg.trajectories,
                      lambda _, n: generator_for(cfg.seed, index, n))["predicted"]
    given = pipeline.decode(encoded)
    return [to_scored_uint8(torch.cat([given, video], dim=2)[0].transpose(0, 1).cpu(), cfg) for video in videos]
