"""Each family's sampling settings, nested as `sampling:` in every job that generates, and the decoding modes and
guidance schedules they name (`nbp.generation.decoding` says what the modes do)."""
from __future__ import annotations

from dataclasses import dataclass

from nbp.config import ConfigError

DECODINGS = ("auto", "dynamic", "static", "cuda-graphs", "compiled")
SCHEDULES = ("constant", "linear")  # guidance scale over the steps (nbp.generation.guidance)


def check_decoding(decoding: str) -> None:
    if decoding not in DECODINGS:
        raise ConfigError(f"decoding must be one of {DECODINGS}, got {decoding!r}")


@dataclass
class SamplingConfig:
    """How codes are drawn from logits: the settings every generating job shares."""
    greedy: bool = False  # take the most likely token (no sampling)
    temperature: float = 1.0  # divides the logits before sampling
    top_k: int | None = None  # sample among the k most likely tokens (0: all)
    top_p: float | None = None  # nucleus sampling: the smallest set holding p (1: all)
    cfg_scale: float | None = None  # classifier-free guidance (class, text or action conditions); None = off
    cfg_schedule: str = "constant"  # or "linear"
    decoding: str = "auto"  # how the cached steps run (nbp.generation.decoding); world models: dynamic

    def validate(self) -> None:
        problems = [f"cfg_schedule must be one of {SCHEDULES}, got {self.cfg_schedule!r}"
                    if self.cfg_schedule not in SCHEDULES else "",
                    f"temperature must be > 0, got {self.temperature}" if not self.temperature > 0 else "",
                    f"top_k must be at least 1 (or null for all codes), got {self.top_k}"
                    if self.top_k is not None and self.top_k < 1 else "",
                    f"top_p must lie in (0, 1] (or null), got {self.top_p}"
                    if self.top_p is not None and not 0 < self.top_p <= 1 else "",
                    f"cfg_scale must be >= 0 (1 = no guidance; null = off), got {self.cfg_scale}"
                    if self.cfg_scale is not None and self.cfg_scale < 0 else ""]
        check_decoding(self.decoding)
        if any(problems):
            raise ConfigError("sampling: " + "; ".join(p for p in problems if p))


@dataclass
class FARSamplingConfig:
    steps: int = 50  # Euler steps per frame (FAR: 50)
    cfg_scale: float = 1.0  # classifier-free guidance; FAR: 2.0 for labels, 1.5 for actions; -1: action-free
    use_cache: bool = True  # reuse the context's keys and values (KV and multi-level caches)
    # with the cache: "dynamic" (its shapes grow), "static" (fixed shapes, eager), "cuda-graphs" (a frame's steps
    # replayed as one CUDA graph), "compiled" (the same of the torch.compile'd step); "auto": CUDA graphs on a GPU
    decoding: str = "auto"
    # the noise level sigma at which generated frames enter the window as context (timestep 1000 sigma; 0: clean,
    # FAR's sampler). Training shows the model noisy context frames, so a little noise here can hide the artifacts
    # of its own frames before a long rollout compounds them (GameNGen's noise augmentation, at sampling only; on
    # the tiny Crafter model it moved PSNR by < 0.1 dB). The given context and the long-term frames stay clean.
    context_noise: float = 0.0
    # FAR_Long past its window: the long-term frames seen, the newest ones (None: every older frame, as FAR). A bound
    # keeps the cost of a frame flat however long the video (a played session): the kept long-term frames are then
    # recomputed as they slide, each seeing only the kept ones
    long_frames: int | None = None

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.cfg_scale < 0 and self.cfg_scale != -1:
            raise ConfigError(f"cfg_scale must be >= 0, or -1 (action-free sampling), got {self.cfg_scale}")
        check_decoding(self.decoding)
        if not 0 <= self.context_noise < 1:
            raise ConfigError(f"context_noise must be in [0, 1), got {self.context_noise}")
        if self.long_frames is not None and self.long_frames < 0:
            raise ConfigError(f"long_frames must be >= 0 (or None: every older frame), got {self.long_frames}")
        if not self.use_cache and self.decoding not in ("auto", "dynamic"):
            raise ConfigError(f"decoding={self.decoding!r} runs over the cache: it needs use_cache")

    def resolved_decoding(self, device) -> str:
        from nbp.generation.decoding import resolve_decoding  # torch: imported to sample, not to read settings

        return resolve_decoding(self.decoding, device, cached=self.use_cache)
