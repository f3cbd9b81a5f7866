"""`VideoDataset`: labelled clips from real video files (UCF-101 / Kinetics layouts or any folder).

Files are listed from an annotation file (`relative/path.avi<TAB>label` per line, the label optional; the
class is the parent folder's name, as NBP does) or found recursively under the root. Every file is probed
once at construction; those that cannot give a clip are left out and listed in `dataset.skipped`
(path -> reason). A file that fails later, while decoding, is replaced by the next usable one
(`on_error="replace"`, for training) or returned as None (`on_error="skip"`, with `collate_clips`).
No open file handle is kept, so the dataset can be copied into DataLoader workers.
"""
from __future__ import annotations

import logging
import os
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from nbp.config import InputError
from nbp.data.classes import sorted_classes
from nbp.data.video import (
    RESIZE_MODES,
    VIDEO_EXTENSIONS,
    VideoError,
    VideoInfo,
    clip_indices,
    clip_span,
    probe,
    read_frames,
)
from nbp.settings.data import ClipConfig as ClipConfig  # the clip settings, importable from here as before

log = logging.getLogger(__name__)

SAMPLINGS = ("random", "centre")
SPELLINGS = {"center": "centre"}  # the official NBP code's spelling
SHORT_POLICIES = ("skip", "pad")


class AnnotationError(InputError):
    """A malformed annotation line, named by file and line number."""


@dataclass(frozen=True)
class Entry:
    path: Path
    class_name: str


def read_annotations(root: Path, annotations: str | Path) -> tuple[list[Entry], dict[str, str]]:
    """Entries of an annotation list, and the lines left out (path -> reason: missing, outside-root, link-loop)."""
    entries, skipped = [], {}
    root_resolved = root.resolve()
    text = Path(annotations).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first path
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split("\t") if "\t" in line else line.split()
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].strip().lstrip("-").isdigit()):
            raise AnnotationError(f"{annotations}:{number}: expected 'relative/path<TAB>label' "
                                  f"(label an integer, optional), got {line!r}")
        try:
            path = (root / fields[0].strip()).resolve(strict=False)
        except RuntimeError:  # a symlink loop
            skipped[str(root / fields[0].strip())] = "link-loop"
            continue
        if not path.is_relative_to(root_resolved):
            skipped[str(path)] = "outside-root"
        elif not path.is_file():
            skipped[str(path)] = "missing"
        else:
            entries.append(Entry(path, path.parent.name))
    return entries, skipped


def scan_folder(root: Path, extensions=VIDEO_EXTENSIONS) -> tuple[list[Entry], dict[str, str]]:
    """Video files under `root` (class = parent folder), and those left out: dangling links, unreadable folders."""
    files, skipped = [], {}

    def unreadable(error: OSError) -> None:
        skipped[str(error.filename)] = "unreadable-folder"

    for folder, _, names in os.walk(root, onerror=unreadable):  # linked folders are not followed (no loops)
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() not in extensions:
                continue
            if path.is_file():
                files.append(path)
            else:
                skipped[str(path)] = "dangling-link"
    return [Entry(p, p.parent.name) for p in sorted(files)], skipped


