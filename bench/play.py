"""Playing a world model: frames per second and latency per frame of a `WorldSession` over a long session, split into
the model's part and the decoding, and whether time and memory stay flat as the session grows.

    .venv/bin/python bench/play.py                       # the tiny Crafter token world model, random weights
    .venv/bin/python bench/play.py --model runs/world_crafter_tiny/lm.safetensors \
        --autoencoder runs/tokenizer_crafter/tokenizer.safetensors --steps 1000

Random weights cost what trained ones do (the same arithmetic); the architectures are the recipes'
(`scripts/lm_train/crafter_tiny.yaml`: world-tiny over 8x8 tokens of 64 px frames, `tokenizer/crafter_tiny.yaml`).
Token world models only so far (FAR's sessions are to come). Prints a table and JSON.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from nbp.config import from_preset
from nbp.generation.sampling import SamplingConfig
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer
from nbp.models.world import WorldConfig, WorldTransformer
from nbp.pipelines import WorldPipeline, WorldSession
from nbp.runtime import describe_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit_json  # noqa: E402


def recipe_session(seed: int) -> WorldSession:
    """The tiny Crafter recipes' architectures with random weights."""
    torch.manual_seed(seed)
    tokenizer = VideoTokenizer(from_preset(TokenizerConfig, "tiny-frames", fsq_levels=[8, 5, 5, 5], resolution=64))
    model = WorldTransformer(from_preset(WorldConfig, "world-tiny", latent_shape=[12, 8, 8], video_vocab=1000,
                                         block=64))
    return WorldSession(WorldPipeline(tokenizer.eval(), model.eval()), SamplingConfig(top_k=20), seed=seed)


def resident_mb() -> float:
    """The process's resident memory now (not its peak), from /proc."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--autoencoder")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--context", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    session = (WorldSession.from_files(args.model, args.autoencoder, seed=args.seed, top_k=20) if args.model
               else recipe_session(args.seed))
    size = session.pipeline.tokenizer.config.resolution
    session.reset(torch.rand(args.context, 3, size, size), np.zeros(args.context, dtype=np.int64))
    actions = np.random.default_rng(args.seed).integers(0, session.pipeline.model.config.num_actions or 1, args.steps)
    memory = {}
    for step, action in enumerate(actions, start=1):
        session.step(int(action))
        if step in (100, args.steps // 2, args.steps):
            memory[step] = resident_mb()
    times = np.array(session.times) * 1000  # (steps, 2): model, decoding, in ms
    total = times.sum(1)
    tenth = max(1, args.steps // 10)
    row = {"cpu": describe_cpu(), "threads": torch.get_num_threads(), "steps": args.steps,
           "frames_per_second": 1000 / total.mean(), "p50_ms": float(np.percentile(total, 50)),
           "p99_ms": float(np.percentile(total, 99)), "model_ms": float(np.median(times[:, 0])),
           "decode_ms": float(np.median(times[:, 1])),
           "first_tenth_ms": float(total[:tenth].mean()), "last_tenth_ms": float(total[-tenth:].mean()),
           "resident_mb": memory, "tokens_fed_per_step": session.stepper.tokens_fed}
    print(f"| steps | frames/s | p50 ms | p99 ms | model ms | decoding ms | first 10% ms | last 10% ms | "
          f"memory at 100 / {args.steps // 2} / {args.steps} steps |\n|---|---|---|---|---|---|---|---|---|\n"
          f"| {args.steps} | {row['frames_per_second']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
          f"{row['model_ms']:.1f} | {row['decode_ms']:.1f} | {row['first_tenth_ms']:.1f} | "
          f"{row['last_tenth_ms']:.1f} | {memory.get(100, 0):.0f} / {memory.get(args.steps // 2, 0):.0f} / {memory[args.steps]:.0f} MB |")
    emit_json(row, args.json)


if __name__ == "__main__":
    main()
