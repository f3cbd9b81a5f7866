"""`nbp world-drift`: how a played world model holds up over a long session, either family.

A `WorldSession` starts from an episode's first `context` frames and plays `steps` steps, one frame at a time as
`nbp play` does, with the episode's own actions replayed while it has them (then the recorder's movement policy).
Per step:
- PSNR/SSIM against the episode's frame, where it has one, beside copying the last context frame;
- whether the frames stay game frames, on two statistics measured against the reference episodes' frames:
  `palette`, the total-variation distance of the frame's colour histogram (4 levels a channel) to its nearest
  reference frame's (0: a colour mix the game shows; a true frame scores near 0, noise or washed-out colour high),
  and `sharpness`, the frame's mean absolute Laplacian over the reference frames' (1: as sharp as the game; below:
  blurring, above: noise).
Writes metrics.json (curves, and means over 1-10, 11-100, 101-1000 steps), psnr_over_steps.png,
game_frame_over_steps.png and strip.png (the truth and the session at steps 0, 1, 10, 50, 100, 250, 500, 1000).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nbp.config import InputError
from nbp.data.episodes import list_episodes, load_episode, movement_policy
from nbp.io import write_json
from nbp.io.media import contact_sheet
from nbp.io.plot import line_chart
from nbp.io.progress import progress
from nbp.metrics.video import UINT8_PSNR, per_frame_psnr, per_frame_ssim
from nbp.pipelines.far import FARPipeline
from nbp.pipelines.session import WorldSession, names_far
from nbp.settings.eval import DriftConfig

SPANS = ((1, 10), (11, 100), (101, 1000))  # step ranges the summary averages over
SHOWN = (0, 1, 10, 50, 100, 250, 500, 1000)  # steps in strip.png
LEVELS = 4  # colour levels per channel of the palette histogram
BANK = 2048  # most reference frames the statistics compare against


def palette(frames: torch.Tensor) -> torch.Tensor:
    """Colour histograms (N, LEVELS^3) of uint8 frames (N, H, W, 3), each summing to 1."""
    levels = frames.long() * LEVELS // 256  # (N, H, W, 3)
    bins = (levels[..., 0] * LEVELS + levels[..., 1]) * LEVELS + levels[..., 2]  # (N, H, W)
    counts = F.one_hot(bins.flatten(1), LEVELS ** 3).sum(1).float()
    return counts / counts.sum(1, keepdim=True)


def detail(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute Laplacian (N,) of uint8 frames (N, H, W, 3), on grey levels in [0, 1]."""
    grey = frames.float().mean(-1, keepdim=True).permute(0, 3, 1, 2) / 255  # (N, 1, H, W)
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return F.conv2d(grey, kernel).abs().mean((1, 2, 3))


@dataclass
class GameFrames:
    """The reference frames' palettes and mean detail, which played frames are measured against."""
    palettes: torch.Tensor  # (N, LEVELS^3)
    detail: float

    @classmethod
    def of(cls, paths: list[Path], resolution: int, seed: int) -> GameFrames:
        if not paths:
            raise InputError("no reference episodes: give reference=FOLDER, or more than one episode")
        frames = torch.from_numpy(np.concatenate([load_episode(p, resolution)[0] for p in paths]))
        chosen = torch.randperm(len(frames), generator=torch.Generator().manual_seed(seed))[:BANK]
        return cls(palette(frames[chosen]), float(detail(frames[chosen]).mean()))

    def palette_distance(self, frames: torch.Tensor) -> torch.Tensor:
        """(N,): half the L1 distance of each frame's palette to its nearest reference palette."""
        return torch.cdist(palette(frames), self.palettes, p=1).min(1).values / 2

    def sharpness(self, frames: torch.Tensor) -> torch.Tensor:
        return detail(frames) / self.detail


def replayed_actions(actions: np.ndarray, first: int, steps: int, seed: int) -> list[int]:
    """The episode's actions from `first` on, then the movement policy's, `steps` in all."""
    chosen = [int(a) for a in actions[first:first + steps]]
    rng = np.random.default_rng(seed)
    while len(chosen) < steps:
        chosen.append(movement_policy(rng, chosen[-1] if chosen else 0))
    return chosen


def play_episode(session: WorldSession, frames: np.ndarray, actions: np.ndarray, cfg: DriftConfig) -> np.ndarray:
    """The session's frames (steps + 1, H, W, 3) uint8: the last context frame, then every step."""
    session.reset(frames[:cfg.context], actions[:cfg.context])
    for action in progress(replayed_actions(actions, cfg.context, cfg.steps, cfg.seed), "world drift", "step"):
        session.step(action)
    return np.stack(session.frames)


