"""A built-in labelled video dataset: moving shapes written as real mp4 files in the UCF-101 layout.

Each class has its own shape, colour and motion, so a class is recognisable from any frame and from the
motion alike:
    CircleMovingRight   red disc sliding left to right
    SquareMovingDown    green square sliding top to bottom
    BarRotating         blue bar turning about the centre
    DiscPulsing         yellow disc growing and shrinking
Layout: `root/<Class>/v_<Class>_g<group>_c<clip>.mp4`, plus `trainlist.txt` and `testlist.txt` with
`relative/path<TAB>label` lines (labels 1-based, as UCF-101's). Everything follows from `seed`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nbp.io.media import write_video
from nbp.settings.data import SyntheticConfig

CLASSES = ("BarRotating", "CircleMovingRight", "DiscPulsing", "SquareMovingDown")
COLOURS = {"CircleMovingRight": (230, 50, 40), "SquareMovingDown": (40, 200, 70),
           "BarRotating": (50, 90, 240), "DiscPulsing": (240, 210, 40)}


def render(class_name: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (frames, size, size, 3) of one video of `class_name`, with random placement, speed and background."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size  # pixel centres in [0, 1)
    background = rng.integers(10, 70, size=3)
    colour = np.array(COLOURS[class_name]) + rng.integers(-15, 16, size=3)
    phase, speed = rng.uniform(0, 1), rng.uniform(0.6, 1.0)
    other = rng.uniform(0.3, 0.7)  # the coordinate that stays fixed
    extent = rng.uniform(0.12, 0.18)
    video = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        progress = (phase + speed * t / frames) % 1.0
        mask = _shape(class_name, x, y, progress, other, extent)
        video[t] = np.where(mask[..., None], colour, background).clip(0, 255)
    return video


def _shape(class_name, x, y, progress, other, extent):
    travel = 0.15 + 0.7 * progress
    if class_name == "CircleMovingRight":
        return (x - travel) ** 2 + (y - other) ** 2 < extent**2
    if class_name == "SquareMovingDown":
        return (np.abs(x - other) < extent) & (np.abs(y - travel) < extent)
    if class_name == "BarRotating":
        angle = 2 * math.pi * progress
        along = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle)
        across = -(x - 0.5) * math.sin(angle) + (y - 0.5) * math.cos(angle)
        return (np.abs(along) < 0.35) & (np.abs(across) < 0.06)
    radius = extent * (0.6 + 0.9 * abs(math.sin(math.pi * progress)))
    return (x - 0.5) ** 2 + (y - 0.5) ** 2 < radius**2


def make_dataset(root: str | Path, videos_per_class: int = 24, size: int = 64, frames: tuple[int, int] = (24, 40),
                 fps: float = 8, test_fraction: float = 0.25, seed: int = 0) -> Path:
    """Write the dataset under `root` (skipping files already there) and return `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label, name in enumerate(CLASSES, start=1):
        num_test = max(1, round(videos_per_class * test_fraction))
        for clip in range(videos_per_class):
            relative = f"{name}/v_{name}_g{clip // 4 + 1:02d}_c{clip % 4 + 1:02d}.mp4"
            video = render(name, int(rng.integers(frames[0], frames[1] + 1)), size, rng)
            if not (root / relative).exists():
                write_video(root / relative, video, fps)
            (test if clip < num_test else train).append(f"{relative}\t{label}")
    (root / "trainlist.txt").write_text("\n".join(train) + "\n")
    (root / "testlist.txt").write_text("\n".join(test) + "\n")
    return root


def write_synthetic(cfg: SyntheticConfig) -> Path:
    """`nbp synthetic`: the dataset under `cfg.out` (files already there are kept)."""
    return make_dataset(cfg.out, cfg.videos_per_class, cfg.size, fps=cfg.fps, seed=cfg.seed)
