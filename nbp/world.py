"""World-model pipeline (FAR's tasks): episodes -> per-frame tokens -> action-conditioned LM -> long predictions.

- `tokenize_episodes`: every frame of every episode through a per-frame tokenizer, stored once
  (`tokens.npy` uint16 (frames, h*w), `actions.npy`, `episodes.json`), written atomically.
- `EpisodeTokens`: training windows of a fixed number of frames from those episodes (what `nbp train-lm` reads
  when its `train` folder holds episodes).
- `evaluate_world` (`nbp world-eval`): TECO-style evaluation. From each test episode, C context frames are
  given and N predicted; per-step PSNR/SSIM curves over the horizon against the truth, for the model given the
  true actions, the same model given the actions shuffled in time, and copying the last context frame; the
  tokenizer's own reconstruction bounds what any prediction can reach. Writes curves (PNG), a side-by-side video,
  and metrics.json; FVD when an I3D file is given.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from nbp.checkpoint import atomic_write
from nbp.data.episodes import list_episodes, load_episode, save_npy
from nbp.download import load_magvit2, load_transformer
from nbp.export import save_video, to_uint8, video_grid
from nbp.metrics.video import per_frame_ssim
from nbp.models.world import predict_frames
from nbp.plot import line_chart

log = logging.getLogger(__name__)
EPISODES = "episodes.json"


# --- tokens --------------------------------------------------------------------------------------------

def frames_to_video(frames: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (1, 3, T, H, W) in [0, 1]."""
    return torch.from_numpy(frames).to(device).permute(3, 0, 1, 2)[None].float() / 255


def encode_frames(tokenizer, frames: np.ndarray, chunk: int = 64, device="cpu") -> np.ndarray:
    """Per-frame tokenizer codes (T, h*w) of uint8 frames (T, H, W, 3), `chunk` frames per call."""
    out = []
    for start in range(0, len(frames), chunk):
        with torch.no_grad():
            _, ids = tokenizer.encode(frames_to_video(frames[start:start + chunk], device))  # (1, t, h, w)
        out.append(ids[0].flatten(1).cpu().numpy())
    return np.concatenate(out)


def require_per_frame(tokenizer) -> None:
    if tokenizer.config.temporal_factor != 1:
        raise ValueError(f"world models need one latent frame per frame; this tokenizer merges "
                         f"{tokenizer.config.temporal_factor} frames (use a preset like tiny-frames)")


