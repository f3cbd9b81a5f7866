"""Process-level settings that make CPU runs faster, and whether this machine computes in bf16 natively."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def tune_cpu_allocator() -> bool:
    """Let glibc reuse freed memory for large tensors instead of mapping fresh pages every time.

    glibc serves allocations above 32 MiB with mmap and unmaps them on free, so each large activation
    (a 128x17x64x64 fp32 map is 35 MiB) is page-faulted in anew: ~14 ms per 40 MB (AMD EPYC, `bench/tokenizer.py`), 10% of a
    tokenizer forward. Keeping them on the heap avoids it (the same effect as jemalloc/tcmalloc), and the heap
    is never trimmed: with a 1 GB trim threshold, a training step that frees more than that at the top of the heap
    gave it back and faulted it in again the next step (Hugging Face Llama, 91M, bf16: 2.4 s per step against
    1.9 s untrimmed; nbp's fused loss frees less and ran 1.87 s either way). The process keeps its peak.
    Returns whether the setting was applied (glibc Linux only; NBP_KEEP_MALLOC=1 opts out).
    """
    if not sys.platform.startswith("linux") or os.environ.get("NBP_KEEP_MALLOC") == "1":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))  # -1: never


def release_free_memory() -> bool:
    """Give back to the system the free pages glibc keeps (`malloc_trim`). A long played session frees and
    allocates the same sizes every step, yet glibc's arenas fragment and its resident memory kept growing (a token
    world model: 740 MB to 2.5 GB over 1,500 steps, with 490-500 MB live); trimmed every 100 steps it stays at
    490-515 MB, for ~15 ms a trim (AMD EPYC). Returns whether it ran (glibc Linux only)."""
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # CPU instructions that compute in bf16 (else oneDNN emulates it)


@lru_cache(maxsize=1)
def cpuinfo_field(name: str) -> str:
    """A field of the first CPU in Linux's /proc/cpuinfo ("" elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    line = next((line for line in text.splitlines() if line.split(":")[0].strip() == name), "")
    return line.partition(":")[2].strip()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return frozenset(cpuinfo_field("flags").split())


def describe_cpu() -> str:
    """The CPU as figures should name it: model, threads torch uses, and the vector and bf16 extensions."""
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}) or ["none of avx2/avx512"]
    return f"{cpuinfo_field('model name') or 'unknown CPU'}, {torch.get_num_threads()} threads, {' '.join(flags)}"


def native_bf16(device="cpu") -> bool:
    """Whether bf16 runs natively here: on CUDA when the GPU supports it, on CPU with AMX or AVX-512 BF16. Elsewhere
    bf16 is emulated and slower than float32 (a 184M decode step on an AVX2 CPU: 622 ms in bf16)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(flag in cpu_flags() for flag in BF16_FLAGS) and not vector_isa_capped()


def vector_isa_capped() -> bool:
    """Whether the process keeps torch and oneDNN below AVX-512 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), as
    to run the way an AVX2-only CPU does: bf16 is then emulated even where the CPU has it."""
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "").lower()
    return aten in ("default", "avx2") or onednn.startswith(("sse", "avx2")) or onednn == "avx"


def use_bf16(requested: bool, device="cpu", what: str = "this job") -> bool:
    """`requested`, unless bf16 would only be emulated here: then float32, with a one-line notice."""
    if requested and not native_bf16(device):
        log.warning("bf16 requested for %s, but this CPU has neither AMX nor AVX-512 BF16 (bf16 is emulated and "
                    "slower than float32 there): running in float32", what)
        return False
    return requested
