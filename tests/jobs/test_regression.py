"""The task/phase reshaping (issue 8) changed no number: a fixed-seed MLQA SFT -> GRPO run of a few steps gives
the per-step rewards, losses, KL, clip fractions, logprob gaps and eval F1 that the job gave before it.

tests/jobs/data/mlqa_sft_grpo_pinned.json holds those numbers as the job printed them at the commit it names,
with the command of that time and the machine (AMD EPYC, AVX2, fp32). What holds on every CPU kind, and so is
compared on every kind:
- exactly: what the run samples and scores (rewards, F1/EM, lengths, the sampled text, zero-variance shares) and
  the schedule (lr). fp32 vLLM on AVX2 and on AVX-512 (AMD Zen 4) sampled the same tokens;
- to rel 1e-3: what the learner computes from them (losses, gradient norms, KL, ratios, entropy, clip shares).
  fp32 kernels sum in another order on AVX-512 than on AVX2 (an Intel AVX-512 machine: ratio_mean 1.0471168
  against the pinned 1.0471050), and since issue 16 the learner cuts a batch into micro-batches by a token budget
  over length-sorted rows, which accumulates in another order (SFT grad norm 77.8164 against 77.8139 on Zen 4;
  the largest difference there, 3.5e-5 relative, in a GRPO loss).
  A real change of the algorithm (a denominator, a sign, a reference) moves these by far more than 1e-3;
- bounded: the logprob gap, a float-noise diagnostic between vLLM and the learner (< 1e-3; a broken weight sync
  gives ~1).
A sampled token that flips would show as a reward difference, and the message says so.
"""
import json
from pathlib import Path

import pytest

from tests.real_path import train

ROOT = Path(__file__).resolve().parents[2]
PINNED = json.loads((Path(__file__).parent / "data" / "mlqa_sft_grpo_pinned.json").read_text())

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.fleet("smollm")]

# The vLLM-vs-learner logprob gap is float noise between two kernels (~2e-5 here); vLLM's CPU attention does not
# repeat it from run to run (seen in CI: 1.881e-5 against a pinned 1.848e-5, 4.315e-5 against 3.958e-5), so it is
# bounded, not pinned. Everything the algorithm computes from (rewards, losses, KL, clip fractions, F1) stays
# pinned to 1e-7.
GAP_BOUND = 1e-3
LEARNER_REL = 1e-3  # values the learner computes: float order differs across CPU kinds and micro-batch cuts
EXACT = ("reward/", "rollout/", "eval/", "sft/lr", "learner/lr")  # sampled, scored, scheduled: the same everywhere
# Pinned before issue 16 and since redefined: the compared value would be another quantity.
REDEFINED = {"learner/ratio_max": "the maximum over all micro-batches (it was their token-weighted mean)"}


def test_mlqa_sft_then_grpo_reproduces_the_pinned_numbers(shared_data, tmp_path, fleets):
    """Pinned with the in-process backend; run here on the embedded model's warm fleet on local Ray (the same numbers:
    each actor computes what the in-process objects computed, with the same threads)."""
    args = [f"train.output_dir={tmp_path}",
            "train.phases=[{kind: sft, epochs: 1, limit: 16, batch_size: 8}, {kind: grpo, steps: 3}]",
            "learner.inner_steps=2", "train.eval_every=3", "train.eval_at_start=false", "cluster.threads=2",
            # pinned in fp32: precision auto would pick bf16 on an AMX machine and change every number
            "learner.precision=fp32", "rollout.dtype=fp32", "algo.old_logprobs=engine",
            "learner.micro_batch_size=4", "learner.max_tokens_per_micro_batch=null",  # the pinned run's cut
            # the optimizer of the pinned run; the fused default makes the same update up to rounding (a 1e-6
            # difference in a loss after a few steps; tests/learner/test_policy.py checks the two agree)
            "learner.optimizer=adamw_foreach"]
    train(fleets, str(ROOT / "jobs" / "configs" / "smoke.yaml"), *args)
    run = tmp_path / "smoke"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    got = {"sft": [r for r in steps if r["phase"] == "sft"], "grpo": [r for r in steps if r["phase"] == "grpo"],
           "eval": {r["phase"]: r for r in recs if r["kind"] == "eval"}}
    where = f"(pinned on {PINNED['machine']} at commit {PINNED['produced_by_commit'][:10]})"
    assert len(got["sft"]) == len(PINNED["sft"]) and len(got["grpo"]) == len(PINNED["grpo"])
    assert set(got["eval"]) == set(PINNED["eval"]) == {"sft", "grpo"}
    pairs = [*(("sft", i, PINNED["sft"][i], got["sft"][i]) for i in range(len(PINNED["sft"]))),
             *(("grpo", i, PINNED["grpo"][i], got["grpo"][i]) for i in range(len(PINNED["grpo"]))),
             *(("eval", k, PINNED["eval"][k], got["eval"][k]) for k in PINNED["eval"])]
    compared = 0
    for phase, i, want, have in pairs:
        for key, value in want.items():
            if key in ("step", "phase", "sample/completion", "eval/sample") or key in REDEFINED:
                continue
            assert key in have, f"{phase} {i}: {key} is no longer logged"
            if "logprob_diff" in key:
                assert abs(have[key]) < GAP_BOUND, f"{phase} {i} {key} is no longer float noise: {have[key]}"
            elif isinstance(value, float) and key.startswith(EXACT):
                assert have[key] == pytest.approx(value, rel=1e-6, abs=1e-7), f"{phase} {i} {key} {where}"
            elif isinstance(value, float):
                assert have[key] == pytest.approx(value, rel=LEARNER_REL, abs=1e-7), f"{phase} {i} {key} {where}"
            else:
                assert have[key] == value, f"{phase} {i} {key} {where}"
            compared += 1
        if "sample/completion" in want:  # the sampled text itself: a flipped token shows here first
            assert have["sample/completion"] == want["sample/completion"], f"{phase} {i}: another sample {where}"
    assert compared >= 90
    # The SFT model is checkpointed and is GRPO's KL reference: KL starts near 0 at the first GRPO update.
    assert (run / "checkpoints" / "sft" / "model.safetensors").is_file()
    assert got["grpo"][0]["learner/kl"] < got["grpo"][-1]["learner/kl"]
