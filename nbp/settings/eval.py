"""The settings of every evaluation job, and the protocols that fix some of them (`nbp.config`'s protocol layer)."""
from __future__ import annotations

from dataclasses import dataclass, field

from nbp.config import InputError, check_at_least, check_out_folder, register_protocols
from nbp.devices import OnDevice
from nbp.settings.data import ClipConfig
from nbp.settings.generation import FARSamplingConfig, SamplingConfig
from nbp.settings.models import PerceptualConfig


@dataclass
class EvalConfig(OnDevice):
    real: str = "???"  # .npy / folder of real videos (or a cached feature file .npz written by this command)
    fake: str = "???"  # .npy / folder of generated videos
    protocol: str = "custom"  # a named protocol (its settings fixed), or custom
    i3d: str = "???"  # i3d_pretrained_400.pt (or StyleGAN-V's i3d_torchscript.pt)
    out: str = "runs/eval"  # folder for fvd.json
    batch_size: int = 16  # videos through the I3D at once
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"
    cache_real: str | None = None  # save the real set's features here (.npz) for reuse


@dataclass
class TokenizerEvalConfig(OnDevice):
    tokenizer: str = "???"  # the tokenizer (official magvit2_*.pt or nbp file)
    clips: ClipConfig = field(default_factory=ClipConfig)
    out: str = "runs/eval_tokenizer"  # folder for metrics.json and the pictures
    max_clips: int | None = None  # None: every clip
    batch_size: int = 4  # clips per batch
    num_workers: int = 2  # data-loading processes
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"
    bf16: bool = False  # bf16 autocast
    i3d: str | None = None  # i3d_pretrained_400.pt for rFVD; without it rFVD is not reported
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)  # LPIPS when the weights exist
    samples: int = 8  # clips written side by side with their reconstructions


@dataclass
class PredictEvalConfig(OnDevice):
    lm: str = "???"  # the LM (official .ckpt or nbp file)
    tokenizer: str = "???"  # its tokenizer
    clips: ClipConfig = field(default_factory=lambda: ClipConfig(annotations="testlist.txt", frames=9, resolution=64))
    context_frames: int = 5  # frames given; the rest are predicted
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(greedy=True))
    seed: int = 0  # seeds sampling when not greedy
    max_clips: int = 0  # 0 = all
    shown: int = 8  # clips in the side-by-side video and picture
    out: str = "runs/predict_eval"  # folder for metrics.json and the pictures
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"


@dataclass
class WorldEvalConfig(OnDevice):
    lm: str | None = None  # nbp's world model (.safetensors from `nbp train-lm`) ...
    tokenizer: str | None = None  # ... and its per-frame tokenizer
    far: str | None = None  # or an action-conditioned FAR model ...
    dcae: str | None = None  # ... and its DC-AE
    episodes: str = "???"  # folder of test episodes (video + actions, or .npz)
    out: str = "runs/world_eval"  # folder for metrics.json, the plots and the video
    resolution: int = 64  # frame size the episodes are resized to
    context: int = 16  # C frames given
    horizon: int = 48  # N frames predicted
    max_episodes: int | None = None  # None: every episode
    starts_per_episode: int = 1  # evenly spaced start frames in each episode
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # the token world model's; cfg_scale: actions
    far_sampling: FARSamplingConfig = field(default_factory=FARSamplingConfig)  # FAR's; cfg_scale 1.5 as FAR's
    seed: int = 0  # seeds sampling and FAR's noise
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"
    bf16: bool = False  # bf16 autocast
    i3d: str | None = None  # i3d_pretrained_400.pt for FVD of the predicted frames
    videos: int = 4  # rows of the side-by-side video

    def validate(self) -> None:
        check_at_least(self, 1, "context", "horizon", "max_episodes", "starts_per_episode", "resolution")
        check_out_folder(self.out)
        discrete, far = (self.lm, self.tokenizer), (self.far, self.dcae)
        if not (all(discrete) and not any(far)) and not (all(far) and not any(discrete)):
            raise InputError("world-eval needs either lm= and tokenizer= (nbp's world model) or far= and dcae= "
                              "(a FAR model), not a mix")


