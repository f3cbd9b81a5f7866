"""Roll out an action-conditioned FAR model on a DMLab-format episode (FAR's `.npz`: `video` (T, 64, 64, 3) uint8
and `actions` (T,)): the first frames as context, the rest predicted from the episode's own actions, then PSNR per
predicted frame against the episode and a side-by-side video.

    python examples/far_rollout_dmlab.py --far FAR_B_Long_DMLab_Action64-c09441dc.pth \
        --dcae DCAE_DMLab_Res64-17035ae5.pth --episode dmlab/5.npz --context 36 --frames 64 --steps 50

Official files load as they are (nbp's files, folders and cached repo ids too).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from nbp.data.episodes import load_episode
from nbp.download import load_dcae, load_far
from nbp.io.media import save_video, to_uint8
from nbp.metrics import per_frame_psnr
from nbp.pipelines import FARPipeline


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--far", required=True)
    parser.add_argument("--dcae", required=True)
    parser.add_argument("--episode", required=True)
    parser.add_argument("--context", type=int, default=36, help="frames given")
    parser.add_argument("--frames", type=int, default=64, help="frames predicted")
    parser.add_argument("--steps", type=int, default=50, help="Euler steps per frame")
    parser.add_argument("--cfg-scale", type=float, default=1.5, help="action guidance (FAR's 1.5; -1: action-free)")
    parser.add_argument("--short-window", type=int, help="FAR_Long's window W when the file does not say (DMLab: 16)")
    parser.add_argument("--out", default="runs/far_rollout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    video, actions = load_episode(args.episode, resolution=64)  # (T, 64, 64, 3) uint8, (T,)
    total = args.context + args.frames
    if len(video) < total:
        raise SystemExit(f"{args.episode} has {len(video)} frames; --context + --frames needs {total}")
    fields = {"short_window": args.short_window} if args.short_window else {}
    pipeline = FARPipeline(load_dcae(args.dcae, resolution=64), load_far(args.far, **fields))
    clip = torch.from_numpy(video[:total]).permute(3, 0, 1, 2)[None].float() / 255  # (1, 3, T, H, W)
    out = pipeline(args.frames, clip[:, :, :args.context], actions=torch.from_numpy(actions[:total])[None],
                   steps=args.steps, cfg_scale=args.cfg_scale, generator=torch.Generator().manual_seed(args.seed))
    predicted, truth = out.videos[:, :, args.context:], clip[:, :, args.context:]
    per_frame = per_frame_psnr(predicted, truth, max_db=58.9)[0].tolist()  # capped at 8-bit rounding noise
    side_by_side = torch.cat([clip, out.videos], dim=-1)  # truth | prediction
    save_video(Path(args.out) / "truth_vs_prediction.mp4", to_uint8(side_by_side)[0])
    print(f"PSNR of the {args.frames} predicted frames: {np.mean(per_frame):.2f} dB "
          f"(first {per_frame[0]:.2f}, last {per_frame[-1]:.2f}); {args.out}/truth_vs_prediction.mp4")
    return {"psnr_per_frame": per_frame, "videos": out.videos}


if __name__ == "__main__":
    main()
