"""`nbp demo`: the whole pipeline on the built-in moving-shapes dataset, in one run folder.

Stages (each skipped when an earlier run in the same folder finished it, unless `fresh`):
  data -> tokenizer (train, evaluate) -> tokens -> lm (train) -> samples per class -> prediction -> report.
Settings follow the tiny recipes (`tokenizer/tiny.yaml`: the per-frame `tiny-frames` tokenizer with an L2 loss;
`scripts/lm_train/tiny.yaml`) with changes that fit the CPU budget: FSQ levels [8,5,5,5] (1,000 codes, so the
LM's output layer is cheap) and a 4-layer LM over 8 windows per video. `scale` multiplies both training lengths.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from nbp.config import ConfigError, from_dict, from_preset
from nbp.data.dataset import ClipConfig, VideoDataset
from nbp.data.extract import TokenizeConfig, tokenize
from nbp.data.synthetic import CLASSES, make_dataset
from nbp.eval.prediction import PredictEvalConfig, evaluate_prediction
from nbp.eval.tokenizer import TokenizerEvalConfig, evaluate_tokenizer
from nbp.generation.sampling import SamplingConfig
from nbp.io import write_json
from nbp.io.plot import line_chart, metric_series
from nbp.models.tokenizer import TokenizerConfig
from nbp.pipelines.sample import SampleConfig, sample_videos
from nbp.training.lm import LMTrainConfig, train_lm
from nbp.training.runner import read_metrics
from nbp.training.tokenizer import TokenizerTrainConfig, train_tokenizer

TOKENIZER = "tiny-frames"  # learns colours within the budget; the 3D `tiny` does not (docs/benchmarks.md)


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    device: str = "cpu"
    scale: float = 1.0  # multiplies both training lengths: 2 trains twice as long
    tokenizer_steps: int = 1500
    lm_steps: int = 1000
    videos_per_class: int = 24
    resolution: int = 64
    frames: int = 9  # 9 latent frames of 8x8 tokens at 64 px (one per frame)
    context_frames: int = 5  # prediction: 5 frames given, the next 4 predicted
    # 1,000 codes instead of 64,000: the tiny LM's output layer and loss then cost little on a CPU
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    windows: int = 8  # training clips per video for the LM
    block: int = 16  # tokens the LM predicts per step: 8 = a row of the 8x8 latent frame, 64 = a frame
    hybrid: bool = False  # the first block token by token (with frame blocks: the first frame)
    samples_per_class: int = 6
    cfg_scale: float = 2.0
    top_k: int = 20
    fresh: bool = False  # rerun every stage instead of keeping finished ones
    seed: int = 0


def tokenizer_config(cfg: DemoConfig, folder: Path) -> TokenizerTrainConfig:
    steps = max(20, round(cfg.tokenizer_steps * cfg.scale))
    return from_dict(TokenizerTrainConfig, dict(
        run=dict(run_dir=str(folder / "tokenizer"), steps=steps, accelerator=accelerator(cfg.device),
                 checkpoint_every=100, seed=cfg.seed),
        model=asdict(from_preset(TokenizerConfig, TOKENIZER, fsq_levels=list(cfg.fsq_levels))),
        data=dict(root=str(folder / "data"), train="trainlist.txt", val="testlist.txt", resolution=cfg.resolution,
                  frames=cfg.frames, batch_size=4, num_workers=2),
        lr=1e-3, disc_lr=1e-3, disc_start=round(0.6 * steps), l1_weight=0.0, l2_weight=1.0,
        discriminator=dict(channels=16, layers=2, norm_groups=8), ema_decay=0.99, sample_every=100))


def lm_config(cfg: DemoConfig, folder: Path) -> LMTrainConfig:
    tokenizer = from_preset(TokenizerConfig, TOKENIZER, fsq_levels=list(cfg.fsq_levels))
    latent = tokenizer.latent_shape(cfg.frames, cfg.resolution, cfg.resolution)
    return from_dict(LMTrainConfig, dict(
        run=dict(run_dir=str(folder / "lm"), steps=max(20, round(cfg.lm_steps * cfg.scale)),
                 accelerator=accelerator(cfg.device), checkpoint_every=200, val_every=100, seed=cfg.seed),
        model=dict(preset="tiny", latent_shape=list(latent), video_vocab=tokenizer.codebook_size, block=cfg.block,
                   hybrid=cfg.hybrid,
                   condition="class", num_classes=len(CLASSES), cond_len=1, n_layer=4, n_embd=128),
        train=str(folder / "tokens" / "train"), val=str(folder / "tokens" / "test"),
        batch_size=8, lr=1e-3, warmup_steps=50, cond_dropout=0.1))


def accelerator(device: str) -> str:
    return "gpu" if device.startswith("cuda") else "cpu"


class Stages:
    """Runs named stages in order, timing each and skipping those whose marker file says they are done."""

    def __init__(self, folder: Path, settings: dict, fresh: bool):
        self.folder, self.settings, self.times = folder, settings, {}
        self.done_file = folder / "stages_done.json"
        if fresh and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        earlier = json.loads(self.done_file.read_text()) if self.done_file.exists() else {}
        if earlier and earlier["settings"] != settings:
            changed = sorted(k for k in settings if earlier["settings"].get(k) != settings[k])
            raise ConfigError(f"{folder} holds a demo run with other settings ({', '.join(changed)}): "
                              "add --fresh to replace it, or choose another --out")
        self.done = earlier.get("stages", {})

    def run(self, name: str, number: int, work):
        if name in self.done:
            print(f"[{number}/7] {name}: kept from the earlier run", flush=True)
            return self.done[name]
        print(f"[{number}/7] {name} ...", flush=True)
        start = time.time()
        result = work()
        self.times[name] = round(time.time() - start, 1)
        self.done[name] = result
        write_json(self.done_file, {"settings": self.settings, "stages": self.done})
        print(f"[{number}/7] {name} done in {self.times[name]:.0f} s", flush=True)
        return result


def quiet_lightning() -> None:
    """A newcomer's first command: keep Lightning's progress bars, drop its banners, tips and deprecation notes."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector",
                 "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*LeafSpec.*", ".*limit_val_batches.*"):
        warnings.filterwarnings("ignore", message=message)