def curves(played: np.ndarray, truth: np.ndarray, game: GameFrames) -> dict[str, np.ndarray]:
    """Per step 1..: PSNR/SSIM against the truth (NaN past it), copy-last's, and the game-frame statistics."""
    steps, known = len(played) - 1, len(truth) - 1
    out = {name: np.full(steps, np.nan) for name in ("psnr", "ssim", "copy_last_psnr", "truth_palette")}
    as_video = lambda x: torch.from_numpy(x).permute(3, 0, 1, 2).float() / 255  # (3, T, H, W)
    if known:
        model, real = as_video(played[1:known + 1]), as_video(truth[1:])
        last = as_video(np.repeat(truth[:1], known, axis=0))
        out["psnr"][:known] = per_frame_psnr(model, real, max_db=UINT8_PSNR).numpy()
        out["ssim"][:known] = per_frame_ssim(model, real).numpy()
        out["copy_last_psnr"][:known] = per_frame_psnr(last, real, max_db=UINT8_PSNR).numpy()
        out["truth_palette"][:known] = game.palette_distance(torch.from_numpy(truth[1:])).numpy()
    out["palette"] = game.palette_distance(torch.from_numpy(played[1:])).numpy()
    out["sharpness"] = game.sharpness(torch.from_numpy(played[1:])).numpy()
    return out


def span_means(curve: np.ndarray) -> dict[str, float | None]:
    means = {f"{first}-{last}": float(finite_mean(curve[first - 1:last])) for first, last in SPANS}
    return {span: None if np.isnan(value) else value for span, value in means.items()}


def evaluate_drift(cfg: DriftConfig) -> dict:
    cfg.validate()
    far = names_far(cfg.model)
    session = WorldSession.from_files(cfg.model, cfg.autoencoder, device=cfg.device, seed=cfg.seed,
                                      short_window=cfg.short_window, sampling=cfg.far_sampling if far else cfg.sampling)
    paths = list_episodes(cfg.episodes)[:cfg.max_episodes]
    if not paths:
        raise InputError(f"no episodes in {cfg.episodes}")
    out, all_curves, strips = Path(cfg.out), [], []
    for path in paths:
        frames, actions = load_episode(path, session.resolution)
        if len(frames) <= cfg.context:
            raise InputError(f"{path} has {len(frames)} frames: no more than context={cfg.context}")
        others = list_episodes(cfg.reference) if cfg.reference else [p for p in list_episodes(cfg.episodes) if p != path]
        game = GameFrames.of(others, session.resolution, cfg.seed)
        played = play_episode(session, frames, actions, cfg)
        truth = frames[cfg.context - 1:cfg.context + cfg.steps]
        all_curves.append(curves(played, truth, game))
        strips.append((truth, played))
    results = summarize(cfg, all_curves, len(paths), session)
    write_outputs(out, results, strips, session.resolution)
    return results


def finite_mean(rows: np.ndarray, axis: int = 0) -> np.ndarray:
    """The mean over `axis` of the finite values (NaN where there are none)."""
    finite = np.isfinite(rows)
    counts = finite.sum(axis)
    return np.where(counts > 0, np.where(finite, rows, 0).sum(axis) / np.maximum(counts, 1), np.nan)


def summarize(cfg: DriftConfig, per_episode: list[dict], episodes: int, session: WorldSession) -> dict:
    mean = {k: finite_mean(np.stack([c[k] for c in per_episode])) for k in per_episode[0]}
    return {"episodes": episodes, "context": cfg.context, "steps": cfg.steps,
            "family": "far" if isinstance(session.pipeline, FARPipeline) else "tokens",
            "spans": {k: span_means(v) for k, v in mean.items()},
            "curves": {k: [None if not np.isfinite(x) else round(float(x), 4) for x in v] for k, v in mean.items()},
            "seconds_per_frame": session.stats["seconds"], "settings": asdict(cfg)}


def write_outputs(out: Path, results: dict, strips: list, resolution: int) -> None:
    write_json(out / "metrics.json", results)
    steps = list(range(1, results["steps"] + 1))
    series = lambda *names: {n.replace("_", " "): (steps, [np.nan if x is None else x for x in results["curves"][n]])
                             for n in names}
    line_chart(series("psnr", "copy_last_psnr"), out / "psnr_over_steps.png", "PSNR against the replayed episode")
    line_chart(series("palette", "truth_palette", "sharpness"), out / "game_frame_over_steps.png",
               "game-frame statistics (palette distance: 0 best; sharpness: 1 = the game's)")
    shown = [s for s in SHOWN if s <= results["steps"]]
    rows = []
    for truth, played in strips:
        blank = np.full((resolution, resolution, 3), 255, np.uint8)
        rows.append(np.stack([truth[s] if s < len(truth) else blank for s in shown]))
        rows.append(played[shown])
    contact_sheet(np.stack(rows), out / "strip.png", max_frames=len(shown))
