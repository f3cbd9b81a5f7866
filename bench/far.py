"""Seconds and memory per generated frame of a FAR_Long rollout as it grows, with the caches and without.

    .venv/bin/python bench/far.py                 # CPU: a 4-layer, 256-wide FAR_Long, 128 frames, 10 Euler steps
    .venv/bin/python bench/far.py --preset far-b-long --layers 0 --frames 256 --steps 25 --device cuda  # FAR-B-Long
    python bench/far.py --layers 0 --frames 256 --steps 25 --batch 4 --device cuda --bf16 --uncached-rollout \
        --decoding cuda-graphs --dynamic-rollout  # the GPU check

The cached rollout (KV cache inside the window, the multi-level cache past it) runs frame by frame to --frames from
nothing, timing every frame, with the memory it holds (CUDA: peak allocated per frame; CPU: the process's resident
size). Without caches (the official pipeline as its released long configs run it) every Euler step re-feeds the
whole sequence; that path is timed for one frame at each --probe position, after random context latents. Weights
are random (speed does not depend on them). `--uncached-rollout` also times the whole rollout without caches;
`--decoding` picks how the cached steps run (a GPU's default: each frame's steps replayed as one CUDA graph), and
`--dynamic-rollout` also times the cached rollout with the dynamic cache's eager steps.
Prints a table and JSON.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nbp.config import from_preset
from nbp.generation.far import generate_latents
from nbp.models.far import FAR, FARConfig
from nbp.runtime import describe_cpu
from nbp.settings.generation import DECODINGS

from report import emit_json  # bench/report.py (scripts run from bench/)


def resident_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


class FrameClock:
    """on_frame callback: wall time and memory of each generated frame."""

    def __init__(self, device: torch.device):
        self.device, self.rows = device, []
        self.last = time.perf_counter()

    def __call__(self, index: int, latent: torch.Tensor) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            memory = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        else:
            memory = resident_mb()
        now = time.perf_counter()
        self.rows.append({"frame": index, "seconds": now - self.last, "memory_mb": memory})
        self.last = now


def build(args) -> FAR:
    sizes = {"num_layers": args.layers, "num_heads": args.heads} if args.layers else {}
    torch.manual_seed(0)
    model = FAR(from_preset(FARConfig, args.preset, **sizes)).eval()
    return model.to(args.device, torch.bfloat16 if args.bf16 else torch.float32)


def rollout(model: FAR, args, decoding: str, on_frame=None) -> float:
    """Seconds of the cached rollout from nothing."""
    device = next(model.parameters()).device
    start = time.perf_counter()
    generate_latents(model, args.frames, None, steps=args.steps, batch=args.batch, on_frame=on_frame,
                     actions=torch.zeros(args.batch, args.frames, dtype=torch.long, device=device),
                     generator=torch.Generator().manual_seed(0), decoding=decoding,
                     latent_size=model.config.sample_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def uncached_seconds(model: FAR, position: int, steps: int, device, batch: int = 1, frames: int = 1) -> float:
    """`frames` frames after `position` random context frames, re-feeding the whole sequence every step."""
    cfg = model.config
    context = None if position == 0 else torch.randn(batch, position, cfg.in_channels, cfg.sample_size,
                                                     cfg.sample_size, device=device, dtype=next(model.parameters()).dtype)
    actions = torch.zeros(batch, position + frames, dtype=torch.long, device=device)
    start = time.perf_counter()
    generate_latents(model, frames, context, steps=steps, actions=actions, use_cache=False, batch=batch,
                     generator=torch.Generator().manual_seed(0), latent_size=cfg.sample_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="far-b-long")
    parser.add_argument("--layers", type=int, default=4, help="0: the preset's depth and width")
    parser.add_argument("--heads", type=int, default=4, help="64 channels each")
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--probe", type=int, nargs="*", default=None, help="positions timed without caches")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--uncached-rollout", action="store_true", help="also time the whole rollout without caches")
    parser.add_argument("--decoding", default="auto", choices=DECODINGS, help="how the cached steps run")
    parser.add_argument("--dynamic-rollout", action="store_true",
                        help="also time the cached rollout with the dynamic cache's eager steps")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = build(args)
    cfg, window = model.config, model.config.short_window
    probes = args.probe if args.probe is not None else sorted({window, args.frames // 4, args.frames // 2, args.frames - 1})
    clock = FrameClock(device)
    rollout(model, args, args.decoding, clock)
    cached = clock.rows
    dynamic_total = rollout(model, args, "dynamic") if args.dynamic_rollout else None
    rows = [{"position": p, "cached_s": cached[p]["seconds"],
             "uncached_s": uncached_seconds(model, p, args.steps, device, args.batch),
             "cached_memory_mb": cached[p]["memory_mb"]} for p in probes]
    uncached_total = (uncached_seconds(model, 0, args.steps, device, args.batch, args.frames)
                      if args.uncached_rollout else None)
    # flat past the window: the first W frames past it against the last W (a rollout shorter than 2W has no such pair)
    span = max(0, min(window, (args.frames - window) // 2))
    early = sum(r["seconds"] for r in cached[window:window + span]) / max(span, 1)
    late = sum(r["seconds"] for r in cached[-span:]) / max(span, 1) if span else 0.0
    flat = late / early if span else None
    parameters = sum(p.numel() for p in model.parameters())
    print(f"FAR_Long {cfg.num_layers} layers x {cfg.width}, {parameters / 1e6:.1f}M parameters, window {window}, "
          f"{args.steps} steps, {args.device}{' bf16' if args.bf16 else ''}, decoding {args.decoding} ({describe_cpu()})")
    print("| frame | cached s/frame | uncached s/frame | speed-up | memory MB (cached) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['position']} | {r['cached_s']:.3f} | {r['uncached_s']:.3f} | {r['uncached_s'] / r['cached_s']:.1f}x "
              f"| {r['cached_memory_mb']:.0f} |")
    total = sum(r["seconds"] for r in cached)
    print(f"cached rollout of {args.frames} frames (batch {args.batch}): {total:.1f} s"
          + (f"; s/frame over frames {window}-{window + span - 1}: {early:.3f}, over the last {span}: {late:.3f} "
             f"(ratio {flat:.2f})" if span else "")
          + ("" if uncached_total is None else f"; without caches {uncached_total:.1f} s")
          + ("" if dynamic_total is None else f"; dynamic cache {dynamic_total:.1f} s"))
    emit_json({"config": vars(args), "parameters": parameters, "probes": rows, "cached_frames": cached,
               "cached_total_s": total, "uncached_total_s": uncached_total, "dynamic_total_s": dynamic_total,
               "flat_ratio": flat}, args.json)


if __name__ == "__main__":
    main()
