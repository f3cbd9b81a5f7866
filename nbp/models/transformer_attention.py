"""Attention in one place: masks, the mask object the backends share, and one call, `attend`, over the backends.

Masks are boolean (n, m) tensors, True = the row may attend to the column, built by small pure functions:
- `block_causal_mask(n, S, start)`: causal token by token before `start`, then blocks of S from `start` on: full
  attention inside a block, causal across blocks. Block models start at the prefix; the hybrid model starts its
  blocks at P + S (its first row is generated token by token).
- `with_visible_prefix(mask, P)`: every row may see the P condition columns (the official models). Padding of a
  text condition stays visible too, as in the official models (their goldens depend on it).
- `causal_by_group(groups)`: full attention inside a group, causal across groups (world models: one group per
  frame, compressed or full).
- `key_extents(mask, chunk)`: for chunks of query rows, how many leading columns they see, so attention can skip
  the columns a block-causal mask hides from a whole chunk.

`AttentionMask` holds a dense mask and what the backends derive from it once: the key extents of its query chunks,
the chunks' score biases per dtype, FlexAttention's block mask. `attend` picks the backend:
- a whole sequence under an `AttentionMask`: on CPU, explicit matmuls in query chunks (`chunked_attention`: 2x
  faster than the SDPA chunks in bf16, 1.07x in float32, `bench/train_lm.py`); on CUDA, SDPA per chunk; or
  FlexAttention's block-sparse kernel (`backend="flex"`, compiled on CUDA, forward only on CPU);
- a decoding step (at most `DECODE_QUERIES` new positions, no gradient) over keys cached transposed (see
  `matmul_decoding`): two plain matmuls with the soft-max in float32, which read the cache in place;
- anything else, a decoding step over keys cached as they are included: one SDPA call.

Which decoding path is faster depends on the CPU. In bf16 without AMX, CPU SDPA has a fixed cost per call that
dominates such small products (AMD EPYC avx512_bf16, one query over 530 keys: 0.6 ms against 0.1 ms); with AMX,
oneDNN's small bf16 matmuls are the slow ones, and SDPA reads the cache's prefix in place: a 183M model's bf16
decoding step takes 41.0 against 43.3 ms for one token and 43.1 against 43.9 ms for a block of 16 (Intel Xeon,
one thread, the same process; float32 41.3 / 41.8 and 94.9 / 95.5 ms).

The chunked CPU kernel: within a chunk the work is two batched matmuls forward and four backward, at the machine's
matmul rate (PyTorch's CPU flash-attention kernels recompute the scores in backward and use small tiles). The
chunk's probabilities are kept in the input dtype for backward (16 MB per layer for 8 heads over 1,280 tokens in
bf16). Scores come out of the matmul in the input dtype; the soft-max and its backward accumulate in float32, and
key and value gradients are summed over chunks in float32.
"""
from __future__ import annotations

from functools import cache, lru_cache

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from nbp.runtime import cpu_flags

ATTENTION_CHUNK = 256  # query rows per chunk of a whole-sequence mask
DECODE_QUERIES = 64  # at most this many new positions against a KV cache: a decoding step


# --- masks ------------------------------------------------------------------------------------------------

