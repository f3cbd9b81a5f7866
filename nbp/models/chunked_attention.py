"""Masked attention over a long sequence in query chunks, by explicit matmuls: the CPU training path.

For a block-causal mask each chunk of query rows sees only a prefix of the keys (`masks.key_extents`), so the
hidden upper triangle is skipped. Within a chunk the work is two batched matmuls forward and four backward, at
the machine's matmul rate: PyTorch's CPU flash-attention kernels run at about a third of it (they recompute the
scores in backward and use small tiles). The price is memory: the chunk's probabilities are kept in the input
dtype for backward (16 MB per layer for 8 heads over 1,280 tokens in bf16), instead of one log-sum-exp per row.

Scores come out of the matmul in the input dtype (as in an eager attention under autocast); the soft-max and its
backward accumulate in float32 (PyTorch's CPU kernels do for bf16), and key and value gradients are summed over
chunks in float32.
"""
from __future__ import annotations

import torch


def score_biases(mask: torch.Tensor, extents, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """For each chunk (start, stop, keys): (rows, keys) with 0 where the mask lets a row see a key and -inf
    where it hides it, added to the scores by the matmul itself (baddbmm)."""
    return tuple(torch.zeros(stop - start, keys, dtype=dtype, device=mask.device)
                 .masked_fill_(~mask[start:stop, :keys], float("-inf")) for start, stop, keys in extents)


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


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                      extents) -> torch.Tensor:
    """softmax(q k^T / sqrt(d), masked) v for q, k, v (B, H, n, d) and a bool mask (n, n), True = visible, in the
    query chunks `extents` (`masks.key_extents`). The chunks' score biases are cached on the mask."""
    biases = getattr(mask, "score_biases", None)
    if biases is None or biases[0].dtype != q.dtype:
        biases = mask.score_biases = score_biases(mask, extents, q.dtype)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _ChunkedAttention.apply(q, k, v, extents, biases)
    return attend_chunks(q, k, v, extents, biases)[0]  # no probabilities kept
