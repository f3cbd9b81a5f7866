"""Two world models on the same `nbp world-eval` protocol, side by side: PSNR/SSIM per horizon step and seconds
per generated frame, as a markdown table, a JSON line and one plot of both PSNR curves.

    .venv/bin/python bench/probes/world_compare.py runs/far_crafter_tiny/eval runs/world_crafter_1core/eval \
        --names FAR nbp --out runs/world_compare
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nbp.io.plot import line_chart

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/report.py
from report import emit_json  # noqa: E402

STEPS = (1, 2, 4, 8, 16, 32, 48)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evals", nargs="+", help="world-eval output folders (metrics.json in each)")
    parser.add_argument("--names", nargs="+")
    parser.add_argument("--out", default="runs/world_compare")
    args = parser.parse_args()
    names = args.names or [Path(e).parent.name for e in args.evals]
    results = {n: json.loads((Path(e) / "metrics.json").read_text()) for n, e in zip(names, args.evals)}
    first = next(iter(results.values()))
    if any((r["clips"], r["context"], r["horizon"]) != (first["clips"], first["context"], first["horizon"])
           for r in results.values()):
        raise SystemExit("the evaluations differ in clips, context or horizon: not comparable")
    steps = [s for s in STEPS if s <= first["horizon"]]
    print(f"{first['clips']} clips, {first['context']} frames given, {first['horizon']} predicted")
    print("| model | predictor | mean PSNR | mean SSIM | " + " | ".join(f"PSNR @{s}" for s in steps) +
          " | s / frame |\n|" + "---|" * (len(steps) + 5))
    for name, r in results.items():
        for predictor in ("true_actions", "shuffled_actions", "copy_last", "tokenizer"):
            curve = r["psnr_curve"][predictor]
            seconds = f"{r['seconds_per_frame']:.4f}" if predictor == "true_actions" else ""
            print(f"| {name} | {predictor.replace('_', ' ')} | {r['psnr'][predictor]:.2f} | {r['ssim'][predictor]:.3f} | "
                  + " | ".join(f"{curve[s - 1]:.2f}" for s in steps) + f" | {seconds} |")
    horizon = list(range(1, first["horizon"] + 1))
    series = {f"{n}: {p.replace('_', ' ')}": (horizon, r["psnr_curve"][p]) for n, r in results.items()
              for p in ("true_actions", "shuffled_actions")}
    series["copy last"] = (horizon, first["psnr_curve"]["copy_last"])
    line_chart(series, Path(args.out) / "psnr_over_horizon.png", "PSNR of predicted frames", "frames ahead")
    emit_json({n: {k: r[k] for k in ("psnr", "ssim", "seconds_per_frame")} for n, r in results.items()},
              str(Path(args.out) / "compare.json"))


if __name__ == "__main__":
    main()
