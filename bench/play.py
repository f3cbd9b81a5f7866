"""Playing a world model: frames per second and latency per frame of a `WorldSession` over a long session, split into
the model's part and the decoding, and whether time and memory stay flat as the session grows.

    .venv/bin/python bench/play.py                       # both tiny Crafter world models, random weights
    .venv/bin/python bench/play.py --family far --steps 3000
    .venv/bin/python bench/play.py --model runs/world_crafter_tiny/lm.safetensors \
        --autoencoder runs/tokenizer_crafter/tokenizer.safetensors --steps 1000

Random weights cost what trained ones do (the same arithmetic); the architectures are the recipes': the token world
model `scripts/lm_train/crafter_tiny.yaml` (world-tiny over 8x8 tokens of 64 px frames, `tokenizer/crafter_tiny.yaml`),
FAR_Long `scripts/far_train/crafter_far_tiny_long.yaml` (4 layers, a window of 8 frames, the session's 64 long-term
frames) over `tokenizer/dcae/crafter_tiny.yaml`'s 32 x 8 x 8 latents, at one Euler step. Prints a table and JSON.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nbp.config import from_preset
from nbp.generation.far import FARSamplingConfig
from nbp.models.dcae import DCAE, DCAEConfig
from nbp.models.far import FAR, FARConfig
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer
from nbp.models.world import WorldConfig, WorldTransformer
from nbp.pipelines import FARPipeline, WorldPipeline, WorldSession
from nbp.pipelines.session import names_far
from nbp.runtime import describe_cpu
from nbp.settings.generation import SamplingConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit_json  # noqa: E402


def token_session(seed: int) -> WorldSession:
    """The tiny Crafter token world model and tokenizer recipes' architectures with random weights."""
    torch.manual_seed(seed)
    tokenizer = VideoTokenizer(from_preset(TokenizerConfig, "tiny-frames", fsq_levels=[8, 5, 5, 5], resolution=64))
    model = WorldTransformer(from_preset(WorldConfig, "world-tiny", latent_shape=[12, 8, 8], video_vocab=1000,
                                         block=64))
    return WorldSession(WorldPipeline(tokenizer.eval(), model.eval()), SamplingConfig(top_k=20), seed=seed)


def far_session(seed: int) -> WorldSession:
    """The tiny Crafter FAR_Long and DC-AE recipes' architectures with random weights, one Euler step a frame."""
    torch.manual_seed(seed)
    model = FAR(from_preset(FARConfig, "far-tiny-long", num_layers=4, short_window=8, num_classes=17))
    dcae = DCAE(from_preset(DCAEConfig, "dcae-tiny"))
    return WorldSession(FARPipeline(dcae.eval(), model.eval()), FARSamplingConfig(steps=1), seed=seed)


SESSIONS = {"tokens": token_session, "far": far_session}


def actions_of(session: WorldSession) -> int:
    pipeline = session.pipeline
    return pipeline.far.config.num_classes if isinstance(pipeline, FARPipeline) else pipeline.model.config.num_actions


def resident_mb() -> float:
    """The process's resident memory now (not its peak), from /proc."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


OPS = {"matmul": ("linear", "addmm", "mm", "bmm", "matmul", "baddbmm"), "attention": ("attention", "softmax"),
       "convolution": ("conv", "upsample", "pixel_shuffle", "pixel_unshuffle", "group_norm")}


def where_time_goes(session: WorldSession, steps: int) -> dict:
    """Shares of `steps` steps' wall time (profiled after the session warmed up): the ATen ops by kind, their sum,
    and the rest (Python and dispatch between them)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        for step in range(steps):
            session.step(step % (actions_of(session) or 1))
        wall = time.perf_counter() - start
    spent = {kind: 0.0 for kind in (*OPS, "other ops")}
    for event in profiler.key_averages():
        if not event.key.startswith("aten::"):
            continue
        name = event.key.removeprefix("aten::")
        kind = next((k for k, parts in OPS.items() if any(part in name for part in parts)), "other ops")
        spent[kind] += event.self_cpu_time_total / 1e6
    shares = {kind: seconds / wall for kind, seconds in spent.items()}
    shares["python and dispatch"] = 1 - sum(shares.values())
    return shares


def play(session: WorldSession, family: str, args) -> dict:
    """Play `args.steps` random actions after `args.context` random frames; the row of figures."""
    size = session.resolution
    session.reset(torch.rand(args.context, 3, size, size), np.zeros(args.context, dtype=np.int64))
    actions = np.random.default_rng(args.seed).integers(0, actions_of(session) or 1, args.steps)
    memory = {}
    for step, action in enumerate(actions, start=1):
        session.step(int(action))
        if step in (100, args.steps // 2, args.steps):
            memory[step] = resident_mb()
    times = np.array(session.times) * 1000  # (steps, 3): model, decoding, bookkeeping, in ms
    total = times.sum(1)
    tenth = max(1, args.steps // 10)
    return {"family": family, "cpu": describe_cpu(), "threads": torch.get_num_threads(), "steps": args.steps,
           "frames_per_second": 1000 / total.mean(), "p50_ms": float(np.percentile(total, 50)),
           "p99_ms": float(np.percentile(total, 99)), "model_ms": float(np.median(times[:, 0])),
           "decode_ms": float(np.median(times[:, 1])),
           "first_tenth_ms": float(total[:tenth].mean()), "last_tenth_ms": float(total[-tenth:].mean()),
           "resident_mb": memory, "tokens_fed_per_step": session.stepper.tokens_fed,
           "time_shares": where_time_goes(session, args.profile) if args.profile else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["both", *SESSIONS], default="both", help="the recipes' random models")
    parser.add_argument("--model", help="a world model file instead (token or FAR)")
    parser.add_argument("--autoencoder", help="its tokenizer or DC-AE")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--context", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then profile N more steps: where the time goes (op kinds, Python)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.model:
        sampling = FARSamplingConfig(steps=1) if names_far(args.model) else SamplingConfig(top_k=20)  # as below
        session = WorldSession.from_files(args.model, args.autoencoder, seed=args.seed, sampling=sampling)
        rows = [play(session, "far" if isinstance(session.pipeline, FARPipeline) else "tokens", args)]
    else:
        rows = [play(SESSIONS[family](args.seed), family, args)
                for family in (SESSIONS if args.family == "both" else [args.family])]
    half = args.steps // 2
    print(f"| family | steps | frames/s | p50 ms | p99 ms | model ms | decoding ms | first 10% ms | last 10% ms | "
          f"memory at 100 / {half} / {args.steps} steps |\n|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        memory = row["resident_mb"]
        print(f"| {row['family']} | {args.steps} | {row['frames_per_second']:.1f} | {row['p50_ms']:.1f} | "
              f"{row['p99_ms']:.1f} | {row['model_ms']:.1f} | {row['decode_ms']:.1f} | {row['first_tenth_ms']:.1f} | "
              f"{row['last_tenth_ms']:.1f} | {memory.get(100, 0):.0f} / {memory.get(half, 0):.0f} / "
              f"{memory[args.steps]:.0f} MB |")
    if args.profile:
        kinds = list(rows[0]["time_shares"])
        print(f"\n| family | {' | '.join(kinds)} |\n|---|{'---|' * len(kinds)}")
        for row in rows:
            print(f"| {row['family']} | " + " | ".join(f"{100 * row['time_shares'][k]:.0f}%" for k in kinds) + " |")
    emit_json(rows, args.json)


if __name__ == "__main__":
    main()
