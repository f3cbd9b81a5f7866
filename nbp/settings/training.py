"""The settings of every training job: where a run lives and how it runs (`RunConfig`, shared as `run.*`), each
trainer's own (the LM, the tokenizer, the DC-AE, FAR), converting ZeRO checkpoints, and the demo."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from nbp.config import ConfigError, check_at_least, from_preset
from nbp.devices import OnDevice
from nbp.extras import deepspeed_quietly, require
from nbp.settings.data import DataConfig
from nbp.settings.far_models import DCAEConfig, FARConfig
from nbp.settings.generation import SamplingConfig
from nbp.settings.models import DiscriminatorConfig, PerceptualConfig, TokenizerConfig, TransformerConfig

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
LOGGERS = ("csv", "tensorboard", "wandb")  # nbp.training.loggers


@dataclass
class RunConfig:
    """Where a training run lives and how it runs: every trainer's `run.*` (tokenizer, DC-AE, LM, FAR)."""
    run_dir: str = "runs/run"  # the run folder: checkpoints, logs, config.yaml, the exports (a rerun resumes)
    steps: int = 1000  # batches
    precision: str = "32-true"  # "bf16-mixed" on GPUs; "auto": bf16-mixed where bf16 is native, else 32-true
    accelerator: str = "auto"  # Lightning accelerator: "auto", "cpu", "gpu"
    strategy: str = "auto"  # "ddp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3"
    devices: int = 1  # devices per node
    num_nodes: int = 1  # machines
    seed: int = 0  # seeds the weights and every draw
    checkpoint_every: int = 500  # batches between checkpoints (and one at the end)
    keep_last: int = 3  # checkpoints kept
    val_every: int = 0  # batches between validation passes (0: none)
    log_every: int = 10  # batches between logged scalars
    loggers: list[str] = field(default_factory=lambda: ["csv"])  # csv (always), tensorboard, wandb (offline without W&B credentials)
    sample_every: int = 0  # batches between sample pictures in samples/ and the loggers (0: none)

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"run.precision must be one of {PRECISIONS}, got {self.precision!r}")
        check_at_least(self, 1, "steps", "devices", "num_nodes", "keep_last", "log_every", prefix="run.")
        check_at_least(self, 0, "checkpoint_every", "val_every", "sample_every", prefix="run.")
        unknown = sorted(set(self.loggers) - set(LOGGERS))
        if unknown:
            raise ConfigError(f"run.loggers: unknown {unknown}; choose among {list(LOGGERS)}")

    @property
    def deepspeed(self) -> bool:
        return self.strategy.startswith("deepspeed")

    def lightning_precision(self) -> str:
        """The precision to train in: bf16 only where it is native (on CPU: AMX or AVX-512 BF16, else float32
        with a notice); "auto" picks bf16-mixed there."""
        from nbp.runtime import native_bf16, use_bf16  # torch: imported to train, not to read settings

        device = self.device_type
        if self.precision == "auto":
            return "bf16-mixed" if native_bf16(device) else "32-true"
        if self.precision.startswith("bf16") and not use_bf16(True, device, "training"):
            return "32-true"
        return self.precision

    @property
    def device_type(self) -> str:
        import torch

        return "cuda" if self.accelerator in ("gpu", "cuda") or (self.accelerator == "auto"
                                                                and torch.cuda.is_available()) else "cpu"

    def precision_settings(self) -> dict:
        """The Trainer's `precision`, or for bf16-mixed outside DeepSpeed the plugin that clips fused AdamW's
        gradients (Lightning refuses to, a rule for fp16's gradient scaler, which bf16 does not use)."""
        from nbp.training.runner import BF16Mixed

        precision = self.lightning_precision()
        if precision != "bf16-mixed" or self.deepspeed:
            return {"precision": precision}
        return {"plugins": [BF16Mixed("bf16-mixed", self.device_type)]}

    def lightning_strategy(self):
        """Lightning strategy from its name; DeepSpeed runs on CPU processes too (see CPUDeepSpeedStrategy)."""
        if not self.deepspeed:
            return self.strategy
        with deepspeed_quietly():
            require("deepspeed", "deepspeed", f"run.strategy={self.strategy}")
        from nbp.training.deepspeed_cpu import deepspeed_strategy  # sets DeepSpeed's accelerator when imported

        return deepspeed_strategy(int(self.strategy.rsplit("_", 1)[-1]))


