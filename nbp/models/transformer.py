"""The next-block-prediction transformer: a decoder-only GPT over video tokens with a block-causal mask.

Two architectures from one config:
- `arch="nbp-gpt"`: the official NBP GPT (minGPT: LayerNorm, GELU MLP, learned absolute positions, biases).
- `arch="modern"` (default for new models): RMSNorm, SwiGLU, no biases, rotary positions over the (t, h, w)
  grid of the latent, so clips longer than those seen in training can be generated.

Where conditions, special tokens and codes sit is the config's `SequenceLayout` (nbp.models.layout); generation is
a set of functions over this module (nbp.generation). The model's layers are `layers` in code and `blocks.N` in
state dicts, the official checkpoints' name (a state-dict hook maps one to the other).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from nbp.config import InputError
from nbp.models.fused_ce import linear_cross_entropy
from nbp.models.kv_cache import KVCache
from nbp.models.pretrained import Pretrained
from nbp.models.transformer_attention import AttentionMask, attend
from nbp.settings.models import TransformerConfig

SAVED_LAYERS, LAYERS = "blocks.", "layers."  # the layers' name in state dicts, and in code


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


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        bias = cfg.arch == "nbp-gpt"
        self.key, self.query, self.value, self.proj = (nn.Linear(cfg.n_embd, cfg.n_embd, bias=bias) for _ in range(4))
        self.n_head = cfg.n_head
        self.backend = cfg.attention

    def forward(self, x, mask, rope, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, n, c = x.shape
        split = lambda t: t.view(b, n, self.n_head, c // self.n_head).transpose(1, 2)  # (B, H, n, d)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if rope is not None:  # in q's dtype: fp32 tables would promote bf16 q and k (autocast) to fp32
            cos, sin = (t.to(q.dtype) for t in rope)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, H, cached + n, d)
        y = attend(q, k, v, mask, self.backend)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Layer(nn.Module):
    """One transformer layer: pre-norm attention and MLP, each residual."""

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


def _rename_keys(state: dict, prefix: str, old: str, new: str) -> None:
    for key in [k for k in state if k.startswith(prefix + old)]:
        state[prefix + new + key[len(prefix + old):]] = state.pop(key)


class Transformer(Pretrained, nn.Module):
    kind = "transformer"
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig):
        super().__init__()
        config.validate()
        self.config = cfg = config
        self.layout = cfg.layout
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.arch == "nbp-gpt":
            self.pos_emb = nn.Parameter(torch.zeros(1, cfg.positions, cfg.n_embd))
            self.register_buffer("uncond_embedding", torch.zeros(cfg.cond_len, cfg.n_embd))
        else:
            self.uncond_embedding = nn.Parameter(torch.zeros(cfg.cond_len, cfg.n_embd))  # learned null condition
        self.add_input_modules(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd) if cfg.arch == "nbp-gpt" else nn.RMSNorm(cfg.n_embd, eps=1e-6)
        self.head = Head(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        self.register_state_dict_post_hook(lambda m, state, prefix, meta: _rename_keys(state, prefix, LAYERS, SAVED_LAYERS))
        self.register_load_state_dict_pre_hook(lambda m, state, prefix, *_: _rename_keys(state, prefix, SAVED_LAYERS, LAYERS))

    def add_input_modules(self, cfg: TransformerConfig) -> None:
        """Modules a subclass adds to the inputs (registered before the layers: parameter order and init draws)."""

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def embed(self, ids: torch.Tensor, start: int | torch.Tensor, drop_condition: torch.Tensor | None) -> torch.Tensor:
        """Token (+ learned position) embeddings of ids at positions start.. (B, n, C); `drop_condition` (B,)
        bool replaces the condition prefix by the unconditional embedding (condition dropout, guidance). `start` may
        be the positions themselves, a device tensor (n,): a static decode step's, after the condition prefix, read
        without a host sync."""
        x = self.tok_emb(ids)
        if isinstance(start, torch.Tensor):
            return x + self.pos_emb[0, start] if self.config.arch == "nbp-gpt" else x
        if self.config.arch == "nbp-gpt":
            if start + ids.shape[1] > self.pos_emb.shape[1]:
                raise InputError(f"{start + ids.shape[1]} positions requested; this model has {self.pos_emb.shape[1]}")
            x = x + self.pos_emb[:, start:start + ids.shape[1]]
        prefix = max(0, min(self.config.cond_len - start, ids.shape[1]))
        if drop_condition is not None and prefix:
            null = self.uncond_embedding[start:start + prefix].to(x.dtype)
            if self.config.arch == "nbp-gpt":
                null = null + self.pos_emb[0, start:start + prefix]
            x = x.clone()
            x[:, :prefix] = torch.where(drop_condition[:, None, None], null, x[:, :prefix])
        return x

    def forward(self, ids: torch.Tensor, mask: AttentionMask | torch.Tensor | None = None, drop_condition=None,
                cache: KVCache | None = None, last: int | None = None, hidden: bool = False) -> torch.Tensor:
        """ids (B, n) -> logits (B, n, V). Without a cache, `mask` defaults to the layout's training mask; with
        one, the ids continue the cached sequence and `mask` (n, cached + n) defaults to everything visible.
        `last` keeps only the logits of the last positions (the head is the largest matmul of a decode step);
        `hidden` returns the final normalised states (B, n, C) instead, for a loss that applies the head itself."""
        start = cache.length if cache is not None else 0
        n = ids.shape[1]
        if mask is None and cache is None:
            mask = self.layout.mask(n, ids.device)
        x = self.embed(ids, start, drop_condition)
        coords = self.layout.positions(start + n, ids.device)[start:] if self.config.arch == "modern" else None
        return self.run_layers(x, mask, coords, cache, last, hidden)

    def run_layers(self, x: torch.Tensor, mask: AttentionMask | torch.Tensor | None, coords: torch.Tensor | None,
                   cache: KVCache | None = None, last: int | None = None, hidden: bool = False) -> torch.Tensor:
        """Embedded inputs x (B, n, C) at rotary coordinates (n, 3) -> logits (B, n, V) (see `forward`)."""
        rope = rope_tables(self.config, coords, x.dtype) if coords is not None else None
        recompute = self.config.activation_checkpointing and torch.is_grad_enabled() and cache is None
        for i, layer in enumerate(self.layers):
            x = (checkpoint(layer, x, mask, rope, cache, i, use_reentrant=False) if recompute else
                 layer(x, mask, rope, cache, i))
        if cache is not None:
            cache.commit()
        if last is not None:
            x = x[:, -last:]
        return self.ln_f(x) if hidden else self.head(self.ln_f(x))

    # --- conditions and likelihood ------------------------------------------------------------------------
    def condition_ids(self, text_ids=None, class_ids=None) -> torch.Tensor | None:
        """Condition prefix (B, P) in model ids, from raw text-tokenizer ids (B, P) or class indices (B,)."""
        cfg, device = self.config, self.tok_emb.weight.device
        if cfg.condition == "none":
            if text_ids is not None or class_ids is not None:
                raise InputError("this model is unconditional: pass neither text_ids nor class_ids")
            return None
        if cfg.condition == "class":
            if class_ids is None:
                raise InputError(f"this model is class-conditional ({cfg.num_classes} classes): pass class_ids")
            class_ids = torch.as_tensor(class_ids, device=device).long().view(-1, 1)
            if class_ids.min() < 0 or class_ids.max() >= cfg.num_classes:
                raise InputError(f"class ids must lie in [0, {cfg.num_classes}), got {class_ids.flatten().tolist()}")
            return class_ids + cfg.special
        if text_ids is None:
            raise InputError("this model is text-conditional: pass text_ids (or text, through nbp.data.text)")
        text_ids = torch.as_tensor(text_ids, device=device).long()
        if text_ids.shape[-1] != cfg.cond_len or text_ids.min() < 0 or text_ids.max() >= cfg.text_vocab:
            raise InputError(f"text_ids must be (B, {cfg.cond_len}) in [0, {cfg.text_vocab}), got "
                             f"{tuple(text_ids.shape)} in [{text_ids.min().item()}, {text_ids.max().item()}]")
        return text_ids + cfg.special

    def check_codes(self, codes: torch.Tensor, name: str = "codes") -> torch.Tensor:
        codes = torch.as_tensor(codes, device=self.tok_emb.weight.device).long()
        if codes.ndim != 2:
            raise InputError(f"{name} must be (B, n) video codes, got shape {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.video_vocab):
            raise InputError(f"{name} must lie in [0, {self.config.video_vocab}), got [{codes.min().item()}, {codes.max().item()}]")
        return codes

    def nll(self, codes: torch.Tensor, *, text_ids=None, class_ids=None) -> torch.Tensor:
        """Per-token negative log-likelihood (B, L) of codes (B, L), over the full output vocabulary; (B, L - S)
        for models without a begin token, whose first block has no prediction."""
        codes = self.check_codes(codes)
        logits = self.layout.video_outputs(self(self.layout.inputs(codes, self.condition_ids(text_ids, class_ids))))
        return F.cross_entropy(logits.float().transpose(1, 2), self.layout.targets(codes), reduction="none")
