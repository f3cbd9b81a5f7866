"""`nbp <command>`: the command line, one subcommand per job, each driven by a config (preset + overrides)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass

from omegaconf import OmegaConf

from nbp.config import ConfigError, build_config, presets, to_dict
from nbp.models.tokenizer import TokenizerConfig
from nbp.runtime import tune_cpu_allocator

CONFIGS = {"tokenizer": TokenizerConfig}


def cmd_demo(args: argparse.Namespace) -> int:
    from nbp.demo import DemoConfig, run_demo

    flags = [f"{key}={value}" for key, value in (("out", args.out), ("device", args.device), ("scale", args.scale))
             if value is not None] + (["fresh=true"] if args.fresh else [])
    run_demo(build_config(DemoConfig, recipes=args.recipe, overrides=[*flags, *args.overrides]))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print a config resolved from a preset, recipes and overrides, as YAML (the recipe format)."""
    cls = CONFIGS[args.model]
    if args.preset is None:
        print(f"{args.model} presets: {', '.join(presets(cls))}")
        return 0
    config = build_config(cls, args.preset, args.recipe, args.overrides)
    print(OmegaConf.to_yaml(to_dict(config)), end="")
    return 0


@dataclass
class SyntheticConfig:
    out: str = "data/synthetic"
    videos_per_class: int = 24
    size: int = 64
    fps: float = 8
    seed: int = 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    from nbp.data.synthetic import CLASSES, make_dataset

    cfg = build_config(SyntheticConfig, recipes=args.recipe, overrides=args.overrides)
    root = make_dataset(cfg.out, cfg.videos_per_class, cfg.size, fps=cfg.fps, seed=cfg.seed)
    print(f"wrote {cfg.videos_per_class * len(CLASSES)} videos of {len(CLASSES)} classes to {root} "
          f"(trainlist.txt, testlist.txt)")
    return 0


@dataclass
class CrafterConfig:
    out: str = "data/crafter"
    train: int = 128  # episodes per split
    val: int = 8
    test: int = 16
    frames: int = 144  # most frames per episode (fewer when the player dies); night (noise) starts near 150
    size: int = 64
    view: int = 8  # tiles across the frame: 8 makes a tile one 8x8 token (Crafter's default is 9)
    fps: float = 10
    seed: int = 0


