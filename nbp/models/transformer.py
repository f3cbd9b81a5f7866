"""The next-block-prediction transformer: a decoder-only GPT over video tokens with a block-causal mask.

Two architectures from one config:
- `arch="nbp-gpt"`: the official NBP GPT (minGPT: LayerNorm, GELU MLP, learned absolute positions, biases).
- `arch="modern"` (default for new models): RMSNorm, SwiGLU, no biases, rotary positions over the (t, h, w)
  grid of the latent, so clips longer than those seen in training can be generated.

Input vocabulary: [0 = bov][1 .. S-1 placeholders][condition ids][video codes]. Sequence layouts
(`build_sequence`), all aligned so that position P + k predicts code z_k:
- begin block (`begin=True`): [prefix P][bov, placeholders][z_0 .. z_{L-1}], input = all but the last S.
- hybrid (official UCF models): [prefix P][bov][z_0 .. z_{S-1}][placeholders][z_S ..]: the first row is
  predicted token by token, every later block of S by the block before it.
- no begin (official K600 model): [z_0 ..], position k predicts z_{k+S}; the first block has no prediction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from nbp.config import ConfigError, register_presets
from nbp.models.chunked_attention import chunked_attention
from nbp.models.fused_ce import linear_cross_entropy
from nbp.models.masks import key_extents, nbp_mask

ARCHS = ("nbp-gpt", "modern")
CONDITIONS = ("none", "class", "text")
ATTENTIONS = ("sdpa", "flex")

_SIZES = {"700m": dict(n_layer=24, n_head=16, n_embd=1536), "1.2b": dict(n_layer=24, n_head=32, n_embd=2048),
          "3b": dict(n_layer=32, n_head=32, n_embd=3072)}


@register_presets({
    **{f"nbp-gpt-{k}": dict(arch="nbp-gpt", hybrid=True, condition="text", cond_len=8, text_vocab=32000, **v)
       for k, v in _SIZES.items()},
    **{f"nbp-gpt-{k}-k600": dict(arch="nbp-gpt", begin=False, **v) for k, v in _SIZES.items()},
    **{k: dict(condition="class", num_classes=101, cond_len=1, **v) for k, v in _SIZES.items()},
    "small": dict(n_layer=12, n_head=12, n_embd=768, condition="class", num_classes=101, cond_len=1),
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, latent_shape=[3, 4, 4], condition="class", num_classes=4, cond_len=1),
    # World models (nbp.models.world): frame blocks of 8x8 tokens (64 px through `tiny-frames`), 17 actions
    # (Crafter's), the last `short_frames` frames in full and `long_frames` older ones pooled 2x2.
    "world-tiny": dict(n_layer=4, n_head=4, n_embd=128, latent_shape=[12, 8, 8], block=64, begin=False,
                       num_actions=17, short_frames=8, long_frames=3),
    **{f"world-{name}": dict(n_layer=layers, n_head=heads, n_embd=width, latent_shape=[48, 8, 8], block=64,
                             begin=False, num_actions=17, short_frames=16, long_frames=31)
       for name, layers, heads, width in (("b", 12, 12, 768), ("m", 24, 16, 1024))},  # FAR-B/M-like sizes
})
@dataclass
class TransformerConfig:
    arch: str = "modern"
    n_layer: int = 24
    n_head: int = 16
    n_embd: int = 1536
    video_vocab: int = 64000
    latent_shape: list[int] = field(default_factory=lambda: [5, 16, 16])  # (T', h, w) of one clip
    block: int = 16  # S: tokens predicted per step; must tile the latent (a row = w, a frame = h * w)
    hybrid: bool = False  # the first block token by token (official UCF models)
    begin: bool = True  # a begin block (bov + placeholders) predicts the first block
    condition: str = "none"  # "none", "class" or "text"
    cond_len: int = 0  # P: condition tokens before the video
    num_classes: int = 0
    text_vocab: int = 0  # Vt, for text conditions
    text_tokenizer: str = "byte"  # "byte" (built-in, Vt = 257) or a local Hugging Face tokenizer folder
    context: int = 0  # positions of the model (learned positions); 0 = prefix + one clip
    mlp_ratio: float = 4.0
    rope_base: float = 10000.0
    sample_full_vocab: bool = False  # official sampling: argmax/multinomial over every id, codes clamped after
    attention: str = "sdpa"  # "sdpa", or "flex": FlexAttention's block-sparse kernel over the same mask (CUDA)
    # World models (nbp.models.world; frame blocks, no begin block, modern architecture):
    num_actions: int = 0  # discrete actions embedded and added to the tokens that predict the frame they produce
    short_frames: int = 0  # K: the most recent frames kept in full; 0 = every frame in full
    long_frames: int = 0  # M: older frames kept, each compressed to (h / long_pool) * (w / long_pool) tokens
    long_pool: int = 2

    def validate(self) -> None:
        if self.arch not in ARCHS or self.condition not in CONDITIONS or self.attention not in ATTENTIONS:
            raise ConfigError(f"arch must be one of {ARCHS}, condition one of {CONDITIONS} and attention one of "
                              f"{ATTENTIONS}; got {self.arch!r}, {self.condition!r}, {self.attention!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.num_tokens % self.block:
            raise ConfigError(f"block={self.block} does not tile the latent {self.latent_shape} ({self.num_tokens} tokens)")
        if self.hybrid and not self.begin:
            raise ConfigError("hybrid models start with a begin token: set begin=true")
        if self.arch == "modern" and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"rotary positions need an even head size, got {self.n_embd // self.n_head}")
        if self.num_actions or self.short_frames:
            self._validate_world()
        if (self.condition == "none") != (self.cond_len == 0):
            raise ConfigError(f"condition={self.condition!r} needs cond_len {'0' if self.condition == 'none' else '> 0'}")

    def _validate_world(self) -> None:
        _, h, w = self.latent_shape
        if self.arch != "modern" or self.begin or self.block != h * w or self.condition != "none":
            raise ConfigError("actions and long-short context need a world model: arch=modern, begin=false, "
                              f"block=h*w={h * w} (frame blocks), condition=none; got arch={self.arch}, "
                              f"begin={self.begin}, block={self.block}, condition={self.condition}")
        if self.short_frames and (h % self.long_pool or w % self.long_pool):
            raise ConfigError(f"long_pool={self.long_pool} must divide the latent frame {h}x{w}")
        if self.short_frames and self.short_frames + self.long_frames >= self.latent_shape[0]:
            raise ConfigError(f"short_frames + long_frames = {self.short_frames + self.long_frames} must be below "
                              f"the training clip's {self.latent_shape[0]} latent frames (latent_shape[0]), so that "
                              "training sees every window a generation uses")

    @property
    def world(self) -> bool:
        return bool(self.num_actions or self.short_frames)

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


# --- sequence layout ------------------------------------------------------------------------------------

def build_sequence(cfg: TransformerConfig, codes: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """The full sequence (model ids) for codes (B, n) and condition ids (B, P) (already in model ids)."""
    b, n = codes.shape
    video = codes + cfg.video_offset
    parts = [cond] if cfg.cond_len else []
    if cfg.hybrid:
        placeholders = torch.arange(1, cfg.block, device=codes.device).expand(b, -1)
        bov = torch.zeros(b, 1, dtype=codes.dtype, device=codes.device)
        parts += [bov, video[:, :cfg.block]] + ([placeholders, video[:, cfg.block:]] if n >= cfg.block else [])
    elif cfg.begin:
        parts += [torch.arange(cfg.block, device=codes.device).expand(b, -1), video]
    else:
        parts.append(video)
    return torch.cat(parts, dim=1)


def grid_positions(cfg: TransformerConfig, n: int, device=None) -> torch.Tensor:
    """(n, 3) rotary coordinates (t, h, w) of sequence positions: a video position gets the grid coordinates of
    the code it predicts; condition tokens sit before the first frame on t = -P .. -1."""
    _, h, w = cfg.latent_shape
    q = torch.arange(n, device=device)
    raster = q - cfg.cond_len + (0 if cfg.begin else cfg.block)
    coords = torch.stack([raster.div(h * w, rounding_mode="floor"), raster.div(w, rounding_mode="floor") % h, raster % w], -1)
    prefix = torch.stack([q - cfg.cond_len, torch.zeros_like(q), torch.zeros_like(q)], -1)
    return torch.where((q < cfg.cond_len)[:, None], prefix, coords)


ATTENTION_CHUNK = 256  # query rows per attention call over a long sequence (see `attend`)


@lru_cache(maxsize=16)
def training_mask(cfg_key: tuple, n: int, device: str) -> torch.Tensor:
    """The mask, carrying its `key_extents` (how many keys each chunk of queries sees) for `attend`."""
    block, prefix, hybrid = cfg_key
    mask = nbp_mask(n, block, prefix, hybrid, device=torch.device(device))
    mask.key_extents = key_extents(mask, ATTENTION_CHUNK)
    return mask


def mask_for(cfg: TransformerConfig, n: int, device) -> torch.Tensor:
    """The block-causal training mask of the first n positions, built once per length and device."""
    return training_mask((cfg.block, cfg.cond_len, cfg.hybrid), n, str(device))


# --- modules --------------------------------------------------------------------------------------------

def rope_tables(cfg: TransformerConfig, coords: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n, head_dim / 2) for (t, h, w) coordinates: about a third of the rotation pairs per axis
    (time takes the remainder)."""
    pairs = cfg.n_embd // cfg.n_head // 2
    sizes = (pairs - 2 * (pairs // 3), pairs // 3, pairs // 3)
    angles = []
    for axis, size in enumerate(sizes):
        freqs = cfg.rope_base ** (-torch.arange(size, device=coords.device, dtype=torch.float32) / max(size, 1))
        angles.append(coords[:, axis, None].float() * freqs)
    angles = torch.cat(angles, dim=-1)  # (n, head_dim / 2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) of x (B, H, n, d) by the angles."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


DECODE_QUERIES = 64  # at most this many new positions against a KV cache: explicit-matmul attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d), masked) v for queries (B, H, n, d) over keys and values (B, H, m, d); `mask`
    (n, m) bool, True = visible.

    A training mask (`training_mask`) carries the key extents of its query chunks: each chunk attends only to
    the keys some row of it sees, which skips the hidden upper triangle (1280 tokens, block 16: 20% faster
    forward + backward on CPU than one masked call). On CPU the chunks go through explicit matmuls
    (`chunked_attention`: 2x faster than the SDPA chunks in bf16, 1.07x in float32). A decoding step (a few
    queries, no gradient) uses two plain matmuls with the softmax in fp32: CPU SDPA kernels have a fixed cost per
    call that dominates such small products (bf16, one query over 530 keys: 0.6 ms against 0.1 ms)."""
    extents = getattr(mask, "key_extents", None)
    if extents is not None and q.shape[2] == k.shape[2] == mask.shape[0]:
        if q.device.type == "cpu":
            return chunked_attention(q, k, v, mask, extents)
        return torch.cat([F.scaled_dot_product_attention(q[:, :, start:stop], k[:, :, :keys], v[:, :, :keys],
                                                         attn_mask=mask[start:stop, :keys])
                          for start, stop, keys in extents], dim=2)  # (B, H, n, d)
    if q.shape[2] > DECODE_QUERIES or torch.is_grad_enabled():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5  # (B, H, n, m)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v  # (B, H, n, d)


def flex_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`attend` through FlexAttention: the dense mask's (128 x 128)-tile structure is built once per mask, and
    tiles it hides entirely are skipped. Compiled on CUDA (its fast path); eager elsewhere (forward only on CPU)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask = getattr(mask, "flex_block_mask", None)
    if block_mask is None:
        n, m = mask.shape
        block_mask = create_block_mask(lambda b, h, row, col: mask[row, col], None, None, n, m, device=mask.device)
        mask.flex_block_mask = block_mask
    kernel = _compiled_flex() if q.is_cuda else flex_attention
    return kernel(q, k, v, block_mask=block_mask)


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        bias = cfg.arch == "nbp-gpt"
        self.key, self.query, self.value, self.proj = (nn.Linear(cfg.n_embd, cfg.n_embd, bias=bias) for _ in range(4))
        self.n_head = cfg.n_head
        self.flex = cfg.attention == "flex"

    def forward(self, x, mask, rope, cache: "KVCache | None", layer: int) -> torch.Tensor:
        b, n, c = x.shape
        split = lambda t: t.view(b, n, self.n_head, c // self.n_head).transpose(1, 2)  # (B, H, n, d)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if rope is not None:  # in q's dtype: fp32 tables would promote bf16 q and k (autocast) to fp32
            cos, sin = (t.to(q.dtype) for t in rope)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, H, cached + n, d)
        full = mask is not None and mask.ndim == 2 and q.shape[2] == k.shape[2]  # a whole sequence, not a step
        y = flex_attend(q, k, v, mask) if self.flex and full else attend(q, k, v, mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        official = cfg.arch == "nbp-gpt"
        norm = (lambda: nn.LayerNorm(cfg.n_embd)) if official else (lambda: nn.RMSNorm(cfg.n_embd, eps=1e-6))
        self.ln1, self.ln2 = norm(), norm()
        self.attn = Attention(cfg)
        hidden = int(cfg.mlp_ratio * cfg.n_embd)
        self.mlp = (nn.Sequential(nn.Linear(cfg.n_embd, hidden), nn.GELU(), nn.Linear(hidden, cfg.n_embd))
                    if official else SwiGLU(cfg.n_embd, int(hidden * 2 / 3)))

    def forward(self, x, mask, rope, cache, layer):
        x = x + self.attn(self.ln1(x), mask, rope, cache, layer)
        return x + self.mlp(self.ln2(x))


class Head(nn.Linear):
    """The output layer. Given targets it returns (per-token loss, top-1 hit, top-5 hit), the head fused with the
    cross-entropy (nbp.models.fused_ce), so training never keeps (N, V) float32 logits. Called as a module, so
    sharded parameters (DeepSpeed ZeRO-3) are gathered as for any forward."""

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        if targets is None:
            return super().forward(x)
        return linear_cross_entropy(x.flatten(0, -2), self.weight, targets.flatten())


class KVCache:
    """Preallocated keys and values of every layer; `length` positions filled. Values are (layers, B, H,
    capacity, d); keys are stored transposed, (layers, B, H, d, capacity), so that q @ k^T over the filled prefix
    reads a matrix with unit stride that bf16 CPU matmuls take as is (a (capacity, d) prefix slice is copied
    first: 0.31 against 0.10 ms per layer for 16 queries over 528 keys)."""

    def __init__(self, cfg: TransformerConfig, batch: int, capacity: int, device, dtype):
        head_dim = cfg.n_embd // cfg.n_head
        self.keys_t = torch.empty(cfg.n_layer, batch, cfg.n_head, head_dim, capacity, device=device, dtype=dtype)
        self.values = torch.empty(cfg.n_layer, batch, cfg.n_head, capacity, head_dim, device=device, dtype=dtype)
        self.length = 0
        self.pending = 0

    @property
    def capacity(self) -> int:
        return self.values.shape[3]

    @property
    def nbytes(self) -> int:
        return 2 * self.values.numel() * self.values.element_size()

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, H, n, d) after the filled positions; return all keys and values (B, H, filled + n, d)."""
        start, n = self.length, k.shape[2]
        if start + n > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} positions; {start + n} needed")
        self.keys_t[layer, ..., start:start + n] = k.transpose(-2, -1)
        self.values[layer, :, :, start:start + n] = v
        self.pending = n
        return self.keys_t[layer, ..., :start + n].transpose(-2, -1), self.values[layer, :, :, :start + n]

    def commit(self) -> None:
        """After all layers have appended one step's positions."""
        self.length += self.pending
        self.pending = 0


class Transformer(nn.Module):
    kind = "transformer"
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig):
        super().__init__()
        config.validate()
        self.config = cfg = config
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.arch == "nbp-gpt":
            self.pos_emb = nn.Parameter(torch.zeros(1, cfg.positions, cfg.n_embd))
            self.register_buffer("uncond_embedding", torch.zeros(cfg.cond_len, cfg.n_embd))
        else:
            self.uncond_embedding = nn.Parameter(torch.zeros(cfg.cond_len, cfg.n_embd))  # learned null condition
        if cfg.num_actions:  # the last row is the null action (dropout, guidance)
            self.action_emb = nn.Embedding(cfg.num_actions + 1, cfg.n_embd)
        if cfg.short_frames:  # an older frame's p x p token patches -> one token each (FAR's long context)
            self.compress = nn.Linear(cfg.long_pool**2 * cfg.n_embd, cfg.n_embd, bias=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd) if cfg.arch == "nbp-gpt" else nn.RMSNorm(cfg.n_embd, eps=1e-6)
        self.head = Head(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def embed(self, ids: torch.Tensor, start: int, drop_condition: torch.Tensor | None) -> torch.Tensor:
        """Token (+ learned position) embeddings of ids at positions start.. (B, n, C); `drop_condition` (B,)
        bool replaces the condition prefix by the unconditional embedding (condition dropout, guidance)."""
        x = self.tok_emb(ids)
        if self.config.arch == "nbp-gpt":
            if start + ids.shape[1] > self.pos_emb.shape[1]:
                raise ValueError(f"{start + ids.shape[1]} positions requested; this model has {self.pos_emb.shape[1]}")
            x = x + self.pos_emb[:, start:start + ids.shape[1]]
        prefix = max(0, min(self.config.cond_len - start, ids.shape[1]))
        if drop_condition is not None and prefix:
            null = self.uncond_embedding[start:start + prefix].to(x.dtype)
            if self.config.arch == "nbp-gpt":
                null = null + self.pos_emb[0, start:start + prefix]
            x = x.clone()
            x[:, :prefix] = torch.where(drop_condition[:, None, None], null, x[:, :prefix])
        return x

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None, drop_condition=None,
                cache: KVCache | None = None, last: int | None = None, hidden: bool = False) -> torch.Tensor:
        """ids (B, n) -> logits (B, n, V). Without a cache, `mask` defaults to the training mask; with one,
        the ids continue the cached sequence and `mask` (n, cached + n) defaults to everything visible.
        `last` keeps only the logits of the last positions (the head is the largest matmul of a decode step);
        `hidden` returns the final normalised states (B, n, C) instead, for a loss that applies the head itself."""
        start = cache.length if cache is not None else 0
        n = ids.shape[1]
        if mask is None and cache is None:
            mask = mask_for(self.config, n, ids.device)
        x = self.embed(ids, start, drop_condition)
        coords = grid_positions(self.config, start + n, ids.device)[start:] if self.config.arch == "modern" else None
        return self.run_blocks(x, mask, coords, cache, last, hidden)

    def run_blocks(self, x: torch.Tensor, mask: torch.Tensor | None, coords: torch.Tensor | None,
                   cache: KVCache | None = None, last: int | None = None, hidden: bool = False) -> torch.Tensor:
        """Embedded inputs x (B, n, C) at rotary coordinates (n, 3) -> logits (B, n, V) (see `forward`)."""
        rope = rope_tables(self.config, coords, x.dtype) if coords is not None else None
        for i, block in enumerate(self.blocks):
            x = block(x, mask, rope, cache, i)
        if cache is not None:
            cache.commit()
        if last is not None:
            x = x[:, -last:]
        return self.ln_f(x) if hidden else self.head(self.ln_f(x))

    # --- conditions, likelihood, sampling ----------------------------------------------------------------
    def text_to_ids(self, text: str | list[str]) -> torch.Tensor:
        """Raw text-tokenizer ids (B, P) of prompts, with the config's `text_tokenizer`."""
        from nbp.text import encode_texts, load_text_tokenizer

        texts = [text] if isinstance(text, str) else list(text)
        return encode_texts(load_text_tokenizer(self.config.text_tokenizer), texts, self.config.cond_len)

    def condition_ids(self, batch: int | None, text_ids=None, class_ids=None) -> torch.Tensor | None:
        """Condition prefix (B, P) in model ids, from raw text-tokenizer ids (B, P) or class indices (B,)."""
        cfg, device = self.config, self.tok_emb.weight.device
        if cfg.condition == "none":
            if text_ids is not None or class_ids is not None:
                raise ValueError("this model is unconditional: pass neither text_ids nor class_ids")
            return None
        if cfg.condition == "class":
            if class_ids is None:
                raise ValueError(f"this model is class-conditional ({cfg.num_classes} classes): pass class_ids")
            class_ids = torch.as_tensor(class_ids, device=device).long().view(-1, 1)
            if class_ids.min() < 0 or class_ids.max() >= cfg.num_classes:
                raise ValueError(f"class ids must lie in [0, {cfg.num_classes}), got {class_ids.flatten().tolist()}")
            return class_ids + cfg.special
        if text_ids is None:
            raise ValueError("this model is text-conditional: pass text_ids (or text, through nbp.text)")
        text_ids = torch.as_tensor(text_ids, device=device).long()
        if text_ids.shape[-1] != cfg.cond_len or text_ids.min() < 0 or text_ids.max() >= cfg.text_vocab:
            raise ValueError(f"text_ids must be (B, {cfg.cond_len}) in [0, {cfg.text_vocab}), got "
                             f"{tuple(text_ids.shape)} in [{text_ids.min().item()}, {text_ids.max().item()}]")
        return text_ids + cfg.special

    def check_codes(self, codes: torch.Tensor, name: str = "codes") -> torch.Tensor:
        codes = torch.as_tensor(codes, device=self.tok_emb.weight.device).long()
        if codes.ndim != 2:
            raise ValueError(f"{name} must be (B, n) video codes, got shape {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.video_vocab):
            raise ValueError(f"{name} must lie in [0, {self.config.video_vocab}), got [{codes.min().item()}, {codes.max().item()}]")
        return codes

    def nll(self, codes: torch.Tensor, *, text_ids=None, class_ids=None, actions=None) -> torch.Tensor:
        """Per-token negative log-likelihood (B, L) of codes (B, L), over the full output vocabulary; (B, L - S)
        for models without a begin token, whose first block has no prediction. World models take `actions`
        (B, L / S), one per frame (see nbp.models.world)."""
        cfg = self.config
        codes = self.check_codes(codes)
        if cfg.world:
            from nbp.models.world import world_logits

            logits = world_logits(self, codes.view(len(codes), -1, cfg.block), actions)
            return F.cross_entropy(logits.float().transpose(1, 2), codes[:, cfg.block:] + cfg.video_offset, reduction="none")
        sequence = build_sequence(cfg, codes, self.condition_ids(codes.shape[0], text_ids, class_ids))
        logits = self(sequence[:, :-cfg.block])[:, cfg.cond_len:]
        targets = (codes if cfg.begin else codes[:, cfg.block:]) + cfg.video_offset
        return F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")

    @torch.no_grad()
    def generate(self, num_tokens: int, *, batch_size: int | None = None, text_ids=None, text=None, class_ids=None,
                 context=None, greedy: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, cfg_scale: float | None = None, cfg_schedule: str = "constant",
                 generator: torch.Generator | None = None, actions=None) -> torch.Tensor:
        """Generate `num_tokens` video codes (B, num_tokens) in [0, video_vocab), one block per step (the first
        row token by token for hybrid models), after the optional `context` codes (B, n). World models continue
        the context frame by frame, with `actions` (B, frames of context + output) (see nbp.models.world)."""
        from nbp.models.sampling import guidance_scale, guide, sample_logits

        cfg, s = self.config, self.config.block
        if cfg.world:
            from nbp.models.world import predict_frames

            if context is None or num_tokens % s:
                raise ValueError(f"a world model continues given frames: pass context and whole frames of {s} tokens")
            frames = predict_frames(self, context, num_tokens // s, actions=actions, greedy=greedy,
                                    temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale,
                                    generator=generator)
            return frames.flatten(1)
        device = self.tok_emb.weight.device
        if text is not None:
            text_ids = self.text_to_ids(text)
        batch = next(len(x) for x in (context, class_ids, text_ids, [None] * (batch_size or 1)) if x is not None)
        context = self.check_codes(torch.zeros(batch, 0) if context is None else context, "context")
        if context.shape[1] % s and not (cfg.hybrid and context.shape[1] < s):
            raise ValueError(f"context of {context.shape[1]} tokens is not a whole number of {s}-token blocks")
        if not cfg.begin and context.shape[1] == 0:
            raise ValueError("this model has no begin token: give at least one block of context codes")
        if num_tokens % s and not cfg.hybrid:
            raise ValueError(f"num_tokens={num_tokens} is not a whole number of {s}-token blocks")
        cond = self.condition_ids(batch, text_ids, class_ids)
        guided = cfg_scale is not None and cfg_scale != 1.0 and cond is not None
        drop = torch.arange(2 * batch, device=device) >= batch if guided else None
        rows = lambda ids: torch.cat([ids, ids]) if guided else ids  # conditional rows, then unconditional ones

        prompt = build_sequence(cfg, context, cond)
        cache = KVCache(cfg, len(rows(prompt)), prompt.shape[1] + num_tokens + s, device, self.tok_emb.weight.dtype)
        logits = self(rows(prompt), mask=mask_for(cfg, prompt.shape[1], device), drop_condition=drop, cache=cache, last=s)
        done, out, steps = context.shape[1], [], self.count_steps(context.shape[1], num_tokens)
        for step in range(steps):
            width = 1 if cfg.hybrid and done < s else s
            last = logits[:, -width:]
            if guided:
                last = guide(last[:batch], last[batch:], guidance_scale(cfg_scale, step, steps, cfg_schedule))
            if not cfg.sample_full_vocab:
                last = last[..., cfg.video_offset:]
            ids = sample_logits(last, temperature, top_k, top_p, greedy, generator)
            ids = ids if cfg.sample_full_vocab else ids + cfg.video_offset
            out.append(ids)
            done += width
            if sum(o.shape[1] for o in out) >= num_tokens:
                break
            feed = ids
            if cfg.hybrid and done == s:  # the first row is complete: its last token and the placeholders
                feed = torch.cat([ids, torch.arange(1, s, device=device).expand(batch, -1)], dim=1)
            logits = self(rows(feed), drop_condition=drop, cache=cache, last=s)
        codes = torch.cat(out, dim=1)[:, :num_tokens] - cfg.video_offset
        return codes.clamp(0, cfg.video_vocab - 1)

    def count_steps(self, context: int, num_tokens: int) -> int:
        s = self.config.block
        if self.config.hybrid and context < s:
            first_row = min(s - context, num_tokens)
            return first_row + math.ceil((num_tokens - first_row) / s)
        return math.ceil(num_tokens / s)
