"""Training throughput: nbp's transformer against Hugging Face transformers' Llama, same shape and mask.

    .venv/bin/python bench/train_lm.py               # ~4 minutes
    .venv/bin/python bench/train_lm.py --steps 3

Both models: 8 layers, width 512, 8 heads, SwiGLU 1365, RMSNorm, rotary positions, no biases, a 64,017-entry
embedding and head (91M parameters, 25M outside the embeddings); batch 1, sequence 1280, the block-causal mask of
16-token blocks (HF gets it as a 4-D boolean mask with SDPA attention). One step = forward, cross-entropy,
backward, AdamW; "nbp chunked" computes the head and the loss in row chunks (`LMTrainConfig.chunked_loss`). Each variant runs in its own process, so "peak MB" is that process's peak resident memory
growth. "MFU" = model FLOPs (6 x matmul parameters x tokens + attention) per second over the bf16 matmul peak
measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

VOCAB, WIDTH, LAYERS, HEADS, HIDDEN, SEQ, BLOCK = 64017, 512, 8, 8, 1365, 1280, 16
CHUNKED = False


def nbp_model():
    from nbp.config import from_dict
    from nbp.models.transformer import Transformer, TransformerConfig
    from nbp.training.fused_ce import linear_cross_entropy

    cfg = from_dict(TransformerConfig, dict(n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, mlp_ratio=HIDDEN * 1.5 / WIDTH,
                                            condition="class", num_classes=1, cond_len=1, latent_shape=[5, 16, 16]))
    model = Transformer(cfg)

    def step(ids, targets):
        if CHUNKED:  # LMTrainConfig.chunked_loss: the head inside the chunked cross-entropy
            states = model(ids, hidden=True)
            return linear_cross_entropy(states.flatten(0, 1), model.head.weight, targets.flatten())[0].mean()
        logits = model(ids)
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    return model, step


def hf_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    from nbp.models.masks import nbp_mask

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=HIDDEN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=SEQ,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    mask = nbp_mask(SEQ, BLOCK, prefix=1)[None, None]  # (1, 1, N, N) bool, True = attend

    def step(ids, targets):
        logits = model(input_ids=ids, attention_mask=mask).logits
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    return model, step


def matmul_peak(dtype=torch.bfloat16, size: int = 4096) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * size**3 / (time.perf_counter() - start)


def run_variant(name: str, bf16: bool, steps: int) -> dict:
    torch.manual_seed(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model, step = (hf_model if name == "hf-llama" else nbp_model)()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, VOCAB, (1, SEQ))
    targets = torch.randint(0, VOCAB, (1, SEQ))
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = step(ids, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if "emb" in n or "embed_tokens" in n)
    matmul = params - embedding  # the head is a matmul; the input embedding is a lookup
    seconds = sorted(times)[len(times) // 2]
    flops = 6 * matmul * SEQ + 12 * LAYERS * WIDTH * SEQ * SEQ  # attention: QK^T and AV, forward + backward
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return dict(model=name, dtype="bf16 autocast" if bf16 else "fp32", params=params, tokens_per_s=SEQ / seconds,
                step_s=seconds, model_flops_per_s=flops / seconds, peak_mb=peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # model:bf16, run in a child process
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.variant:
        global CHUNKED
        name, bf16 = args.variant.split(":")
        CHUNKED = name == "nbp-chunked"
        print(json.dumps(run_variant(name, bf16 == "1", args.steps)))
        return
    peak = matmul_peak()
    rows = []
    for bf16 in ("0", "1"):
        for name in ("hf-llama", "nbp", "nbp-chunked"):
            out = subprocess.run([sys.executable, __file__, "--variant", f"{name}:{bf16}", "--steps", str(args.steps)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    for row in rows:
        row["mfu"] = row["model_flops_per_s"] / peak
        hf = next(r for r in rows if r["model"] == "hf-llama" and r["dtype"] == row["dtype"])
        row["vs_hf"] = row["tokens_per_s"] / hf["tokens_per_s"]
    print(f"bf16 matmul peak {peak / 1e9:.0f} GFLOP/s; sequence {SEQ}, batch 1")
    print(f"{'model':<11} {'dtype':<14} {'params M':>8} {'tokens/s':>9} {'vs HF':>6} {'MFU':>6} {'peak MB':>8}")
    for r in rows:
        print(f"{r['model']:<11} {r['dtype']:<14} {r['params'] / 1e6:>8.1f} {r['tokens_per_s']:>9.0f} "
              f"{r['vs_hf']:>5.2f}x {100 * r['mfu']:>5.1f}% {r['peak_mb']:>8.0f}")
    print(json.dumps({"matmul_peak_flops": peak, "rows": rows}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_peak_flops": peak, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
