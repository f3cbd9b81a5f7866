"""Shared by the bench scripts: print the rows as one JSON line and optionally save them."""
from __future__ import annotations

import json
import time

import torch


def emit_json(rows, path: str | None = None) -> None:
    print(json.dumps(rows))
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)


def matmul_peak(dtype=torch.bfloat16, size: int = 4096) -> float:
    """FLOP/s of a large square matmul: the machine's matmul peak as PyTorch reaches it."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * size**3 / (time.perf_counter() - start)
