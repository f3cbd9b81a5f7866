"""Long world-model generation: time and memory per generated frame as the video grows, past the training length.

    .venv/bin/python bench/world_long.py                                    # random world-tiny weights
    .venv/bin/python bench/world_long.py --lm runs/world_crafter_tiny/lm.safetensors --frames 192

The model continues 4 context frames with random actions, one frame (64 tokens) per step. "ms/frame" is the
median step time over the frames in each range; "cache MB" is the KV cache the step used (keys and values of
every layer); "peak RSS MB" is the process's high-water mark so far. With a long-short window the cache stops
growing once the window is full (short_frames full frames + long_frames pooled ones), so time and memory per
frame stay flat however long the video; `--short 0` shows the unwindowed growth.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from nbp.config import from_preset
from nbp.download import load_transformer
from nbp.generation import predict_frames
from nbp.models.transformer import KVCache
from nbp.models.world import WorldConfig, WorldTransformer
from nbp.runtime import tune_cpu_allocator

from report import emit_json  # bench/report.py (scripts run from bench/)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", help="world model file (default: world-tiny with random weights)")
    parser.add_argument("--frames", type=int, default=192, help="frames to generate (16x world-tiny's 12)")
    parser.add_argument("--short", type=int, help="override short_frames (0: no window)")
    parser.add_argument("--json")
    args = parser.parse_args()
    tune_cpu_allocator()
    torch.set_grad_enabled(False)
    if args.lm:
        lm = load_transformer(args.lm)
    else:
        torch.manual_seed(0)
        lm = WorldTransformer(from_preset(WorldConfig, "world-tiny", video_vocab=1000)).eval()
    cfg = lm.config
    steps, caches = [], []
    allocate = KVCache.__init__

    def recording_cache(self, *a, **k):  # the size of every cache the generation allocates
        allocate(self, *a, **k)
        caches.append(self.nbytes / 2**20)

    KVCache.__init__ = recording_cache
    g = torch.Generator().manual_seed(0)
    context = torch.randint(cfg.video_vocab, (1, 4, cfg.block), generator=g)
    actions = torch.randint(cfg.num_actions or 1, (1, 4 + args.frames), generator=g) if cfg.num_actions else None
    last = [time.perf_counter()]

    def clock(frames):
        for t in frames:
            yield t
            now = time.perf_counter()
            steps.append((t, now - last[0], caches[-1], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
            last[0] = now

    predict_frames(lm, context, args.frames, actions=actions, short_frames=args.short, top_k=20,
                         generator=g, progress=clock)
    edges = [4, 16, 32, 64, 128, 256, 512, 1024]
    rows = []
    for lo, hi in zip(edges, edges[1:]):
        chunk = [s for s in steps if lo <= s[0] < hi]
        if chunk:
            rows.append({"frames": f"{lo}-{hi - 1}", "ms_per_frame": 1000 * statistics.median(s[1] for s in chunk),
                         "cache_mb": max(s[2] for s in chunk), "peak_rss_mb": max(s[3] for s in chunk)})
    train_length = cfg.latent_shape[0]
    print(f"{args.frames} frames after 4 given ({args.frames / train_length:.0f}x the training clip of {train_length}); "
          f"short_frames={cfg.short_frames if args.short is None else args.short}, long_frames={cfg.long_frames}")
    print("| frames | ms/frame | cache MB | peak RSS MB |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['frames']} | {r['ms_per_frame']:.1f} | {r['cache_mb']:.2f} | {r['peak_rss_mb']:.0f} |")
    emit_json(rows, args.json)


if __name__ == "__main__":
    main()
