"""What the real-path tests (local Ray, vLLM, the embedded model) may assert on any CPU kind.

`precision: auto` is fp32 on some machines and bf16 on others (common/precision.py), so a run's engine-vs-learner
gap is float noise (~1e-5) on one and bf16 rounding (~1e-2 a token, up to ~0.3 on single tokens) on another. These
helpers read which precision the run chose and assert what that precision guarantees. OTHER_PRECISION is the one
`auto` does not pick on this machine: a test run with it covers the other path (bf16 is emulated, slowly, on AVX2).
"""
from __future__ import annotations

import json
from pathlib import Path


def run_precision(run: Path) -> str:
    """'fp32' when the run's learner and every engine ran fp32, else 'bf16' (from its precision info record)."""
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "info" and rec.get("precision"):
            p = rec["precision"]
            return "fp32" if p["learner"] == "fp32" and set(p["engines"]) == {"fp32"} else "bf16"
    raise AssertionError(f"{run}: no precision record in metrics.jsonl")


def assert_engine_held_learner_weights(step: dict, precision: str) -> None:
    """The step's samples came from the learner's weights: every token within float noise in fp32; in bf16 the mean
    gap is rounding, far below the ~1 a stale or wrong policy gives, and the first update's ratio is exactly 1."""
    if precision == "fp32":
        assert step["learner/logprob_diff_max"] < 1e-3, step
    else:
        assert step["learner/mismatch_abs_mean"] < 0.1, step
    assert step["learner/clip_frac_first"] == 0.0, step


def other_precision() -> str:
    from common.precision import decide

    return "fp32" if decide("auto", "cpu").precision == "bf16" else "bf16"


def other_precision_overrides() -> list[str]:
    p = other_precision()
    return [f"learner.precision={p}", f"rollout.dtype={p}"]


def train(fleets, config: str | None, *overrides: str, resume: bool = False, max_steps: int | None = None) -> dict:
    """A training job as `raygrpo train --config <config> --local <overrides>` runs it, in this process, on a fleet
    `fleets` lends (the session's FleetPool, tests/conftest.py, or a Fleet); its summary. A job that stops raises what
    the command would have reported (ActorLost, RewardFailed, ConfigError, ...)."""
    from trainer.run import load_job, load_task, run

    cfg = load_job(config, [*overrides, "cluster.backend=ray"])
    return run(cfg, resume="auto" if resume else None, max_steps=max_steps, loaded=load_task(cfg), fleet=fleets)


def records(run: Path, kind: str | None = None) -> list[dict]:
    """The run's metrics.jsonl records (of one kind: step, eval, info)."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if kind is None or r.get("kind") == kind]