@dataclass
class DriftConfig(OnDevice):
    model: str = "???"  # a world model: nbp's token world model or FAR file, or an official FAR_*_Long .pth
    autoencoder: str = "???"  # its tokenizer or DC-AE
    episodes: str = "???"  # folder of (long) episodes to start from and replay
    reference: str | None = None  # folder of episodes whose frames are the game's (None: the other `episodes`)
    out: str = "runs/world_drift"  # folder for metrics.json and the pictures
    context: int = 8  # frames given before play
    steps: int = 1000  # steps played
    max_episodes: int = 4  # sessions, one per episode
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # token world models'
    far_sampling: FARSamplingConfig = field(default_factory=lambda: FARSamplingConfig(steps=1))  # FAR's (as played)
    seed: int = 0  # the sessions' sampling seed and the movement policy's past an episode's end
    short_window: int | None = None  # FAR_Long's window W, which official files do not carry (None: nbp's file's, or 16)
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"

    def validate(self) -> None:
        check_at_least(self, 1, "context", "steps", "max_episodes")
        check_out_folder(self.out)


FAR_GENERATION_PROTOCOLS = {"latte-ucf": dict(videos=2048, frames=16, frame_interval=3, seeds=[0, 2, 4, 6],
                                             sampling=dict(cfg_scale=2.0))}


@register_protocols(FAR_GENERATION_PROTOCOLS)
@dataclass
class FARGenerationEvalConfig(OnDevice):
    far: str = "???"  # the class-conditional FAR model
    dcae: str = "???"  # its DC-AE
    i3d: str = "???"  # i3d_pretrained_400.pt, or StyleGAN-V's i3d_torchscript.pt (FAR's)
    clips: ClipConfig = field(default_factory=lambda: ClipConfig(resolution=128, resize="crop", short="pad"))
    out: str = "runs/far_gen_eval"  # folder for fvd.json
    protocol: str = "custom"  # "latte-ucf" (Latte's UCF-101 protocol, which fixes what it names) or "custom" (the fields below)
    videos: int = 2048  # generated videos per seed (and real ones)
    frames: int = 16  # frames per video
    frame_interval: int = 3  # real clips take every k-th frame (Latte's protocol: 3)
    seeds: list[int] = field(default_factory=lambda: [0, 2, 4, 6])  # one FVD per seed; the mean and std are reported
    sampling: FARSamplingConfig = field(default_factory=lambda: FARSamplingConfig(cfg_scale=2.0))
    batch_size: int = 16  # videos generated at once
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"


FAR_PROTOCOLS = {name: dict(context=c, horizon=h, trajectories=n, sampling=dict(cfg_scale=g)) for name, (c, h, n, g) in {
    "ucf-short": (4, 12, 100, 1.0), "bair-short": (2, 28, 100, 1.0),
    "dmlab-long": (144, 156, 1, 1.5), "minecraft-long": (144, 156, 1, 1.5),
    "dmlab-long-fvd": (36, 264, 1, -1.0), "minecraft-long-fvd": (36, 264, 1, 1.5),
}.items()}


@register_protocols(FAR_PROTOCOLS)
@dataclass
class FAREvalConfig(OnDevice):
    far: str = "???"  # the FAR model (official .pth or nbp file)
    dcae: str = "???"  # its DC-AE (official .pth or nbp file)
    data: str = "???"  # a folder of episodes (video + actions, or .npz) or of videos
    out: str = "runs/far_eval"  # folder for metrics.json and the videos
    # a protocol of FAR's paper, which fixes the settings it names (FAR_PROTOCOLS): ucf-short, bair-short, dmlab-long,
    # minecraft-long, dmlab-long-fvd, minecraft-long-fvd; or "custom" (the fields below)
    protocol: str = "custom"
    context: int = 4  # frames given
    horizon: int = 12  # frames predicted
    trajectories: int = 1  # samples per video; the best one by PSNR is scored (best-of-N)
    max_videos: int | None = None  # FAR evaluates the first 256
    resolution: int = 64  # frame size the videos are resized to
    sampling: FARSamplingConfig = field(default_factory=FARSamplingConfig)  # the protocols fix cfg_scale
    short_window: int | None = None  # FAR_Long's window W (None: the model's)
    uint8_truncation: bool = False  # FAR's quirk: (x.clip(0, 1) * 255).astype(uint8)
    mp4_roundtrip: bool = False  # FAR's quirk: score frames read back from mp4
    fvd_with_context: bool = False  # FAR's quirk: FVD over context + predicted frames
    lpips_unnormalized: bool = False  # FAR's quirk: LPIPS fed [0, 1] images
    i3d: str | None = None  # i3d_pretrained_400.pt (or StyleGAN-V's i3d_torchscript.pt, FAR's): FVD
    perceptual: PerceptualConfig = field(default_factory=lambda: PerceptualConfig(net="alex"))  # LPIPS's files
    seed: int = 0  # seeds the noise of every trajectory
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"

    def validate(self) -> None:
        check_at_least(self, 1, "context", "horizon", "trajectories", "max_videos", "resolution")
        check_out_folder(self.out)
