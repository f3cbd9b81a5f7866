"""`nbp predict-eval`: continue held-out clips from their first frames and score the prediction in pixels.

The LM is given the codes of the first `context_frames` frames (and the clip's class for class-conditional
models), generates the rest greedily (or sampled), and the decoded frames are compared with the truth against two
references on the same frames: copying the last given frame, and the tokenizer's own reconstruction of the
truth (the ceiling the LM's codes can reach).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from nbp.config import ConfigError


@dataclass
class PredictEvalConfig:
    lm: str = "???"
    tokenizer: str = "???"
    root: str = "???"  # the videos
    annotations: str | None = "testlist.txt"  # relative to root; none = every video under root
    resolution: int = 64
    sequence_length: int = 9  # frames per clip (the LM's clip)
    context_frames: int = 5
    greedy: bool = True
    top_k: int | None = None
    seed: int = 0
    max_clips: int = 0  # 0 = all
    shown: int = 8  # clips in the side-by-side video and picture
    out: str = "runs/predict_eval"
    device: str = "cpu"


def given_codes(tokenizer_config, context_frames: int, per_latent_frame: int) -> int:
    """Codes of the latent frames that cover the first `context_frames` frames (causal: 1 + 4k frames each)."""
    return (1 + (context_frames - 1) // tokenizer_config.temporal_factor) * per_latent_frame


def load_clips(cfg: PredictEvalConfig) -> tuple[torch.Tensor, list[int], list[str]]:
    from nbp.data.dataset import VideoDataset

    annotations = Path(cfg.root) / cfg.annotations if cfg.annotations else None
    clips = VideoDataset(cfg.root, annotations, sequence_length=cfg.sequence_length, resolution=cfg.resolution,
                         sampling="centre")
    count = len(clips) if not cfg.max_clips else min(cfg.max_clips, len(clips))
    if count == 0:
        raise ConfigError(f"no clips of {cfg.sequence_length} frames under {cfg.root} ({cfg.annotations}); "
                          f"skipped: {clips.skipped}")
    items = [clips[i] for i in range(count)]
    return torch.stack([it["video"] for it in items]), [int(it["label"]) for it in items], clips.classes


def condition(lm, labels: list[int], classes: list[str]) -> dict:
    from nbp.data.classes import class_text

    if lm.config.condition == "class":
        return {"class_ids": labels}
    if lm.config.condition == "text":
        return {"text": [class_text(classes[i]) for i in labels]}
    return {}


def evaluate_prediction(cfg: PredictEvalConfig) -> dict:
    """PSNR/SSIM of the predicted frames, of copying the last given frame and of the tokenizer's reconstruction;
    writes metrics.json, truth_vs_prediction.png (rows: truth, prediction) and truth_vs_prediction.mp4."""
    from nbp.download import load_magvit2, load_transformer
    from nbp.metrics import psnr, ssim

    if not 0 < cfg.context_frames < cfg.sequence_length:
        raise ConfigError(f"context_frames={cfg.context_frames} must lie in [1, sequence_length={cfg.sequence_length})")
    tokenizer = load_magvit2(cfg.tokenizer, resolution=cfg.resolution, device=cfg.device)
    lm = load_transformer(cfg.lm, device=cfg.device)
    truth, labels, classes = load_clips(cfg)
    truth = truth.to(cfg.device)  # (N, 3, T, H, W)
    with torch.no_grad():
        _, indices = tokenizer.encode(truth, quantize=True)  # (N, T', h, w)
        codes = indices.flatten(1)
        if codes.shape[1] != lm.config.num_tokens:
            raise ConfigError(f"clips of {cfg.sequence_length}x{cfg.resolution}x{cfg.resolution} give latents "
                              f"{list(indices.shape[1:])}; the LM models {lm.config.latent_shape}")
        given = given_codes(tokenizer.config, cfg.context_frames, indices[0, 0].numel())
        generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
        future = lm.generate(codes.shape[1] - given, context=codes[:, :given], greedy=cfg.greedy, top_k=cfg.top_k,
                             generator=generator, **condition(lm, labels, classes))
        ids = torch.cat([codes[:, :given], future], 1).view_as(indices)
        predicted = tokenizer.decode_from_code_indices(ids).float().clamp(0, 1)
        reconstructed = tokenizer.decode_from_code_indices(indices).float().clamp(0, 1)
    start = cfg.context_frames
    copy_last = truth[:, :, start - 1:start].expand_as(truth[:, :, start:])
    scores = {"predicted": predicted[:, :, start:], "copy_last_frame": copy_last,
              "tokenizer_reconstruction": reconstructed[:, :, start:]}
    result = {name: {"psnr": float(psnr(video, truth[:, :, start:]).mean()),
                     "ssim": float(ssim(video, truth[:, :, start:]).mean())} for name, video in scores.items()}
    result["clips"], result["frames"] = len(truth), f"{start} given, {cfg.sequence_length - start} predicted"
    write_outputs(Path(cfg.out), result, truth[:cfg.shown].cpu(), predicted[:cfg.shown].cpu())
    return result


def write_outputs(out: Path, result: dict, truth: torch.Tensor, predicted: torch.Tensor) -> None:
    from nbp.checkpoint import atomic_write
    from nbp.export import contact_sheet, save_video, to_uint8, video_grid

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    rows = torch.stack([truth, predicted], 1).flatten(0, 1)  # truth, prediction, truth, ...
    contact_sheet(to_uint8(rows), out / "truth_vs_prediction.png")
    side_by_side = to_uint8(torch.cat([truth, predicted], dim=-1))
    save_video(out / "truth_vs_prediction.mp4", video_grid(side_by_side, columns=2), fps=4)