class VideoDataset(Dataset):
    """Clips (3, T, H, W) float in [0, 1] with their class, from the video files under `root`.

    Items: {"video", "label" (class index), "class_name", "path"}.
    - `fps`: resample to this frame rate (None keeps every source frame).
    - `sampling`: "random" window (training) or "centre" (evaluation, deterministic; "center" too).
    - `resize`: "squash" to a square (the official NBP preprocessing) or "crop" (short side, centre crop).
    - `short`: videos shorter than a clip are "skip"ped or "pad"ded by repeating their last frame.
    """

    def __init__(self, root: str | Path, annotations: str | Path | None = None, *, sequence_length: int = 17,
                 resolution: int = 128, fps: float | None = None, sampling: str = "random", resize: str = "squash",
                 short: str = "skip", classes: list[str] | None = None, on_error: str = "replace",
                 probe_workers: int = 8, decode_threads: int = 1):
        sampling = SPELLINGS.get(sampling, sampling)
        for name, value, allowed in [("sampling", sampling, SAMPLINGS), ("resize", resize, RESIZE_MODES),
                                     ("short", short, SHORT_POLICIES), ("on_error", on_error, ("replace", "skip"))]:
            if value not in allowed:
                raise InputError(f"{name} must be one of {allowed}, got {value!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} is not a directory")
        self.sequence_length, self.resolution, self.fps = sequence_length, resolution, fps
        self.sampling, self.resize, self.short, self.on_error = sampling, resize, short, on_error
        self.decode_threads = decode_threads

        if annotations is not None:
            entries, self.skipped = read_annotations(self.root, annotations)
        else:
            entries, self.skipped = scan_folder(self.root)
        self.classes = list(classes) if classes is not None else sorted_classes(e.class_name for e in entries)
        self.class_to_index = {name: i for i, name in enumerate(self.classes)}
        self.entries, self.infos = self._probe_all(entries, probe_workers)
        if not self.entries:
            raise InputError(f"no usable video under {self.root}" + (f" listed in {annotations}" if annotations else "")
                             + f"; skipped: {self.skip_counts() or 'nothing found'}")
        if self.skipped:
            log.warning("%s: left out %d files (%s)", self.root, len(self.skipped), self.skip_counts())

    def _probe_all(self, entries: list[Entry], workers: int) -> tuple[list[Entry], list[VideoInfo]]:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = list(pool.map(self._probe_one, entries))
        kept = [(entry, info) for entry, info in zip(entries, results) if isinstance(info, VideoInfo)]
        self.skipped.update({str(entry.path): reason for entry, reason in zip(entries, results) if isinstance(reason, str)})
        return [e for e, _ in kept], [i for _, i in kept]

    def _probe_one(self, entry: Entry) -> VideoInfo | str:
        if entry.class_name not in self.class_to_index:
            return "unknown-class"
        try:
            info = probe(entry.path)
        except VideoError as error:
            log.warning("skipping %s", error)
            return error.reason
        if self.short == "skip" and info.frames < clip_span(info.fps, self.sequence_length, self.fps):
            return "short"
        return info

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(self.skipped.values()))

    def __len__(self) -> int:
        return len(self.entries)

    def window_start(self, info: VideoInfo, draw: int | float | None = None) -> int:
        """First frame of the window: a float `draw` in [0, 1] places it at that fraction of the free span."""
        free = max(0, info.frames - clip_span(info.fps, self.sequence_length, self.fps))
        if isinstance(draw, float):
            return round(free * min(max(draw, 0.0), 1.0))
        if self.sampling == "centre":
            return free // 2
        return random.randint(0, free) if draw is None else random.Random(draw).randint(0, free)

    def load_clip(self, index: int, draw: int | float | None = None) -> dict:
        entry, info = self.entries[index], self.infos[index]
        indices = clip_indices(info.frames, info.fps, self.sequence_length, self.fps, self.window_start(info, draw))
        frames = read_frames(entry.path, indices, self.resolution, self.resize, threads=self.decode_threads)
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255)  # (T, H, W, 3) -> (3, T, H, W)
        return {"video": video, "label": self.class_to_index[entry.class_name], "class_name": entry.class_name,
                "path": str(entry.path)}

    def __getitem__(self, key: int | tuple[int, int | float]) -> dict | None:
        """`dataset[i]`, or `dataset[(i, draw)]` whose random window follows from an int `draw` (reproducible);
        a float `draw` in [0, 1] puts the window at that fraction of the video instead."""
        index, draw = key if isinstance(key, tuple) else (key, None)
        for attempt in range(len(self)):
            candidate = (index + attempt) % len(self)
            try:
                return self.load_clip(candidate, draw)
            except VideoError as error:
                path = str(self.entries[candidate].path)
                if path not in self.skipped:
                    log.warning("skipping %s", error)
                    self.skipped[path] = error.reason
                if self.on_error == "skip":
                    return None
        raise RuntimeError(f"no video under {self.root} could be decoded; skipped: {self.skip_counts()}")


def collate_clips(items: list[dict | None]) -> dict | None:
    """default_collate over the clips that decoded; `batch["dropped"]` counts the others (None: all failed)."""
    clips = [item for item in items if item is not None]
    if not clips:
        return None
    batch = default_collate(clips)
    batch["dropped"] = len(items) - len(clips)
    return batch
