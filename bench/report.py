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


def synchronize(device) -> None:
    """Wait for the device's queued work (a GPU's kernels run asynchronously; the CPU's do not)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype=torch.bfloat16, size: int = 4096, device="cpu") -> float:
    """FLOP/s of a large square matmul: the machine's matmul peak as PyTorch reaches it."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    repeats = 3 if torch.device(device).type == "cpu" else 50
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return repeats * 2 * size**3 / (time.perf_counter() - start)
