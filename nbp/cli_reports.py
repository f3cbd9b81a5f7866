"""What each command prints when it is done: a few lines or a small table of its result, then where its files went
(`nbp.cli`'s table names one per command)."""
from __future__ import annotations


def fvd_table(cfg, r) -> str:
    return (f"| protocol | real | fake | FVD |\n|---|---|---|---|\n| {r['protocol']} | {r['real']['shape']} | "
            f"{r['fake']['shape']} | {r['fvd']:.2f} |\n{r['protocol_description']}; written to {cfg.out}/fvd.json")


def prediction_table(cfg, r) -> str:
    rows = "".join(f"| {name.replace('_', ' ')} | {r[name]['psnr']:.2f} | {r[name]['ssim']:.3f} |\n"
                   for name in ("predicted", "copy_last_frame", "tokenizer_reconstruction"))
    return (f"{r['clips']} clips, {r['frames']}\n| prediction | PSNR dB | SSIM |\n|---|---|---|\n{rows}"
            f"written to {cfg.out}: metrics.json, truth_vs_prediction.png, truth_vs_prediction.mp4")


def world_table(cfg, r) -> str:
    rows = "".join(f"| {name.replace('_', ' ')} | {r['psnr'][name]:.2f} | {r['ssim'][name]:.3f} |\n" for name in r["psnr"])
    return (f"{r['clips']} clips, {r['context']} frames given, {r['horizon']} predicted "
            f"({r['seconds_per_frame'] * 1000:.0f} ms per frame)\n| prediction | PSNR dB | SSIM |\n|---|---|---|\n"
            f"{rows}written to {cfg.out}: metrics.json, psnr_over_horizon.png, ssim_over_horizon.png, "
            "truth_true_shuffled.mp4")


TOKENIZER_METRICS = ("clips", "psnr", "ssim", "lpips", "rfvd", "usage", "codes_used", "entropy_bits", "perplexity",
                     "baseline_mean_frame_psnr", "baseline_mean_colour_psnr")


def tokenizer_table(cfg, r) -> str:
    lines = [f"{k:>25}: {r[k]:.4g}" if isinstance(r[k], float) else f"{k:>25}: {r[k]}"
             for k in TOKENIZER_METRICS if k in r]
    if "rfvd_protocol" in r:
        lines.append(f"rFVD protocol: {r['rfvd_protocol']}")
    return "\n".join([*lines, f"written to {cfg.out}/metrics.json, reconstructions.png, reconstructions.mp4"])


def samples_report(cfg, r) -> str:
    if getattr(cfg, "sharded", False):
        return f"rank {r['rank']}/{r['world']}: wrote {r['samples']} samples to {r['folder']}/NNNNNN.npy"
    return (f"wrote {r['samples']} videos to {r['folder']}: sample_*.mp4, grid.mp4, contact_sheet.png, "
            "samples_uint8.npy")


def drift_table(cfg, r) -> str:
    lines = [f"{r['family']} world model, {r['episodes']} sessions of {r['steps']} steps after {r['context']} frames "
             f"({1000 * r['seconds_per_frame']:.1f} ms a frame)",
             f"{'steps':>10} {'PSNR':>7} {'copy-last':>9} {'SSIM':>6} {'palette':>8} {'(truth)':>8} {'sharpness':>9}"]
    spans = r["spans"]
    cell = lambda key, span, width, digits: (f"{spans[key][span]:{width}.{digits}f}" if spans[key][span] is not None
                                             else f"{'-':>{width}}")
    for span in spans["psnr"]:
        lines.append(f"{span:>10} {cell('psnr', span, 7, 2)} {cell('copy_last_psnr', span, 9, 2)} "
                     f"{cell('ssim', span, 6, 3)} {cell('palette', span, 8, 3)} {cell('truth_palette', span, 8, 3)} "
                     f"{cell('sharpness', span, 9, 2)}")
    return "\n".join([*lines, f"written to {cfg.out}/metrics.json, psnr_over_steps.png, game_frame_over_steps.png, strip.png"])
