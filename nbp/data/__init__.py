"""Video data: clip datasets over real files, token datasets, the built-in dataset, the DataModule."""
from nbp.data.classes import UCF101_CLASSES, class_text
from nbp.data.dataset import VideoDataset, collate_clips
from nbp.data.tokens import TokenDataset, write_token_dataset
from nbp.data.video import VideoError, probe, read_frames, write_video

__all__ = ["UCF101_CLASSES", "class_text", "VideoDataset", "collate_clips", "TokenDataset", "write_token_dataset",
           "VideoError", "probe", "read_frames", "write_video"]