@dataclass
class LMTrainConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(run_dir="runs/lm"))
    model: TransformerConfig = field(default_factory=lambda: from_preset(TransformerConfig, "tiny"))
    train: str = "???"  # token dataset folder (`nbp tokenize`), or tokenized episodes for world models
    val: str | None = None  # validation token folder (None: no validation)
    batch_size: int = 8  # sequences per batch (per device)
    num_workers: int = 0  # data-loading processes
    lr: float = 3e-4  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100  # linear warmup, then cosine decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW's betas
    weight_decay: float = 0.05  # on matrices only (not norms, biases, learned positions)
    grad_clip: float = 1.0  # gradient-norm clip (0: none)
    accumulate: int = 1  # batches per optimizer step
    cond_dropout: float = 0.1  # probability of replacing the condition (or actions) by the unconditional one
    fused_loss: bool = True  # head fused with the cross-entropy (nbp.models.fused_ce): ~25% less peak memory
    # a tokenizer file: every run.sample_every batches, samples of the model decoded with it, as pictures
    decoder: str | None = None


@dataclass
class TokenizerTrainConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(run_dir="runs/tokenizer", sample_every=200))
    model: TokenizerConfig = field(default_factory=lambda: from_preset(TokenizerConfig, "tiny"))
    init_from: str | None = None  # fine-tune: an official magvit2_*.pt or an nbp tokenizer file
    data: DataConfig = field(default_factory=DataConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    lr: float = 1e-4  # the generator's peak learning rate (Adam)
    disc_lr: float = 1e-4  # the discriminator's
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # Adam's betas
    warmup_fraction: float = 0.01  # share of the steps in linear warmup (then linear decay)
    l1_weight: float = 1.0  # |x - x'| in the loss
    l2_weight: float = 0.0  # (x - x')^2 in the loss
    perceptual_weight: float = 0.1  # LPIPS in the loss (when its weights are found)
    adversarial_weight: float = 0.1  # the GAN loss (from disc_start on)
    adaptive_weight: bool = True  # scale the GAN loss by VQGAN's gradient-norm ratio
    disc_start: int = 200  # batch at which the discriminator joins
    lecam_weight: float = 0.001  # LeCam regulariser of the discriminator
    grad_clip: float = 1.0  # gradient-norm clip (0: none)
    ema_decay: float = 0.999  # 0 disables the EMA copy; the export uses the EMA weights when on
    image_steps: int = 0  # curriculum: the first steps train on single frames
    max_bad_steps: int = 10  # consecutive non-finite losses before stopping

    def validate(self) -> None:
        steps = self.run.steps
        if self.adversarial_weight > 0 and self.disc_start >= steps:
            raise ConfigError(f"disc_start={self.disc_start} is not before the last step ({steps}): the "
                              "discriminator would never train; lower disc_start or set adversarial_weight=0")
        if self.data.resolution % 8:
            raise ConfigError(f"data.resolution={self.data.resolution} must be divisible by 8")
        if self.image_steps >= steps:
            raise ConfigError(f"image_steps={self.image_steps} leaves no video steps of {steps}")

    def tokenizer_config(self) -> TokenizerConfig:
        return replace(self.model, resolution=self.data.resolution)


@dataclass
class DCAETrainConfig(TokenizerTrainConfig):
    # FAR starts its GAN phase at step 50,000: the default run goes as far again past it
    run: RunConfig = field(default_factory=lambda: RunConfig(run_dir="runs/dcae", steps=100_000, sample_every=200))
    model: DCAEConfig = field(default_factory=lambda: from_preset(DCAEConfig, "dcae-8x"))
    init_from: str | None = None  # fine-tune: an official DCAE_*.pth or an nbp dcae file
    discriminator: DiscriminatorConfig = field(default_factory=lambda: DiscriminatorConfig(kind="2d"))
    l1_weight: float = 2.0  # FAR's L1 is on [-1, 1] images: twice nbp's, which is on [0, 1]
    perceptual_weight: float = 1.0
    adversarial_weight: float = 0.5
    lecam_weight: float = 0.0
    disc_start: int = 50_000
    freeze_encoder: bool = True  # during the GAN phase, as FAR does
    # None: 1 / the latents' std on `scale_clips` training clips, measured at export (an `init_from` model keeps
    # its own, so FAR models trained on its latents stay valid); a number: that factor
    scaling_factor: float | None = None
    scale_clips: int = 64  # training clips that measure the latents' std at export

    def validate(self) -> None:
        check_at_least(self, 1, "scale_clips")
        factor = self.model.spatial_factor
        if self.data.resolution % factor:
            raise ConfigError(f"data.resolution={self.data.resolution} must be divisible by the DC-AE's {factor}")
        if self.adversarial_weight > 0 and self.disc_start >= self.run.steps:
            raise ConfigError(f"disc_start={self.disc_start} is not before the last step ({self.run.steps}): the "
                              "GAN phase would never run; lower disc_start or set adversarial_weight=0")

    def tokenizer_config(self) -> DCAEConfig:
        return replace(self.model, resolution=self.data.resolution)


@dataclass
class FARTrainConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(run_dir="runs/far"))
    model: FARConfig = field(default_factory=lambda: from_preset(FARConfig, "far-tiny"))
    train: str = "???"  # a latent dataset (`nbp extract-latents`), or with `dcae` a folder of episodes
    val: str | None = None  # a validation latent dataset (None: no validation)
    dcae: str | None = None  # train from videos: the frozen DC-AE that encodes each batch (FAR's 'video' batches)
    resolution: int = 64  # frame size of the videos (with `dcae`)
    clip_frames: int = 16  # frames per training clip (FAR_Long: the longest clip the sampler cuts from)
    batch_size: int = 4  # clips per batch (per device)
    num_workers: int = 0  # data-loading processes
    lr: float = 1e-4  # peak learning rate (AdamW)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's betas
    weight_decay: float = 0.0  # AdamW's weight decay
    warmup_steps: int = 0  # FAR: 0 (long models: 10,000)
    grad_clip: float = 1.0  # gradient-norm clip (0: none)
    ema_decay: float = 0.9999  # 0: no EMA; the export is the EMA weights when on
    clean_context_ratio: float = 0.1  # share of clips trained with clean (noise-free) context frames (FAR: 0.1)
    cond_dropout: float = 0.1  # share of conditions replaced by the null one (for guidance)
    # noise levels: u = sigmoid(N(logit_mean, logit_std)), sigma = 1 - u (FAR: 0, 1); a negative mean trains more
    # at high noise, where a frame must come from its context and its action rather than from its own noisy input
    logit_mean: float = 0.0
    logit_std: float = 1.0  # see logit_mean
    # a DC-AE file: every run.sample_every batches, samples of the model decoded with it, as pictures (default: dcae)
    decoder: str | None = None

    def validate(self) -> None:
        if self.model.long and self.clip_frames <= self.model.short_window:
            raise ConfigError(f"clip_frames={self.clip_frames} must exceed the window W={self.model.short_window} "
                              "for FAR_Long (its clips have W to clip_frames - 1 frames)")
        if not 0 <= self.clean_context_ratio < 1 or not 0 <= self.cond_dropout <= 1:
            raise ConfigError("clean_context_ratio must be in [0, 1) and cond_dropout in [0, 1]")
        if self.logit_std <= 0:
            raise ConfigError(f"logit_std must be > 0, got {self.logit_std}")
        check_at_least(self, 1, "batch_size", "clip_frames", "resolution")
        check_at_least(self, 0, "warmup_steps", "num_workers", "weight_decay", "grad_clip")
        if not self.lr > 0 or not 0 <= self.ema_decay < 1:
            raise ConfigError(f"lr must be > 0 and ema_decay in [0, 1) (0: no EMA); got {self.lr}, {self.ema_decay}")