def tokenize_episodes(tokenizer_path: str, folder: str, out: str, resolution: int = 64, min_frames: int = 2,
                      device: str = "cpu") -> dict:
    """Tokenize every episode of `folder` into `out`; episodes shorter than `min_frames` are skipped and counted."""
    tokenizer = load_magvit2(tokenizer_path, resolution=resolution, device=device)
    require_per_frame(tokenizer)
    tokens, actions, episodes, skipped = [], [], [], {}
    start = 0
    for path in tqdm(list_episodes(folder), desc="tokenize episodes", unit="episode"):
        try:
            frames, acts = load_episode(path, resolution)
        except ValueError as error:
            log.warning("skipped %s", error)
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            continue
        if len(frames) < min_frames:
            skipped["short"] = skipped.get("short", 0) + 1
            continue
        tokens.append(encode_frames(tokenizer, frames, device=device))
        actions.append(acts)
        episodes.append({"path": str(path), "start": start, "frames": len(frames)})
        start += len(frames)
    if not episodes:
        raise ValueError(f"no usable episode in {folder} (skipped: {skipped})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "tokens.npy", lambda tmp: save_npy(tmp, np.concatenate(tokens).astype(np.uint16)))
    atomic_write(out / "actions.npy", lambda tmp: save_npy(tmp, np.concatenate(actions)))
    _, h, w = tokenizer.config.latent_shape(1, resolution, resolution)
    meta = {"episodes": episodes, "vocab_size": tokenizer.codebook_size, "frame_shape": [h, w],
            "resolution": resolution, "tokenizer": str(tokenizer_path), "skipped": skipped}
    atomic_write(out / EPISODES, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    return {"episodes": len(episodes), "frames": start, "skipped": skipped}


def is_episode_tokens(folder: str | Path) -> bool:
    return (Path(folder) / EPISODES).is_file()


class EpisodeTokens(Dataset):
    """Windows of `frames` consecutive latent frames (every `stride` frames) of tokenized episodes:
    items {"tokens": int64 (frames*h*w,), "actions": int64 (frames,), "label": 0}."""

    def __init__(self, folder: str | Path, frames: int, stride: int | None = None):
        self.folder = Path(folder)
        if not is_episode_tokens(self.folder):
            raise FileNotFoundError(f"{self.folder} holds no tokenized episodes ({EPISODES}); make them with "
                                    "`nbp tokenize-episodes`")
        self.meta = json.loads((self.folder / EPISODES).read_text())
        self.tokens = np.load(self.folder / "tokens.npy", mmap_mode="r")
        self.actions = np.load(self.folder / "actions.npy")
        self.frames, stride = frames, stride or max(1, frames // 2)
        self.starts = [e["start"] + s for e in self.meta["episodes"]
                       for s in range(0, e["frames"] - frames + 1, stride)]
        if not self.starts:
            raise ValueError(f"no episode in {self.folder} has {frames} frames")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.frames, *self.meta["frame_shape"])

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def classes(self) -> list[str]:
        return []

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict:
        s = self.starts[index]
        tokens = torch.from_numpy(self.tokens[s:s + self.frames].astype(np.int64)).flatten()
        return {"tokens": tokens, "actions": torch.from_numpy(self.actions[s:s + self.frames]), "label": 0}


# --- evaluation ----------------------------------------------------------------------------------------

@dataclass
class WorldEvalConfig:
    lm: str = "???"  # world model (.safetensors from `nbp train-lm`)
    tokenizer: str = "???"  # its per-frame tokenizer
    episodes: str = "???"  # folder of test episodes (video + actions, or .npz)
    out: str = "runs/world_eval"
    resolution: int = 64
    context: int = 16  # C frames given
    horizon: int = 48  # N frames predicted
    max_episodes: int | None = None
    starts_per_episode: int = 1  # evenly spaced start frames in each episode
    cfg_scale: float | None = None  # action guidance (FAR: 1.5)
    greedy: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False
    i3d: str | None = None  # i3d_pretrained_400.pt for FVD of the predicted frames
    videos: int = 4  # rows of the side-by-side video


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
        raise ValueError(f"no episode in {cfg.episodes} has {need} frames (context {cfg.context} + horizon {cfg.horizon})")
    return clips


def shuffled_in_time(actions: torch.Tensor, first: int, generator: torch.Generator) -> torch.Tensor:
    """Each row's actions from `first` on, permuted in time (same actions, wrong moments)."""
    out = actions.clone()
    for row in out:
        tail = row[first:]
        row[first:] = tail[torch.randperm(len(tail), generator=generator)]
    return out


def evaluate_world(cfg: WorldEvalConfig) -> dict:
    dtype = torch.bfloat16 if cfg.bf16 else None
    lm = load_transformer(cfg.lm, device=cfg.device, dtype=dtype)
    tokenizer = load_magvit2(cfg.tokenizer, resolution=cfg.resolution, device=cfg.device)
    require_per_frame(tokenizer)
    clips = evaluation_clips(cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    curves = {k: [] for k in ("true_actions", "shuffled_actions", "copy_last", "tokenizer")}
    ssim_curves = {k: [] for k in curves}
    shown, seconds, fvd_pairs = [], [], []
    sampling = dict(greedy=cfg.greedy, temperature=cfg.temperature, top_k=cfg.top_k, cfg_scale=cfg.cfg_scale)
    for frames, actions, _ in tqdm(clips, desc="predict", unit="clip"):
        truth = frames_to_video(frames, cfg.device)  # (1, 3, C+N, H, W)
        codes = torch.from_numpy(encode_frames(tokenizer, frames, device=cfg.device))[None]  # (1, C+N, h*w)
        actions = torch.from_numpy(actions)[None]
        runs = {"true_actions": actions, "shuffled_actions": shuffled_in_time(actions, cfg.context, generator)}
        predicted = {}
        for name, acts in runs.items():
            started = time.perf_counter()
            ids = predict_frames(lm, codes[:, :cfg.context].to(cfg.device), cfg.horizon,
                                 actions=acts.to(cfg.device), generator=generator, **sampling)
            seconds.append(time.perf_counter() - started)
            predicted[name] = decode_codes(tokenizer, ids)
        predicted["tokenizer"] = decode_codes(tokenizer, codes[:, cfg.context:].to(cfg.device))
        target = truth[:, :, cfg.context:]
        predicted["copy_last"] = truth[:, :, cfg.context - 1:cfg.context].expand_as(target)
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


def decode_codes(tokenizer, codes: torch.Tensor) -> torch.Tensor:
    """(B, T, h*w) codes -> (B, 3, T, H, W) in [0, 1]."""
    side = int(codes.shape[-1] ** 0.5)
    with torch.no_grad():
        return tokenizer.decode_from_code_indices(codes.reshape(len(codes), -1, side, side)).float().clamp(0, 1)


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
    from nbp.metrics import frechet_distance, i3d_features, load_i3d

    i3d = load_i3d(cfg.i3d, device=cfg.device)
    real, fake = (np.stack([pair[k] for pair in pairs]) for k in (0, 1))
    return frechet_distance(i3d_features(i3d, real), i3d_features(i3d, fake))


def write_world_outputs(out: Path, results: dict, shown: list) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1)))
    horizon = list(range(1, results["horizon"] + 1))
    for metric in ("psnr", "ssim"):
        series = {k.replace("_", " "): (horizon, v) for k, v in results[f"{metric}_curve"].items()}
        line_chart(series, out / f"{metric}_over_horizon.png", f"{metric.upper()} of predicted frames", "frames ahead")
    rows = [torch.cat(triple, dim=-1) for triple in shown]  # truth | true actions | shuffled actions
    save_video(out / "truth_true_shuffled.mp4", video_grid(to_uint8(torch.stack(rows)), columns=1), fps=8)
