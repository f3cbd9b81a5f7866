"""Tokenizer encode/decode seconds per clip: nbp against a straightforward implementation, side by side.

    .venv/bin/python bench/tokenizer.py                    # nbp-magvit2 and small at 17x64x64
    .venv/bin/python bench/tokenizer.py --presets tiny --repeats 2 --json out.json
    .venv/bin/python bench/tokenizer.py --default-allocator   # both rows without nbp.runtime's malloc setting
    python bench/tokenizer.py --presets nbp-magvit2 --size 128 --device cuda --batch 8   # the GPU check

Rows: the straightforward implementation (bench/naive_magvit2.py, float32), nbp in float32, nbp under bf16
autocast (float32 weights, cast on every call), and nbp with bf16 weights under autocast. Times are medians
over `--repeats` runs after a warm-up, `--batch` clips at once (default 1), in one process; "clips/s" = batch / s.
"psnr" compares each row's reconstruction with nbp float32's (dB, over the float32 reconstruction's value range):
"rt psnr" for the whole round trip (bf16 moves some latents across FSQ bin edges, so a few indices differ: "same
idx"), and "dec psnr" for decoding nbp float32's indices.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from naive_magvit2 import NaiveTokenizer  # noqa: E402

from nbp.config import from_preset  # noqa: E402
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer  # noqa: E402
from nbp.runtime import tune_cpu_allocator  # noqa: E402

from report import synchronize  # noqa: E402


def timed_round_trip(model, quantizer, video, bf16: bool):
    with torch.no_grad(), torch.autocast(video.device.type, dtype=torch.bfloat16, enabled=bf16):
        synchronize(video.device)
        start = time.perf_counter()
        z = model.encode(video, quantize=False) if isinstance(model, VideoTokenizer) else model.encode(video)
        synchronize(video.device)
        middle = time.perf_counter()
        codes, indices = quantizer(z.float())
        recon = model.decode(codes.to(next(model.parameters()).dtype))
        synchronize(video.device)
        end = time.perf_counter()
    return middle - start, end - middle, recon.float(), indices


def decode_indices(model, quantizer, indices, bf16: bool):
    with torch.no_grad(), torch.autocast(indices.device.type, dtype=torch.bfloat16, enabled=bf16):
        return model.decode(quantizer.indices_to_codes(indices).to(next(model.parameters()).dtype)).float()


def psnr(recon, reference):
    peak = (reference.max() - reference.min()).item()
    mse = (recon - reference).square().mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(peak**2 / mse)).item()


def bench_preset(preset: str, frames: int, size: int, repeats: int, device="cpu", batch: int = 1) -> list[dict]:
    torch.manual_seed(0)
    config = from_preset(TokenizerConfig, preset, resolution=size)
    nbp_model = VideoTokenizer(config).eval().to(device)
    naive = NaiveTokenizer(config).eval()
    naive.load_state_dict(nbp_model.state_dict(), strict=False)  # same weights; naive has no quantizer
    naive.to(device)
    video = torch.rand(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    quantizer = nbp_model.quantizer

    _, _, reference_recon, reference_indices = timed_round_trip(nbp_model, quantizer, video, bf16=False)

    variants = [("straightforward fp32", naive, False), ("nbp fp32", nbp_model, False),
                ("nbp bf16 autocast", nbp_model, True), ("nbp bf16 weights", None, True)]
    rows = []
    for name, model, bf16 in variants:
        if model is None:
            model = nbp_model.to(torch.bfloat16)
        timed_round_trip(model, quantizer, video, bf16)  # warm-up
        runs = [timed_round_trip(model, quantizer, video, bf16) for _ in range(repeats)]
        encode, decode = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        recon, indices = runs[-1][2], runs[-1][3]
        decoded = decode_indices(model, quantizer, reference_indices, bf16)
        rows.append(dict(preset=preset, clip=f"{frames}x{size}x{size}", variant=name, batch=batch, encode_s=encode,
                         decode_s=decode, total_s=encode + decode, encode_clips_per_s=batch / encode,
                         decode_clips_per_s=batch / decode,
                         round_trip_psnr_db=psnr(recon, reference_recon), decode_psnr_db=psnr(decoded, reference_recon),
                         same_indices=(indices == reference_indices).float().mean().item()))
    for row in rows:
        row["speedup"] = rows[0]["total_s"] / row["total_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["nbp-magvit2", "small"])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--default-allocator", action="store_true",
                        help="skip nbp.runtime.tune_cpu_allocator (glibc's default: fresh pages for every large tensor)")
    args = parser.parse_args()
    tuned = not args.default_allocator and tune_cpu_allocator()

    rows = [row for preset in args.presets
            for row in bench_preset(preset, args.frames, args.size, args.repeats, args.device, args.batch)]
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} tuned_allocator={tuned}")
    print(f"{'preset':<12} {'clip':<9} {'variant':<21} {'encode s':>9} {'decode s':>9} {'total s':>8} "
          f"{'speedup':>8} {'rt psnr':>8} {'dec psnr':>8} {'same idx':>9}")
    for r in rows:
        print(f"{r['preset']:<12} {r['clip']:<9} {r['variant']:<21} {r['encode_s']:>9.3f} {r['decode_s']:>9.3f} "
              f"{r['total_s']:>8.3f} {r['speedup']:>7.2f}x {r['round_trip_psnr_db']:>8.1f} {r['decode_psnr_db']:>8.1f} "
              f"{r['same_indices']:>9.4f}")
    print(json.dumps(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
