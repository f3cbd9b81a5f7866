"""DC-AE latents extracted once (FAR's `use_latent`): one file per video or episode, resumable, and the dataset that
serves training clips from them.

Layout of a latent dataset folder:
    meta.json            latent shape (C, h, w), classes, the DC-AE file, the source
    000123.npz           `latents` float32 (T, C, h, w) scaled as FAR's model sees them; `actions` int64 (T,)
                         for episodes; `label` int (-1: none); `source` the file it came from
Each item file is written atomically, so a rerun skips the finished ones and an interrupted run loses none.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nbp.checkpoint.far import load_dcae
from nbp.config import InputError
from nbp.data.episodes import list_episodes, load_episode
from nbp.io import atomic_write, remove_stale_temporaries, write_json
from nbp.io.progress import progress
from nbp.settings.data import ExtractLatentsConfig
from nbp.training.run_folder import locked

log = logging.getLogger(__name__)

META = "meta.json"


def item_path(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}.npz"


def write_item(folder: Path, index: int, latents: np.ndarray, actions: np.ndarray | None, label: int,
               source: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez(f, latents=latents.astype(np.float32), label=np.int64(label), source=np.array(source),
                     **({} if actions is None else {"actions": actions.astype(np.int64)}))

    atomic_write(item_path(folder, index), write)


class LatentDataset(Dataset):
    """Clips of `frames` consecutive latent frames: {"latents": (F, C, h, w), "actions": (F,) (or absent),
    "label": int}. A key (index, draw) places the clip by the int `draw` (reproducible); index alone: the start."""

    def __init__(self, folder: str | Path, frames: int):
        self.folder = Path(folder)
        if not (self.folder / META).is_file():
            raise FileNotFoundError(f"{self.folder} is not a latent dataset (no {META}); make one with "
                                    "`nbp extract-latents`")
        self.meta = json.loads((self.folder / META).read_text())
        files = sorted(self.folder.glob("[0-9]*.npz"))
        headers = [item_header(f, self.meta["latent_shape"]) for f in files]
        lengths = [h["frames"] for h in headers]
        self.headers = dict(zip(files, headers))
        self.frames = frames
        self.skipped = [f.name for f, n in zip(files, lengths) if n < frames]  # too short for one clip
        self.files = [f for f, n in zip(files, lengths) if n >= frames]
        self.lengths = [n for n in lengths if n >= frames]
        if not self.files:
            raise InputError(f"{self.folder} holds no latents of {frames} frames or more ({len(files)} items, "
                             f"{len(self.skipped)} shorter); extract longer episodes or train on shorter clips")
        if self.skipped:
            log.warning("%s: %d of %d items have fewer than %d frames and are skipped (first: %s)", self.folder,
                        len(self.skipped), len(files), frames, self.skipped[0])

    @property
    def classes(self) -> list[str]:
        return self.meta.get("classes", [])

    def check_conditions(self, condition: str, classes: int) -> None:
        """Every item must carry what a model of `condition` ("none", "label", "action") reads, in range."""
        for path in self.files:
            header, what = self.headers[path], {"label": "label", "action": "actions"}.get(condition)
            if what is None:
                continue
            ids = header["actions"] if condition == "action" else np.array([header["label"]])
            if ids is None or (condition == "label" and header["label"] < 0):
                raise InputError(f"{path}: holds no {what}, which this {condition}-conditioned model needs (extract "
                                 f"{'episodes with their actions' if condition == 'action' else 'labelled videos'})")
            if ids.min() < 0 or ids.max() >= classes:
                raise InputError(f"{path}: {what} {int(ids.min())}..{int(ids.max())} outside the model's "
                                 f"[0, {classes - 1}] (model.num_classes={classes})")


    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> dict:
        index, draw = key if isinstance(key, tuple) else (key, None)
        free = self.lengths[index] - self.frames
        return self.clip(index, 0 if draw is None else random.Random(draw).randint(0, free))

    def clip(self, index: int, start: int) -> dict:
        """The clip of item `index` from frame `start`."""
        with np.load(self.files[index]) as item:
            out = {"latents": torch.from_numpy(item["latents"][start:start + self.frames].copy()),
                   "label": int(item["label"])}
            if "actions" in item.files:
                out["actions"] = torch.from_numpy(item["actions"][start:start + self.frames].copy())
        return out


def item_header(path: Path, latent_shape: list[int]) -> dict:
    """What an item holds, checked: float latents (T, C, h, w) of the folder's latent shape, all finite, and
    actions (one per frame) when present. A damaged or foreign item is one line naming it."""
    try:
        with np.load(path, allow_pickle=False) as item:
            latents = item["latents"]
            actions = item["actions"] if "actions" in item.files else None
            label = int(item["label"]) if "label" in item.files else -1
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable latent item ({error}); extract it again") from None
    if latents.dtype.kind != "f" or latents.ndim != 4 or list(latents.shape[1:]) != list(latent_shape):
        raise InputError(f"{path}: latents {latents.dtype} {tuple(latents.shape)}, but the folder's meta.json says "
                         f"float (T, {', '.join(map(str, latent_shape))}): extract it again with the same DC-AE")
    if not np.isfinite(latents).all():
        raise InputError(f"{path}: latents hold NaN or infinite values (the data, not training): extract it again")
    if actions is not None and (actions.shape != (len(latents),) or actions.dtype.kind not in "iu"):
        raise InputError(f"{path}: actions {actions.dtype} {actions.shape} for {len(latents)} frames: need one "
                         "integer id per frame")
    return {"frames": len(latents), "actions": actions, "label": label}


class EpisodeClips(Dataset):
    """Training clips straight from episode videos (no extraction): {"video": (F, 3, H, W) in [0, 1], "actions":
    (F,), "label": -1}, the window placed by the int `draw` of a key (index, draw) as in LatentDataset."""

    def __init__(self, folder: str | Path, frames: int, resolution: int):
        self.paths = list_episodes(folder)
        if not self.paths:
            raise InputError(f"no episodes (video + actions, or .npz) in {folder}")
        self.frames, self.resolution = frames, resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> dict:
        index, draw = key if isinstance(key, tuple) else (key, None)
        video, actions = load_episode(self.paths[index], self.resolution)
        if len(video) < self.frames:
            raise InputError(f"{self.paths[index]} has {len(video)} frames, fewer than a clip's {self.frames}")
        start = 0 if draw is None else random.Random(draw).randint(0, len(video) - self.frames)
        clip = torch.from_numpy(video[start:start + self.frames]).permute(0, 3, 1, 2).float() / 255
        return {"video": clip, "actions": torch.from_numpy(actions[start:start + self.frames].astype(np.int64)),
                "label": -1}


def extract_latents(cfg: ExtractLatentsConfig) -> dict:
    """`nbp extract-latents`: every episode or video as DC-AE latents; returns counts written and kept. A rerun into
    the same folder keeps the items of the sources it already holds (by source file, whatever their order) and
    refuses a folder made with another DC-AE, resolution or latent shape."""
    cfg.validate()
    folder = Path(cfg.out)
    dcae = load_dcae(cfg.dcae, device=cfg.device, resolution=cfg.resolution)
    items, classes = source_items(cfg)
    if not items:
        raise InputError(f"nothing to extract: no {'episodes' if cfg.episodes else 'videos'} in "
                         f"{cfg.episodes or cfg.clips.root}")
    with locked(folder):  # one extraction per folder at a time: the temporaries found are a killed run's
        return extract_items(cfg, dcae, folder, items, classes)


def extract_items(cfg: ExtractLatentsConfig, dcae, folder: Path, items: list, classes: list[str]) -> dict:
    """The items not yet in `folder` (by source), each under the next free item number."""
    settings = extraction_settings(cfg, dcae)
    check_same_extraction(folder, settings)
    remove_stale_temporaries(folder)  # items a killed run was writing
    write_json(folder / META, {**settings, "classes": classes, "source": cfg.episodes or cfg.clips.root})
    done = extracted_sources(folder)
    free = max(done.values(), default=-1) + 1
    counts, moments = {"written": 0, "kept": 0}, np.zeros(3)  # moments: count, sum, sum of squares
    for load, label, source in progress(items, "extract latents", "video"):
        if source in done:
            counts["kept"] += 1
            continue
        index, free = free, free + 1
        video, actions = load()
        with torch.no_grad():
            frames = torch.from_numpy(video).permute(0, 3, 1, 2)[None].float().div(255).to(cfg.device)
            latents = dcae.encode_video(frames, cfg.frames_per_batch)[0].cpu().numpy()
        write_item(folder, index, latents, actions, label, source)
        counts["written"] += 1
        moments += (latents.size, latents.sum(dtype=np.float64), np.square(latents, dtype=np.float64).sum())
    if counts["written"]:
        counts["latent_std"] = check_latent_std(moments, dcae.config.scaling_factor)
    return counts


IDENTITY = ("dcae_sha256", "resolution", "latent_shape", "scaling_factor")  # what makes two extractions alike


def extraction_settings(cfg: ExtractLatentsConfig, dcae) -> dict:
    c = dcae.config
    return {"latent_shape": [c.latent_channels, c.latent_size, c.latent_size], "dcae": Path(cfg.dcae).name,
            "dcae_sha256": file_digest(cfg.dcae), "resolution": cfg.resolution, "scaling_factor": c.scaling_factor}


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_same_extraction(folder: Path, settings: dict) -> None:
    """Refuse to add latents to a folder made with another DC-AE, resolution or latent shape (as `nbp tokenize`
    refuses tokens made with other settings): its items would be mixed with these."""
    if not (folder / META).is_file():
        return
    recorded = json.loads((folder / META).read_text())
    differ = [f"{k}: {recorded.get(k)} here, {settings[k]} now" for k in IDENTITY if recorded.get(k) != settings[k]]
    if differ:
        raise InputError(f"{folder} holds latents made with other settings ({'; '.join(differ)}): extract into "
                         "another folder (out=...), or delete this one to start over")


def extracted_sources(folder: Path) -> dict[str, int]:
    """The source file of every item already in `folder`, and its item number."""
    done = {}
    for path in sorted(folder.glob("[0-9]*.npz")):
        with np.load(path) as item:
            done[str(item["source"])] = int(path.stem)
    return done


def check_latent_std(moments: np.ndarray, scaling_factor: float) -> float:
    """The std of the latents written (from count, sum, sum of squares); a warning when FAR's unit-variance
    assumption is far off."""
    count, total, squares = moments
    std = float(np.sqrt(max(squares / count - (total / count) ** 2, 0.0)))
    if not 0.5 <= std <= 2.0:
        log.warning("the latents' std is %.3f: FAR's flow starts from unit-variance noise, so it learns poorly on "
                    "these. The DC-AE needs scaling_factor %.4f instead of %.4f: nbp train-dcae measures it when it "
                    "exports (rerun it on the finished run folder), then extract again",
                    std, scaling_factor / max(std, 1e-12), scaling_factor)
    else:
        log.info("latent std %.3f", std)
    return std


def source_items(cfg: ExtractLatentsConfig) -> tuple[list, list[str]]:
    """(loader, label, source) per item, and the class names."""
    if cfg.episodes is not None:
        paths = list_episodes(cfg.episodes)
        return [(lambda p=p: load_episode(p, cfg.resolution), -1, str(p)) for p in paths], []
    dataset = cfg.clips.dataset("centre")

    def centre_clip(index: int) -> tuple[np.ndarray, None]:
        video = dataset.load_clip(index)["video"]  # (3, T, H, W) in [0, 1]
        return (video.permute(1, 2, 3, 0) * 255).round().byte().numpy(), None

    return [(lambda i=index: centre_clip(i), dataset.class_to_index[entry.class_name], str(entry.path))
            for index, entry in enumerate(dataset.entries)], dataset.classes
