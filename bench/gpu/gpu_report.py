"""Collect bench/gpu_check.sh's outputs into gpu_check.json and gpu_check.md, each figure beside issue 21's floor.

    python bench/gpu/gpu_report.py OUT_DIR
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

FAR_PUBLISHED_S = 100.0  # FAR's reported time for a 256-frame FAR-B-Long rollout


def read(folder: Path, name: str):
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def test_summary(folder: Path) -> dict:
    log = folder / "cuda_tests.log"
    text = log.read_text() if log.is_file() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", text)}
    return {"counts": counts, "ok": bool(counts.get("passed")) and not counts.get("failed") and not counts.get("error")}


DECODE_FILES = ("decode.json", "decode_dynamic.json", "decode_compiled.json")


def decode_figures(decode_rows: list[dict]) -> dict:
    """Per decoder, block and batch; then the fastest decoder's batch-1 block step and its block-16 speedup."""
    rows = {(r["decoding"], r["block"], r["batch"]): r for r in decode_rows if r["case"] == "hybrid"}
    out = {}
    for (decoding, block, batch), r in sorted(rows.items()):
        out[f"{decoding}_block{block}_batch{batch}"] = {
            "seconds": r["seconds"], "step_ms": r["step_ms"], "floor_ms": r["floor_ms"],
            "step_over_floor": r["step_ms"] / r["floor_ms"], "steps": r["steps"]}
    fastest = min((key for key in rows if key[1:] == (16, 1)), key=lambda k: rows[k]["step_ms"], default=None)
    if fastest:
        out["block16_batch1"] = out[f"{fastest[0]}_block16_batch1"] | {"decoding": fastest[0]}
    twins = [d for d, block, batch in rows if (block, batch) == (1, 1) and (d, 16, 1) in rows]
    if twins:
        best = min(twins, key=lambda d: rows[(d, 16, 1)]["seconds"])
        out["block16_speedup_batch1"] = rows[(best, 1, 1)]["seconds"] / rows[(best, 16, 1)]["seconds"]
        out["speedup_decoding"] = best
    return out


def floors(figures: dict) -> list[tuple[str, str, str, bool | None]]:
    """(what, measured, floor, met) rows."""
    rows = []
    decode, size = figures.get("decode") or {}, figures.get("decode_size") or "?"
    step = decode.get("block16_batch1")
    if step:
        rows.append((f"{size} hybrid block step, batch 1 ({step['decoding']})",
                     f"{step['step_ms']:.2f} ms ({step['step_over_floor']:.2f}x the "
                     f"{step['floor_ms']:.2f} ms weight-reading bound)", "<= 2x the bound", step["step_over_floor"] <= 2))
        rows.append(("95-step hybrid sample, batch 1", f"{step['seconds']:.3f} s", "well under 0.2 s", step["seconds"] < 0.2))
    if "block16_speedup_batch1" in decode:
        speedup = decode["block16_speedup_batch1"]
        rows.append((f"block 16 against block 1, same weights ({decode['speedup_decoding']})", f"{speedup:.1f}x",
                     ">= 14x", speedup >= 14))
    train = figures.get("train_lm")
    if train:
        nbp = next((r for r in train["rows"] if r["model"] == "nbp"), None)
        if nbp:
            rows.append((f"{train['size']} training, bf16, batch {train['batch']}",
                         f"{nbp['tokens_per_s']:.0f} tokens/s, MFU {100 * nbp['mfu']:.1f}%",
                         ">= 45% MFU", nbp["mfu"] >= 0.45))
    far = figures.get("far")
    if far:
        decoding = far["config"].get("decoding", "auto")
        rows.append(("FAR-B-Long 256-frame rollout, batch 4", f"{far['cached_total_s']:.1f} s cached ({decoding}), "
                     f"{far.get('dynamic_total_s') or float('nan'):.1f} s dynamic cache, "
                     f"{far['uncached_total_s'] or float('nan'):.1f} s without caches",
                     f"<= {FAR_PUBLISHED_S / 5:.0f} s (5x FAR's ~100 s)", far["cached_total_s"] <= FAR_PUBLISHED_S / 5))
    tokenizer = figures.get("tokenizer")
    if tokenizer:
        best = max(tokenizer, key=lambda r: r["encode_clips_per_s"] + r["decode_clips_per_s"])
        rows.append((f"tokenizer {best['preset']} {best['clip']}, {best['variant']}",
                     f"encode {best['encode_clips_per_s']:.1f} clips/s, decode {best['decode_clips_per_s']:.1f} clips/s",
                     "measured", None))
    tests = figures["tests"]
    rows.insert(0, ("CUDA tests", ", ".join(f"{v} {k}" for k, v in tests["counts"].items()) or "no result",
                    "all pass", tests["ok"]))
    return rows


def main() -> None:
    folder = Path(sys.argv[1])
    decodes = [d for d in (read(folder, name) for name in DECODE_FILES) if d]
    decode = decodes[0] if decodes else None
    figures = {"tests": test_summary(folder),
               "decode": decode_figures([r for d in decodes for r in d["rows"]]) if decodes else None,
               "decode_device": decode and decode.get("device"), "decode_size": decode and decode.get("size"),
               "train_lm": read(folder, "train_lm.json"),
               "far": read(folder, "far.json"), "tokenizer": read(folder, "tokenizer.json"),
               "steps": [json.loads(line) for line in (folder / "steps.jsonl").read_text().splitlines()]
               if (folder / "steps.jsonl").is_file() else []}
    table = floors(figures)
    figures["floors"] = [dict(zip(("what", "measured", "floor", "met"), row)) for row in table]
    (folder / "gpu_check.json").write_text(json.dumps(figures, indent=1))
    lines = [f"GPU check on {figures['decode_device'] or 'unknown device'}", "",
             "| what | measured | floor | met |", "|---|---|---|---|"]
    lines += [f"| {w} | {m} | {f} | {'-' if ok is None else ('yes' if ok else 'NO')} |" for w, m, f, ok in table]
    (folder / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