def run_demo(cfg: DemoConfig) -> dict:
    quiet_lightning()
    folder = Path(cfg.out)
    stages = Stages(folder, {k: v for k, v in asdict(cfg).items() if k not in ("fresh", "device")}, cfg.fresh)
    data = folder / "data"
    tok_cfg, lm_cfg = tokenizer_config(cfg, folder), lm_config(cfg, folder)
    tokenizer_file = folder / "tokenizer" / "tokenizer.safetensors"
    lm_file = folder / "lm" / "lm.safetensors"
    started = time.time()

    stages.run("data", 1, lambda: str(make_dataset(data, cfg.videos_per_class, cfg.resolution, seed=cfg.seed)))
    stages.run("tokenizer", 2, lambda: train_tokenizer_stage(tok_cfg))
    recon = stages.run("tokenizer_eval", 3, lambda: evaluate_tokenizer_stage(cfg, tokenizer_file, data, folder))
    stages.run("tokens", 4, lambda: tokens_stage(cfg, tokenizer_file, data, folder))
    stages.run("lm", 5, lambda: train_lm_stage(lm_cfg))
    samples = stages.run("samples", 6, lambda: samples_stage(cfg, lm_file, tokenizer_file, data, folder))
    prediction = stages.run("prediction", 7, lambda: prediction_stage(cfg, lm_file, tokenizer_file, data, folder))

    curves = loss_curves(folder)
    metrics = {"tokenizer": recon, "lm": lm_summary(folder / "lm"), "samples": samples, "prediction": prediction,
               "stage_seconds": stages.times, "total_seconds": round(time.time() - started, 1),
               "loss_curves": [str(p) for p in curves], "settings": asdict(cfg)}
    write_json(folder / "metrics.json", metrics)
    print(summary(folder, metrics))
    return metrics


def clips(cfg: DemoConfig, data: Path, split: str) -> ClipConfig:
    return ClipConfig(root=str(data), annotations=f"{split}list.txt", frames=cfg.frames, resolution=cfg.resolution)


def train_tokenizer_stage(tok_cfg: TokenizerTrainConfig) -> str:
    return str(train_tokenizer(tok_cfg))


def evaluate_tokenizer_stage(cfg: DemoConfig, tokenizer_file: Path, data: Path, folder: Path) -> dict:
    results = evaluate_tokenizer(TokenizerEvalConfig(
        tokenizer=str(tokenizer_file), clips=clips(cfg, data, "test"), out=str(folder / "tokenizer_eval"),
        device=cfg.device, samples=8))
    keys = ("clips", "psnr", "ssim", "usage", "codes_used", "baseline_mean_frame_psnr", "baseline_mean_colour_psnr")
    return {k: results[k] for k in keys}


def tokens_stage(cfg: DemoConfig, tokenizer_file: Path, data: Path, folder: Path) -> dict:
    counts = {}
    for split, windows in (("train", cfg.windows), ("test", 1)):
        counts[split] = tokenize(TokenizeConfig(
            tokenizer=str(tokenizer_file), out=str(folder / "tokens" / split), clips=clips(cfg, data, split),
            windows=windows, device=cfg.device))
    return counts


def train_lm_stage(lm_cfg: LMTrainConfig) -> str:
    return str(train_lm(lm_cfg))


def samples_stage(cfg: DemoConfig, lm_file: Path, tokenizer_file: Path, data: Path, folder: Path) -> dict:
    """Class-conditional samples, one folder and contact sheet per class; scored by a classifier of real clips."""
    videos = {}
    for label, name in enumerate(CLASSES):
        out = folder / "samples" / name
        sample_videos(SampleConfig(
            lm=str(lm_file), tokenizer=str(tokenizer_file), out=str(out), num_samples=cfg.samples_per_class,
            class_ids=[label], frames=cfg.frames, resolution=cfg.resolution,
            sampling=SamplingConfig(cfg_scale=cfg.cfg_scale, top_k=cfg.top_k), device=cfg.device,
            seed=cfg.seed + label))
        videos[name] = np.load(out / "samples_uint8.npy")
    return classify_samples(cfg, data, videos)


