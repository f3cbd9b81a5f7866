"""FVD between two folders of videos (mp4/avi/gif files or uint8 .npy arrays), with the standard I3D
(VideoGPT's `i3d_pretrained_400.pt` or StyleGAN-V's TorchScript file): the first `--frames` frames of each video,
resized to 224 and scaled to [-1, 1], features in batches, the Fréchet distance in float64.

    python examples/fvd_two_folders.py real_videos/ generated_videos/ --i3d ckpt/i3d_pretrained_400.pt

For the numbers papers report, use `nbp eval` with a named protocol (it checks the counts, frames and sizes).
"""
from __future__ import annotations

import argparse

from nbp.eval.fvd import load_videos
from nbp.metrics import frechet_distance, i3d_features, load_i3d


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("real")
    parser.add_argument("fake")
    parser.add_argument("--i3d", required=True)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    i3d = load_i3d(args.i3d)
    real, fake = (load_videos(folder)[:, :args.frames] for folder in (args.real, args.fake))  # (N, T, H, W, 3)
    features = [i3d_features(i3d, videos, batch_size=args.batch_size) for videos in (real, fake)]
    fvd = frechet_distance(*features)
    print(f"FVD {fvd:.2f} between {len(real)} real and {len(fake)} generated videos of {args.frames} frames")
    return fvd


if __name__ == "__main__":
    main()
