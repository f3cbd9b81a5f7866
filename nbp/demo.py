"""`nbp demo`: the whole pipeline on the built-in moving-shapes dataset, in one run folder, within a time budget.

Stages (each skipped when an earlier run in the same folder finished it, unless `fresh`):
  calibrate -> data -> tokenizer (train, evaluate) -> tokens -> lm (train) -> samples per class -> prediction.
The calibration times a few training steps of the tokenizer and the LM on this machine and shortens both trainings
alike when `minutes` would not hold them (an AVX2-only CPU runs them about 3x slower than one with AVX-512); it
prints what it chose. Settings follow the tiny recipes (the per-frame `tiny-frames` tokenizer with an L2 loss,
FSQ levels [8,5,5,5]; an LM with frame blocks) at 32 px and 4 fps, so that 9-frame clips are 144 tokens and the
shapes move far enough between frames for copying the last frame to be a baseline worth beating. Both trainings
are chosen to beat their baselines within half their steps, so that slower CPUs, whose budget cuts the steps,
still do: the tokenizer learns from 36 single frames a batch with a wide decoder, the LM has 2 layers and 16 clips
a batch.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nbp.budget import fit_steps, seconds_per_step, update_step
from nbp.config import ConfigError, from_dict, from_preset
from nbp.data.dataset import VideoDataset
from nbp.data.extract import TokenizeConfig, tokenize
from nbp.data.synthetic import CLASSES, make_dataset
from nbp.eval.prediction import PredictEvalConfig, evaluate_prediction
from nbp.eval.tokenizer import TokenizerEvalConfig, evaluate_tokenizer
from nbp.io import write_json
from nbp.io.plot import line_chart, metric_series
from nbp.models.tokenizer import TokenizerConfig
from nbp.pipelines.sample import SampleConfig, sample_videos
from nbp.runtime import describe_cpu
from nbp.settings.data import ClipConfig
from nbp.settings.training import DemoConfig
from nbp.training.lm import LMSystem, LMTrainConfig, train_lm
from nbp.training.loggers import read_metrics
from nbp.training.losses import hinge_d_loss
from nbp.training.tokenizer import AutoencoderSystem, TokenizerTrainConfig, train_tokenizer

TOKENIZER = "tiny-frames"  # learns colours within the budget; the 3D `tiny` does not (docs/benchmarks.md)


def tokenizer_config(cfg: DemoConfig, folder: Path, steps: int) -> TokenizerTrainConfig:
    return from_dict(TokenizerTrainConfig, dict(
        run=dict(run_dir=str(folder / "tokenizer"), steps=steps, accelerator=accelerator(cfg.device),
                 checkpoint_every=250, seed=cfg.seed),
        model=asdict(demo_tokenizer(cfg)),
        data=dict(root=str(folder / "data"), train="trainlist.txt", val="testlist.txt", resolution=cfg.resolution,
                  fps=cfg.fps, frames=cfg.tokenizer_frames, batch_size=cfg.tokenizer_batch, num_workers=2),
        lr=cfg.tokenizer_lr, disc_lr=1e-3, disc_start=min(steps - 1, round(cfg.gan_from * steps)), l1_weight=0.0, l2_weight=1.0,
        adversarial_weight=0.1 if cfg.gan_from < 1 else 0.0,
        discriminator=dict(channels=16, layers=2, norm_groups=8), ema_decay=0.0))


def demo_tokenizer(cfg: DemoConfig) -> TokenizerConfig:
    return from_preset(TokenizerConfig, TOKENIZER, fsq_levels=list(cfg.fsq_levels), channels=list(cfg.tokenizer_channels))


def lm_config(cfg: DemoConfig, folder: Path, steps: int) -> LMTrainConfig:
    tokenizer = demo_tokenizer(cfg)
    latent = tokenizer.latent_shape(cfg.frames, cfg.resolution, cfg.resolution)
    return from_dict(LMTrainConfig, dict(
        run=dict(run_dir=str(folder / "lm"), steps=steps,
                 accelerator=accelerator(cfg.device), checkpoint_every=200, val_every=100, seed=cfg.seed),
        model=dict(preset="tiny", latent_shape=list(latent), video_vocab=tokenizer.codebook_size, block=cfg.block,
                   hybrid=cfg.hybrid,
                   condition="class", num_classes=len(CLASSES), cond_len=1, n_layer=cfg.lm_layers, n_embd=128),
        train=str(folder / "tokens" / "train"), val=str(folder / "tokens" / "test"),
        batch_size=cfg.lm_batch, lr=cfg.lm_lr, warmup_steps=50, cond_dropout=0.1))


def accelerator(device: str) -> str:
    return "gpu" if device.startswith("cuda") else "cpu"


STAGES = 8
# The share of the budget left for the stages that do not train (data, evaluation, tokens, samples, prediction):
# 13% in the demo's runs. And each training's wall time per step over its bare step as calibrated (Lightning's
# loop, data loading in workers beside the step on 2 cores, checkpoints, validation): measured in the demo's runs
# on AMD EPYC, 2 cores (docs/benchmarks.md).
UNTRAINED_SHARE = 0.15
OVERHEADS = {"tokenizer": 1.9, "lm": 1.2}  # 2026-12-06: 148.7 s / (1000 x 0.0769 s), 117.8 s / (1200 x 0.0839 s)


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
            print(f"[{number}/{STAGES}] {name}: kept from the earlier run", flush=True)
            return self.done[name]
        print(f"[{number}/{STAGES}] {name} ...", flush=True)
        start = time.time()
        result = work()
        self.times[name] = round(time.time() - start, 1)
        self.done[name] = result
        write_json(self.done_file, {"settings": self.settings, "stages": self.done})
        print(f"[{number}/{STAGES}] {name} done in {self.times[name]:.0f} s", flush=True)
        return result


def run_demo(cfg: DemoConfig) -> dict:
    folder = Path(cfg.out)
    stages = Stages(folder, {k: v for k, v in asdict(cfg).items() if k not in ("fresh", "device")}, cfg.fresh)
    data = folder / "data"
    tokenizer_file = folder / "tokenizer" / "tokenizer.safetensors"
    lm_file = folder / "lm" / "lm.safetensors"
    started = time.time()

    plan = stages.run("calibrate", 1, lambda: calibrate_stage(cfg, folder))
    stages.run("data", 2, lambda: data_stage(cfg, folder))
    stages.run("tokenizer", 3, lambda: train_tokenizer_stage(tokenizer_config(cfg, folder, plan["steps"]["tokenizer"])))
    recon = stages.run("tokenizer_eval", 4, lambda: evaluate_tokenizer_stage(cfg, tokenizer_file, data, folder))
    stages.run("tokens", 5, lambda: tokens_stage(cfg, tokenizer_file, data, folder))
    stages.run("lm", 6, lambda: train_lm_stage(lm_config(cfg, folder, plan["steps"]["lm"])))
    samples = stages.run("samples", 7, lambda: samples_stage(cfg, lm_file, tokenizer_file, data, folder))
    prediction = stages.run("prediction", 8, lambda: prediction_stage(cfg, lm_file, tokenizer_file, data, folder))

    curves = loss_curves(folder)
    metrics = {"tokenizer": recon, "lm": lm_summary(folder / "lm"), "samples": samples, "prediction": prediction,
               "plan": plan, "stage_seconds": stages.times, "total_seconds": round(time.time() - started, 1),
               "cpu": describe_cpu(), "loss_curves": [str(p) for p in curves], "settings": asdict(cfg)}
    write_json(folder / "metrics.json", metrics)
    print(summary(folder, metrics))
    return metrics


def clips(cfg: DemoConfig, data: Path, split: str | None) -> ClipConfig:
    return ClipConfig(root=str(data), annotations=f"{split}list.txt" if split else None, frames=cfg.frames,
                      resolution=cfg.resolution, fps=cfg.fps)


def calibrate_stage(cfg: DemoConfig, folder: Path) -> dict:
    """The step counts to train: the wanted ones, shortened alike when the timed steps say they overrun the budget."""
    wanted = {"tokenizer": max(20, round(cfg.tokenizer_steps * cfg.scale)), "lm": max(20, round(cfg.lm_steps * cfg.scale))}
    if cfg.minutes <= 0:
        return {"steps": wanted, "factor": 1.0}
    tok_cfg, lm_cfg = tokenizer_config(cfg, folder, wanted["tokenizer"]), lm_config(cfg, folder, wanted["lm"])
    seconds = {"tokenizer": tokenizer_step_seconds(tok_cfg), "lm": lm_step_seconds(lm_cfg)}
    budget = cfg.minutes * 60 * (1 - UNTRAINED_SHARE)
    plan = fit_steps(wanted, seconds, OVERHEADS, budget)
    print(plan.describe(budget), flush=True)
    if plan.factor < 0.5:
        print(f"  the budget allows under half of the wanted steps: the stages may not beat their baselines; "
              f"raise --minutes (here {cfg.minutes / plan.factor:.0f} would train them all)", flush=True)
    return asdict(plan)


def tokenizer_step_seconds(tok_cfg: TokenizerTrainConfig) -> float:
    """Seconds per tokenizer batch, the discriminator's share (from `disc_start` on) included."""
    torch.manual_seed(0)
    system = AutoencoderSystem(tok_cfg)
    data, discriminator = tok_cfg.data, system.discriminator
    video = torch.rand(data.batch_size, 3, data.frames, data.resolution, data.resolution)
    optimizer = torch.optim.Adam(system.parameters())

    def loss(gan: bool) -> torch.Tensor:
        recon = system.tokenizer(video)
        out = system.generator_losses(video, recon, gan)["loss"]
        return out + hinge_d_loss(discriminator(video), discriminator(recon.detach())) if gan else out

    plain = seconds_per_step(update_step(lambda: loss(False), optimizer))
    if discriminator is None:
        return plain
    gan_share = 1 - tok_cfg.disc_start / tok_cfg.run.steps
    return (1 - gan_share) * plain + gan_share * seconds_per_step(update_step(lambda: loss(True), optimizer))


