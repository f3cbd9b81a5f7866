"""The settings of the jobs that generate: `nbp sample` (the token family), `nbp sample-far` and `nbp play` (a world
model of either family in the browser)."""
from __future__ import annotations

from dataclasses import dataclass, field

from nbp.config import ConfigError, InputError, check_at_least, check_out_folder
from nbp.devices import OnDevice
from nbp.settings.generation import FARSamplingConfig, SamplingConfig


@dataclass
class SampleConfig(OnDevice):
    lm: str = "???"  # the LM (official .ckpt or nbp file)
    tokenizer: str = "???"  # its tokenizer
    out: str = "runs/samples"  # folder for the videos
    num_samples: int = 8  # videos to generate
    batch_size: int = 8  # videos generated at once
    class_ids: list[int] = field(default_factory=list)  # cycled over the samples (class-conditional models)
    text: list[str] = field(default_factory=list)  # cycled over the samples (text-conditional models)
    context: list[str] = field(default_factory=list)  # videos to continue (cycled)
    context_dir: str | None = None  # continue every video under this folder (sorted), instead of `context`
    context_frames: int = 5  # video frames given (1 + 4k): 5 -> 2 latent frames
    frames: int = 17  # frames of each output video (1 + 4k)
    resolution: int = 128  # frame size
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0  # video i draws from a generator seeded by (seed, i): the same video whatever the batch
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"
    bf16: bool = False  # bf16 autocast
    fps: float = 8  # frame rate of the mp4 files
    sharded: bool = False  # one file per sample under out/samples/, split over ranks (RANK/WORLD_SIZE), resumable


@dataclass
class FARSampleConfig(OnDevice):
    far: str = "???"  # an official FAR_*.pth or nbp's file
    dcae: str = "???"  # an official DCAE_*.pth or nbp's file
    out: str = "runs/far_samples"  # folder for the videos
    num_samples: int = 8  # videos to generate
    batch_size: int = 8  # videos generated at once
    class_ids: list[int] = field(default_factory=list)  # cycled over the samples (label models)
    context: list[str] = field(default_factory=list)  # videos to continue (cycled)
    episode: str | None = None  # an episode (.npz with video + actions, or a video + .actions.npy): context + actions
    actions: list[int] = field(default_factory=list)  # one per frame, context included (instead of the episode's)
    context_frames: int = 0  # frames given from each video or the episode
    frames: int = 16  # frames to generate
    resolution: int = 64  # frame size
    sampling: FARSamplingConfig = field(default_factory=FARSamplingConfig)
    short_window: int | None = None  # the window W the official file does not carry (FAR: 16, BAIR: 30)
    seed: int = 0  # video i draws from a generator seeded by (seed, i): the same video whatever the batch
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"
    bf16: bool = False  # bf16 autocast
    fps: float = 8  # frame rate of the mp4 files
    sharded: bool = False  # one file per sample under out/samples/, split over ranks (RANK/WORLD_SIZE), resumable

    def validate(self) -> None:
        if (self.context or self.episode) and self.context_frames < 1:
            raise ConfigError("context videos or an episode need context_frames >= 1 (the frames given)")
        if self.frames < 1 or self.num_samples < 1:
            raise ConfigError(f"frames and num_samples must be at least 1 (got {self.frames}, {self.num_samples})")
        check_at_least(self, 1, "batch_size", "resolution")
        if not self.fps > 0:
            raise ConfigError(f"fps must be > 0, got {self.fps}")
        check_out_folder(self.out)


@dataclass
class PlayConfig(OnDevice):
    model: str = "???"  # a world model: nbp's token world model or FAR file, or an official FAR_*_Long .pth
    autoencoder: str = "???"  # its tokenizer (token world models) or DC-AE (FAR)
    episode: str | None = None  # start from this episode (.mp4 + .actions.npy, or .npz with video and actions)
    episodes: str | None = None  # or from a clip of a folder of episodes (e.g. data/crafter/test): `clip` picks it
    clip: int = 0  # the episode of `episodes` (sorted by name) to start from
    start: int = 0  # the episode's first context frame
    context_frames: int = 8  # the episode's frames (and actions) given before play starts
    keys: str = "auto"  # key map: auto (Crafter's for 17 actions, else numbered), crafter, numbered, or a JSON file
    port: int = 8000  # served at http://127.0.0.1:PORT (this machine only)
    out: str = "runs/play"  # folder for saved sessions
    seed: int = 0  # the session's sampling seed (token draws, FAR's noise)
    fps: float = 10  # running play's pace (frames per second at most) and the saved videos' frame rate
    undo_steps: int = 32  # steps that can be undone
    # torch threads for the model (None: all cores but one, left to the browser: on 2 cores, 1 thread played 17 FAR
    # frames/s against 14 with 2, docs/benchmarks.md)
    threads: int | None = None
    resolution: int | None = None  # frame size (None: the autoencoder's own)
    short_window: int | None = None  # FAR_Long's window W, which official files do not carry (None: nbp's file's, or 16)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # token world models'
    far_sampling: FARSamplingConfig = field(default_factory=lambda: FARSamplingConfig(steps=1))  # FAR's (real time)
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"

    def validate(self) -> None:
        if (self.episode is None) == (self.episodes is None):  # like a required path: `nbp config` lets it pass
            raise InputError("give episode=FILE or episodes=FOLDER (with clip=N): play starts from an episode's frames")
        if self.context_frames < 1 or self.start < 0 or self.clip < 0 or self.undo_steps < 0:
            raise ConfigError("context_frames must be >= 1 and start, clip, undo_steps >= 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1 (or None), got {self.threads}")
        if not 0 < self.port < 65536 or not self.fps > 0:
            raise ConfigError(f"port must be in 1..65535 and fps > 0, got {self.port}, {self.fps}")
