"""Which precision is fast on this hardware: `precision: auto` for the learner, the reference and the engines.

CPUs of one cloud differ: with AMX or AVX512-BF16, a bf16 matmul runs ~4x an fp32 one; on AVX2-only CPUs bf16 is
emulated and ~8x *slower* than fp32 (measured: fp32 160 GFLOP/s, bf16 19 on 2 cores; ../shared/PLATFORM.md).
`auto` takes bf16 only where the hardware has bf16 units (those CPU flags, or a CUDA GPU that supports it) and
fp32 everywhere else, so it is never slower than fp32. Each actor resolves `auto` on its own node: a cluster may
mix CPU models.

    >>> resolve("auto", "cpu", {"avx2", "fma"})
    'fp32'
    >>> resolve("auto", "cpu", {"avx2", "avx512f", "avx512_bf16"})
    'bf16'
    >>> resolve("fp32", "cpu", {"amx_bf16"})
    'fp32'
"""
from __future__ import annotations

from functools import lru_cache

BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # /proc/cpuinfo names of the bf16 matmul units
VLLM_DTYPE = {"fp32": "float32", "bf16": "bfloat16"}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (Linux /proc/cpuinfo; empty elsewhere, which resolves to fp32)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_is_fast(device: str, flags: frozenset[str] | set[str] | None = None) -> bool:
    """bf16 matmuls run on real units here: a CUDA GPU that supports bf16, or a CPU with AMX/AVX512-BF16."""
    if device == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(BF16_CPU_FLAGS & set(cpu_flags() if flags is None else flags))


def resolve(choice: str, device: str = "cpu", flags: frozenset[str] | set[str] | None = None) -> str:
    """'auto' | 'fp32' | 'bf16' -> 'fp32' | 'bf16' for `device` ('cpu' or 'cuda')."""
    if choice not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {choice!r}")
    if choice != "auto":
        return choice
    return "bf16" if bf16_is_fast(device, flags) else "fp32"


def isa_summary(flags: frozenset[str] | set[str] | None = None) -> str:
    """'AVX2, AVX-512, AVX512-BF16, AMX-BF16' as present: the part of a CPU that decides precision and speed."""
    present = set(cpu_flags() if flags is None else flags)
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16"}
    return ", ".join(v for k, v in names.items() if k in present) or "no AVX2"
