"""Video data: clip datasets over real files, token datasets (clips and episodes), text conditions, the built-in
dataset and Crafter episodes, and the jobs that extract tokens once (`extract`)."""
from nbp.data.classes import UCF101_CLASSES, class_text
from nbp.data.dataset import ClipConfig, VideoDataset, collate_clips
from nbp.data.tokens import EpisodeTokens, TokenDataset, write_token_dataset
from nbp.data.video import VideoError, probe, read_frames
from nbp.io.media import write_video

__all__ = ["UCF101_CLASSES", "class_text", "ClipConfig", "VideoDataset", "collate_clips", "EpisodeTokens",
           "TokenDataset", "write_token_dataset", "VideoError", "probe", "read_frames", "write_video"]