def cmd_crafter(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from nbp.data.episodes import make_crafter_dataset

    cfg = build_config(CrafterConfig, recipes=args.recipe, overrides=args.overrides)
    splits = {"train": cfg.train, "val": cfg.val, "test": cfg.test}
    make_crafter_dataset(cfg.out, splits, cfg.frames, cfg.size, cfg.fps, cfg.seed,
                         progress=lambda jobs: tqdm(jobs, desc="record crafter", unit="episode"), view=cfg.view)
    print(f"wrote Crafter episodes {splits} to {cfg.out}/<split>/ep_*.mp4 + .actions.npy")
    return 0


@dataclass
class TokenizeEpisodesConfig:
    tokenizer: str = "???"  # a per-frame tokenizer (e.g. tiny-frames)
    episodes: str = "???"  # folder of episodes (video + .actions.npy, or .npz with video and actions)
    out: str = "???"
    resolution: int = 64
    min_frames: int = 2
    device: str = "cpu"


def cmd_tokenize_episodes(args: argparse.Namespace) -> int:
    from nbp.world import tokenize_episodes

    cfg = build_config(TokenizeEpisodesConfig, recipes=args.recipe, overrides=args.overrides)
    counts = tokenize_episodes(cfg.tokenizer, cfg.episodes, cfg.out, cfg.resolution, cfg.min_frames, cfg.device)
    print(f"tokenized episodes in {cfg.out}: {json.dumps(counts)}")
    return 0


def cmd_world_eval(args: argparse.Namespace) -> int:
    from nbp.world import WorldEvalConfig, evaluate_world

    cfg = build_config(WorldEvalConfig, recipes=recipe_files(args), overrides=args.overrides)
    r = evaluate_world(cfg)
    print(f"{r['clips']} clips, {r['context']} frames given, {r['horizon']} predicted "
          f"({r['seconds_per_frame'] * 1000:.0f} ms per frame)\n| prediction | PSNR dB | SSIM |\n|---|---|---|")
    for name in r["psnr"]:
        print(f"| {name.replace('_', ' ')} | {r['psnr'][name]:.2f} | {r['ssim'][name]:.3f} |")
    print(f"written to {cfg.out}: metrics.json, psnr_over_horizon.png, ssim_over_horizon.png, truth_true_shuffled.mp4")
    return 0


def cmd_predict_eval(args: argparse.Namespace) -> int:
    from nbp.predict import PredictEvalConfig, evaluate_prediction

    cfg = build_config(PredictEvalConfig, recipes=args.recipe, overrides=args.overrides)
    r = evaluate_prediction(cfg)
    print(f"{r['clips']} clips, {r['frames']}\n| prediction | PSNR dB | SSIM |\n|---|---|---|")
    for name in ("predicted", "copy_last_frame", "tokenizer_reconstruction"):
        print(f"| {name.replace('_', ' ')} | {r[name]['psnr']:.2f} | {r[name]['ssim']:.3f} |")
    print(f"written to {cfg.out}: metrics.json, truth_vs_prediction.png, truth_vs_prediction.mp4")
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from nbp.tokenize import TokenizeConfig, tokenize

    cfg = build_config(TokenizeConfig, recipes=args.recipe, overrides=args.overrides)
    counts = tokenize(cfg)
    print(f"token dataset {cfg.out}: {json.dumps(counts)}")
    return 0


def recipe_files(args: argparse.Namespace) -> list[str]:
    """The optional recipe argument (a key=value in its place is an override), then --recipe files."""
    if args.config and "=" in args.config:
        args.overrides.insert(0, args.config)
        args.config = None
    return [*filter(None, [args.config]), *args.recipe]


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from nbp.training.tokenizer import TokenizerTrainConfig, train_tokenizer

    cfg = build_config(TokenizerTrainConfig, recipes=recipe_files(args), overrides=args.overrides)
    print(f"tokenizer written to {train_tokenizer(cfg)}")
    return 0


def cmd_eval_tokenizer(args: argparse.Namespace) -> int:
    from nbp.evaluate_tokenizer import TokenizerEvalConfig, evaluate_tokenizer

    cfg = build_config(TokenizerEvalConfig, recipes=args.recipe, overrides=args.overrides)
    results = evaluate_tokenizer(cfg)
    shown = ["clips", "psnr", "ssim", "lpips", "rfvd", "usage", "codes_used", "entropy_bits", "perplexity",
             "baseline_mean_frame_psnr", "baseline_mean_colour_psnr"]
    print("\n".join(f"{k:>25}: {results[k]:.4g}" if isinstance(results[k], float) else f"{k:>25}: {results[k]}"
                    for k in shown if k in results))
    if "rfvd_protocol" in results:
        print(f"rFVD protocol: {results['rfvd_protocol']}")
    print(f"written to {cfg.out}/metrics.json, reconstructions.png, reconstructions.mp4")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from nbp.sample import SampleConfig, sample_videos

    cfg = build_config(SampleConfig, recipes=args.recipe, overrides=args.overrides)
    summary = sample_videos(cfg)
    print(f"wrote {summary['samples']} videos to {cfg.out}: sample_*.mp4, grid.mp4, contact_sheet.png, samples_uint8.npy")
    return 0


def cmd_train_lm(args: argparse.Namespace) -> int:
    from nbp.training.lm import LMTrainConfig, train_lm

    cfg = build_config(LMTrainConfig, recipes=recipe_files(args), overrides=args.overrides)
    print(f"language model written to {train_lm(cfg)}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from nbp.convert import convert

    print(f"wrote {convert(args.checkpoint, args.out)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from nbp.evaluate import EvalConfig, evaluate

    cfg = build_config(EvalConfig, recipes=args.recipe, overrides=args.overrides)
    r = evaluate(cfg)
    print(f"| protocol | real | fake | FVD |\n|---|---|---|---|\n"
          f"| {r['protocol']} | {r['real']['shape']} | {r['fake']['shape']} | {r['fvd']:.2f} |")
    print(f"{r['protocol_description']}; written to {cfg.out}/fvd.json")
    return 0


@dataclass
class ExportClipsConfig:
    root: str = "???"
    annotations: str | None = None
    out: str = "???"  # .npy
    count: int | None = None  # None: every clip once
    frames: int = 16
    resolution: int = 128
    sampling: str = "random"
    fps: float | None = None
    seed: int = 0


def cmd_export_clips(args: argparse.Namespace) -> int:
    from nbp.sample import export_clips

    cfg = build_config(ExportClipsConfig, recipes=args.recipe, overrides=args.overrides)
    print(f"wrote {export_clips(**to_dict(cfg))}")
    return 0


def add_config_command(commands, name: str, run, help: str, recipe_argument: bool = False) -> None:
    """A subcommand configured by `key=value` overrides (and --recipe YAML files) of a dataclass config."""
    command = commands.add_parser(name, help=help)
    if recipe_argument:
        command.add_argument("config", nargs="?", help="YAML recipe, e.g. tokenizer/tiny.yaml")
    command.add_argument("overrides", nargs="*", help="key=value settings, e.g. root=data/ucf")
    command.add_argument("--recipe", action="append", default=[], help="YAML file applied before the overrides")
    command.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbp", description="Next-block-prediction video generation.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the whole pipeline on the built-in dataset (~12 min on 2 cores)")
    demo.add_argument("overrides", nargs="*", help="key=value settings of nbp.demo.DemoConfig, e.g. lm_steps=2000")
    demo.add_argument("--out", help="run folder (default runs/demo); finished stages there are kept")
    demo.add_argument("--device", help="cpu (default) or cuda")
    demo.add_argument("--scale", type=float, help="multiply both training lengths, e.g. 3 for better samples")
    demo.add_argument("--fresh", action="store_true", help="rerun every stage instead of keeping finished ones")
    demo.add_argument("--recipe", action="append", default=[], help="YAML file of DemoConfig settings")
    demo.set_defaults(run=cmd_demo)

    config = commands.add_parser("config", help="list presets, or print a resolved config as YAML")
    config.add_argument("model", choices=sorted(CONFIGS))
    config.add_argument("preset", nargs="?", help="preset name; omit to list them")
    config.add_argument("overrides", nargs="*", help="key=value overrides, e.g. num_res_blocks=2")
    config.add_argument("--recipe", action="append", default=[], help="YAML file applied after the preset")
    config.set_defaults(run=cmd_config)

    add_config_command(commands, "synthetic", cmd_synthetic, "write the built-in moving-shapes dataset (mp4, UCF-101 layout)")
    add_config_command(commands, "tokenize", cmd_tokenize, "encode a video dataset once into a token dataset")
    add_config_command(commands, "crafter", cmd_crafter, "record Crafter episodes (mp4 + actions) in train/val/test")
    add_config_command(commands, "tokenize-episodes", cmd_tokenize_episodes,
                       "encode action-labelled episodes frame by frame (world models)")
    add_config_command(commands, "world-eval", cmd_world_eval,
                       "predict test episodes from context frames and actions: PSNR/SSIM over the horizon",
                       recipe_argument=True)
    add_config_command(commands, "predict-eval", cmd_predict_eval,
                       "continue held-out clips from their first frames: PSNR/SSIM against copying the last frame")
    add_config_command(commands, "train-tokenizer", cmd_train_tokenizer, "train (or resume) a video tokenizer",
                       recipe_argument=True)
    add_config_command(commands, "train-lm", cmd_train_lm, "train (or resume) a next-block-prediction LM",
                       recipe_argument=True)
    convert = commands.add_parser("convert", help="DeepSpeed ZeRO checkpoint (or LM .ckpt) -> one fp32 .safetensors")
    convert.add_argument("checkpoint")
    convert.add_argument("out")
    convert.set_defaults(run=cmd_convert)
    add_config_command(commands, "sample", cmd_sample,
                       "generate videos: unconditional, class/text-conditional, or continuing given videos")
    add_config_command(commands, "export-clips", cmd_export_clips, "real clips of a dataset split as uint8 .npy (FVD's real set)")
    add_config_command(commands, "eval", cmd_eval, "FVD between two sets of videos under a named protocol")
    add_config_command(commands, "eval-tokenizer", cmd_eval_tokenizer,
                       "reconstruct a dataset: PSNR, SSIM, LPIPS, rFVD, codebook usage")
    return parser


class CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a record comes (test runners swap the stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """nbp's own messages (skipped files, resume, perceptual loss off) to stderr; Lightning keeps its own."""
    logger = logging.getLogger("nbp")
    if not logger.handlers:
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    tune_cpu_allocator()
    try:
        return args.run(args)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"nbp {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
