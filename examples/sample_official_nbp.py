"""Sample videos from the official NBP release: its MAGVITv2 tokenizer and its text-conditional UCF-101 LM, as they
were published (no conversion), then write them as mp4 files and one contact sheet.

    python examples/sample_official_nbp.py --tokenizer ckpt/magvit2_ucf.pt --lm ckpt/ucf_base_nbp16_hybrid.ckpt \
        --text "ApplyEyeMakeup" --text-tokenizer ckpt/llama2_tokenizer --out runs/official_samples --num-samples 4
    # or the prompt's ids from another tokenizer run: --text-ids 1,319,4203,...

The LM's latent grid says how many frames it makes (5 latent frames: 17 frames, 128 px for UCF-101).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nbp.download import load_magvit2, load_transformer
from nbp.io.media import contact_sheet, save_video, to_uint8
from nbp.pipelines import NBPPipeline


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="the official magvit2_*.pt (or nbp's file or folder)")
    parser.add_argument("--lm", required=True, help="the official *.ckpt (or nbp's file or folder)")
    parser.add_argument("--out", default="runs/official_samples")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--num-samples", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=16000)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--text", help="the prompt (UCF-101: the class name), read by --text-tokenizer")
    parser.add_argument("--text-tokenizer", help="a local Hugging Face tokenizer folder (the official: Llama-2's)")
    parser.add_argument("--text-ids", help="or the prompt as comma-separated token ids")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pipeline = NBPPipeline(load_magvit2(args.tokenizer, resolution=args.resolution), load_transformer(args.lm),
                           args.resolution)
    t = pipeline.lm.config.latent_shape[0]
    frames = 1 + (t - 1) * pipeline.tokenizer.config.temporal_factor  # a causal tokenizer: 1 + 4k frames
    if args.text_tokenizer:
        pipeline.lm.config.text_tokenizer = args.text_tokenizer
    if args.text_ids:
        ids = torch.tensor([int(i) for i in args.text_ids.split(",")])
        condition = {"text_ids": ids[None].repeat(args.num_samples, 1)}
    elif args.text:
        condition = {"text": [args.text] * args.num_samples}
    else:
        raise SystemExit("give the prompt: --text (with --text-tokenizer) or --text-ids")
    out = pipeline(frames, None, generator=torch.Generator().manual_seed(args.seed), top_k=args.top_k,
                   top_p=args.top_p, **condition)
    videos = to_uint8(out.videos)  # (N, T, H, W, 3)
    folder = Path(args.out)
    written = [save_video(folder / f"sample_{i}.mp4", video) for i, video in enumerate(videos)]
    written.append(contact_sheet(videos, folder / "contact_sheet.png"))
    print(f"{len(videos)} videos of {frames} frames at {args.resolution} px in {folder}")
    return written


if __name__ == "__main__":
    main()
