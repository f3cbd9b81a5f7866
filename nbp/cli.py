"""`nbp <command>`: the command line as a table. Each command is a config class and a function that takes the
resolved config and returns its result; the CLI resolves the config (YAML recipes given as positional arguments,
then `key=value` overrides; `--key value` and `--flag` are overrides too), runs the function and prints a short
report. nbp's own user errors (`nbp.config.UserError`: a bad config, file or input) and missing files become one
line and exit code 2; anything else keeps its traceback.
"""
from __future__ import annotations

import difflib
import importlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbp.checkpoint import TRUST_FLAG
from nbp.cli_reports import drift_table, fvd_table, prediction_table, samples_report, tokenizer_table, world_table
from nbp.config import UserError, build_config, presets, resolved_yaml
from nbp.devices import check_devices, settings_only


def load(spec: str):
    """"module:attribute" -> the attribute (commands import their module only when they run)."""
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Command:
    name: str
    config: str  # "module:ConfigClass", a torch-free module (`--help` and `nbp config` load only it)
    run: str  # "module:function", called with the resolved config
    help: str
    report: Callable[[Any, Any], str] = lambda cfg, result: f"wrote {result}"
    positional: tuple[str, ...] = ()  # config fields taken by position (arguments that are not recipes)


COMMANDS = {c.name: c for c in (
    Command("demo", "nbp.settings.training:DemoConfig", "nbp.demo:run_demo",
            "run the whole pipeline on the built-in dataset (sized to an 11-minute budget on 2 cores)", lambda cfg, r: ""),
    Command("synthetic", "nbp.settings.data:SyntheticConfig", "nbp.data.synthetic:write_synthetic",
            "write the built-in moving-shapes dataset (mp4, UCF-101 layout)",
            lambda cfg, r: f"wrote {cfg.videos_per_class} videos per class to {r} (trainlist.txt, testlist.txt)"),
    Command("crafter", "nbp.settings.data:CrafterConfig", "nbp.data.episodes:record_crafter_dataset",
            "record Crafter episodes (mp4 + actions) in train/val/test",
            lambda cfg, r: f"wrote Crafter episodes {cfg.splits} to {r}/<split>/ep_*.mp4 + .actions.npy"),
    Command("tokenize", "nbp.settings.data:TokenizeConfig", "nbp.data.extract:tokenize",
            "encode a video dataset once into a token dataset",
            lambda cfg, r: f"token dataset {cfg.out}: {json.dumps(r)}"),
    Command("tokenize-episodes", "nbp.settings.data:TokenizeEpisodesConfig", "nbp.data.extract:tokenize_episodes",
            "encode action-labelled episodes frame by frame (world models)",
            lambda cfg, r: f"tokenized episodes in {cfg.out}: {json.dumps(r)}"),
    Command("export-clips", "nbp.settings.data:ExportClipsConfig", "nbp.data.extract:export_clips",
            "real clips of a dataset split as uint8 .npy (FVD's real set)"),
    Command("extract-latents", "nbp.settings.data:ExtractLatentsConfig", "nbp.data.latents:extract_latents",
            "encode episodes or labelled videos once into DC-AE latents (FAR)",
            lambda cfg, r: f"latent dataset {cfg.out}: {json.dumps(r)}"),
    Command("train-dcae", "nbp.settings.training:DCAETrainConfig", "nbp.training.dcae:train_dcae",
            "train (or resume) a DC-AE, FAR's frame autoencoder", lambda cfg, r: f"DC-AE written to {r}"),
    Command("train-far", "nbp.settings.training:FARTrainConfig", "nbp.training.far:train_far",
            "train (or resume) a FAR model on extracted latents", lambda cfg, r: f"FAR model written to {r}"),
    Command("train-tokenizer", "nbp.settings.training:TokenizerTrainConfig", "nbp.training.tokenizer:train_tokenizer",
            "train (or resume) a video tokenizer", lambda cfg, r: f"tokenizer written to {r}"),
    Command("eval-tokenizer", "nbp.settings.eval:TokenizerEvalConfig", "nbp.eval.tokenizer:evaluate_tokenizer",
            "reconstruct a dataset: PSNR, SSIM, LPIPS, rFVD, codebook usage", tokenizer_table),
    Command("train-lm", "nbp.settings.training:LMTrainConfig", "nbp.training.lm:train_lm",
            "train (or resume) a next-block-prediction LM or world model",
            lambda cfg, r: f"language model written to {r}"),
    Command("convert", "nbp.settings.training:ConvertConfig", "nbp.checkpoint.zero:convert_run",
            "DeepSpeed ZeRO checkpoint (or LM .ckpt) -> one fp32 .safetensors", positional=("checkpoint", "out")),
    Command("sample", "nbp.settings.pipelines:SampleConfig", "nbp.pipelines.sample:sample_videos",
            "generate videos: unconditional, class/text-conditional, or continuing given videos", samples_report),
    Command("sample-far", "nbp.settings.pipelines:FARSampleConfig", "nbp.pipelines.sample_far:sample_far",
            "generate videos with a FAR model and its DC-AE: class-conditional, continuations, action rollouts",
            samples_report),
    Command("predict-eval", "nbp.settings.eval:PredictEvalConfig", "nbp.eval.prediction:evaluate_prediction",
            "continue held-out clips from their first frames: PSNR/SSIM against copying the last frame",
            prediction_table),
    Command("world-eval", "nbp.settings.eval:WorldEvalConfig", "nbp.eval.world:evaluate_world",
            "predict test episodes from context frames and actions: PSNR/SSIM over the horizon", world_table),
    Command("world-drift", "nbp.settings.eval:DriftConfig", "nbp.eval.drift:evaluate_drift",
            "play a world model for a long session: PSNR against the replayed episode, and whether frames stay the game's",
            drift_table),
    Command("far-gen-eval", "nbp.settings.eval:FARGenerationEvalConfig",
            "nbp.eval.far_generation:evaluate_far_generation",
            "FVD of a class-conditional FAR model's samples (Latte's UCF-101 protocol, seeds 0/2/4/6)",
            lambda cfg, r: f"FVD {r['fvd_mean']:.2f} ± {r['fvd_std']:.2f} over seeds {list(r['fvd'])}"),
    Command("far-eval", "nbp.settings.eval:FAREvalConfig", "nbp.eval.far:evaluate_far",
            "FAR's prediction protocols: best-of-N PSNR/SSIM over trajectories against copying the last frame",
            lambda cfg, r: f"{r['videos']} videos, {r['context']} -> {r['horizon']} frames, {r['trajectories']} "
                           f"trajectories: PSNR {r['predicted']['psnr']:.2f} dB (copy-last "
                           f"{r['copy_last_frame']['psnr']:.2f}), SSIM {r['predicted']['ssim']:.3f}"),
    Command("play", "nbp.settings.pipelines:PlayConfig", "nbp.play.server:play",
            "play a world model in the browser: keys to actions, frames streamed from a local page",
            lambda cfg, r: ""),
    Command("eval", "nbp.settings.eval:EvalConfig", "nbp.eval.fvd:evaluate",
            "FVD between two sets of videos under a named protocol", fvd_table),
)}

