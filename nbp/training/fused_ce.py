"""Cross-entropy of the output head computed in row chunks, without keeping (N, V) logits for backward.

With a 64,000-code vocabulary the logits of a 1,280-token sequence are 82M floats; the plain path spends most
of a CPU training step filling, soft-maxing and back-propagating them. Here each chunk's logits are computed,
reduced to a log-sum-exp, and dropped; backward recomputes them chunk by chunk (one extra head matmul) and
accumulates the gradients of the hidden states and the head weight directly.
"""
from __future__ import annotations

import torch


def _matmul_dtype(reference: torch.Tensor) -> torch.dtype:
    device = reference.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else reference.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, dtype: torch.dtype):
        losses, top1, top5 = [], [], []
        w = weight.to(dtype)
        for start in range(0, hidden.shape[0], chunk):
            logits = (hidden[start:start + chunk].to(dtype) @ w.T).float()  # (chunk, V)
            target = targets[start:start + chunk]
            target_logit = logits.gather(1, target[:, None])
            losses.append(torch.logsumexp(logits, dim=-1) - target_logit.squeeze(1))
            rank = (logits > target_logit).sum(dim=-1)  # how many codes score above the target (one pass, no sort)
            top1.append(rank == 0)
            top5.append(rank < 5)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk, ctx.dtype = chunk, dtype
        return torch.cat(losses), torch.cat(top1), torch.cat(top5)

    @staticmethod
    def backward(ctx, grad_loss, _grad_top1, _grad_top5):
        hidden, weight, targets = ctx.saved_tensors
        w = weight.to(ctx.dtype)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        for start in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[start:start + ctx.chunk].to(ctx.dtype)
            probs = (h @ w.T).float().softmax(dim=-1)  # d loss / d logits = softmax - one_hot
            probs[torch.arange(len(h)), targets[start:start + ctx.chunk]] -= 1
            probs *= grad_loss[start:start + ctx.chunk, None]
            g = probs.to(ctx.dtype)
            grad_hidden[start:start + ctx.chunk] = (g @ w).to(hidden.dtype)
            grad_weight += (g.T @ h).float()
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 256):
    """hidden (N, C), head weight (V, C), targets (N,) -> per-token loss (N,), top-1 and top-5 hits (N,) bool.

    Equal to cross_entropy(hidden @ weight.T, targets, reduction="none") (matmuls in the autocast dtype when
    autocast is on, soft-max in float32)."""
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk, _matmul_dtype(hidden))
