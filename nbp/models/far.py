"""FAR (Gu et al. 2025, showlab/FAR): a DiT over continuous per-frame latents that predicts the next frame by flow.

Input: latents (B, T, C, H, W) of T frames and a timestep per frame (B, T); a clean context frame has timestep -1.
Each frame is cut into (H/p)(W/p) tokens; attention is frame-causal (a token sees its own frame and earlier ones);
3D rotary positions (frame, row, column); adaLN from the timestep embedding (+ a class label or a per-frame
action). The output is the velocity (noise - data) of every frame.

Long-short context (FAR_Long, `long`): of T > W frames, the last W (`short_window`) are the window, tokenized as
above; the T - W older frames are compressed into one token per c x c patch (`context_patch_size`) with their own
input, attention and output projections, and their timesteps doubled (a clean long-term frame carries -2).

Key names are the official ones (`official-formats.md` §5.3-5.4), so the released `FAR_*.pth` load as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import TimestepEmbedding, apply_rotary_emb, get_1d_rotary_pos_embed, get_timestep_embedding
from einops import rearrange
from torch import nn

from nbp.models.kv_cache import KVCache
from nbp.models.pretrained import Pretrained
from nbp.settings.far_models import FARConfig


# --- small pieces -----------------------------------------------------------------------------------------------
class ConditionEmbedding(nn.Module):
    """Class or action ids -> vectors; row `num_classes` is the null id. No random dropout here: that is training's."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(ids)


class AdaNorm(nn.Module):
    """LayerNorm without affine parameters, modulated by `chunks` vectors from SiLU(temb) (shift, scale[, gate]).
    The temb is one per frame, so the modulation is computed once a frame and broadcast over its tokens (the
    official model repeats the temb per token first: the same values, at tokens-per-frame times the matmul)."""

    def __init__(self, width: int, chunks: int):
        super().__init__()
        self.linear = nn.Linear(width, chunks * width)
        self.chunks = chunks

    def modulation(self, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-frame temb (B, F, D) -> `chunks` tensors (B, F, 1, D), to broadcast over `Tokens.by_frame`."""
        return self.linear(F.silu(temb))[:, :, None].chunk(self.chunks, dim=-1)

    @staticmethod
    def norm(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(h, h.shape[-1:], eps=1e-6) * (1 + scale) + shift


class RMSNorm(nn.Module):
    """RMSNorm over the head channels, computed in float32 (as the official qk-norm)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + 1e-6)
        return (normed * self.weight.float()).to(x.dtype)


def rope_tables(ids: torch.Tensor, axes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) float positions (frame, row, column) -> cos, sin (N, sum(axes)): diffusers' FluxPosEmbed, theta 1e4."""
    tables = [get_1d_rotary_pos_embed(dim, ids[:, axis], theta=10000, use_real=True, repeat_interleave_real=True,
                                      freqs_dtype=torch.float64) for axis, dim in enumerate(axes)]
    cos = torch.cat([c for c, _ in tables], dim=-1).to(ids.device)
    sin = torch.cat([s for _, s in tables], dim=-1).to(ids.device)
    return cos, sin


# --- tokens of one kind (window or long-term) --------------------------------------------------------------------
@dataclass
class Tokens:
    """A run of tokens fed to the blocks: hidden states, per-frame temb, rotary tables and each token's frame."""
    h: torch.Tensor  # (B, N, D), N = F frames x rows x columns
    temb: torch.Tensor  # (B, F, D)
    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin (N, head_dim)
    frames: torch.Tensor  # (N,) absolute frame index, for the frame-causal mask
    long_term: bool  # which projections to use
    grid: tuple[int, int]  # tokens per frame: rows, columns

    def __len__(self) -> int:
        return self.h.shape[1]

    def by_frame(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, F, rows x columns, D)."""
        return x.unflatten(1, (-1, self.grid[0] * self.grid[1]))


def frame_mask(query_frames: torch.Tensor, key_frames: torch.Tensor, slope: float, dtype) -> torch.Tensor:
    """(Nq, Nk) additive mask: 0 where the key's frame is not later than the query's (else -inf), plus
    slope * (key frame - query frame)."""
    distance = (key_frames[None, :] - query_frames[:, None]).to(dtype)
    allowed = distance <= 0
    bias = slope * distance if slope else torch.zeros_like(distance)
    return bias.masked_fill(~allowed, float("-inf"))


class Attention(nn.Module):
    def __init__(self, cfg: FARConfig, long_projections: bool, long_output: bool):
        super().__init__()
        width, dim = cfg.width, cfg.head_dim
        self.heads = cfg.num_heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(width, width) for _ in range(3))
        self.norm_q, self.norm_k = RMSNorm(dim), RMSNorm(dim)
        self.to_out = nn.ModuleList([nn.Linear(width, width)])
        if long_projections:
            self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(width, width) for _ in range(3))
            self.norm_added_q, self.norm_added_k = RMSNorm(dim), RMSNorm(dim)
            self.to_add_out = nn.Linear(width, width) if long_output else nn.Identity()  # none in the last block

    def qkv(self, x: torch.Tensor, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        long = tokens.long_term
        project = (self.add_q_proj, self.add_k_proj, self.add_v_proj) if long else (self.to_q, self.to_k, self.to_v)
        norm_q, norm_k = (self.norm_added_q, self.norm_added_k) if long else (self.norm_q, self.norm_k)
        q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=self.heads) for p in project)
        q, k = norm_q(q), norm_k(k)
        return apply_rotary_emb(q, tokens.rope), apply_rotary_emb(k, tokens.rope), v

    def forward(self, xs: list[torch.Tensor], runs: list[Tokens], cache: KVCache | None, layer: int,
                mask: torch.Tensor) -> list[torch.Tensor]:
        """Joint attention of the runs' tokens, after the cached keys and values (which keep this call's); each
        run's output."""
        q, k, v = (torch.cat(parts, dim=2) for parts in zip(*(self.qkv(x, t) for x, t in zip(xs, runs))))
        keys, values = (k, v) if cache is None else cache.append(layer, k, v)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask.to(q.dtype))
        out = rearrange(out, "b h n d -> b n (h d)")
        outputs = list(out.split([len(t) for t in runs], dim=1))
        return [(self.to_add_out if t.long_term else self.to_out[0])(o) for o, t in zip(outputs, runs)]


