"""The typed configs of the token family's models (the transformer, the world model, the tokenizer and its
discriminator) with their named presets, and of the perceptual loss both families' autoencoders train with. No
torch here: the command line reads them without loading the models (`nbp.settings.far_models` is FAR's).

A model file imports its config from here; variants are config fields, recipes override presets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from nbp.config import ConfigError, register_presets

ARCHS = ("nbp-gpt", "modern")
BACKENDS = ("sdpa", "flex")  # the transformer's attention kernels (nbp.models.transformer_attention)
CONDITIONS = ("none", "class", "text")
BOUNDS = ("standard", "official")  # FSQ's bounds (nbp.models.quantizer)

_SIZES = {"700m": dict(n_layer=24, n_head=16, n_embd=1536), "1.2b": dict(n_layer=24, n_head=32, n_embd=2048),
          "3b": dict(n_layer=32, n_head=32, n_embd=3072)}


@register_presets({
    # the official checkpoints' architectures: hybrid text models (UCF-101) and unconditional block models (K600)
    **{f"nbp-gpt-{k}": dict(arch="nbp-gpt", hybrid=True, condition="text", cond_len=8, text_vocab=32000, **v)
       for k, v in _SIZES.items()},
    **{f"nbp-gpt-{k}-k600": dict(arch="nbp-gpt", begin=False, **v) for k, v in _SIZES.items()},
    **_SIZES,  # modern architectures; the task (condition, classes) is set by the recipe
    "small": dict(n_layer=12, n_head=12, n_embd=768),
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, latent_shape=[3, 4, 4]),
})
@dataclass
class TransformerConfig:
    preset: str | None = None  # the preset these values started from (recipes: `model.preset`)
    arch: str = "modern"  # "modern" (RMSNorm, SwiGLU, rotary) or "nbp-gpt" (the official minGPT blocks)
    n_layer: int = 24  # transformer blocks
    n_head: int = 16  # attention heads
    n_embd: int = 1536  # width
    video_vocab: int = 64000  # video codes (the tokenizer's codebook size)
    latent_shape: list[int] = field(default_factory=lambda: [5, 16, 16])  # (T', h, w) of one clip
    block: int = 16  # S: tokens predicted per step; must tile the latent (a row = w, a frame = h * w)
    hybrid: bool = False  # the first block token by token (official UCF models)
    begin: bool = True  # a begin block (bov + placeholders) predicts the first block
    condition: str = "none"  # "none", "class" or "text"
    cond_len: int = 0  # P: condition tokens before the video
    num_classes: int = 0  # classes (condition=class)
    text_vocab: int = 0  # Vt, for text conditions
    text_tokenizer: str = "byte"  # "byte" (built-in, Vt = 257) or a local Hugging Face tokenizer folder
    context: int = 0  # positions of the model (learned positions); 0 = prefix + one clip
    mlp_ratio: float = 4.0  # MLP width / model width
    rope_base: float = 10000.0  # rotary embedding base
    sample_full_vocab: bool = False  # official sampling: argmax/multinomial over every id, codes clamped after
    attention: str = "sdpa"  # "sdpa", or "flex": FlexAttention's block-sparse kernel over the same mask (CUDA)
    activation_checkpointing: bool = False  # in training, keep only each layer's input and recompute the rest

    def validate(self) -> None:
        if self.arch not in ARCHS or self.condition not in CONDITIONS or self.attention not in BACKENDS:
            raise ConfigError(f"arch must be one of {ARCHS}, condition one of {CONDITIONS} and attention one of "
                              f"{BACKENDS}; got {self.arch!r}, {self.condition!r}, {self.attention!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.num_tokens % self.block:
            raise ConfigError(f"block={self.block} does not tile the latent {self.latent_shape} ({self.num_tokens} tokens)")
        if self.hybrid and not self.begin:
            raise ConfigError("hybrid models start with a begin token: set begin=true")
        if self.arch == "modern" and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"rotary positions need an even head size, got {self.n_embd // self.n_head}")
        if (self.condition == "none") != (self.cond_len == 0):
            raise ConfigError(f"condition={self.condition!r} needs cond_len {'0' if self.condition == 'none' else '> 0'}")

    @property
    def num_tokens(self) -> int:
        return math.prod(self.latent_shape)

    @property
    def special(self) -> int:
        """Ids before the condition ids: bov and the placeholders (none for models without a begin block)."""
        return self.block if self.begin else 0

    @property
    def cond_vocab(self) -> int:
        return {"none": 0, "class": self.num_classes + 1, "text": self.text_vocab}[self.condition]

    @property
    def video_offset(self) -> int:
        return self.special + self.cond_vocab

    @property
    def vocab_size(self) -> int:
        return self.video_offset + self.video_vocab

    @property
    def positions(self) -> int:
        return self.context or (self.cond_len + self.num_tokens + (0 if self.begin else -self.block))

    @property
    def layout(self):
        """Where conditions, special tokens and codes sit (`nbp.models.layout.SequenceLayout`)."""
        from nbp.models.layout import SequenceLayout  # torch: imported to build a model, not to read settings

        return SequenceLayout.of(self)


@register_presets({
    # frame blocks of 8x8 tokens (64 px through `tiny-frames`), 17 actions (Crafter's)
    "world-tiny": dict(n_layer=4, n_head=4, n_embd=128, num_actions=17, short_frames=8, long_frames=3),
    **{f"world-{name}": dict(n_layer=layers, n_head=heads, n_embd=width, latent_shape=[48, 8, 8], num_actions=17,
                             short_frames=16, long_frames=31)
       for name, layers, heads, width in (("b", 12, 12, 768), ("m", 24, 16, 1024))},  # FAR-B/M-like sizes
})
@dataclass
class WorldConfig(TransformerConfig):
    latent_shape: list[int] = field(default_factory=lambda: [12, 8, 8])
    block: int = 64  # one latent frame
    begin: bool = False
    num_actions: int = 0  # discrete actions embedded and added to the tokens that predict the frame they produce
    short_frames: int = 0  # K: the most recent frames kept in full; 0 = every frame in full
    long_frames: int = 0  # M: older frames kept, each compressed to (h / long_pool) * (w / long_pool) tokens
    long_pool: int = 2

    def validate(self) -> None:
        super().validate()
        _, h, w = self.latent_shape
        if self.arch != "modern" or self.begin or self.block != h * w or self.condition != "none":
            raise ConfigError("a world model needs arch=modern, begin=false, block=h*w="
                              f"{h * w} (frame blocks), condition=none; got arch={self.arch}, "
                              f"begin={self.begin}, block={self.block}, condition={self.condition}")
        if self.short_frames and (h % self.long_pool or w % self.long_pool):
            raise ConfigError(f"long_pool={self.long_pool} must divide the latent frame {h}x{w}")
        if self.short_frames and self.short_frames + self.long_frames >= self.latent_shape[0]:
            raise ConfigError(f"short_frames + long_frames = {self.short_frames + self.long_frames} must be below "
                              f"the training clip's {self.latent_shape[0]} latent frames (latent_shape[0]), so that "
                              "training sees every window a generation uses")

    @property
    def compressed_tokens(self) -> int:
        """Tokens of one compressed frame."""
        _, h, w = self.latent_shape
        return (h // self.long_pool) * (w // self.long_pool)


@register_presets({
    # Exactly the official NBP tokenizer (official-formats.md §1): 370M parameters.
    "nbp-magvit2": dict(fsq_bound="official"),
    # Same architecture, standard FSQ bound: the default for training new full-size tokenizers.
    "magvit2": dict(),
    "small": dict(channels=[64, 128, 128, 256], num_res_blocks=2, mid_res_blocks=2),
    "tiny": dict(channels=[16, 32, 32, 64], num_res_blocks=1, mid_res_blocks=1, norm_groups=8),
    # One latent frame per video frame (FAR's choice for DMLab/Minecraft): 2D kernels, no temporal
    # compression, no residual units. The CPU recipes' tokenizer: at 64 px it learns about as fast per step
    # as a plain 2D autoencoder, while 3x3x3 kernels learn several dB slower at this size (docs/benchmarks.md).
    "tiny-frames": dict(channels=[32, 32, 32, 32], num_res_blocks=0, mid_res_blocks=0, norm_groups=8,
                        temporal_downsample=[False, False, False], temporal_kernel=1),
})
@dataclass
class TokenizerConfig:
    preset: str | None = None  # the preset these values started from (recipes: `model.preset`)
    channels: list[int] = field(default_factory=lambda: [128, 256, 256, 512])  # width of each stage
    num_res_blocks: int = 4  # residual units per stage
    mid_res_blocks: int = 4  # extra units at the bottleneck width (encoder end, decoder start)
    temporal_downsample: list[bool] = field(default_factory=lambda: [False, True, True])  # per stage gap
    temporal_kernel: int = 3  # frames each convolution sees (causal); 1 = a per-frame image tokenizer
    norm_groups: int = 32  # GroupNorm groups
    in_channels: int = 3  # image channels
    # FSQ levels per latent channel; codes = their product (64,000 by default)
    fsq_levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    # "standard" = vector-quantize-pytorch's bound (atanh shift, (1+eps)): centred, the default for new
    # models; "official" = the NBP release's (tan shift, (1-eps)), needed by its checkpoints.
    fsq_bound: str = "standard"
    resolution: int = 128  # frame size the model is used at; unflattens 1-D index sequences

    def validate(self) -> None:
        if len(self.temporal_downsample) != len(self.channels) - 1:
            raise ConfigError(f"temporal_downsample needs {len(self.channels) - 1} entries (one per gap "
                              f"between the {len(self.channels)} stages), got {len(self.temporal_downsample)}")
        if any(c % self.norm_groups for c in self.channels):
            raise ConfigError(f"every channel count {self.channels} must be divisible by norm_groups={self.norm_groups}")
        if self.temporal_kernel not in (1, 3):
            raise ConfigError(f"temporal_kernel must be 1 (per-frame) or 3 (causal 3D), got {self.temporal_kernel}")
        if self.temporal_kernel == 1 and any(self.temporal_downsample):
            raise ConfigError("temporal_kernel=1 sees one frame at a time, so it cannot downsample time: "
                              "set temporal_downsample to all false")
        if self.fsq_bound not in BOUNDS:
            raise ConfigError(f"fsq_bound must be one of {BOUNDS}, got {self.fsq_bound!r}")
        if self.resolution % self.spatial_factor:
            raise ConfigError(f"resolution {self.resolution} must be divisible by {self.spatial_factor}")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(T', h, w) of the token grid for a clip of `frames` x `height` x `width`."""
        return (frames - 1) // self.temporal_factor + 1, height // self.spatial_factor, width // self.spatial_factor


