"""`nbp eval`: FVD between two sets of videos under a named protocol, written as JSON and a short table.

A set is a `.npy` uint8 array (N, T, H, W, 3) (what `nbp sample` writes as samples_uint8.npy), or a folder of
such arrays and/or video files (every frame decoded). Evaluate from arrays or lossless files: a lossy mp4 round
trip raises FVD. The protocol fixes what must match for a number to be comparable with the literature.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from nbp.config import ConfigError, InputError
from nbp.data.video import VIDEO_EXTENSIONS
from nbp.io import write_json
from nbp.metrics import frechet_distance, i3d_features, load_features, load_i3d, save_features
from nbp.settings.eval import EvalConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    samples: int | None  # per set; None: any count (all of the split)
    frames: int
    resolution: int | None  # None: any, but both sets alike


PROTOCOLS = {p.name: p for p in (
    Protocol("ucf101-10k", "MAGVIT/NBP class-conditional UCF-101: 10,000 generated vs 10,000 train clips "
             "(random 16-frame windows), 128 px", 10_000, 16, 128),
    Protocol("stylegan-v-2048", "StyleGAN-V / Latte: 2,048 vs 2,048 clips of 16 frames", 2_048, 16, None),
    Protocol("k600-prediction", "Kinetics-600 prediction, 5 given -> 11 predicted frames (16 evaluated), 64 px, "
             "the whole test split", None, 16, 64),
    Protocol("custom", "any counts; both sets must share frames and size", None, 16, None),
)}


def load_videos(path: str | Path) -> np.ndarray:
    """uint8 (N, T, H, W, 3) from a .npy file or a folder of .npy arrays and video files."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a .npy array nor a folder of videos")
    items = []
    for file in sorted(path.iterdir()):
        if file.suffix == ".npy":
            array = np.load(file)
            items += list(array) if array.ndim == 5 else [array]
        elif file.suffix.lower() in VIDEO_EXTENSIONS:
            with av.open(str(file)) as container:
                items.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
    if not items:
        raise InputError(f"no videos (.npy or {', '.join(VIDEO_EXTENSIONS)}) in {path}")
    shapes = {item.shape for item in items}
    if len(shapes) > 1:
        raise InputError(f"videos in {path} differ in shape {sorted(shapes)[:3]}: one set must share frames and size")
    return np.stack(items)


def check_protocol(protocol: Protocol, name: str, videos: np.ndarray) -> np.ndarray:
    """The protocol's frames of each video, or a clear error saying what does not match."""
    n, t, h, w, _ = videos.shape
    if protocol.samples is not None and n != protocol.samples:
        raise ConfigError(f"{protocol.name} compares {protocol.samples} videos per set; {name} has {n} "
                          "(use protocol=custom for other counts, and do not compare the number with the literature)")
    if t < protocol.frames:
        raise ConfigError(f"{protocol.name} evaluates {protocol.frames} frames; {name} videos have {t}")
    if protocol.resolution is not None and (h, w) != (protocol.resolution, protocol.resolution):
        raise ConfigError(f"{protocol.name} evaluates {protocol.resolution}x{protocol.resolution}; {name} is {h}x{w}")
    return videos[:, :protocol.frames]


def features_of(cfg: EvalConfig, i3d, protocol: Protocol, name: str, source: str):
    if source.endswith(".npz"):
        feats, meta = load_features(source, expect={"protocol": protocol.name})
        return feats, meta["shape"]
    videos = check_protocol(protocol, name, load_videos(source))
    feats = i3d_features(i3d, videos, batch_size=cfg.batch_size, device=cfg.device)
    return feats, list(videos.shape)


def evaluate(cfg: EvalConfig) -> dict:
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {cfg.protocol!r}; choose one of {sorted(PROTOCOLS)}")
    protocol = PROTOCOLS[cfg.protocol]
    i3d = load_i3d(cfg.i3d, device=cfg.device)
    real, real_shape = features_of(cfg, i3d, protocol, "real", cfg.real)
    fake, fake_shape = features_of(cfg, i3d, protocol, "fake", cfg.fake)
    if real_shape[1:4] != fake_shape[1:4]:
        raise ConfigError(f"real videos are {real_shape[1:4]} (frames, height, width), fake ones {fake_shape[1:4]}")
    if cfg.cache_real and not cfg.real.endswith(".npz"):
        save_features(cfg.cache_real, real, {"protocol": protocol.name, "shape": real_shape})
    results = {"protocol": protocol.name, "protocol_description": protocol.description, "fvd": frechet_distance(real, fake),
               "real": {"source": cfg.real, "shape": real_shape}, "fake": {"source": cfg.fake, "shape": fake_shape},
               "settings": asdict(cfg)}
    write_json(Path(cfg.out) / "fvd.json", results)
    return results