MODEL_CONFIGS = {"tokenizer": "nbp.settings.models:TokenizerConfig",
                 "transformer": "nbp.settings.models:TransformerConfig",
                 "world": "nbp.settings.models:WorldConfig",
                 "far": "nbp.settings.far_models:FARConfig",
                 "dcae": "nbp.settings.far_models:DCAEConfig",
                 "discriminator": "nbp.settings.models:DiscriminatorConfig"}


def is_recipe(argument: str) -> bool:
    return argument.endswith((".yaml", ".yml"))


def split_arguments(arguments: list[str], positional: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(recipes, overrides) from `recipe.yaml`, `key=value`, `--key value`, `--key=value`, `--flag` and the
    command's positional fields."""
    recipes, overrides, fields = [], [], list(positional)
    i = 0
    while i < len(arguments):
        arg = arguments[i]
        if arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            if not value and i + 1 < len(arguments) and not arguments[i + 1].startswith("--") \
                    and "=" not in arguments[i + 1]:
                value, i = arguments[i + 1], i + 1
            if key == "recipe":
                recipes.append(value)
            else:
                overrides.append(f"{key.replace('-', '_')}={value or 'true'}")
        elif "=" in arg:
            overrides.append(arg)
        elif is_recipe(arg):
            recipes.append(arg)
        elif fields:
            overrides.append(f"{fields.pop(0)}={arg}")
        else:
            raise UserError(f"unexpected argument {arg!r}: give YAML recipes, key=value settings or --key value")
        i += 1
    return recipes, overrides


def run_command(command: Command, arguments: list[str]) -> Any:
    recipes, overrides = split_arguments(arguments, command.positional)
    cfg = build_config(load(command.config), recipes=recipes, overrides=overrides)
    check_devices(cfg)
    result = load(command.run)(cfg)
    report = command.report(cfg, result)
    if report:
        print(report)
    return result


def command_help(name: str) -> str:
    """A command's purpose, usage and every setting with its type, default and help."""
    from nbp.config_help import settings_table

    if name == "config":
        return f"nbp config: {show_config.__doc__}"
    command = COMMANDS[name]
    positional = "".join(f" [{field.upper()}]" for field in command.positional)
    return (f"nbp {name}: {command.help}\n\nusage: nbp {name}{positional} [RECIPE.yaml ...] [key=value ...]\n"
            f"  (recipes first, then settings; `nbp config {name} [RECIPE.yaml] [key=value ...] --comments` prints "
            f"the resolved settings as YAML)\n\nsettings (key, type, default, meaning):\n"
            f"{settings_table(load(command.config)())}")


def show_config(arguments: list[str]) -> None:
    """`nbp config NAME [PRESET | RECIPE.yaml ...] [key=value ...] [--comments]`: a model config's presets, or any
    model config or command config resolved as YAML (the recipe format); `--comments` adds each setting's help."""
    comments = "--comments" in arguments
    arguments = [a for a in arguments if a != "--comments"]
    if not arguments or (arguments[0] not in MODEL_CONFIGS and arguments[0] not in COMMANDS):
        raise UserError(f"nbp config: name one of {sorted(MODEL_CONFIGS)} (model configs) or a command "
                        f"({', '.join(COMMANDS)}), then a preset or recipes and key=value settings")
    name, rest = arguments[0], arguments[1:]
    cls = load(COMMANDS[name].config if name in COMMANDS else MODEL_CONFIGS[name])
    if name in MODEL_CONFIGS and not rest:
        print(f"{name} presets: {', '.join(presets(cls))}")
        return
    preset = rest.pop(0) if name in MODEL_CONFIGS and "=" not in rest[0] and not is_recipe(rest[0]) else None
    recipes, overrides = split_arguments(rest)
    yaml = resolved_yaml(cls, preset, recipes, overrides)
    if comments:
        from nbp.config_help import commented_yaml
        yaml = commented_yaml(yaml, cls())
    print(yaml, end="")


def did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, ["config", *COMMANDS], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {'config':<{width}}  list a model's presets, or print any resolved config as YAML",
             *(f"  {c.name:<{width}}  {c.help}" for c in COMMANDS.values())]
    return (f"usage: nbp COMMAND [RECIPE.yaml ...] [key=value ...] [--key value ...] [{TRUST_FLAG}]\n"
            "       nbp COMMAND --help   (every setting: type, default, what it does)   nbp --version\n"
            "Next-block-prediction video generation.\n\ncommands:\n" + "\n".join(lines) +
            "\n\n`nbp config COMMAND [RECIPE.yaml]` prints a command's settings as YAML.\n"
            f"{TRUST_FLAG}: unpickle the torch files this command reads in full (only for files you trust).")


class CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a record comes (test runners swap the stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """nbp's own messages (skipped files, resume, perceptual loss off) to stderr; the libraries' banners quiet."""
    from nbp.io.progress import quiet_banners

    quiet_banners()
    logger = logging.getLogger("nbp")
    if not logger.handlers:
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def run_with_torch(command: Command, arguments: list[str]) -> None:
    """Run a command: torch and the libraries load here, not for `--help` or `nbp config`."""
    from nbp.checkpoint.torch_files import trusting
    from nbp.runtime import tune_cpu_allocator

    configure_logging()
    tune_cpu_allocator()
    trust = TRUST_FLAG in arguments  # every torch file this command reads is unpickled in full
    with trusting(trust):
        run_command(command, [a for a in arguments if a != TRUST_FLAG])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from nbp import __version__
        print(f"nbp {__version__}")
        return 0
    name, arguments = argv[0], argv[1:]
    if name != "config" and name not in COMMANDS:
        print(f"nbp: unknown command {name!r}{did_you_mean(name)}\n{usage()}", file=sys.stderr)
        return 2
    if "-h" in arguments or "--help" in arguments:
        with settings_only():
            print(command_help(name))
        return 0
    try:
        if name == "config":
            with settings_only():  # no torch: it answers as fast as `--help`
                show_config([a for a in arguments if a != TRUST_FLAG])  # it reads no torch file
        else:
            run_with_torch(COMMANDS[name], arguments)
    except (UserError, FileNotFoundError) as error:
        print(f"nbp {name}: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
