"""precision: auto takes bf16 only where a bf16 matmul is measured clearly faster than fp32 on the actor's node.

The tables are the machines this project has met (figures: GFLOP/s on the learner's GEMM shapes, 2 threads;
docs/cluster.md), so the rule is checked against each kind without owning it."""
import json
import threading

import pytest

from common import precision
from common.config import load_config

AVX2 = {"avx2", "fma"}
AVX512_BF16 = {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni"}
ZEN4 = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
AMX = {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}

# (kind, cpu flags, measured fp32, measured bf16, what auto must pick)
CPU_KINDS = [
    ("AMD EPYC, AVX2 only (2026-11-23)", AVX2, 160.0, 19.0, "fp32"),
    ("Intel Xeon, AVX512-BF16, no AMX (2026-11-30)", AVX512_BF16, 232.0, 161.0, "fp32"),
    ("AMD EPYC Zen 4, AVX512-BF16 (2026-11-30)", ZEN4, 195.0, 413.0, "bf16"),
    ("Intel Xeon with AMX (2026-11-22)", AMX, 180.0, 763.0, "bf16"),
    ("unknown CPU, no flags", set(), 100.0, 1000.0, "fp32"),
    ("a bf16 lead too small to pay for its rounding", ZEN4, 200.0, 220.0, "fp32"),
]


def fake_timer(fp32: float, bf16: float, calls: list):
    def measure(device, shapes):
        calls.append((device, shapes))
        return fp32, bf16
    return measure


@pytest.mark.parametrize("kind,flags,fp32,bf16,want", CPU_KINDS, ids=[k[0] for k in CPU_KINDS])
def test_auto_on_every_cpu_kind(kind, flags, fp32, bf16, want, tmp_path):
    calls = []
    c = precision.decide("auto", "cpu", (576, 1536), flags=flags, cache_dir=tmp_path,
                         measure=fake_timer(fp32, bf16, calls))
    assert c.precision == want
    if precision.BF16_CPU_FLAGS & flags:
        assert calls and (c.fp32_gflops, c.bf16_gflops) == (fp32, bf16)  # decided on the two figures
        assert f"bf16 {bf16:.0f} vs fp32 {fp32:.0f} GFLOP/s" in c.describe()
    else:  # emulated bf16 is not even timed
        assert not calls and "emulated" in c.describe()


@pytest.mark.parametrize("gpu_bf16,fp32,bf16,want", [
    (True, 51_000.0, 790_000.0, "bf16"),  # H200 (2026-11-30): bf16 8192^3 ~790 TFLOP/s
    (False, 14_000.0, 0.0, "fp32"),  # a GPU without bf16 (V100, T4): not timed
])
def test_auto_on_gpus(gpu_bf16, fp32, bf16, want, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "_cache_file", lambda d, s, cache: (cache / "gpu.json", {"device": d}))
    calls = []
    c = precision.decide("auto", "cuda", (576, 1536), gpu_bf16=gpu_bf16, cache_dir=tmp_path,
                         measure=fake_timer(fp32, bf16, calls))
    assert c.precision == want and bool(calls) == gpu_bf16


@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_an_explicit_choice_wins_and_is_not_timed(asked, tmp_path):
    calls = []
    for flags in (AMX, AVX2, set()):
        c = precision.decide(asked, "cpu", flags=flags, cache_dir=tmp_path, measure=fake_timer(1.0, 2.0, calls))
        assert c.precision == asked and c.describe() == f"{asked} (asked)"
    assert not calls


def test_a_bad_choice_names_the_values():
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        precision.decide("fp16")


def test_one_measurement_per_node_shared_by_concurrent_actors(tmp_path):
    """Three actors deciding at once: one times the matmuls (under the lock), the others read its figures."""
    calls, out = [], []

    def slow(device, shapes):
        import time

        time.sleep(0.2)
        calls.append(device)
        return 195.0, 413.0

    threads = [threading.Thread(target=lambda: out.append(precision.decide(
        "auto", "cpu", (576, 1536), flags=ZEN4, cache_dir=tmp_path, measure=slow))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and [c.precision for c in out] == ["bf16"] * 3
    cached = json.loads(next((tmp_path / "precision").glob("cpu-*.json")).read_text())
    assert (cached["fp32_gflops"], cached["bf16_gflops"]) == (195.0, 413.0)
    # another model size is another measurement (shapes are part of the key)
    precision.decide("auto", "cpu", (2048, 8192), flags=ZEN4, cache_dir=tmp_path, measure=slow)
    assert len(calls) == 2


def test_probe_shapes_are_the_models_mlp_gemms_with_a_floor():
    assert precision.gemm_shapes(2048, 8192, tokens=512) == [(512, 2048, 8192), (8192, 512, 2048), (512, 8192, 2048)]
    assert precision.gemm_shapes(32, 64) == precision.gemm_shapes(576, 1536)  # tiny test models time real sizes


def test_the_real_timer_returns_positive_figures():
    fp32, bf16 = precision.time_gemms("cpu", [(64, 128, 96)], budget_s=0.05)
    assert fp32 > 0 and bf16 > 0


def test_this_machine_decides_by_its_own_measurement():
    c = precision.decide("auto", "cpu")
    has_units = bool(precision.BF16_CPU_FLAGS & precision.cpu_flags())
    assert (c.fp32_gflops is not None) == has_units
    if has_units:
        assert c.precision == precision.choose(c.fp32_gflops, c.bf16_gflops)
    assert precision.isa_summary({"avx2", "avx512_bf16"}) == "AVX2, AVX512-BF16"


def test_config_defaults_are_auto_and_accept_fp32():
    cfg = load_config(None, [])
    assert (cfg.learner.precision, cfg.rollout.dtype, cfg.algo.old_logprobs) == ("auto", "auto", "auto")
    assert cfg.cluster.sync_tolerance is None and cfg.algo.tis_cap == 2.0
    cfg = load_config(None, ["learner.precision=fp32", "rollout.dtype=fp32", "algo.old_logprobs=engine"])
    assert (cfg.learner.precision, cfg.rollout.dtype, cfg.algo.old_logprobs) == ("fp32", "fp32", "engine")
