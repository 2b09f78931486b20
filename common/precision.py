"""Which precision is fast here: `precision: auto` for the learner, the reference and the engines, decided by
measurement on each actor's node.

CPU flags do not tell it. Measured on machines of one cloud (2 threads, the learner's GEMM shapes; docs/cluster.md):

    CPU                                   fp32 GFLOP/s   bf16 GFLOP/s   faster
    AMD EPYC, AVX2 only                   ~150           ~20 (emulated) fp32
    Intel Xeon, AVX512-BF16, no AMX       ~230           ~160           fp32
    AMD EPYC (Zen 4), AVX512-BF16         ~150           ~370           bf16
    Intel Xeon, AMX                       ~180           ~760           bf16

So `auto` times fp32 and bf16 matmuls of the model's own shapes (forward, weight-grad and input-grad GEMMs of its
MLP) on the actor's device and takes bf16 only where it is at least BF16_MARGIN x faster: bf16 also costs accuracy
(the engine-vs-learner mismatch, ~1e-2 a token instead of ~1e-5), so a tie goes to fp32. A CPU without bf16
instructions is not timed (bf16 is emulated there, ~8x slower); nor is a GPU without bf16. The figures are cached
per node (CPU or GPU model, flags, torch version, threads, shapes) under the cache dir, so a job's actors and later
jobs read one measurement instead of timing again; a file lock keeps concurrent actors from measuring at once.

    >>> choose(fp32=150.0, bf16=370.0)
    'bf16'
    >>> choose(fp32=230.0, bf16=160.0)
    'fp32'
    >>> decide("fp32", "cpu").precision
    'fp32'
    >>> decide("auto", "cpu", flags={"avx2", "fma"}).why
    'no bf16 instructions on this CPU (bf16 would be emulated)'
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})  # x86 AMX / AVX512-BF16, Arm's BF16 extension
VLLM_DTYPE = {"fp32": "float32", "bf16": "bfloat16"}
BF16_MARGIN = 1.25  # bf16 must be this much faster than fp32 to be worth its rounding
PROBE_TOKENS = 1024  # rows of the probe's GEMMs: a micro-batch of a few sequences
MIN_DIMS = (576, 1536)  # shapes below the default model's are timed at its size: tiny matmuls time overhead

Measure = Callable[[str, list[tuple[int, int, int]]], tuple[float, float]]


@dataclass(frozen=True)
class Choice:
    """What a role runs in, and the evidence: `asked` is the config value, `precision` what it resolved to."""
    precision: str  # 'fp32' | 'bf16'
    asked: str  # 'auto' | 'fp32' | 'bf16'
    device: str  # 'cpu' | 'cuda'
    why: str
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None

    def describe(self) -> str:
        """'bf16 (auto: bf16 372 vs fp32 151 GFLOP/s measured on this node's cpu)'."""
        if self.asked != "auto":
            return f"{self.precision} (asked)"
        if self.fp32_gflops is None:
            return f"{self.precision} (auto: {self.why})"
        return (f"{self.precision} (auto: bf16 {self.bf16_gflops:.0f} vs fp32 {self.fp32_gflops:.0f} GFLOP/s "
                f"measured on this node's {self.device})")

    def as_dict(self) -> dict:
        return asdict(self)


def choose(fp32: float, bf16: float, margin: float = BF16_MARGIN) -> str:
    """The faster precision by measured GFLOP/s, bf16 only with a clear lead."""
    return "bf16" if bf16 >= margin * fp32 else "fp32"


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """(CPU model name, feature flags) of this machine from /proc/cpuinfo (x86 'flags', Arm 'Features');
    ('unknown', {}) elsewhere, which resolves to fp32."""
    name, flags = "unknown", frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "CPU part") and name == "unknown":
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return name, flags


def cpu_flags() -> frozenset[str]:
    return cpu_info()[1]


def gemm_shapes(hidden: int, intermediate: int, tokens: int = PROBE_TOKENS) -> list[tuple[int, int, int]]:
    """(M, K, N) of the MLP's forward x @ W, its weight gradient dY^T @ X and input gradient dY @ W^T."""
    h, i = max(hidden, MIN_DIMS[0]), max(intermediate, MIN_DIMS[1])
    return [(tokens, h, i), (i, tokens, h), (tokens, i, h)]


def model_dims(config) -> tuple[int, int]:
    """(hidden, intermediate) of a transformers config (Llama-like or T5-like); the default model's otherwise."""
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or MIN_DIMS[0]
    inter = getattr(config, "intermediate_size", None) or getattr(config, "d_ff", None) or 4 * hidden
    return int(hidden), int(inter)


