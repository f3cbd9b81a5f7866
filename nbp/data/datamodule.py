"""The training data of a tokenizer run (`DataConfig`), and a Lightning DataModule over clip or token datasets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbp.config import InputError
from nbp.data.dataset import VideoDataset
from nbp.data.tokens import TokenDataset


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
        root = Path(self.root)
        if self.kind == "tokens":
            return TokenDataset(root / split if split else root)
        return VideoDataset(root, root / split if split else None, sequence_length=self.frames,
                            resolution=self.resolution, fps=self.fps, sampling="random" if training else "centre",
                            resize=self.resize, short=self.short)
