"""What a FAR model predicts of the next frame at each noise level, teacher-forced on latent clips: the error of its
clean-frame estimate against the true latents, beside copying the last context frame, with the clip's actions and
with another clip's. At sigma = 1 the noisy frame carries nothing, so the estimate comes from the context and the
action alone: that row says whether the model has learned to carry the context over and to use the actions.

    .venv/bin/python bench/probes/far_denoise.py runs/far_crafter_tiny/far.safetensors data/crafter_latents/val

Each clip is `--frames` frames of an item (default W, the model's window; more adds FAR_Long's long-term context,
as a rollout meets it): clean context, the last frame noisy at sigma, its noise drawn once per clip and level. The
clean-frame estimate is x0 = x_sigma - sigma * v. Prints a table and JSON.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from nbp.data.latents import LatentDataset
from nbp.download import load_far
from nbp.runtime import describe_cpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/report.py
from report import emit_json  # noqa: E402


@torch.no_grad()
def clean_estimate_error(far, clip: torch.Tensor, actions: torch.Tensor | None, sigma: float,
                         noise: torch.Tensor) -> float:
    """Mean squared error of the model's estimate of the clip's last frame (1, W, C, h, w) from the noisy one."""
    x0 = clip[:, -1]
    noisy = sigma * noise + (1 - sigma) * x0
    timesteps = torch.full(clip.shape[:2], -1.0)
    timesteps[:, -1] = sigma * 1000
    velocity = far(torch.cat([clip[:, :-1], noisy[:, None]], dim=1), timesteps, actions=actions)[:, -1]
    return (noisy - sigma * velocity - x0).square().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("far", help="an action-conditioned FAR model (.safetensors or official .pth)")
    parser.add_argument("latents", help="a latent dataset with actions (`nbp extract-latents`)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 0.8, 0.5, 0.2])
    parser.add_argument("--clips", type=int, default=3, help="clips per item, evenly spaced")
    parser.add_argument("--frames", type=int, help="frames per clip, the last one predicted (default: the window)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    far = load_far(args.far)
    window = args.frames or far.config.short_window
    data = LatentDataset(args.latents, window)
    generator = torch.Generator().manual_seed(args.seed)
    clips = [data.clip(index, start) for index, length in enumerate(data.lengths)
             for start in torch.linspace(0, length - window, args.clips).long().tolist()]
    rows = []
    for sigma in args.sigmas:
        errors = {"true actions": [], "other actions": [], "copy last": []}
        for i, item in enumerate(clips):
            clip, actions = item["latents"][None].float(), item["actions"][None]
            other = clips[(i + 1) % len(clips)]["actions"][None]
            noise = torch.randn(clip.shape[2:], generator=generator)[None]
            errors["true actions"].append(clean_estimate_error(far, clip, actions, sigma, noise))
            errors["other actions"].append(clean_estimate_error(far, clip, other, sigma, noise))
            errors["copy last"].append((clip[:, -2] - clip[:, -1]).square().mean().item())
        rows.append({"sigma": sigma, **{k: sum(v) / len(v) for k, v in errors.items()}})
    print(f"{args.far}: {len(clips)} clips of {window} frames from {args.latents} ({describe_cpu()})")
    print("| sigma | x0 MSE, true actions | x0 MSE, another clip's actions | copy last |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['sigma']:.2f} | {r['true actions']:.4f} | {r['other actions']:.4f} | {r['copy last']:.4f} |")
    emit_json({"far": args.far, "latents": args.latents, "clips": len(clips), "rows": rows}, args.json)


if __name__ == "__main__":
    main()
