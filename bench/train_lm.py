"""Training throughput: nbp's transformer against Hugging Face transformers' Llama, same shape and mask.

    .venv/bin/python bench/train_lm.py               # ~5 minutes
    .venv/bin/python bench/train_lm.py --steps 3 --dtype bf16
    python bench/train_lm.py --device cuda --size 700m --dtype bf16 --batch 8   # the GPU check (gpu_check.sh)

Both models: 8 layers, width 512, 8 heads, SwiGLU 1365, RMSNorm, rotary positions, no biases, a 64,017-entry
embedding and head (91M parameters, 25M outside the embeddings); batch 1, sequence 1280, the block-causal mask of
16-token blocks (HF gets it as a 4-D boolean mask with SDPA attention). One step = forward, cross-entropy,
backward, AdamW (fused, the same for all). "nbp" trains as `nbp train-lm` does: the head fused with the
cross-entropy (`nbp.models.fused_ce`, `LMTrainConfig.fused_loss`); "nbp-plain-loss" materialises the logits as
HF does. Each variant lives in a worker process of its own (own heap; "peak MB" is its peak resident memory
above the imports) and the parent interleaves their steps (the median of each), so that the machine's drift
hits all alike. All with nbp's allocator setting (`nbp.runtime.tune_cpu_allocator`, applied by the `nbp`
CLI). "MFU" = model FLOPs (6 x matmul parameters x tokens + attention) per second over the bf16 matmul peak
measured in the same run. `--size 700m` is the official 700M's shape (24 x 1536, 16 heads, SwiGLU 4096); on a GPU
the variants run one after the other in this process (`--compile` adds torch.compile).
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from nbp.runtime import tune_cpu_allocator, use_bf16

from report import emit_json, matmul_peak, synchronize  # bench/report.py (scripts run from bench/)


@dataclass(frozen=True)
class Shape:
    width: int = 512
    layers: int = 8
    heads: int = 8
    hidden: int = 1365
    vocab: int = 64017
    seq: int = 1280
    block: int = 16


SHAPES = {"bench": Shape(), "700m": Shape(width=1536, layers=24, heads=16, hidden=4096)}


def nbp_model(fused_loss: bool, shape: Shape, checkpointing: bool = False):
    from nbp.config import from_dict
    from nbp.models.transformer import Transformer, TransformerConfig

    cfg = from_dict(TransformerConfig, dict(n_layer=shape.layers, n_head=shape.heads, n_embd=shape.width,
                                            mlp_ratio=shape.hidden * 1.5 / shape.width, condition="class",
                                            num_classes=1, cond_len=1, latent_shape=[5, 16, 16],
                                            activation_checkpointing=checkpointing))
    model = Transformer(cfg)

    def step(ids, targets):
        if fused_loss:  # LMTrainConfig.fused_loss: the head inside the cross-entropy
            states = model(ids, hidden=True)
            return model.head(states, targets)[0].mean()
        logits = model(ids)
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    return model, step


def hf_model(_fused_loss: bool, shape: Shape):
    from transformers import LlamaConfig, LlamaForCausalLM

    from nbp.models.transformer_attention import nbp_mask

    config = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.width, intermediate_size=shape.hidden,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.heads, max_position_embeddings=shape.seq,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    mask = nbp_mask(shape.seq, shape.block, prefix=1)[None, None]  # (1, 1, N, N) bool, True = attend

    def step(ids, targets):
        logits = model(input_ids=ids, attention_mask=mask.to(ids.device)).logits
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    return model, step


VARIANTS = [(name, bf16) for bf16 in (False, True) for name in ("hf-llama", "nbp", "nbp-plain-loss")]


class Variant:
    """One model, its optimizer and fixed data; `step()` runs forward, loss, backward and AdamW once."""

    def __init__(self, name: str, bf16: bool, shape: Shape = SHAPES["bench"], device: str = "cpu", batch: int = 1,
                 compile: bool = False):
        torch.manual_seed(0)
        self.name, self.bf16, self.shape, self.device, self.batch = name, bf16, shape, device, batch
        if name == "hf-llama":
            self.model, self.loss = hf_model(False, shape)
        else:  # "nbp" (fused head + loss), "nbp-plain-loss", "nbp-checkpointed" (fused, layers recomputed)
            self.model, self.loss = nbp_model(name != "nbp-plain-loss", shape, name == "nbp-checkpointed")
        self.model.to(device)
        if compile:
            self.loss = torch.compile(self.loss)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        self.ids, self.targets = (torch.randint(0, shape.vocab, (batch, shape.seq), device=device) for _ in range(2))

    def step(self) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss(self.ids, self.targets)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        return time.perf_counter() - start

    def row(self) -> dict:
        shape, params = self.shape, sum(p.numel() for p in self.model.parameters())
        embedding = sum(p.numel() for n, p in self.model.named_parameters() if "emb" in n or "embed_tokens" in n)
        matmul = params - embedding  # the head is a matmul; the input embedding is a lookup
        tokens = self.batch * shape.seq
        attention = 12 * shape.layers * shape.width * shape.seq * tokens  # QK^T and AV, forward + backward
        return dict(model=self.name, dtype="bf16 autocast" if self.bf16 else "fp32", params=params,
                    flops=6 * matmul * tokens + attention, tokens=tokens)


def timing(flops: float, tokens: int, times: list[float]) -> dict:
    seconds = statistics.median(times)
    return dict(tokens_per_s=tokens / seconds, step_s=seconds, step_s_all=times, model_flops_per_s=flops / seconds)


def resident_peak_mb() -> float:
    """This process's peak resident memory (VmHWM: its own, unlike ru_maxrss, which survives exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def worker(connection, name: str, bf16: bool) -> None:
    """One variant in a process of its own (its own heap and peak memory), stepping when the parent asks."""
    tune_cpu_allocator()
    baseline = resident_peak_mb()
    variant = Variant(name, bf16)
    while connection.recv() == "step":
        connection.send(variant.step())
    connection.send((variant.row(), resident_peak_mb() - baseline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant, after one warm-up")
    parser.add_argument("--dtype", choices=("both", "fp32", "bf16"), default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=sorted(SHAPES), default="bench")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step (GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step (GPU)")
    parser.add_argument("--json")
    args = parser.parse_args()
    peak = matmul_peak(device=args.device)
    dtypes = {"both": (False, True), "fp32": (False,), "bf16": (True,)}[args.dtype]
    if True in dtypes and not use_bf16(True, args.device, "the bf16 rows"):
        dtypes = (False,)
    if args.device == "cpu":
        rows = cpu_rows(dtypes, args.steps)
    else:
        rows = gpu_rows(dtypes, args)
    report(rows, peak, args)


def gpu_rows(dtypes, args) -> list[dict]:
    """On a GPU: each variant in turn in this process, with the shape, batch and compilation asked for."""
    rows = []
    for bf16 in dtypes:
        for name in ("hf-llama", "nbp", "nbp-checkpointed"):
            variant = Variant(name, bf16, SHAPES[args.size], args.device, args.batch, args.compile)
            times = [variant.step() for _ in range(args.steps + 2)][2:]  # two warm-up steps (compilation)
            row = variant.row()
            rows.append(dict(row, **timing(row["flops"], row["tokens"], times),
                             peak_mb=torch.cuda.max_memory_allocated() / 2**20))
            del variant
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return rows


def cpu_rows(dtypes, steps: int) -> list[dict]:
    rows = []
    for bf16 in dtypes:  # three workers at a time
        names = [name for name, b in VARIANTS if b == bf16]
        context = multiprocessing.get_context("spawn")
        pipes = [context.Pipe() for _ in names]
        workers = [context.Process(target=worker, args=(child, name, bf16)) for (_, child), name in zip(pipes, names)]
        for w in workers:
            w.start()
        times = [[] for _ in names]
        for round_ in range(steps + 1):  # interleaved: a slow minute of the machine hits every variant
            for i in (range(len(names)) if round_ % 2 else reversed(range(len(names)))):
                pipes[i][0].send("step")
                seconds = pipes[i][0].recv()
                if round_:  # the first round warms up
                    times[i].append(seconds)
        for (parent, _), w, t in zip(pipes, workers, times):
            parent.send("stop")
            row, peak_mb = parent.recv()
            w.join()
            rows.append(dict(row, **timing(row["flops"], row["tokens"], t), peak_mb=peak_mb))
    return rows


def report(rows: list[dict], peak: float, args) -> None:
    for row in rows:
        row["mfu"] = row["model_flops_per_s"] / peak
        hf = next(r for r in rows if r["model"] == "hf-llama" and r["dtype"] == row["dtype"])
        row["vs_hf"] = row["tokens_per_s"] / hf["tokens_per_s"]
    shape = SHAPES[args.size]
    print(f"bf16 matmul peak {peak / 1e9:.0f} GFLOP/s on {args.device}; {args.size} shape {asdict(shape)}, batch "
          f"{args.batch}; median of {args.steps} steps")
    print(f"{'model':<14} {'dtype':<14} {'params M':>8} {'tokens/s':>9} {'vs HF':>6} {'MFU':>6} {'peak MB':>8}")
    for r in rows:
        print(f"{r['model']:<14} {r['dtype']:<14} {r['params'] / 1e6:>8.1f} {r['tokens_per_s']:>9.0f} "
              f"{r['vs_hf']:>5.2f}x {100 * r['mfu']:>5.1f}% {r['peak_mb']:>8.0f}")
    emit_json({"device": args.device, "size": args.size, "batch": args.batch, "matmul_peak_flops": peak,
               "rows": rows}, args.json)


if __name__ == "__main__":
    main()
