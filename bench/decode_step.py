"""Where one decoding step's time goes on this machine: the forward (the model's matrix products, then the rest),
the sampler, and the top operators of a profiled step.

    .venv/bin/python bench/decode_step.py                      # 183M model, block 16, fp32 and (native) bf16
    .venv/bin/python bench/decode_step.py --dtype fp32 --profile
    .venv/bin/python bench/decode_step.py --block 1            # one token per step

The model is bench/decode.py's "predict" case (12 x 768 modern, 64,000 codes); the cache holds a 256-token
context plus the prompt block, then `--steps` block steps are fed. "linears" = every nn.Linear applied once to the
step's rows (nothing else; timed after each step), the floor a step's matrix products set with this machine's
matmul library; "rest" = forward - linears (attention over the cache, norms, rotary, the cache writes, Python);
"sampling" = the official top-k 16,000 / top-p 0.9 draw over the step's 16 x 64,000 logits. The issue-21 floor:
step <= 1.5 x linears.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from nbp.generation.sampling import sample_logits
from nbp.generation.tokens import decode_step, prefill
from nbp.models.transformer import KVCache
from nbp.runtime import describe_cpu, tune_cpu_allocator, use_bf16

from decode import build, linear_pass
from report import emit_json


@torch.no_grad()
def step_parts(dtype, steps: int, batch: int, profile: bool, block: int = 16) -> dict:
    lm = build(block, "predict", dtype)
    cfg, layout = lm.config, lm.layout
    generator = torch.Generator().manual_seed(0)
    context = torch.randint(0, 64000, (batch, 256), generator=generator)
    prompt = layout.sequence(lm.check_codes(context, "context"), lm.condition_ids(None, [3] * batch))
    cache = KVCache(cfg, batch, prompt.shape[1] + (steps + 6) * cfg.block, context.device, dtype)
    logits = prefill(lm, prompt, cache, None)
    linears = linear_pass(lm, batch * cfg.block)  # timed after each step: both see the same (shared) machine
    done, forward, sampling, products = context.shape[1], [], [], []
    for step in range(steps + 1):
        start = time.perf_counter()
        ids = sample_logits(logits[:, -cfg.block:, cfg.video_offset:], top_k=16000, top_p=0.9,
                            generator=generator) + cfg.video_offset
        middle = time.perf_counter()
        done += cfg.block
        logits = decode_step(lm, layout.step_inputs(ids, done), cache, None)
        end = time.perf_counter()
        linears()
        if step:  # the first step warms up
            sampling.append(middle - start)
            forward.append(end - middle)
            products.append(time.perf_counter() - end)
    row = {"dtype": str(dtype).removeprefix("torch."), "batch": batch, "rows": batch * cfg.block,
           "forward_ms": 1000 * statistics.median(forward), "sampling_ms": 1000 * statistics.median(sampling),
           "linears_ms": 1000 * statistics.median(products)}
    row["step_ms"] = row["forward_ms"] + row["sampling_ms"]
    row["rest_ms"] = row["forward_ms"] - row["linears_ms"]
    row["step_over_linears"] = row["step_ms"] / row["linears_ms"]
    if profile:
        row["top_ops"] = profiled_ops(lm, logits, cache, ids, done, layout)
    return row


def profiled_ops(lm, logits, cache, ids, done, layout, top: int = 12) -> list[dict]:
    """Self CPU time per operator over three profiled steps (forward and sampling)."""
    cfg = lm.config
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(3):
            ids = sample_logits(logits[:, -cfg.block:, cfg.video_offset:], top_k=16000, top_p=0.9) + cfg.video_offset
            done += cfg.block
            logits = decode_step(lm, layout.step_inputs(ids, done), cache, None)
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 3000, "calls_per_step": e.count / 3}
            for e in events]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=("both", "fp32", "bf16"), default="both")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--block", type=int, default=16, help="positions per step (1: next-token decoding)")
    parser.add_argument("--profile", action="store_true", help="also list the top operators")
    parser.add_argument("--json")
    args = parser.parse_args()
    tune_cpu_allocator()
    dtypes = {"fp32": [torch.float32], "bf16": [torch.bfloat16], "both": [torch.float32, torch.bfloat16]}[args.dtype]
    dtypes = [d for d in dtypes if d == torch.float32 or use_bf16(True, "cpu", "the bf16 row")]
    rows = [step_parts(dtype, args.steps, args.batch, args.profile, args.block) for dtype in dtypes]
    print(f"{describe_cpu()}; 183M, block {args.block}, batch {args.batch}, cache 256 + {args.steps} steps")
    print("| dtype | rows | step ms | forward ms | linears ms | rest ms | sampling ms | step / linears |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['rows']} | {r['step_ms']:.1f} | {r['forward_ms']:.1f} | {r['linears_ms']:.1f} | "
              f"{r['rest_ms']:.1f} | {r['sampling_ms']:.1f} | {r['step_over_linears']:.2f} |")
        for op in r.get("top_ops", []):
            print(f"    {op['op']:<40} {op['self_ms_per_step']:>8.2f} ms/step  {op['calls_per_step']:>6.0f} calls")
    emit_json({"cpu": describe_cpu(), "rows": rows}, args.json)


if __name__ == "__main__":
    main()
