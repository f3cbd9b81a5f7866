"""Clip decoding throughput: 17x128x128 clips at 8 fps from UCF-101-like 320x240, 25 fps files.

    .venv/bin/python bench/data.py                 # writes its files under /tmp/nbp-bench-data once
    .venv/bin/python bench/data.py --files 8 --clips 64 --json out.json

Rows, per container (avi = MPEG-4 part 2 with a keyframe every 12 frames as UCF-101's Xvid files; mp4 =
H.264 with x264's default keyframe interval of 250, so a 7 s file is one GOP):
- naive loop: open, decode every frame from the start, convert each to RGB, keep the window, resize with torch;
- nbp, 0 workers: VideoDataset in the main process (seek, decode only to the window's end, swscale resize);
- nbp, 2 workers: the same through a DataLoader with 2 worker processes, as training reads it.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from nbp.data import VideoDataset, write_video
from nbp.data.synthetic import CLASSES, render
from nbp.data.video import clip_indices, probe


def make_files(folder: Path, count: int, seconds: float = 7.0) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        name = CLASSES[i % len(CLASSES)]
        square = render(name, int(25 * seconds), 240, rng)
        frames = np.pad(square, ((0, 0), (0, 0), (40, 40), (0, 0)), mode="edge")  # 320x240
        for ext, gop in (("avi", 12), ("mp4", None)):
            path = folder / ext / name / f"v_{name}_{i:03d}.{ext}"
            if not path.exists():
                write_video(path, frames, fps=25, gop=gop)


def naive_clip(path: Path, length: int, fps: float, resolution: int) -> torch.Tensor:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    info = probe(path)
    span = int((length - 1) * info.fps / fps) + 1
    indices = clip_indices(len(frames), info.fps, length, fps, random.randint(0, len(frames) - span))
    video = torch.from_numpy(np.stack([frames[i] for i in indices])).permute(0, 3, 1, 2).float() / 255
    return F.interpolate(video, size=(resolution, resolution), mode="bilinear", antialias=True)


def clips_per_second(run, clips: int) -> float:
    start = time.perf_counter()
    run(clips)
    return clips / (time.perf_counter() - start)


def bench_container(folder: Path, clips: int, repeats: int) -> list[dict]:
    dataset = VideoDataset(folder, sequence_length=17, resolution=128, fps=8, sampling="random")
    paths = [e.path for e in dataset.entries]

    def naive(n):
        for i in range(n):
            naive_clip(paths[i % len(paths)], 17, 8, 128)

    def in_process(n):
        for i in range(n):
            dataset[i % len(dataset)]

    def with_workers(n, workers=2, batch=8):
        indices = [i % len(dataset) for i in range(n)]
        loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch, num_workers=workers)
        for _ in loader:
            pass

    rows = []
    for name, run, n in (("naive loop", naive, max(8, clips // 4)), ("nbp, 0 workers", in_process, clips),
                         ("nbp, 2 workers", with_workers, clips * 2)):
        rates = [clips_per_second(run, n) for _ in range(repeats)]
        rows.append({"container": folder.name, "variant": name, "clips": n, "clips_per_s": statistics.median(rates)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/nbp-bench-data"))
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # decoding, not math; workers get one thread each too
    make_files(args.dir, args.files)
    rows = [row for ext in ("avi", "mp4") for row in bench_container(args.dir / ext, args.clips, args.repeats)]
    print(f"{'container':<10} {'variant':<16} {'clips':>6} {'clips/s':>8}")
    for r in rows:
        print(f"{r['container']:<10} {r['variant']:<16} {r['clips']:>6} {r['clips_per_s']:>8.1f}")
    print(json.dumps(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
