"""Attention masks as small pure functions. Boolean (N, N) tensors, True = the row may attend to the column.

Sequence layout (official NBP): [prefix (P condition tokens)] [bov] [video part]. With a block size S:
- `block_causal_mask(n, S, start)`: causal token by token before `start`, then blocks of S from `start` on:
  full attention inside a block, causal across blocks. The unconditional block model uses start = 0; the hybrid
  model starts its blocks at P + S (its first row is generated token by token).
- `with_visible_prefix(mask, P)`: every row may see the P condition columns (the official hybrid model).
- `causal_by_group(groups)`: full attention inside a group, causal across groups, from each position's group
  id (world models: a frame's compressed or full tokens form one group).
- `hide_columns(mask, hidden)`: padding tokens of a text condition are invisible (except to themselves, so
  no row is empty). `hidden` is (B, N) and the result (B, N, N).
- `key_extents(mask, chunk)`: for chunks of query rows, how many leading columns they see, so attention can
  skip the columns a block-causal mask hides from a whole chunk.
"""
from __future__ import annotations

import torch


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


def hide_columns(mask: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """mask (N, N) and hidden (B, N) bool -> (B, N, N) with hidden columns masked out, the diagonal kept."""
    n = mask.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)
    return (mask & ~hidden[:, None, :]) | eye


def nbp_mask(n: int, block: int, prefix: int = 0, hybrid: bool = False, device=None) -> torch.Tensor:
    """The official training mask: blocks from 0 (block models) or from prefix + block (hybrid models)."""
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
