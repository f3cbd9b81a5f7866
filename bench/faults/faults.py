"""Fault injection: SIGKILL a tiny LM (or tokenizer) training run at random moments (some while a checkpoint is
being written), resume it each time with the same command, and compare the final weights with an uninterrupted
run's.

    .venv/bin/python bench/faults/faults.py --kills 10                  # the LM, ~4 minutes on 2 cores
    .venv/bin/python bench/faults/faults.py --kills 10 --job tokenizer --steps 300
    --write-pause 0.3 (the default) keeps each checkpoint half written for 0.3 s, so that kills meet writes.

Prints a table (one row per kill: when, what was on disk, whether a temporary checkpoint was mid-write) and JSON.
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nbp.checkpoint import load_model, save_model
from nbp.config import from_preset
from nbp.data.dataset import ClipConfig
from nbp.data.extract import TokenizeConfig, tokenize
from nbp.data.synthetic import make_dataset
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/report.py
from report import emit_json  # noqa: E402

EVERY = 3  # batches between checkpoints


def make_tokens(folder: Path) -> Path:
    root = make_dataset(folder / "synth", videos_per_class=4, size=32, seed=7)
    torch.manual_seed(0)
    save_model(VideoTokenizer(from_preset(TokenizerConfig, "tiny", resolution=32)), folder / "tok.safetensors")
    tokenize(TokenizeConfig(tokenizer=str(folder / "tok.safetensors"), out=str(folder / "tokens"), num_workers=0,
                            clips=ClipConfig(root=str(root), annotations="trainlist.txt", frames=9, resolution=32)))
    return folder / "tokens"


JOBS = {  # the command's settings after its data, and the file it exports
    "lm": (["train-lm", "batch_size=4", "model.latent_shape=[3,4,4]", "model.condition=class", "model.num_classes=4",
            "model.cond_len=1"], "lm.safetensors"),
    "tokenizer": (["train-tokenizer", "model.preset=tiny", "data.resolution=32", "data.frames=5", "data.batch_size=2",
                   "data.num_workers=0", "disc_start=20", "discriminator.channels=8",
                   "discriminator.norm_groups=4", "perceptual_weight=0", "sample_every=0"], "tokenizer.safetensors"),
}


def command(job: str, data: Path, run_dir: Path, steps: int, write_pause: float = 0) -> list[str]:
    """The training command; with `write_pause`, run through bench/faults/slow_writes.py (checkpoints half written for
    that long, so that some kills land mid-write)."""
    settings, _ = JOBS[job]
    source = f"train={data / 'tokens'}" if job == "lm" else f"data.root={data / 'synth'}"
    run = [f"run.run_dir={run_dir}", f"run.steps={steps}", f"run.checkpoint_every={EVERY}", "run.keep_last=2"]
    nbp = [str(Path(__file__).with_name("slow_writes.py")), str(write_pause)] if write_pause else ["-m", "nbp.cli"]
    return [sys.executable, *nbp, *settings[:1], source, *run, *settings[1:]]


def kill_at_random(args: list[str], run_dir: Path, rng: random.Random) -> dict:
    """Start the run, SIGKILL it after a random delay (or as soon as a checkpoint is being written)."""
    versions = len(list(run_dir.glob("logs/version_*")))
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    during_write = rng.random() < 0.4
    while len(list(run_dir.glob("logs/version_*"))) == versions and process.poll() is None:  # this run has begun
        time.sleep(0.05)
    deadline = time.time() + rng.uniform(0, 8)
    while time.time() < deadline and process.poll() is None:
        if during_write and list((run_dir / "checkpoints").glob(".step_*.tmp")):
            break
        time.sleep(0.005 if during_write else 0.1)
    writing = bool(list((run_dir / "checkpoints").glob(".step_*.tmp")))
    process.kill()
    process.wait()
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.ckpt")) if (run_dir / "checkpoints").is_dir() else []
    return {"finished_before_kill": process.returncode == 0, "killed_mid_write": writing, "newest": saved[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--job", choices=sorted(JOBS), default="lm")
    parser.add_argument("--steps", type=int, default=60, help="batches of the run (300 keeps a tokenizer busy)")
    parser.add_argument("--write-pause", type=float, default=0.3,
                        help="seconds each checkpoint stays half written in the killed runs (0: as nbp writes them)")
    parser.add_argument("--json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_tokens(folder)
        subprocess.run(command(args.job, folder, folder / "straight", args.steps), check=True, capture_output=True)
        rows = []
        for kill in range(args.kills):
            row = kill_at_random(command(args.job, folder, folder / "killed", args.steps, args.write_pause),
                                 folder / "killed", rng)
            rows.append({"kill": kill + 1, **row})
        done = subprocess.run(command(args.job, folder, folder / "killed", args.steps), capture_output=True, text=True)
        export = JOBS[args.job][1]
        a, b = (load_model(folder / name / export).state_dict() for name in ("straight", "killed"))
        equal = done.returncode == 0 and all(torch.equal(a[k], b[k]) for k in a)
    print("| kill | newest checkpoint on disk | killed mid-write |\n|---|---|---|")
    for r in rows:
        print(f"| {r['kill']} | {(r['newest'] or ['none'])[0]} | {'yes' if r['killed_mid_write'] else 'no'} |")
    mid_write = sum(r["killed_mid_write"] for r in rows)
    print(f"{args.job}: {mid_write} of {args.kills} SIGKILLs landed while a checkpoint was half written; final weights "
          f"after the kills and resumes equal the uninterrupted run's: {equal}")
    emit_json({"job": args.job, "kills": rows, "killed_mid_write": mid_write, "write_pause": args.write_pause,
               "final_weights_equal": equal}, args.json)


if __name__ == "__main__":
    main()
