"""The training data of a tokenizer run (`DataConfig`), and a Lightning DataModule over clip or token datasets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from nbp.config import InputError
from nbp.data.dataset import VideoDataset
from nbp.data.tokens import TokenDataset


@dataclass
class DataConfig:
    root: str = "data/synthetic"  # videos (with annotation lists) or a token dataset folder per split
    train: str | None = "trainlist.txt"  # annotation file (relative to root) or token folder; None = whole root
    val: str | None = "testlist.txt"
    kind: str = "video"  # "video" files or "tokens" (folders written by `nbp tokenize`)
    frames: int = 17  # frames per clip
    resolution: int = 128
    fps: float | None = None
    resize: str = "squash"
    short: str = "skip"
    batch_size: int = 8
    num_workers: int = 2

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


class VideoDataModule(L.LightningDataModule):
    """Train split with random windows, validation split with centre windows."""

    def __init__(self, config: DataConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self.config.dataset(self.config.train, training=True)
            if self.config.val is not None:
                self.val_set = self.config.dataset(self.config.val, training=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=shuffle, num_workers=workers,
                          persistent_workers=workers > 0, drop_last=shuffle)