def classify_samples(cfg: DemoConfig, data: Path, videos: dict[str, np.ndarray]) -> dict:
    """Accuracy of a linear classifier trained on real training clips, on real test clips and on the samples."""
    def real(split: str, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = VideoDataset(data, data / f"{split}list.txt", sequence_length=cfg.frames, resolution=cfg.resolution)
        clips = [dataset.load_clip(i, draw) for i in range(len(dataset)) for draw in range(draws)]
        return torch.stack([c["video"] for c in clips]), torch.tensor([c["label"] for c in clips])

    train_x, train_y = real("train", 4)
    test_x, test_y = real("test", 1)
    classifier = fit_linear_classifier(features(train_x), train_y, len(CLASSES))
    sampled = torch.cat([torch.from_numpy(v).permute(0, 4, 1, 2, 3).float() / 255 for v in videos.values()])
    labels = torch.cat([torch.full((len(v),), CLASSES.index(name)) for name, v in videos.items()])
    accuracy = {split: float((classifier(features(x)).argmax(1) == y).float().mean())
                for split, x, y in (("real_test", test_x, test_y), ("samples", sampled, labels))}
    return {"classifier_accuracy": accuracy, "samples_per_class": cfg.samples_per_class}


def features(videos: torch.Tensor) -> torch.Tensor:
    """(N, 3, T, H, W) -> (N, D): frames pooled to 8x8, flattened (colour, shape and motion at low detail)."""
    pooled = torch.nn.functional.adaptive_avg_pool3d(videos, (videos.shape[2], 8, 8))  # (N, 3, T, 8, 8)
    return pooled.flatten(1)


def fit_linear_classifier(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 300) -> torch.nn.Module:
    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0) + 1e-3
    linear = torch.nn.Linear(x.shape[1], classes)
    model = torch.nn.Sequential(Standardize(mean, std), linear)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


class Standardize(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def prediction_stage(cfg: DemoConfig, lm_file: Path, tokenizer_file: Path, data: Path, folder: Path) -> dict:
    """Greedy continuation of held-out clips from their first `context_frames`, against copying the last one."""
    return evaluate_prediction(PredictEvalConfig(
        lm=str(lm_file), tokenizer=str(tokenizer_file), clips=clips(cfg, data, "test"),
        context_frames=cfg.context_frames, out=str(folder / "prediction"), device=cfg.device))


def loss_curves(folder: Path) -> list[Path]:
    tokenizer_rows, lm_rows = read_metrics(folder / "tokenizer"), read_metrics(folder / "lm")
    return [
        line_chart({"reconstruction (MSE)": metric_series(tokenizer_rows, "train/rec")},
                   folder / "tokenizer_loss.png", "tokenizer training"),
        line_chart({"train loss": metric_series(lm_rows, "train/loss"), "val loss": metric_series(lm_rows, "val/loss")},
                   folder / "lm_loss.png", "LM training (cross-entropy, nats/token)"),
    ]


def lm_summary(run_dir: Path) -> dict:
    rows = read_metrics(run_dir)
    last = {key: metric_series(rows, key)[1][-1:] for key in ("train/loss", "val/loss", "val/acc1", "val/acc5")}
    return {key: values[0] for key, values in last.items() if values}


def summary(folder: Path, metrics: dict) -> str:
    tok, pred, samples = metrics["tokenizer"], metrics["prediction"], metrics["samples"]["classifier_accuracy"]
    lm = metrics["lm"]
    lines = [
        f"nbp demo finished in {metrics['total_seconds'] / 60:.1f} min; everything is under {folder}/",
        f"  tokenizer: PSNR {tok['psnr']:.2f} dB, SSIM {tok['ssim']:.3f}, {tok['codes_used']} codes used "
        f"(baselines: mean frame {tok['baseline_mean_frame_psnr']:.2f} dB, "
        f"mean colour {tok['baseline_mean_colour_psnr']:.2f} dB)",
        f"  LM: val loss {lm.get('val/loss', float('nan')):.3f}, val top-1 {lm.get('val/acc1', float('nan')):.3f}",
        f"  prediction ({pred['frames']}): PSNR {pred['predicted']['psnr']:.2f} dB vs copying the last frame "
        f"{pred['copy_last_frame']['psnr']:.2f} dB (tokenizer ceiling {pred['tokenizer_reconstruction']['psnr']:.2f})",
        f"  class-conditional samples recognised by a classifier of real clips: {samples['samples']:.0%} "
        f"(real test clips: {samples['real_test']:.0%})",
        "  files: samples/<Class>/contact_sheet.png and sample_*.mp4, prediction/truth_vs_prediction.mp4, "
        "tokenizer_eval/reconstructions.png, tokenizer_loss.png, lm_loss.png, metrics.json",
    ]
    return "\n".join(lines)
