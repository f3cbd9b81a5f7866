"""Action-labelled episodes (frames + one action per frame) for world models: Crafter recording and loading.

On disk an episode is a real video file plus its actions, `ep_00000.mp4` + `ep_00000.actions.npy`
(int64 (T,)), or one `.npz` with `video` (T, H, W, 3) uint8 and `actions` (T,), the per-episode layout of the DMLab and
Minecraft datasets FAR (and TECO before it) trained on. `actions[t]` is the action that produced frame t
(taken just before it); `actions[0]` is a placeholder (Crafter's noop).

Crafter (Hafner 2021; `pip install crafter`) is an open-world game with 64x64 frames and 17 discrete actions.
`record_crafter` drives it with `movement_policy`: mostly walking, in runs of several steps in one direction,
so the view scrolls, with every other action mixed in. Splits `train/`, `val/`, `test/` hold disjoint world
seeds; everything follows from `seed`. Episodes end early when the player dies (they are then shorter).
`trainlist.txt`, `vallist.txt` and `testlist.txt` list each split's videos for the clip-based tools (tokenizer
training and evaluation).

Two recording defaults differ from Crafter's own, both for world models that see 8x8-pixel tokens:
- `view=8` tiles across a 64-pixel frame (Crafter's default is 9): each tile is then exactly 8x8 pixels, one
  token of a tokenizer that downsamples 8x, so a step of the player scrolls the view by exactly one token. With
  9 tiles a tile is 7 pixels (plus a 1-pixel margin) and a scroll moves every token's content by a fraction.
- `frames=144`: Crafter's night starts near step 150 and overlays fresh random noise on every frame, which no
  model can predict; shorter episodes stay in daylight.
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from nbp.config import InputError
from nbp.data.video import VIDEO_EXTENSIONS, probe, read_frames
from nbp.extras import require
from nbp.io import write_array, write_json
from nbp.io.media import write_video
from nbp.io.progress import progress
from nbp.settings.data import CrafterConfig

log = logging.getLogger(__name__)

CRAFTER_ACTIONS = 17
MOVES = (1, 2, 3, 4)  # move_left, move_right, move_up, move_down
SPLITS = ("train", "val", "test")


def movement_policy(rng: np.random.Generator, previous: int, keep: float = 0.75, move: float = 0.7) -> int:
    """Keep walking the same way with probability `keep`, else a random move with probability `move`, else any
    of the 17 actions."""
    if previous in MOVES and rng.random() < keep:
        return previous
    if rng.random() < move:
        return int(rng.choice(MOVES))
    return int(rng.integers(CRAFTER_ACTIONS))


def record_crafter(seed: int, frames: int, size: int = 64, view: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """One episode of world `seed`: uint8 (T, size, size, 3) frames and int64 (T,) actions, T <= frames;
    `view` x `view` tiles on screen (the bottom two rows show the inventory)."""
    crafter = require("crafter", "crafter", "recording Crafter episodes")
    env = crafter.Env(size=(size, size), view=(view, view), seed=seed)
    # Crafter picks creatures to despawn from a set ordered by memory address; order them by kind and cell
    # so that a seed always gives the same episode.
    balance = env._balance_chunk
    env._balance_chunk = lambda chunk, objs: balance(chunk, sorted(objs, key=creature_order))
    rng = np.random.default_rng(seed)
    video, actions = [env.reset()], [0]
    while len(video) < frames:
        action = movement_policy(rng, actions[-1])
        observation, _, done, _ = env.step(action)
        video.append(observation)
        actions.append(action)
        if done:
            break
    return np.stack(video), np.asarray(actions, dtype=np.int64)


def creature_order(obj) -> tuple:
    return type(obj).__name__, tuple(obj.pos)


def make_crafter_dataset(root: str | Path, episodes: dict[str, int] | None = None, frames: int = 144,
                         size: int = 64, fps: float = 10, seed: int = 0, progress=iter, view: int = 8) -> Path:
    """Write `root/<split>/ep_NNNNN.mp4` (lossless) + `.actions.npy`, skipping episodes already complete
    (a rerun resumes; `root/crafter.json` keeps the settings so that a rerun with others fails)."""
    root, episodes = Path(root), episodes or {"train": 128, "val": 8, "test": 16}
    check_settings(root / "crafter.json", dict(frames=frames, size=size, view=view, fps=fps, seed=seed))
    jobs = [(split, i) for split in SPLITS for i in range(episodes.get(split, 0))]
    for number, (split, i) in enumerate(progress(jobs)):
        stem = root / split / f"ep_{i:05d}"
        if Path(f"{stem}.actions.npy").exists():  # written last: the episode is complete
            continue
        video, actions = record_crafter(seed * 100_003 + number, frames, size, view)
        write_video(f"{stem}.mp4", video, fps, lossless=True)
        write_array(f"{stem}.actions.npy", actions)
    for split in SPLITS:  # annotation lists, so the video tools (e.g. tokenizer training) can read a split
        names = [f"{split}/ep_{i:05d}.mp4" for i in range(episodes.get(split, 0))]
        (root / f"{split}list.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def check_settings(path: Path, settings: dict) -> None:
    """Record the settings of a dataset folder, or check that they are the recorded ones."""
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != settings:
            raise InputError(f"{path.parent} holds episodes recorded with {recorded}, not {settings}: "
                             "record into another folder (out=...) or use the recorded settings")
        return
    write_json(path, settings, indent=None)


def list_episodes(folder: str | Path) -> list[Path]:
    """Episode files of a folder: video files with their actions beside them (`.actions.npy`, or Minecraft's `.npz`
    with `actions`), and `.npz` files holding both (`video`, `actions`: DMLab's). Videos without actions are
    skipped, named and counted in a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of episodes")
    all_videos = [p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS]
    videos = [p for p in all_videos if actions_path(p).exists()]
    if len(videos) < len(all_videos):
        lone = sorted(p.name for p in all_videos if p not in videos)
        log.warning("%d videos in %s have no actions beside them (NAME.actions.npy) and are skipped: %s", len(lone),
                    folder, ", ".join(lone[:5]) + (" ..." if len(lone) > 5 else ""))
    actions_of_videos = {actions_path(p) for p in videos}
    return sorted(videos + [p for p in folder.glob("*.npz") if p not in actions_of_videos])


def actions_path(video: Path) -> Path:
    """nbp's `.actions.npy` beside a video, else Minecraft's `.npz` of the same name."""
    npy = video.with_suffix(".actions.npy")
    return npy if npy.exists() or not video.with_suffix(".npz").exists() else video.with_suffix(".npz")


def read_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Named arrays of an .npz (or the one array of an .npy, as the first name), read without unpickling; a damaged
    or foreign file is a one-line error naming it."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return {names[0]: data}
        with data:
            missing = sorted(set(names) - set(data.files))
            if missing:
                raise InputError(f"{path}: needs arrays {list(names)}; missing {missing}")
            return {name: data[name] for name in names}
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        reason = "it holds Python objects (pickled), not arrays" if "pickle" in str(error) else str(error)
        raise InputError(f"{path}: cannot be read as {'/'.join(names)} arrays: {reason}") from None


def read_actions(path: Path) -> np.ndarray:
    return read_arrays(path, ("actions",))["actions"]


def action_ids(actions: np.ndarray, path: Path) -> np.ndarray:
    """One integer id per frame (T,) from (T,) ids, (T, 1) ids, or (T, K) one-hot rows (each exactly one 1: its
    index, as FAR's Minecraft and DMLab releases store them). Anything else (fractional, multi-hot, continuous)
    is refused with what it holds, never truncated."""
    actions = np.asarray(actions)
    if actions.ndim == 2 and actions.shape[1] == 1:
        actions = actions[:, 0]
    elif actions.ndim == 2:
        if not (np.isin(actions, (0, 1)).all() and (actions.sum(1) == 1).all()):
            raise InputError(f"{path}: actions of shape {actions.shape} are not one-hot rows (each exactly one 1); "
                             "give one integer id per frame (T,)")
        actions = actions.argmax(1)
    if actions.ndim != 1:
        raise InputError(f"{path}: actions must be (T,) ids or (T, K) one-hot rows, got shape {actions.shape}")
    if actions.dtype.kind == "f" and not np.array_equal(actions, np.round(actions)):
        raise InputError(f"{path}: actions must be integer ids; found {actions[actions != np.round(actions)][0]}")
    if actions.dtype.kind not in "iuf" and actions.dtype != bool:
        raise InputError(f"{path}: actions must be integer ids, got dtype {actions.dtype}")
    return actions.astype(np.int64)


def episode_frames(video: np.ndarray, path: Path) -> np.ndarray:
    """uint8 (T, H, W, 3) frames: uint8 as it is, float in [0, 1] scaled by 255 and rounded; anything else refused."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or len(video) == 0:
        raise InputError(f"{path}: video must be (T, H, W, 3) RGB frames with T >= 1, got shape {video.shape}")
    if video.dtype == np.uint8:
        return video
    if video.dtype.kind == "f" and np.isfinite(video).all() and 0 <= video.min() and video.max() <= 1:
        return np.round(video * 255).astype(np.uint8)
    raise InputError(f"{path}: video must be uint8 in [0, 255] or float in [0, 1]; got {video.dtype} in "
                     f"[{video.min()}, {video.max()}]")


def load_episode(path: str | Path, resolution: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (T, H, W, 3) frames and int64 (T,) actions of one episode (a video + `.actions.npy`, or an .npz);
    the conversions it makes are `episode_frames`' and `action_ids`', and a file that does not fit is refused."""
    path = Path(path)
    if path.suffix == ".npz":
        arrays = read_arrays(path, ("video", "actions"))
        video, actions = episode_frames(arrays["video"], path), arrays["actions"]
        if resolution is not None and video.shape[1:3] != (resolution, resolution):
            raise InputError(f"{path}: frames are {video.shape[1]}x{video.shape[2]}, "
                             f"expected {resolution}x{resolution}")
    else:
        info = probe(path)
        video = read_frames(path, list(range(info.frames)), resolution or info.height)
        actions = read_actions(actions_path(path))
    actions = action_ids(actions, path)
    if len(actions) != len(video):
        raise InputError(f"{path}: {len(video)} frames but {len(actions)} actions (need one per frame)")
    return np.asarray(video, dtype=np.uint8), actions


def record_crafter_dataset(cfg: CrafterConfig) -> Path:
    """`nbp crafter`: episodes of every split under `cfg.out` (complete ones are kept)."""
    return make_crafter_dataset(cfg.out, cfg.splits, cfg.frames, cfg.size, cfg.fps, cfg.seed, view=cfg.view,
                                progress=lambda jobs: progress(jobs, "record crafter", "episode"))
