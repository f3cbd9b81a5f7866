"""The sequence layout of a next-block-prediction model: where conditions, special tokens and codes sit, what the
model is fed and must predict in training, and how generation steps through the sequence.

Input vocabulary: [0 = bov][1 .. S-1 placeholders][condition ids][video codes]. Three layouts, all aligned so that
position P + k predicts code z_k:
- begin block (`begin=True`): [prefix P][bov, placeholders][z_0 .. z_{L-1}], inputs = all but the last S.
- hybrid (official UCF models): [prefix P][bov][z_0 .. z_{S-1}][placeholders][z_S ..]: the first row is predicted
  token by token, every later block of S by the block before it.
- no begin (official K600 model, world models): [z_0 ..], position k predicts z_{k+S}; the first block has no
  prediction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from nbp.config import InputError
from nbp.models.transformer_attention import AttentionMask, nbp_mask


@dataclass(frozen=True)
class SequenceLayout:
    block: int  # S
    prefix: int  # P condition tokens
    begin: bool
    hybrid: bool
    latent_shape: tuple[int, int, int]  # (T', h, w)
    video_offset: int  # model id of code 0

    @classmethod
    def of(cls, cfg) -> SequenceLayout:
        """The layout a `TransformerConfig` describes."""
        return cls(cfg.block, cfg.cond_len, cfg.begin, cfg.hybrid, tuple(cfg.latent_shape), cfg.video_offset)

    # --- training: inputs, targets, positions, mask -------------------------------------------------------
    def sequence(self, codes: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The full sequence (model ids) of codes (B, n) and condition ids (B, P) (already in model ids)."""
        b, n = codes.shape
        video = codes + self.video_offset
        parts = [cond] if self.prefix else []
        if self.hybrid:
            bov = torch.zeros(b, 1, dtype=codes.dtype, device=codes.device)
            parts += [bov, video[:, :self.block]]
            if n >= self.block:
                parts += [self.placeholders(b, codes.device), video[:, self.block:]]
        elif self.begin:
            parts += [torch.arange(self.block, device=codes.device).expand(b, -1), video]
        else:
            parts.append(video)
        return torch.cat(parts, dim=1)

    def inputs(self, codes: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Teacher-forcing inputs (B, P + outputs): the sequence without its last block."""
        return self.sequence(codes, cond)[:, :-self.block]

    def targets(self, codes: torch.Tensor) -> torch.Tensor:
        """Model ids predicted by the outputs after the prefix: every code, or all but the first block."""
        return (codes if self.begin else codes[:, self.block:]) + self.video_offset

    def video_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """The outputs (B, n, ...) that predict codes: those after the condition prefix."""
        return outputs[:, self.prefix:]

    def positions(self, n: int, device=None) -> torch.Tensor:
        """(n, 3) rotary coordinates (t, h, w) of the first n positions: a video position gets the grid coordinates
        of the code it predicts; condition tokens sit before the first frame on t = -P .. -1."""
        _, h, w = self.latent_shape
        q = torch.arange(n, device=device)
        raster = q - self.prefix + (0 if self.begin else self.block)
        coords = torch.stack([raster.div(h * w, rounding_mode="floor"), raster.div(w, rounding_mode="floor") % h,
                              raster % w], -1)
        prefix = torch.stack([q - self.prefix, torch.zeros_like(q), torch.zeros_like(q)], -1)
        return torch.where((q < self.prefix)[:, None], prefix, coords)

    def mask(self, n: int, device) -> AttentionMask:
        """The block-causal mask of the first n positions, built once per length and device."""
        return _training_mask(self.block, self.prefix, self.hybrid, n, str(device))

    # --- generation: prompt, step widths, what each step feeds -----------------------------------------------
    def check_generation(self, context: int, num_tokens: int) -> None:
        s = self.block
        if context % s and not (self.hybrid and context < s):
            raise InputError(f"context of {context} tokens is not a whole number of {s}-token blocks")
        if not self.begin and context == 0:
            raise InputError("this model has no begin token: give at least one block of context codes")
        if num_tokens % s and not self.hybrid:
            raise InputError(f"num_tokens={num_tokens} is not a whole number of {s}-token blocks")

    def step_widths(self, context: int, num_tokens: int) -> list[int]:
        """Codes sampled at each generation step after `context` codes: the hybrid first row one at a time, then
        whole blocks (of the last one, only what is asked for is kept)."""
        s = self.block
        first_row = min(s - context, num_tokens) if self.hybrid and context < s else 0
        return [1] * first_row + [s] * math.ceil((num_tokens - first_row) / s)

    def step_inputs(self, sampled: torch.Tensor, done: int) -> torch.Tensor:
        """The ids fed after a step that sampled `sampled` (B, width) (model ids), `done` codes now known: the
        hybrid first row's last code is followed by the placeholders of the next block's inputs."""
        if self.hybrid and done == self.block:
            return torch.cat([sampled, self.placeholders(len(sampled), sampled.device)], dim=1)
        return sampled

    def placeholders(self, batch: int, device) -> torch.Tensor:
        return torch.arange(1, self.block, device=device).expand(batch, -1)


@lru_cache(maxsize=16)
def _training_mask(block: int, prefix: int, hybrid: bool, n: int, device: str) -> AttentionMask:
    return AttentionMask(nbp_mask(n, block, prefix, hybrid, device=torch.device(device)))
