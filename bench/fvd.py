"""I3D feature throughput for FVD: videos/s of 16-frame clips at 224x224 (the network's input after resizing).

    .venv/bin/python bench/fvd.py                # fp32 and bf16 autocast, 8 videos per batch
    .venv/bin/python bench/fvd.py --videos 32 --batch-size 16

Weights are deterministic (the speed does not depend on them); the input is uint8 clips already at 224x224,
so the time is the preprocessing (scaling) and the network. bf16 rows run under CPU autocast; "max rel err"
compares their features with fp32's.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nbp.metrics import i3d_features
from nbp.metrics.i3d import InceptionI3d
from nbp.runtime import tune_cpu_allocator

from report import emit_json  # bench/report.py (scripts run from bench/)


def run(i3d, videos: np.ndarray, batch_size: int, bf16: bool) -> tuple[float, np.ndarray]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        i3d_features(i3d, videos[:batch_size], batch_size=batch_size, progress=False)  # warm-up
        start = time.perf_counter()
        feats = i3d_features(i3d, videos, batch_size=batch_size, progress=False)
    return len(videos) / (time.perf_counter() - start), feats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    tune_cpu_allocator()
    torch.manual_seed(0)
    i3d = InceptionI3d(400).eval()
    videos = np.random.default_rng(0).integers(0, 256, (args.videos, 16, 224, 224, 3), dtype=np.uint8)
    rows, reference = [], None
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        rate, feats = run(i3d, videos, args.batch_size, bf16)
        reference = feats if reference is None else reference
        error = float(np.abs(feats - reference).max() / np.abs(reference).max())
        rows.append({"variant": name, "videos": args.videos, "batch": args.batch_size, "videos_per_s": rate,
                     "max_rel_err": error})
    print(f"{'variant':<14} {'videos':>6} {'batch':>5} {'videos/s':>9} {'max rel err':>11}")
    for r in rows:
        print(f"{r['variant']:<14} {r['videos']:>6} {r['batch']:>5} {r['videos_per_s']:>9.2f} {r['max_rel_err']:>11.2e}")
    emit_json(rows, args.json)


if __name__ == "__main__":
    main()