@dataclass
class ConvertConfig:
    checkpoint: str = "???"  # a ZeRO checkpoint folder or a Lightning .ckpt of an nbp LM run
    out: str = "???"  # .safetensors


@dataclass
class DemoConfig(OnDevice):
    out: str = "runs/demo"  # the run folder (every stage's files)
    device: str = "auto"  # "auto" (a GPU where there is one), "cpu", "cuda" or "cuda:N"
    # The time budget of the demo (setup not counted). A short calibration times the training steps on this
    # machine and shortens both trainings alike where the budget needs it; 0 keeps the step counts as given.
    minutes: float = 11.0
    scale: float = 1.0  # multiplies both training lengths: 2 trains twice as long (within the budget)
    tokenizer_steps: int = 1000  # at most
    # 36 single frames from 36 clips a batch: the per-frame tokenizer learns from images, and 36 unlike ones teach
    # it more per step than 4 clips of 9 alike frames (docs/benchmarks.md)
    tokenizer_batch: int = 36  # clips per tokenizer batch
    tokenizer_frames: int = 1  # frames per tokenizer clip
    tokenizer_lr: float = 2e-3  # the tokenizer's peak learning rate
    # the tokenizer's stage widths: with no residual units the encoder is as wide as the first, the decoder as the
    # last; a wide decoder reconstructs better per step than a wide encoder
    tokenizer_channels: list[int] = field(default_factory=lambda: [16, 16, 16, 48])
    lm_steps: int = 1200  # at most
    lm_lr: float = 2e-3  # the LM's peak learning rate
    # 2 layers and 16 clips a batch: for the cost of 4 layers and 8 clips, the LM predicts better within half its
    # steps (docs/benchmarks.md)
    lm_layers: int = 2  # transformer blocks of the LM
    lm_batch: int = 16  # clips per LM batch
    videos_per_class: int = 24  # videos of each class for the tokenizer and the evaluations
    lm_videos_per_class: int = 120  # more videos of the same generator (another seed) for the LM alone
    resolution: int = 32  # 4x4 tokens per frame: a 144-token LM sequence, cheap on 2 cores
    fps: float | None = 4  # every other frame of the 8 fps videos: shapes move far enough that copying the last
                           # frame is a baseline to beat (None: every frame)
    frames: int = 9  # 9 latent frames of 4x4 tokens (one per frame)
    context_frames: int = 5  # prediction: 5 frames given, the next 4 predicted
    # 1,000 codes instead of 64,000: the tiny LM's output layer and loss then cost little on a CPU
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    gan_from: float = 1.0  # the share of the tokenizer's steps before its discriminator joins (1: no GAN, which
                           # the budget favours; 0.6 adds it for the last 40%)
    windows: int = 4  # training clips per video for the LM
    block: int = 16  # tokens the LM predicts per step: 16 = a 4x4 latent frame, 4 = a row of it
    hybrid: bool = True  # the first block token by token (with frame blocks: the first frame)
    samples_per_class: int = 6  # class-conditional samples drawn per class
    # how the class-conditional samples are drawn (`nbp sample`'s settings); prediction is greedy (predict-eval's)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(cfg_scale=2.0, top_k=20))
    fresh: bool = False  # rerun every stage instead of keeping finished ones
    seed: int = 0  # seeds the data, both trainings and the samples
