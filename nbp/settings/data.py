"""The settings of every job that reads or writes data: which clips of which videos (`ClipConfig`), a training
run's data (`DataConfig`), the built-in dataset, Crafter episodes, and extracting tokens and latents once."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nbp.config import InputError
from nbp.devices import OnDevice


@dataclass
class ClipConfig:
    """Which clips of which videos: the settings every job reading a video split shares."""
    root: str = "???"  # the videos
    annotations: str | None = None  # annotation list relative to root; None = every video under root
    frames: int = 17  # frames per clip
    resolution: int = 128  # frame size (square) the clips are resized to
    fps: float | None = None  # resample to this rate; None keeps every source frame
    resize: str = "squash"  # "squash" (official) or "crop"
    short: str = "skip"  # videos shorter than a clip: "skip" or "pad"

    def dataset(self, sampling: str = "centre", **options):
        """These clips as a `VideoDataset` (windows by `sampling`: "centre" or "random")."""
        from nbp.data.dataset import VideoDataset  # torch and PyAV: imported to read videos, not settings

        annotations = Path(self.root) / self.annotations if self.annotations else None
        return VideoDataset(self.root, annotations, sequence_length=self.frames, resolution=self.resolution,
                            fps=self.fps, sampling=sampling, resize=self.resize, short=self.short, **options)


@dataclass
class DataConfig:
    root: str = "data/synthetic"  # videos (with annotation lists) or a token dataset folder per split
    train: str | None = "trainlist.txt"  # annotation file (relative to root) or token folder; None = whole root
    val: str | None = "testlist.txt"  # validation annotation file or token folder; None = no validation
    kind: str = "video"  # "video" files or "tokens" (folders written by `nbp tokenize`)
    frames: int = 17  # frames per clip
    resolution: int = 128  # frame size (square) the clips are resized to
    fps: float | None = None  # resample the videos to this rate; None keeps every source frame
    resize: str = "squash"  # "squash" (official) or "crop"
    short: str = "skip"  # videos shorter than a clip: "skip" or "pad"
    batch_size: int = 8  # clips per batch (per device)
    num_workers: int = 2  # data-loading processes (0: in the training process)

    def validate(self) -> None:
        if self.kind not in ("video", "tokens"):
            raise InputError(f"data.kind must be 'video' or 'tokens', got {self.kind!r}")

    def dataset(self, split: str | None, training: bool):
        """A split: random windows for training, centre windows otherwise."""
        from nbp.data.dataset import VideoDataset
        from nbp.data.tokens import TokenDataset

        root = Path(self.root)
        if self.kind == "tokens":
            return TokenDataset(root / split if split else root)
        return VideoDataset(root, root / split if split else None, sequence_length=self.frames,
                            resolution=self.resolution, fps=self.fps, sampling="random" if training else "centre",
                            resize=self.resize, short=self.short)


@dataclass
class SyntheticConfig:
    out: str = "data/synthetic"  # the dataset folder (class folders, trainlist.txt, testlist.txt)
    videos_per_class: int = 24  # videos of each of the 4 classes
    size: int = 64  # frame size in pixels
    fps: float = 8  # frame rate of the videos
    seed: int = 0  # draws the shapes' positions and motions


@dataclass
class CrafterConfig:
    out: str = "data/crafter"  # the dataset folder (train/, val/, test/ inside)
    train: int = 128  # episodes per split
    val: int = 8  # episodes in the validation split
    test: int = 16  # episodes in the test split
    frames: int = 144  # most frames per episode (fewer when the player dies); night (noise) starts near 150
    size: int = 64  # frame size in pixels
    view: int = 8  # tiles across the frame: 8 makes a tile one 8x8 token (Crafter's default is 9)
    fps: float = 10  # frame rate written into the mp4 files
    seed: int = 0  # the episodes' world seeds start here

    @property
    def splits(self) -> dict[str, int]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass
class TokenizeConfig(OnDevice):
    tokenizer: str = "???"  # tokenizer file (official magvit2_*.pt or nbp .safetensors)
    out: str = "???"  # token dataset folder to write (resumed if it exists)
    clips: ClipConfig = field(default_factory=ClipConfig)
    windows: int = 1  # clips per video, evenly spaced from its start to its end (1: the centre clip)
    shard_size: int = 1024  # clips per .npy shard of the token dataset
    batch_size: int = 4  # clips per tokenizer batch
    num_workers: int = 2  # data-loading processes
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"
    bf16: bool = False  # bf16 autocast (a few indices move across FSQ bin edges; see docs/benchmarks.md)

    def validate(self) -> None:
        if self.windows < 1:
            raise InputError(f"windows must be at least 1 (clips per video), got {self.windows}")

    def clip_settings(self) -> dict:
        """What the token dataset records of how its clips were cut (meta.json: a resumed run must match)."""
        c = self.clips
        return {"sequence_length": c.frames, "resolution": c.resolution, "fps": c.fps, "resize": c.resize,
                "short": c.short, "windows": self.windows}


@dataclass
class TokenizeEpisodesConfig(OnDevice):
    tokenizer: str = "???"  # a per-frame tokenizer (e.g. tiny-frames)
    episodes: str = "???"  # folder of episodes (video + .actions.npy, or .npz with video and actions)
    out: str = "???"  # the tokenized episodes' folder
    resolution: int = 64  # frame size the episodes are resized to
    min_frames: int = 2  # shorter episodes are skipped (and counted)
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"


@dataclass
class ExportClipsConfig:
    out: str = "???"  # .npy
    clips: ClipConfig = field(default_factory=lambda: ClipConfig(frames=16))
    count: int | None = None  # None: every clip once
    sampling: str = "random"  # window of each clip: "random" (seeded) or "centre"
    seed: int = 0  # draws the random windows


@dataclass
class ExtractLatentsConfig(OnDevice):
    dcae: str = "???"  # an official DCAE_*.pth or nbp's file
    out: str = "???"  # the latent dataset folder (resumed if it exists)
    episodes: str | None = None  # a folder of episodes (video + .actions.npy, or .npz with video and actions)
    clips: ClipConfig | None = field(default=None)  # or labelled videos: the centre clip of clips.frames frames
    resolution: int = 64  # frame size the videos are resized to before encoding
    frames_per_batch: int = 32  # frames through the DC-AE at once
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"

    def validate(self) -> None:
        if (self.episodes is None) == (self.clips is None):
            raise InputError("give either episodes=FOLDER or clips.root=FOLDER (labelled videos), not both")
