"""Generation speed: next-block (16 tokens per step) against next-token decoding on the same weights.

    .venv/bin/python bench/decode.py                   # ~6 minutes on 2 cores
    .venv/bin/python bench/decode.py --quick           # fewer rows
    python bench/decode.py --device cuda --size 700m --batches 1 16 --hybrid-only \
        --decodings dynamic cuda-graphs compiled                                  # the GPU check (gpu_check.sh)

Model: the modern architecture at 12 layers x 768 (183M parameters with its 64k-entry embedding and head), or
`--size 700m` (24 x 1536, the official 700M's shape).
Case "predict": 1024 tokens after a 256-token context (block 16: 64 steps; block 1: 1024 steps).
Case "hybrid": the official layout (nbp-gpt, text prefix of 8): 1280 tokens, 95 steps against 1280.
"step ms" is the time of one decoding step after the prompt; "floor ms" is the time to read every weight a step
uses (all but the input embedding table, of which a step reads a few rows) once from memory at the bandwidth
measured in the same run (a step cannot be faster at batch 1); "linears ms" is the time of the model's matrix
products alone at the step's rows (every nn.Linear once, nothing else): what this machine's matmul library needs
for the weights, whatever the rest of the implementation does; "compute ms" is the time of a step's matmul FLOPs (2
x weights x rows) at the matmul peak measured in the same run (a 4096^2 product), the other bound on a step: a
16-row bf16 step cannot be faster than max(floor, compute), and "max speedup" is the block-16 speedup that two
implementations at their bounds would show.
`--decodings` compares the decoders of `nbp.generation.generate` (dynamic cache, static cache, CUDA graphs, CUDA
graphs of the compiled step; "auto" picks CUDA graphs on a GPU and the dynamic cache on a CPU).
`--sampling official` draws with top-k 16,000 and top-p 0.9 as the official evaluation; `plain` from the full
distribution; `greedy` takes the argmax.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from nbp.config import from_dict
from nbp.generation import generate
from nbp.models.transformer import Transformer, TransformerConfig
from nbp.runtime import describe_cpu, tune_cpu_allocator, use_bf16
from nbp.settings.generation import DECODINGS

from report import emit_json, matmul_peak, synchronize  # bench/report.py (scripts run from bench/)

SIZES = {"small": dict(n_layer=12, n_head=12, n_embd=768), "700m": dict(n_layer=24, n_head=16, n_embd=1536)}


def memory_bandwidth(gigabytes: float = 1.0, repeats: int = 5, device="cpu") -> float:
    """GB/s of reading a large tensor (a sum streams it once)."""
    x = torch.ones(int(gigabytes * 2**30 / 4), device=device)
    x.sum()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        x.sum()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / min(times) / 1e9


def build(block: int, layout: str, dtype, size: str = "small", device="cpu") -> Transformer:
    extra = dict(condition="class", num_classes=101, cond_len=1) if layout == "predict" else \
        dict(arch="nbp-gpt", hybrid=True, condition="text", cond_len=8, text_vocab=32000)
    torch.manual_seed(0)
    config = from_dict(TransformerConfig, dict(block=block, **SIZES[size], **extra))
    return Transformer(config).to(device=device, dtype=dtype).eval()


def shared_weights(block16: dict, lm: Transformer) -> dict:
    """The block-16 model's weights for its block-1 twin, whose vocabulary has 15 placeholder ids fewer:
    the rows of bov, the condition and the video codes are kept (the placeholders' rows dropped)."""
    extra = 16 - lm.config.special
    state = dict(block16)
    for key in ("tok_emb.weight", "head.weight"):
        state[key] = torch.cat([block16[key][:1], block16[key][1 + extra:]])
    return state


SAMPLING = {"official": dict(top_k=16000, top_p=0.9), "plain": {}, "greedy": dict(greedy=True)}


@torch.no_grad()
def linears_ms(lm: Transformer, rows: int, repeats: int = 5) -> float:
    """Median time of applying every nn.Linear of `lm` once to `rows` rows (the matmuls of one decode step)."""
    run = linear_pass(lm, rows)
    run()
    return 1000 * timed(run, repeats, lm.head.weight.device)


def linear_pass(lm: Transformer, rows: int):
    """A function that applies every nn.Linear of `lm` once to `rows` random rows."""
    layers = [m for m in lm.modules() if isinstance(m, torch.nn.Linear)]
    weight = layers[0].weight
    inputs = {m.in_features: torch.randn(rows, m.in_features, dtype=weight.dtype, device=weight.device)
              for m in layers}
    return lambda: [layer(inputs[layer.in_features]) for layer in layers]


def timed(fn, repeats: int, device="cpu") -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_case(layout: str, block: int, batch: int, dtype, repeats: int, weights: dict, sampling: dict,
             size: str = "small", device="cpu", decoding: str = "auto") -> dict:
    lm = build(block, layout, dtype, size, device)
    if block == 1:  # the same weights as the block-16 model: only the decoding schedule differs
        lm.load_state_dict(shared_weights(weights[(layout, dtype)], lm))
    else:
        weights[(layout, dtype)] = lm.state_dict()
    generator = torch.Generator(device=device).manual_seed(0)
    if layout == "predict":
        context = torch.randint(0, 64000, (batch, 256), generator=generator, device=device)
        kwargs, tokens = dict(context=context, class_ids=[3] * batch), 1024
    else:
        kwargs, tokens = dict(text_ids=torch.randint(0, 32000, (batch, 8), generator=generator, device=device)), 1280
    run = lambda n: generate(lm, n, generator=generator, decoding=decoding, **sampling, **kwargs)
    run(4 * block)  # warm-up: allocator, kernels (on a GPU, their first launches)
    prompt_only = timed(lambda: run(block if layout == "predict" else 1), repeats, device)
    total = timed(lambda: run(tokens), repeats, device)
    widths = lm.layout.step_widths(256 if layout == "predict" else 0, tokens)
    steps = len(widths)
    rows = [batch * (1 if width == 1 else block) for width in widths]  # positions computed per step
    params = sum(p.numel() for p in lm.parameters())
    return dict(case=layout, block=block, batch=batch, dtype=str(dtype).removeprefix("torch."), decoding=decoding,
                tokens=tokens,
                steps=steps, rows_per_step=rows, seconds=total, step_ms=1000 * (total - prompt_only) / (steps - 1), params=params,
                linears_ms=linears_ms(lm, batch * block),
                weight_bytes=sum(p.numel() * p.element_size() for name, p in lm.named_parameters()
                                 if not name.startswith("tok_emb")))  # a step reads only its ids' embedding rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 only, bf16 only")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sampling", choices=sorted(SAMPLING), default="official")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batches", type=int, nargs="+", help="default: 1 and 8 (--quick: 1)")
    parser.add_argument("--hybrid-only", action="store_true", help="only the official hybrid case, in bf16")
    parser.add_argument("--decodings", nargs="+", choices=DECODINGS, default=["auto"])
    parser.add_argument("--blocks", type=int, nargs="+", choices=[16, 1], default=[16, 1],
                        help="block 16 and its block-1 twin (the speedup needs both)")
    parser.add_argument("--json")
    args = parser.parse_args()
    tune_cpu_allocator()
    device = args.device
    bandwidth = memory_bandwidth(device=device)
    bf16 = torch.bfloat16 if use_bf16(True, device, "the bf16 rows") else torch.float32
    dtypes = [bf16] if args.quick or args.hybrid_only else list(dict.fromkeys([torch.float32, bf16]))
    peaks = {str(dtype).removeprefix("torch."): matmul_peak(dtype, device=device) for dtype in dtypes}
    batches = args.batches or ([1] if args.quick else [1, 8])
    weights, rows = {}, []
    case = lambda layout, block, batch, dtype, decoding: run_case(
        layout, block, batch, dtype, args.repeats, weights, SAMPLING[args.sampling], args.size, device, decoding)
    for decoding in args.decodings:
        for dtype in ([] if args.hybrid_only else dtypes):
            for batch in batches:
                for block in args.blocks:
                    rows.append(case("predict", block, batch, dtype, decoding))
        for batch in (batches if args.hybrid_only else [1]):
            for block in args.blocks:
                rows.append(case("hybrid", block, batch, bf16, decoding))
    for row in rows:
        add_bounds(row, bandwidth, peaks[row["dtype"]])
        del row["rows_per_step"]
    for row in rows:
        twin = next((r for r in rows if r["case"] == row["case"] and r["batch"] == row["batch"]
                     and r["dtype"] == row["dtype"] and r["decoding"] == row["decoding"] and r["block"] == 1), None)
        row["speedup_vs_block1"] = twin and twin["seconds"] / row["seconds"]
        row["max_speedup"] = twin and twin["steps"] * twin["bound_ms"] / (row["steps"] * row["bound_ms"])
    print(f"memory bandwidth {bandwidth:.1f} GB/s; matmul peak " + ", ".join(
        f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()) +
        f"; model {rows[0]['params'] / 1e6:.0f}M parameters; sampling {args.sampling}")
    print(f"{'case':<8} {'decoding':<11} {'block':>5} {'batch':>5} {'dtype':<9} {'tokens':>6} {'steps':>5} {'seconds':>8} "
          f"{'speedup':>8} {'max speedup':>11} {'step ms':>8} {'floor ms':>8} {'step/floor':>10} {'compute ms':>10} "
          f"{'linears ms':>10}")
    for r in rows:
        print(f"{r['case']:<8} {r['decoding']:<11} {r['block']:>5} {r['batch']:>5} {r['dtype']:<9} {r['tokens']:>6} {r['steps']:>5} "
              f"{r['seconds']:>8.2f} {ratio(r['speedup_vs_block1']):>8} {ratio(r['max_speedup']):>11} {r['step_ms']:>8.2f} "
              f"{r['floor_ms']:>8.1f} {r['step_ms'] / r['floor_ms']:>10.2f} {r['compute_ms']:>10.1f} "
              f"{r['linears_ms']:>10.1f}")
    emit_json({"device": describe_device(device), "size": args.size, "bandwidth_gb_s": bandwidth,
               "matmul_peak_flops": peaks, "sampling": args.sampling, "rows": rows}, args.json)


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def describe_device(device) -> str:
    return torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else describe_cpu()


def add_bounds(row: dict, bandwidth: float, peak: float) -> None:
    """The two lower bounds on a step, averaged over the steps: reading the weights once, and their FLOPs at the
    matmul peak (a step cannot beat the larger one)."""
    weights = row["weight_bytes"] / (2 if row["dtype"] == "bfloat16" else 4)
    floor = 1000 * row["weight_bytes"] / (bandwidth * 1e9)
    compute = [1000 * 2 * weights * rows / peak for rows in row["rows_per_step"]]
    row["floor_ms"], row["compute_ms"] = floor, statistics.mean(compute)
    row["bound_ms"] = statistics.mean(max(floor, c) for c in compute)


if __name__ == "__main__":
    main()