def block_ids(n: int, block: int, start: int = 0, device=None) -> torch.Tensor:
    """Group index of each position: itself before `start`, then one id per block of `block` positions."""
    positions = torch.arange(n, device=device)
    return torch.where(positions < start, positions, start + (positions - start).clamp_min(0) // block)


def block_causal_mask(n: int, block: int, start: int = 0, device=None) -> torch.Tensor:
    ids = block_ids(n, block, start, device)
    return ids[None, :] <= ids[:, None]  # column's group not after the row's


def causal_by_group(groups: torch.Tensor) -> torch.Tensor:
    """groups (n,) non-decreasing ids -> (n, n): a row sees every column whose group is not after its own."""
    return groups[None, :] <= groups[:, None]


def with_visible_prefix(mask: torch.Tensor, prefix: int) -> torch.Tensor:
    mask = mask.clone()
    mask[..., :prefix] = True
    return mask


def nbp_mask(n: int, block: int, prefix: int = 0, hybrid: bool = False, device=None) -> torch.Tensor:
    """The official training mask: blocks from the prefix (block models) or from prefix + block (hybrid models)."""
    start = prefix + block if hybrid else prefix
    mask = block_causal_mask(n, block, start, device)
    return with_visible_prefix(mask, prefix) if prefix else mask


def key_extents(mask: torch.Tensor, chunk: int) -> tuple[tuple[int, int, int], ...]:
    """(start, stop, keys) for the query rows of mask (n, m) in chunks of `chunk`: rows start..stop-1 see no
    column at or after `keys`. For a causal or block-causal mask the chunks need about half the columns."""
    n, m = mask.shape
    last_seen = (mask * torch.arange(1, m + 1, device=mask.device)).amax(dim=-1)  # (n,) 1 + last visible column
    return tuple((start, min(start + chunk, n), int(last_seen[start:start + chunk].max()))
                 for start in range(0, n, chunk))


class AttentionMask:
    """A dense mask (n, m) of a whole sequence and what the backends derive from it, each built once."""

    def __init__(self, dense: torch.Tensor, chunk: int = ATTENTION_CHUNK):
        self.dense = dense
        self.extents = key_extents(dense, chunk)
        self._biases: dict[torch.dtype, tuple[torch.Tensor, ...]] = {}
        self._flex = None

    @property
    def shape(self) -> torch.Size:
        return self.dense.shape

    def biases(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """For each chunk (start, stop, keys): (rows, keys) with 0 where a row sees a key and -inf where it does
        not, added to the scores by the matmul itself (baddbmm)."""
        if dtype not in self._biases:
            self._biases[dtype] = tuple(
                torch.zeros(stop - start, keys, dtype=dtype, device=self.dense.device)
                .masked_fill_(~self.dense[start:stop, :keys], float("-inf")) for start, stop, keys in self.extents)
        return self._biases[dtype]

    def flex_block_mask(self):
        """FlexAttention's (128 x 128)-tile structure of the mask: tiles it hides entirely are skipped."""
        if self._flex is None:
            dense = self.dense
            self._flex = create_block_mask(lambda b, h, row, col: dense[row, col], None, None, *dense.shape,
                                           device=dense.device)
        return self._flex


# --- backends ---------------------------------------------------------------------------------------------

def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask | torch.Tensor | None,
           backend: str = "sdpa") -> torch.Tensor:
    """softmax(q k^T / sqrt(d), masked) v for queries (B, H, n, d) over keys and values (B, H, m, d), through the
    backend that fits (see the module's docstring); `mask` True = visible."""
    if isinstance(mask, AttentionMask) and q.shape[2] == k.shape[2] == mask.shape[0]:
        if backend == "flex":
            kernel = _compiled_flex() if q.is_cuda else flex_attention
            return kernel(q, k, v, block_mask=mask.flex_block_mask())
        if q.device.type == "cpu":
            return chunked_attention(q, k, v, mask)
        return torch.cat([F.scaled_dot_product_attention(q[:, :, start:stop], k[:, :, :keys], v[:, :, :keys],
                                                         attn_mask=mask.dense[start:stop, :keys])
                          for start, stop, keys in mask.extents], dim=2)  # (B, H, n, d)
    dense = mask.dense if isinstance(mask, AttentionMask) else mask
    if k.stride(-1) != 1 and q.shape[2] <= DECODE_QUERIES and not torch.is_grad_enabled():
        return decode_attention(q, k, v, dense)  # keys cached transposed for it
    return F.scaled_dot_product_attention(q, k, v, attn_mask=dense)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A few queries against a KV cache: two plain matmuls, the soft-max in float32."""
    scores = (q @ k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5  # (B, H, n, m)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v  # (B, H, n, d)


@cache
def matmul_decoding(dtype: torch.dtype, device_type: str) -> bool:
    """Whether decoding steps should attend by two matmuls over keys cached transposed rather than by SDPA: in
    bf16 or fp16 on CPUs without AMX (the module's docstring has the measurements)."""
    return device_type == "cpu" and dtype in (torch.bfloat16, torch.float16) and "amx_bf16" not in cpu_flags()


@lru_cache(maxsize=1)
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=False)


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
    """softmax(q k^T / sqrt(d), masked) v for q, k, v (B, H, n, d) in the mask's query chunks, by explicit
    matmuls; probabilities are kept for backward only when a gradient is needed."""
    biases = mask.biases(q.dtype)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _ChunkedAttention.apply(q, k, v, mask.extents, biases)
    return attend_chunks(q, k, v, mask.extents, biases)[0]


def attend_chunks(q, k, v, extents, biases, probs: list | None = None):
    """The forward pass -> (out (B, H, n, d), q / sqrt(d) (B, H, n, d)); each chunk's probabilities (B, H, rows,
    keys) are appended to `probs` when given (for backward)."""
    b, h, n, d = q.shape
    scaled_q = (q * d ** -0.5).flatten(0, 1)  # (B * H, n, d)
    keys_t = k.transpose(-2, -1).flatten(0, 1).contiguous()  # (B * H, d, n): bf16 matmuls take its prefixes as is
    out = torch.empty_like(q)  # (B, H, n, d)
    for (start, stop, keys), bias in zip(extents, biases):
        scores = torch.baddbmm(bias, scaled_q[:, start:stop], keys_t[..., :keys])  # (B * H, rows, keys)
        p = torch.softmax(scores, dim=-1).view(b, h, stop - start, keys)
        out[:, :, start:stop] = p @ v[:, :, :keys]
        if probs is not None:
            probs.append(p)
    return out, scaled_q.view(b, h, n, d)


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, extents, biases):
        probs = []
        out, scaled_q = attend_chunks(q, k, v, extents, biases, probs)
        ctx.extents = extents
        ctx.save_for_backward(scaled_q, k, v, *probs)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        scaled_q, k, v, *probs = ctx.saved_tensors
        scale = scaled_q.shape[-1] ** -0.5
        grad_q = torch.empty_like(scaled_q)
        accumulate = torch.promote_types(k.dtype, torch.float32)  # bf16 products summed in float32
        grad_k = torch.zeros(k.shape, dtype=accumulate, device=k.device)
        grad_v = torch.zeros(v.shape, dtype=accumulate, device=v.device)
        values_t = v.transpose(-2, -1).contiguous()  # (B, H, d, n)
        for (start, stop, keys), p in zip(ctx.extents, probs):
            grad_rows = grad_out[:, :, start:stop]  # (B, H, rows, d)
            grad_v[:, :, :keys] += p.transpose(-2, -1) @ grad_rows
            grad_p = grad_rows @ values_t[..., :keys]  # (B, H, rows, keys)
            grad_scores = torch._softmax_backward_data(grad_p, p, -1, p.dtype)  # zero where p is (hidden keys)
            grad_q[:, :, start:stop] = (grad_scores @ k[:, :, :keys]) * scale
            grad_k[:, :, :keys] += grad_scores.transpose(-2, -1) @ scaled_q[:, :, start:stop]
        return grad_q, grad_k.to(k.dtype), grad_v.to(v.dtype), None, None
