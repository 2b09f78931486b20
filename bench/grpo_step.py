"""Seconds per stage of a GRPO step and samples/s, on the real path (local Ray, vLLM, embedded model).

Runs the job for a few steps per learner precision, drops the first step (vLLM compiles on first use)
and reports the mean of the rest. Writes the table to docs/benchmarks.md.

    python bench/grpo_step.py [--steps 6] [--precisions fp32,bf16]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["generate", "reward", "reference", "learn", "sync", "step"]


def run_job(precision: str, steps: int, out: Path) -> list[dict]:
    cmd = [sys.executable, str(ROOT / "jobs" / "grpo_mlqa.py"), "--config", str(ROOT / "jobs/configs/smoke.yaml"),
           "--local", f"train.output_dir={out}", f"train.run_name=bench-{precision}", f"train.phases.0.steps={steps}",
           "train.eval_at_start=false", f"train.eval_every={steps}", f"train.save_every={steps}",
           f"learner.precision={precision}", "rollout.max_new_tokens=64", "data.limit=400"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    lines = (out / f"bench-{precision}" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "step"]


def summarize(records: list[dict]) -> dict:
    warm = records[1:] or records
    row = {s: statistics.mean(r[f"timing/{s}"] for r in warm) for s in STAGES}
    row["samples_per_s"] = statistics.mean(r["perf/samples_per_s"] for r in warm)
    row["gen_tokens_per_s"] = statistics.mean(r["perf/tokens_per_s_generate"] for r in warm)
    row["len_mean"] = statistics.mean(r["rollout/len_mean"] for r in warm)
    row["logprob_diff_mean"] = statistics.mean(r["learner/logprob_diff_mean"] for r in warm)
    row["logprob_diff_max"] = max(r["learner/logprob_diff_max"] for r in warm)
    row["steps"] = len(warm)
    return row


def table(rows: dict[str, dict]) -> str:
    head = ("| learner precision | " + " | ".join(f"{s} s" for s in STAGES)
            + " | samples/s | gen tok/s | mean len | logprob gap mean | gap max |")
    lines = [head, "|" + "---|" * (len(STAGES) + 6)]
    for prec, r in rows.items():
        lines.append(f"| {prec} | " + " | ".join(f"{r[s]:.2f}" for s in STAGES)
                     + f" | {r['samples_per_s']:.2f} | {r['gen_tokens_per_s']:.0f} | {r['len_mean']:.1f}"
                     + f" | {r['logprob_diff_mean']:.1e} | {r['logprob_diff_max']:.1e} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    # bf16 autocast is a config choice, but on this CPU its learner step was ~25x slower than fp32 in
    # one measured step (slow autocast paths); bench it explicitly with --precisions fp32,bf16.
    ap.add_argument("--precisions", default="fp32")
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prec in args.precisions.split(","):
            rows[prec] = summarize(run_job(prec, args.steps, Path(tmp)))
    text = table(rows)
    print(text)
    doc = ROOT / "docs" / "benchmarks.md"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(
        "# GRPO step benchmark\n\n"
        f"Measured {time.strftime('%Y-%m-%d')} by `python bench/grpo_step.py --steps {args.steps}` on "
        f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores, no GPU: one local Ray node, one vLLM "
        "engine (fp32), one learner, one reference, one reward actor; the embedded SmolLM2-135M-Instruct; "
        "XQuAD-en prompts (mean ~210 tokens), 4 prompts x K=4 = 16 samples per step, <= 64 new tokens. "
        f"Mean over {rows[next(iter(rows))]['steps']} steps after the first (which includes vLLM's compile).\n\n"
        + text + "\n\n"
        "Stages: generate (vLLM sampling), reward (QA scorer actors), reference (frozen-model logprobs), learn "
        "(forward/backward/AdamW, shared-prompt forward), sync (learner weights -> object store -> vLLM "
        "reload_weights). `logprob gap` is |vLLM logprob - learner logprob| on the sampled tokens at the first "
        "update of each step: the check that the weight sync took effect.\n")
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
