"""`nbp predict-eval`: continue held-out clips from their first frames and score the prediction in pixels.

The LM is given the codes of the first `context_frames` frames (and the clip's class for class-conditional
models), generates the rest greedily (or sampled), and the decoded frames are compared with the truth against two
references on the same frames: copying the last given frame, and the tokenizer's own reconstruction of the
truth (the ceiling the LM's codes can reach).
"""
from __future__ import annotations

from pathlib import Path

import torch

from nbp.config import ConfigError
from nbp.data.classes import class_text
from nbp.eval.rollout import TokenPredictor, copy_last, rollouts
from nbp.io import write_json
from nbp.io.media import contact_sheet, save_video, to_uint8, video_grid
from nbp.metrics.video import UINT8_PSNR, psnr, ssim
from nbp.pipelines.tokens import NBPPipeline
from nbp.settings.eval import PredictEvalConfig


def load_clips(cfg: PredictEvalConfig) -> tuple[torch.Tensor, list[int], list[str]]:
    clips = cfg.clips.dataset("centre")
    count = len(clips) if not cfg.max_clips else min(cfg.max_clips, len(clips))
    items = [clips[i] for i in range(count)]
    return torch.stack([it["video"] for it in items]), [int(it["label"]) for it in items], clips.classes


def condition(lm, labels: list[int], classes: list[str]) -> dict:
    if lm.config.condition == "class":
        return {"class_ids": labels}
    if lm.config.condition == "text":
        return {"text": [class_text(classes[i]) for i in labels]}
    return {}


def evaluate_prediction(cfg: PredictEvalConfig) -> dict:
    """PSNR/SSIM of the predicted frames, of copying the last given frame and of the tokenizer's reconstruction;
    writes metrics.json, truth_vs_prediction.png (rows: truth, prediction) and truth_vs_prediction.mp4."""
    frames = cfg.clips.frames
    if not 0 < cfg.context_frames < frames:
        raise ConfigError(f"context_frames={cfg.context_frames} must lie in [1, clips.frames={frames})")
    pipeline = NBPPipeline.from_files(cfg.tokenizer, cfg.lm, cfg.clips.resolution, cfg.device)
    truth, labels, classes = load_clips(cfg)
    truth = truth.to(cfg.device)  # (N, 3, T, H, W)
    predictor = TokenPredictor(pipeline, cfg.sampling)
    codes = predictor.encode(truth)
    if codes.shape[1] != pipeline.lm.config.num_tokens:
        raise ConfigError(f"clips of {frames}x{cfg.clips.resolution}x{cfg.clips.resolution} give latents "
                          f"{list(pipeline.latent_shape(frames))}; the LM models {pipeline.lm.config.latent_shape}")
    start = cfg.context_frames
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    runs = {"predicted": None}
    predicted = rollouts(predictor, codes, start, frames - start, runs, 1, lambda *_: generator,
                         **condition(pipeline.lm, labels, classes))["predicted"][0]
    reconstructed = predictor.reconstruct(codes, 0)
    future = truth[:, :, start:]
    scores = {"predicted": predicted, "copy_last_frame": copy_last(truth, start, frames - start),
              "tokenizer_reconstruction": reconstructed[:, :, start:]}
    # capped at 8-bit rounding noise: a static clip copied is otherwise an inf that no mean survives
    result = {name: {"psnr": float(psnr(video, future, max_db=UINT8_PSNR).mean()), "ssim": float(ssim(video, future).mean())}
              for name, video in scores.items()}
    result["clips"], result["frames"] = len(truth), f"{start} given, {frames - start} predicted"
    shown = torch.cat([reconstructed[:, :, :start], predicted], dim=2)[:cfg.shown]  # the given frames as decoded
    write_outputs(Path(cfg.out), result, truth[:cfg.shown].cpu(), shown.cpu())
    return result


def write_outputs(out: Path, result: dict, truth: torch.Tensor, predicted: torch.Tensor) -> None:
    write_json(out / "metrics.json", result)
    rows = torch.stack([truth, predicted], 1).flatten(0, 1)  # truth, prediction, truth, ...
    contact_sheet(to_uint8(rows), out / "truth_vs_prediction.png")
    side_by_side = to_uint8(torch.cat([truth, predicted], dim=-1))
    save_video(out / "truth_vs_prediction.mp4", video_grid(side_by_side, columns=2), fps=4)