@dataclass
class DiscriminatorConfig:
    kind: str = "3d"  # "3d" (clip), "2d" (frames), or "both"
    channels: int = 64  # width of the first layer (doubled per layer)
    layers: int = 3  # stages after the first; all but the last halve H and W (3d: the first two halve T)
    norm_groups: int = 16  # GroupNorm groups


BACKBONE_FILES = {"vgg": ("vgg16-397923af.pth", "vgg16.pth"), "alex": ("alexnet-owt-7be5be79.pth", "alexnet.pth")}


@dataclass
class PerceptualConfig:
    net: str = "vgg"  # "vgg" (the training loss) or "alex" (the metric FAR and most video papers report)
    vgg: str | None = None  # torchvision's VGG16 state dict; None: search `search`
    alexnet: str | None = None  # torchvision's AlexNet state dict (net=alex)
    lpips: str | None = None  # LPIPS linear layers (vgg.pth or alex.pth)
    # folders searched first for the weight files when vgg/alexnet/lpips are not given (then the libraries' own)
    search: list[str] = field(default_factory=lambda: ["ckpt"])

    def validate(self) -> None:
        if self.net not in BACKBONE_FILES:
            raise ConfigError(f"perceptual.net must be one of {sorted(BACKBONE_FILES)}, got {self.net!r}")
