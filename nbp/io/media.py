"""Writing what people look at: mp4 (optionally lossless), gif, PNG contact sheets, grid videos."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from nbp.config import InputError


def to_uint8(video: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float video (3, T, H, W) or batch (B, 3, T, H, W) in [0, 1] -> uint8 (..., T, H, W, 3)."""
    video = torch.as_tensor(video).detach().float().cpu()
    video = video.clamp(0, 1).mul(255).round().to(torch.uint8)
    return video.movedim(-4, -1).numpy()  # channels last


def video_grid(videos: np.ndarray, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """uint8 (N, T, H, W, 3) -> one video (T, H', W', 3) showing the N side by side in a grid."""
    n, t, h, w, _ = videos.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = -(-n // columns)
    grid = np.full((t, rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for i, video in enumerate(videos):
        top, left = (i // columns) * (h + gap), (i % columns) * (w + gap)
        grid[:, top:top + h, left:left + w] = video
    return grid


def contact_sheet(videos: np.ndarray, path: str | Path, max_frames: int = 17, gap: int = 2) -> Path:
    """PNG with one row per video (uint8 (N, T, H, W, 3)) and its frames left to right."""
    n, t, h, w, _ = videos.shape
    frames = videos[:, np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)]
    # every frame becomes a one-frame "video" of the grid, row-major: video i fills row i
    sheet = video_grid(frames.reshape(-1, 1, h, w, 3), columns=frames.shape[1], gap=gap)[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)
    return path


def save_video(path: str | Path, video: np.ndarray, fps: float = 8, lossless: bool = False) -> Path:
    """uint8 (T, H, W, 3) to .mp4 (x264; `lossless` for exact read-back) or .gif."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        path.parent.mkdir(parents=True, exist_ok=True)
        images = [Image.fromarray(frame) for frame in video]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return path
    return write_video(path, video, fps, lossless=lossless)


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str | None = None,
                lossless: bool = False, gop: int | None = None) -> Path:
    """Write uint8 (T, H, W, 3) RGB frames. Codec from the suffix: mp4 -> libx264, avi -> mpeg4.

    `lossless` uses x264 with qp 0 in RGB (libx264rgb), for files evaluation may read back exactly.
    x264 runs with crf 18 and without macroblock-tree rate control, whose lookahead makes the output
    (and decoded pixels) vary from run to run on identical input.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    codec = codec or ("libx264rgb" if lossless else {"avi": "mpeg4"}.get(path.suffix[1:].lower(), "libx264"))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=_rate(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24" if codec == "libx264rgb" else "yuv420p"
        if lossless:
            stream.options = {"qp": "0"}
        elif codec.startswith("libx264"):
            stream.options = {"crf": "18", "x264-params": "mbtree=0"}
        elif codec == "mpeg4":
            stream.options = {"qscale": "3"}
        if gop is not None:
            stream.codec_context.gop_size = gop
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
