"""Fault injection: SIGKILL a tiny run at random moments (some while a checkpoint is being written), resume it each
time with the same command, and compare what it leaves with an uninterrupted run's.

    .venv/bin/python bench/faults/faults.py --kills 10                  # the LM, ~4 minutes on 2 cores
    .venv/bin/python bench/faults/faults.py --kills 10 --job tokenizer --steps 300
    .venv/bin/python bench/faults/faults.py --kills 10 --job far        # also: dcae, extract-latents
    --write-pause 0.3 (the default) keeps each checkpoint half written for 0.3 s, so that kills meet writes.

Trainings (lm, tokenizer, far, dcae) compare their exported weights, the official-format exports included;
extract-latents compares every item (latents, actions, source) and `meta.json` with an uninterrupted extraction.
Prints a table (one row per kill: when, what was on disk, whether a temporary file was mid-write) and JSON.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nbp.checkpoint import load_model, save_model
from nbp.config import from_preset
from nbp.data.extract import TokenizeConfig, tokenize
from nbp.data.synthetic import make_dataset
from nbp.models.dcae import DCAE, DCAEConfig
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer
from nbp.settings.data import ClipConfig
from nbp.training.run_folder import LOCK

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/report.py
from report import emit_json  # noqa: E402

EVERY = 3  # batches between checkpoints
EPISODES = 64  # for extract-latents and train-far: 64 episodes of 24 frames at 64 px (about 10 s to extract)


def make_data(folder: Path) -> None:
    """Every job's inputs: labelled videos, their tokens, action episodes, a DC-AE and the episodes' latents."""
    root = make_dataset(folder / "synth", videos_per_class=4, size=32, seed=7)
    torch.manual_seed(0)
    save_model(VideoTokenizer(from_preset(TokenizerConfig, "tiny", resolution=32)), folder / "tok.safetensors")
    tokenize(TokenizeConfig(tokenizer=str(folder / "tok.safetensors"), out=str(folder / "tokens"), num_workers=0,
                            clips=ClipConfig(root=str(root), annotations="trainlist.txt", frames=9, resolution=32)))
    rng = np.random.default_rng(0)
    (folder / "episodes").mkdir()
    for i in range(EPISODES):
        np.savez(folder / "episodes" / f"ep_{i:02d}.npz", video=rng.integers(0, 256, (24, 64, 64, 3), dtype=np.uint8),
                 actions=rng.integers(0, 4, 24))
    save_model(DCAE(from_preset(DCAEConfig, "dcae-tiny", resolution=64)), folder / "dcae.safetensors")
    subprocess.run(command("extract-latents", folder, folder / "latents", 0), check=True, capture_output=True)


JOBS = {  # the command's settings after its data and run folder, and the file it exports (None: a data folder)
    "lm": (["train-lm", "batch_size=4", "model.latent_shape=[3,4,4]", "model.condition=class", "model.num_classes=4",
            "model.cond_len=1"], "lm.safetensors"),
    "tokenizer": (["train-tokenizer", "model.preset=tiny", "data.resolution=32", "data.frames=5", "data.batch_size=2",
                   "data.num_workers=0", "disc_start=20", "discriminator.channels=8",
                   "discriminator.norm_groups=4", "perceptual_weight=0"], "tokenizer.safetensors"),
    "far": (["train-far", "model.preset=far-tiny-long", "model.condition=action", "model.num_classes=4",
             "clip_frames=8", "batch_size=2", "lr=1e-3", "ema_decay=0.9"], "far.safetensors"),
    "dcae": (["train-dcae", "model.preset=dcae-tiny", "data.resolution=32", "data.frames=2", "data.batch_size=2",
              "data.num_workers=0", "disc_start=20", "discriminator.channels=8", "discriminator.norm_groups=4",
              "perceptual_weight=0", "scale_clips=4", "ema_decay=0.9"], "dcae.safetensors"),
    "extract-latents": (["extract-latents", "frames_per_batch=4"], None),
}


def command(job: str, data: Path, run_dir: Path, steps: int, write_pause: float = 0) -> list[str]:
    """The job's command; with `write_pause`, run through bench/faults/slow_writes.py (checkpoints half written for
    that long, so that some kills land mid-write)."""
    settings, _ = JOBS[job]
    source = {"lm": f"train={data / 'tokens'}", "far": f"train={data / 'latents'}",
              "extract-latents": f"episodes={data / 'episodes'}"}.get(job, f"data.root={data / 'synth'}")
    if job == "extract-latents":
        run = [f"dcae={data / 'dcae.safetensors'}", f"out={run_dir}"]
    else:
        run = [f"run.run_dir={run_dir}", f"run.steps={steps}", f"run.checkpoint_every={EVERY}", "run.keep_last=2"]
    nbp = [str(Path(__file__).with_name("slow_writes.py")), str(write_pause)] if write_pause else ["-m", "nbp.cli"]
    return [sys.executable, *nbp, *settings[:1], source, *run, *settings[1:]]


def begun(run_dir: Path, versions: int | None, pid: int) -> bool:
    """Whether this run has begun: a new log version (trainings, `versions` before it) or its lock taken (an
    extraction, `versions` None)."""
    if versions is None:
        lock = run_dir / LOCK
        return lock.exists() and lock.read_text().strip() == str(pid)
    return len(list(run_dir.glob("logs/version_*"))) > versions


def running_seconds(args: list[str], run_dir: Path, extraction: bool) -> float:
    """Run to the end; the seconds from its beginning (see `begun`) to its end."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not begun(run_dir, None if extraction else 0, process.pid) and process.poll() is None:
        time.sleep(0.01)
    start = time.time()
    if process.wait():
        raise RuntimeError(f"the uninterrupted run failed: {' '.join(args)}")
    return time.time() - start


