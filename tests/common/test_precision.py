"""precision: auto takes bf16 only where the CPU (or GPU) has bf16 units, never where it is emulated."""
import pytest

from common import precision
from common.config import load_config


@pytest.mark.parametrize("flags,want", [
    ({"avx2", "fma"}, "fp32"),                          # AMD EPYC / AVX2-only: bf16 emulated, ~8x slower
    ({"avx2", "avx512f"}, "fp32"),                      # AVX-512 without BF16 is still emulated bf16
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),       # Cooper Lake / Zen 4
    ({"avx2", "avx512f", "amx_tile", "amx_bf16"}, "bf16"),  # Sapphire Rapids
    (set(), "fp32"),                                    # unknown machine: the safe choice
])
def test_auto_follows_the_cpu_flags(flags, want):
    assert precision.resolve("auto", "cpu", flags) == want


@pytest.mark.parametrize("choice", ["fp32", "bf16"])
def test_an_explicit_choice_wins(choice):
    assert precision.resolve(choice, "cpu", {"amx_bf16"}) == choice
    assert precision.resolve(choice, "cpu", set()) == choice


def test_a_bad_choice_names_the_values():
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        precision.resolve("fp16")


def test_this_machine_resolves_to_what_its_flags_say():
    fast = bool(precision.BF16_CPU_FLAGS & precision.cpu_flags())
    assert precision.resolve("auto") == ("bf16" if fast else "fp32")
    assert precision.isa_summary({"avx2", "avx512_bf16"}) == "AVX2, AVX512-BF16"


def test_config_defaults_are_auto_and_accept_fp32():
    cfg = load_config(None, [])
    assert (cfg.learner.precision, cfg.rollout.dtype, cfg.algo.old_logprobs) == ("auto", "auto", "auto")
    assert cfg.cluster.sync_tolerance is None
    cfg = load_config(None, ["learner.precision=fp32", "rollout.dtype=fp32", "algo.old_logprobs=engine"])
    assert (cfg.learner.precision, cfg.rollout.dtype, cfg.algo.old_logprobs) == ("fp32", "fp32", "engine")