class FARBlock(nn.Module):
    def __init__(self, cfg: FARConfig, last: bool):
        super().__init__()
        self.norm1, self.norm2 = AdaNorm(cfg.width, 3), AdaNorm(cfg.width, 3)
        self.attn = Attention(cfg, long_projections=cfg.long, long_output=not last)
        self.mlp = FeedForward(cfg.width, activation_fn="gelu-approximate")

    def forward(self, runs: list[Tokens], cache: KVCache | None, layer: int, mask: torch.Tensor) -> list[Tokens]:
        mods = [self.norm1.modulation(t.temb) for t in runs]
        normed = [AdaNorm.norm(t.by_frame(t.h), shift, scale).flatten(1, 2) for t, (shift, scale, _) in zip(runs, mods)]
        attended = self.attn(normed, runs, cache, layer, mask)
        hs = [t.by_frame(t.h) + gate * t.by_frame(a) for t, (_, _, gate), a in zip(runs, mods, attended)]  # (B, F, P, D)
        out = []
        for t, h in zip(runs, hs):
            shift, scale, gate = self.norm2.modulation(t.temb)
            out.append(replace(t, h=(h + gate * self.mlp(AdaNorm.norm(h, shift, scale))).flatten(1, 2)))
        return out


# --- the model --------------------------------------------------------------------------------------------------
class FAR(Pretrained, nn.Module):
    kind = "far"
    config_class = FARConfig

    def __init__(self, config: FARConfig):
        super().__init__()
        config.validate()
        self.config = cfg = config
        width, p, c = cfg.width, cfg.patch_size, cfg.context_patch_size
        self.x_embedder = nn.Linear(cfg.in_channels * p * p, width)
        self.timestep_embedder = TimestepEmbedding(256, width)
        if cfg.condition != "none":
            self.add_module(f"{cfg.condition}_embedder", ConditionEmbedding(cfg.num_classes, width))
        self.transformer_blocks = nn.ModuleList(FARBlock(cfg, last=i == cfg.num_layers - 1) for i in range(cfg.num_layers))
        self.norm_out = AdaNorm(width, 2)
        self.proj_out = nn.Linear(width, cfg.in_channels * p * p)
        if cfg.long:
            self.context_embedder = nn.Linear(cfg.in_channels * c * c, width)
            self.context_proj_out = nn.Linear(width, cfg.in_channels * c * c)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """FAR's initialization (DiT's adaLN-Zero): Xavier-uniform linears with zero biases, embeddings N(0, 0.02),
        and every block's modulation and the output layers zero, so each block starts as the identity and the model
        predicts a zero velocity. It is what the official training starts from; loaded weights replace it."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        condition = getattr(self, f"{self.config.condition}_embedder", None)
        if condition is not None:
            nn.init.normal_(condition.embedding_table.weight, std=0.02)
        for linear in (self.timestep_embedder.linear_1, self.timestep_embedder.linear_2):
            nn.init.normal_(linear.weight, std=0.02)
        zeroed = [norm.linear for block in self.transformer_blocks for norm in (block.norm1, block.norm2)]
        zeroed += [self.norm_out.linear, self.proj_out] + ([self.context_proj_out] if self.config.long else [])
        for linear in zeroed:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    @property
    def null_id(self) -> int:
        return self.config.num_classes

    def long_term_frames(self, frames: int) -> int:
        """How many of `frames` input frames are long-term context (FAR_Long past its window), the oldest."""
        return max(0, frames - self.config.short_window) if self.config.long else 0

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None,
                actions: torch.Tensor | None = None, first_frame: int = 0) -> torch.Tensor:
        """Latents (B, T, C, H, W), timesteps (B, T) or (B,) (-1: a clean frame), labels (B,) or actions (B, T)
        -> the velocity of every frame (B, T, C, H, W). `first_frame`: the position of the first (a sampler that
        dropped older frames)."""
        frames = latents.shape[1]
        if timesteps.ndim == 1:
            timesteps = timesteps[:, None].expand(-1, frames)
        old = self.long_term_frames(frames)
        spans = [(0, old, True)] if old else []
        spans.append((old, frames, False))
        runs = [self.embed(latents[:, a:b], timesteps[:, a:b], first_frame + a, labels,
                           None if actions is None else actions[:, a:b], long_term) for a, b, long_term in spans]
        runs = self.run(runs, None)  # no cache: every frame given
        return torch.cat([self.velocity(tokens, b - a) for tokens, (a, b, _) in zip(runs, spans)], dim=1)

    def embed(self, latents: torch.Tensor, timesteps: torch.Tensor, first_frame: int, labels: torch.Tensor | None,
              actions: torch.Tensor | None, long_term: bool = False) -> Tokens:
        """Frames `first_frame`.. of the video as tokens: (B, F, C, H, W) latents with (B, F) timesteps."""
        rope, frames = self.positions(first_frame, latents.shape[1], *latents.shape[-2:], long_term, latents.device)
        return self.tokens(latents, timesteps, labels, actions, rope, frames, long_term)

    def tokens(self, latents: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None,
               actions: torch.Tensor | None, rope: tuple[torch.Tensor, torch.Tensor], frames: torch.Tensor,
               long_term: bool = False) -> Tokens:
        """`embed` with the positions given (`positions`): device tensors only, so a CUDA graph can replay it."""
        cfg = self.config
        batch, count, _, height, width = latents.shape
        c = cfg.context_patch_size if long_term else cfg.patch_size
        patches = rearrange(latents, "b f c (h p1) (w p2) -> b (f h w) (c p1 p2)", p1=c, p2=c)
        h = (self.context_embedder if long_term else self.x_embedder)(patches)
        t = timesteps * 2 if long_term else timesteps  # the official long-term frames carry 2t (clean: -2)
        sinusoid = get_timestep_embedding(t.flatten(), 256, flip_sin_to_cos=True, downscale_freq_shift=1)
        temb = self.timestep_embedder(sinusoid.to(h.dtype)).view(batch, count, -1)  # (B, F, D)
        temb = temb + self.condition_embedding(labels, actions, batch, count)
        return Tokens(h, temb, rope, frames, long_term, (height // c, width // c))

    def positions(self, first_frame: int, frames: int, height: int, width: int, long_term: bool,
                  device) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Rotary tables (cos, sin) and the frame index of every token of frames `first_frame`.. of this size."""
        cfg = self.config
        c = cfg.context_patch_size if long_term else cfg.patch_size
        ids = torch.stack(torch.meshgrid(torch.arange(frames) + first_frame, torch.arange(height // c) * (c // cfg.patch_size),
                                         torch.arange(width // c) * (c // cfg.patch_size), indexing="ij"), -1).reshape(-1, 3)
        return rope_tables(ids.to(device, torch.float32), cfg.rope_axes), ids[:, 0].to(device)

    def condition_embedding(self, labels, actions, batch: int, frames: int) -> torch.Tensor | float:
        """(B, F, D) or (B, 1, D) to add to the timestep embedding; a missing id is the null id."""
        cfg = self.config
        if cfg.condition == "none":
            return 0.0
        ids = labels if cfg.condition == "label" else actions
        if ids is None:
            ids = torch.full((batch,) if cfg.condition == "label" else (batch, frames), self.null_id,
                             device=self.x_embedder.weight.device)
        embedder = getattr(self, f"{cfg.condition}_embedder")
        return embedder(ids)[:, None] if cfg.condition == "label" else embedder(ids)

    def run(self, runs: list[Tokens], cache: KVCache | None = None, keep: bool = False) -> list[Tokens]:
        """The blocks over the runs' tokens, which also attend to the cached frames' keys (`nbp.models.kv_cache`);
        with `keep`, the cache keeps these tokens' keys and values too."""
        query_frames = torch.cat([t.frames for t in runs])
        key_frames = query_frames if cache is None else cache.key_positions(query_frames)
        mask = frame_mask(query_frames, key_frames, self.config.slope_scale, torch.float32)
        for i, block in enumerate(self.transformer_blocks):
            runs = block(runs, cache, i, mask)
        if cache is not None and keep:
            cache.commit(query_frames)
        elif cache is not None:
            cache.discard()
        return runs

    def velocity(self, tokens: Tokens, frames: int) -> torch.Tensor:
        """Output tokens of `frames` frames -> (B, F, C, H, W)."""
        cfg = self.config
        c = cfg.context_patch_size if tokens.long_term else cfg.patch_size
        scale, shift = self.norm_out.modulation(tokens.temb)  # scale first here, unlike the blocks
        normed = AdaNorm.norm(tokens.by_frame(tokens.h), shift, scale).flatten(1, 2)
        out = (self.context_proj_out if tokens.long_term else self.proj_out)(normed)
        rows, cols = tokens.grid
        return rearrange(out, "b (f h w) (c p1 p2) -> b f c (h p1) (w p2)", f=frames, h=rows, w=cols, p1=c, p2=c)