def writing(run_dir: Path) -> bool:
    return bool(list(run_dir.glob("checkpoints/.step_*.tmp")) or list(run_dir.glob(".*.npz.*.tmp")))


def on_disk(run_dir: Path) -> list[str]:
    """The newest checkpoint, or the number of items an extraction has written."""
    if (run_dir / "checkpoints").is_dir():
        return sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.ckpt"))[-1:]
    items = len(list(run_dir.glob("[0-9]*.npz")))
    return [f"{items} items"] if items else []


def kill_at_random(args: list[str], run_dir: Path, rng: random.Random, extraction: bool, span: float) -> dict:
    """Start the run, SIGKILL it after a random delay of up to `span` seconds once it has begun (or as soon as a
    temporary file is being written); an extraction once it has written a random number of its remaining items."""
    versions = None if extraction else len(list(run_dir.glob("logs/version_*")))
    items = len(list(run_dir.glob("[0-9]*.npz")))
    target = items + rng.randint(1, max(1, EPISODES - items))  # reached only if the run is still extracting
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    during_write = rng.random() < 0.4
    while not begun(run_dir, versions, process.pid) and process.poll() is None:
        time.sleep(0.05)
    deadline = time.time() + rng.uniform(0, span)
    while time.time() < deadline and process.poll() is None:
        if (during_write and writing(run_dir)) or (extraction and len(list(run_dir.glob("[0-9]*.npz"))) >= target):
            break
        time.sleep(0.005 if during_write or extraction else 0.1)
    mid_write = writing(run_dir)
    process.kill()
    process.wait()
    return {"finished_before_kill": process.returncode == 0, "killed_mid_write": mid_write, "newest": on_disk(run_dir)}


def same_result(job: str, straight: Path, killed: Path) -> bool:
    """Trainings: every exported weight (nbp's file and the official one beside it); extraction: every item."""
    export = JOBS[job][1]
    if export is None:
        items = sorted(p.name for p in straight.glob("[0-9]*.npz"))
        if items != sorted(p.name for p in killed.glob("[0-9]*.npz")):
            return False
        meta = [json.loads((f / "meta.json").read_text()) for f in (straight, killed)]
        return meta[0] == meta[1] and all(arrays_equal(straight / name, killed / name) for name in items)
    a, b = (load_model(folder / export).state_dict() for folder in (straight, killed))
    official = [sorted(folder.glob("*.pt")) + sorted(folder.glob("*.pth")) for folder in (straight, killed)]
    same_official = [p.name for p in official[0]] == [p.name for p in official[1]] and all(
        same_values(torch.load(p, weights_only=True), torch.load(q, weights_only=True)) for p, q in zip(*official))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and same_official


def same_values(a, b) -> bool:
    """Equal nested dicts of tensors and plain values (the bytes of two torch files differ in their archive name)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def arrays_equal(a: Path, b: Path) -> bool:
    with np.load(a) as x, np.load(b) as y:
        return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)


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
    extraction = JOBS[args.job][1] is None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder)
        span = min(8.0, 0.9 * running_seconds(command(args.job, folder, folder / "straight", args.steps),
                                             folder / "straight", extraction))  # kills land within the run
        span = 60.0 if extraction else span  # an extraction is killed at a random item count instead
        rows = []
        for kill in range(args.kills):
            pause = 0 if extraction else args.write_pause
            row = kill_at_random(command(args.job, folder, folder / "killed", args.steps, pause),
                                 folder / "killed", rng, extraction, span)
            rows.append({"kill": kill + 1, **row})
        done = subprocess.run(command(args.job, folder, folder / "killed", args.steps), capture_output=True, text=True)
        equal = done.returncode == 0 and same_result(args.job, folder / "straight", folder / "killed")
        leftovers = sorted(p.name for p in (folder / "killed").rglob("*.tmp"))
    print("| kill | on disk when killed | killed mid-write |\n|---|---|---|")
    for r in rows:
        print(f"| {r['kill']} | {(r['newest'] or ['nothing'])[0]} | {'yes' if r['killed_mid_write'] else 'no'} |")
    mid_write = sum(r["killed_mid_write"] for r in rows)
    print(f"{args.job}: {mid_write} of {args.kills} SIGKILLs landed while a file was half written; after the kills "
          f"and resumes the result equals the uninterrupted run's: {equal}; temporaries left: {len(leftovers)}")
    emit_json({"job": args.job, "kills": rows, "killed_mid_write": mid_write, "write_pause": args.write_pause,
               "result_equal": equal, "temporaries_left": leftovers}, args.json)


if __name__ == "__main__":
    main()