def time_gemms(device: str, shapes: list[tuple[int, int, int]], budget_s: float = 0.4) -> tuple[float, float]:
    """(fp32, bf16) GFLOP/s over `shapes` on `device`: the two precisions interleaved, so that a neighbour
    loading the machine meanwhile slows both alike; per shape the fastest of a few runs."""
    import torch

    def run(a, b) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    best = {torch.float32: 0.0, torch.bfloat16: 0.0}
    flops = 0.0
    for m, k, n in shapes:
        flops += 2.0 * m * k * n
        ops = {dt: (torch.randn(m, k, device=device, dtype=dt), torch.randn(k, n, device=device, dtype=dt))
               for dt in best}
        times = {dt: [] for dt in best}
        start = time.perf_counter()
        for dt, (a, b) in ops.items():
            run(a, b)  # warm: kernel selection, page faults
        while min(len(v) for v in times.values()) < 2 or (
                time.perf_counter() - start < budget_s / len(shapes) and min(len(v) for v in times.values()) < 7):
            for dt, (a, b) in ops.items():
                times[dt].append(run(a, b))
        for dt in best:
            best[dt] += min(times[dt])
    return flops / best[torch.float32] / 1e9, flops / best[torch.bfloat16] / 1e9


def _cache_file(device: str, shapes, cache_dir: Path) -> tuple[Path, dict]:
    import torch

    name, flags = cpu_info()
    key = {"device": device, "cpu": name, "flags": sorted(flags), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "shapes": shapes,
           "gpu": torch.cuda.get_device_name() if device == "cuda" else None}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / "precision" / f"{device}-{digest}.json", key


def measured(device: str, shapes: list[tuple[int, int, int]], cache_dir: Path | None = None,
             measure: Measure = time_gemms) -> tuple[float, float]:
    """(fp32, bf16) GFLOP/s of this node from its cache file, measured (under a lock) the first time."""
    import fcntl

    from common.models import default_cache_dir

    path, key = _cache_file(device, shapes, Path(cache_dir or default_cache_dir()))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first actor of a node measures; the others wait, then read
        try:
            got = json.loads(path.read_text())
            return float(got["fp32_gflops"]), float(got["bf16_gflops"])
        except (OSError, ValueError, KeyError):
            pass
        fp32, bf16 = measure(device, shapes)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**key, "fp32_gflops": fp32, "bf16_gflops": bf16,
                                   "measured": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
        tmp.rename(path)
        return fp32, bf16


def decide(asked: str, device: str = "cpu", dims: tuple[int, int] = MIN_DIMS,
           flags: frozenset[str] | set[str] | None = None, gpu_bf16: bool | None = None,
           cache_dir: Path | None = None, measure: Measure = time_gemms) -> Choice:
    """'auto' | 'fp32' | 'bf16' -> the Choice for a model of `dims` (hidden, intermediate) on `device`.
    `flags` (CPU) and `gpu_bf16` (whether the GPU supports bf16) default to this machine's."""
    if asked not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {asked!r}")
    if asked != "auto":
        return Choice(asked, asked, device, "asked")
    if device == "cuda":
        if gpu_bf16 is None:
            import torch

            gpu_bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if not gpu_bf16:
            return Choice("fp32", asked, device, "this GPU has no bf16")
    else:
        present = set(cpu_flags() if flags is None else flags)
        if not BF16_CPU_FLAGS & present:
            return Choice("fp32", asked, device, "no bf16 instructions on this CPU (bf16 would be emulated)")
    fp32, bf16 = measured(device, gemm_shapes(*dims), cache_dir, measure)
    return Choice(choose(fp32, bf16), asked, device, "measured", round(fp32, 1), round(bf16, 1))


def measure_before_actors(dims: tuple[int, int], threads: int) -> None:
    """Fill this node's cache for the CPU at `threads` threads before a job's actors start: they would time the
    matmuls while loading their models beside each other (same ratio, halved figures); now they read the cache."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        decide("auto", "cpu", dims)
    finally:
        torch.set_num_threads(before)


def isa_summary(flags: frozenset[str] | set[str] | None = None) -> str:
    """'AVX2, AVX-512, AVX512-BF16, AMX-BF16' as present: the part of a CPU that decides precision and speed."""
    present = set(cpu_flags() if flags is None else flags)
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16",
             "bf16": "Arm BF16"}
    return ", ".join(v for k, v in names.items() if k in present) or "no AVX2"
