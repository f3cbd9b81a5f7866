"""Reading and writing video files with PyAV: probe, exact frame selection with seeking, resizing.

Frame selection is by index in the source stream: `clip_indices` resamples to a target fps and places the
window; `read_frames` seeks to the keyframe before the first wanted frame and decodes only up to the last,
converting (and resizing, in FFmpeg's swscale) just the wanted frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from nbp.config import InputError

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
RESIZE_MODES = ("squash", "crop")


class VideoError(Exception):
    """A file that cannot give a clip: unreadable, corrupt, truncated, too short. `reason` is one word."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int


def probe(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and size of the first video stream, from the container header."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no-video", f"{path} has no video stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise VideoError("codec", f"{path}: no decoder for its video codec")
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = stream.frames
            if not frames and stream.duration and stream.time_base:
                frames = int(round(float(stream.duration * stream.time_base) * fps))
            if not frames and container.duration:
                frames = int(container.duration / av.time_base * fps)
            width, height = stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise VideoError("unreadable", f"{path}: {error}") from None
    if fps <= 0 or frames <= 0 or width <= 0 or height <= 0:
        raise VideoError("unreadable", f"{path}: no usable frame count, rate or size in the header")
    return VideoInfo(frames, fps, width, height)


def clip_indices(num_frames: int, source_fps: float, length: int, fps: float | None, start: int) -> list[int]:
    """Source frame indices of a clip of `length` frames at `fps` (None: every frame) from `start`.

    Indices past the end are clamped to the last frame (padding by repetition).
    """
    step = 1.0 if fps is None else source_fps / fps
    return [min(start + math.floor(k * step + 1e-6), num_frames - 1) for k in range(length)]


def clip_span(source_fps: float, length: int, fps: float | None) -> int:
    """Source frames one clip covers."""
    step = 1.0 if fps is None else source_fps / fps
    return math.floor((length - 1) * step + 1e-6) + 1


def output_size(width: int, height: int, resolution: int, resize: str) -> tuple[int, int]:
    """(width, height) to scale frames to before an optional centre crop."""
    if resize == "squash":
        return resolution, resolution
    scale = resolution / min(width, height)
    return max(resolution, round(width * scale)), max(resolution, round(height * scale))


def read_frames(path: str | Path, indices: list[int], resolution: int, resize: str = "squash",
                threads: int = 0) -> np.ndarray:
    """The frames at `indices` (sorted, repeats allowed), as uint8 (T, resolution, resolution, 3) RGB."""
    if resize not in RESIZE_MODES:
        raise InputError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    wanted = sorted(set(indices))
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO" if threads != 1 else "SLICE"
            stream.codec_context.thread_count = threads
            frames = _decode_wanted(container, stream, wanted, resolution, resize)
            if wanted and wanted[0] not in frames:  # the seek overshot (inexact index): decode from the start
                container.seek(0, stream=stream)
                frames = _decode_wanted(container, stream, wanted, resolution, resize, seek=False)
    except av.FFmpegError as error:
        raise VideoError("corrupt", f"{path}: {error}") from None
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoError("truncated", f"{path}: frame {missing[0]} not decodable ({len(frames)} of {len(wanted)} found)")
    return np.stack([frames[i] for i in indices])


def _decode_wanted(container, stream, wanted: list[int], resolution: int, resize: str, seek: bool = True) -> dict:
    rate, time_base = stream.average_rate or stream.guessed_rate, stream.time_base
    start_pts = stream.start_time or 0
    first, last = wanted[0], wanted[-1]
    if seek and first > 0:
        container.seek(start_pts + int(first / rate / time_base), stream=stream, backward=True, any_frame=False)
    out, counter, pending = {}, None, set(wanted)
    for frame in container.decode(stream):
        if frame.pts is not None:
            index = round(float((frame.pts - start_pts) * time_base * rate))
        else:  # no timestamps (some AVIs): count from the start
            index = 0 if counter is None else counter + 1
        counter = index
        if index > last:
            break
        if index in pending:
            out[index] = _to_rgb(frame, resolution, resize)
            pending.discard(index)
            if not pending:
                break
    return out


def _to_rgb(frame: av.VideoFrame, resolution: int, resize: str) -> np.ndarray:
    width, height = output_size(frame.width, frame.height, resolution, resize)
    rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray()
    top, left = (height - resolution) // 2, (width - resolution) // 2
    return rgb[top:top + resolution, left:left + resolution]


def frames_to_video(frames: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (1, 3, T, H, W) in [0, 1]."""
    return torch.from_numpy(frames).to(device).permute(3, 0, 1, 2)[None].float() / 255
