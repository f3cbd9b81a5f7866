"""`nbp <command>`: the command line, one subcommand per job, each driven by a config (preset + overrides)."""
from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from nbp.config import ConfigError, build_config, presets, to_dict
from nbp.models.tokenizer import TokenizerConfig

CONFIGS = {"tokenizer": TokenizerConfig}

DEMO_PLAN = """\
nbp demo will run the whole pipeline on a built-in dataset of small labelled videos, on this machine:
  1. generate the dataset (real mp4 files in the UCF-101 layout)
  2. train the tiny video tokenizer and report its reconstruction PSNR/SSIM
  3. tokenize the dataset
  4. train a tiny next-block-prediction transformer
  5. sample class-conditional videos and predict held-out continuations
  6. write samples, contact sheets, loss curves and metrics.json under one run folder
Not built yet: the tokenizer (stage 0) is ready; data, training and sampling are in progress."""


def cmd_demo(args: argparse.Namespace) -> int:
    print(DEMO_PLAN)
    return 1


def cmd_config(args: argparse.Namespace) -> int:
    """Print a config resolved from a preset, recipes and overrides, as YAML (the recipe format)."""
    cls = CONFIGS[args.model]
    if args.preset is None:
        print(f"{args.model} presets: {', '.join(presets(cls))}")
        return 0
    config = build_config(cls, args.preset, args.recipe, args.overrides)
    print(OmegaConf.to_yaml(to_dict(config)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbp", description="Next-block-prediction video generation.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the whole pipeline on the built-in dataset")
    demo.set_defaults(run=cmd_demo)

    config = commands.add_parser("config", help="list presets, or print a resolved config as YAML")
    config.add_argument("model", choices=sorted(CONFIGS))
    config.add_argument("preset", nargs="?", help="preset name; omit to list them")
    config.add_argument("overrides", nargs="*", help="key=value overrides, e.g. num_res_blocks=2")
    config.add_argument("--recipe", action="append", default=[], help="YAML file applied after the preset")
    config.set_defaults(run=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"nbp {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