def lm_step_seconds(lm_cfg: LMTrainConfig) -> float:
    torch.manual_seed(0)
    system = LMSystem(lm_cfg)
    model = lm_cfg.model
    batch = {"tokens": torch.randint(0, model.video_vocab, (lm_cfg.batch_size, int(np.prod(model.latent_shape)))),
             "label": torch.randint(0, model.num_classes, (lm_cfg.batch_size,))}
    optimizer = system.configure_optimizers()["optimizer"]
    return seconds_per_step(update_step(lambda: system.loss(batch, lm_cfg.cond_dropout)["loss"], optimizer))


def data_stage(cfg: DemoConfig, folder: Path) -> list[str]:
    made = [make_dataset(folder / "data", cfg.videos_per_class, cfg.resolution, seed=cfg.seed)]
    if cfg.lm_videos_per_class:
        made.append(make_dataset(folder / "data_lm", cfg.lm_videos_per_class, cfg.resolution, seed=cfg.seed + 1))
    return [str(path) for path in made]


def train_tokenizer_stage(tok_cfg: TokenizerTrainConfig) -> str:
    return str(train_tokenizer(tok_cfg))


def evaluate_tokenizer_stage(cfg: DemoConfig, tokenizer_file: Path, data: Path, folder: Path) -> dict:
    results = evaluate_tokenizer(TokenizerEvalConfig(
        tokenizer=str(tokenizer_file), clips=clips(cfg, data, "test"), out=str(folder / "tokenizer_eval"),
        device=cfg.device, samples=8))
    keys = ("clips", "psnr", "ssim", "usage", "codes_used", "baseline_mean_frame_psnr", "baseline_mean_colour_psnr")
    return {k: results[k] for k in keys}


def tokens_stage(cfg: DemoConfig, tokenizer_file: Path, data: Path, folder: Path) -> dict:
    train = clips(cfg, folder / "data_lm", None) if cfg.lm_videos_per_class else clips(cfg, data, "train")
    counts = {}
    for split, split_clips, windows in (("train", train, cfg.windows), ("test", clips(cfg, data, "test"), 1)):
        counts[split] = tokenize(TokenizeConfig(
            tokenizer=str(tokenizer_file), out=str(folder / "tokens" / split), clips=split_clips,
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
            sampling=cfg.sampling, device=cfg.device,
            seed=cfg.seed + label))
        videos[name] = np.load(out / "samples_uint8.npy")
    return classify_samples(cfg, data, videos)


def classify_samples(cfg: DemoConfig, data: Path, videos: dict[str, np.ndarray]) -> dict:
    """Accuracy of a linear classifier trained on real training clips, on real test clips and on the samples."""
    def real(split: str, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = VideoDataset(data, data / f"{split}list.txt", sequence_length=cfg.frames, resolution=cfg.resolution,
                               fps=cfg.fps)
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
