"""The memory plan (common/memory.py) against measured peaks: each case runs a preset for a few steps on its own
fleet (fresh processes: a warm actor's peak would carry an earlier run's) and compares each actor's predicted peak
with the peak resident memory its processes reached (VmHWM, read by each process at the end of the run).

    python bench/memory_plan.py [--steps 3] [--only NAME,...] [--out docs/memory_plan.md]

Writes docs/memory_plan.md (and .json): the machine, the command, per case and actor the plan's figure, the
measured peak and their ratio, and whether it is within common/memory.py MARGIN.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (name, preset, overrides): the presets' shapes on the embedded model — GRPO with a reference in bf16 and in fp32,
# 2 sharded learner workers, PPO with its critic and LoRA, the search preset's tools
CASES = [
    ("grpo-bf16", "xquad_en_grpo.yaml", ["learner.precision=bf16", "rollout.dtype=bf16"]),
    ("grpo-fp32", "xquad_en_grpo.yaml", ["learner.precision=fp32", "rollout.dtype=fp32"]),
    ("grpo-2-sharded", "xquad_en_grpo.yaml", ["learner.workers=2", "learner.precision=bf16"]),
    ("ppo-lora-critic", "qnli_ppo_lora.yaml", ["learner.precision=bf16"]),
]
ROLE_OF_GROUP = {"rollout": "engine"}


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def one_case(name: str, preset: str, overrides: list[str], steps: int, folder: Path) -> dict:
    from common.memory import memory_plan
    from trainer.run import load_job, load_task, run

    cfg = load_job(str(ROOT / "jobs" / "configs" / preset),
                   [*overrides, f"train.output_dir={folder}", f"train.run_name={name}", "train.eval_at_start=false",
                    "train.eval_every=1000", "train.save_every=1000", "cluster.backend=ray", "data.eval_size=4"])
    policy, task = load_task(cfg)
    plan = memory_plan(cfg, policy)
    t0 = time.perf_counter()
    summary = run(cfg, max_steps=steps, loaded=(policy, task))
    measured = summary.get("peak_rss_gib") or {}
    rows = []
    for a in plan.actors:
        group = {v: k for k, v in ROLE_OF_GROUP.items()}.get(a.role, a.role)
        vals = [v for v in measured.get(group, []) if v is not None]
        rows.append({"actor": a.role, "count": a.count, "planned_gib": round(a.peak_gib, 3),
                     "parts": {k: round(v, 3) for k, v in a.parts.items()},
                     "measured_gib": round(max(vals), 3) if vals else None})
    return {"case": name, "preset": preset, "overrides": overrides, "steps": steps, "actors": rows,
            "node_planned_gib": round(plan.host_gib(), 2), "seconds": round(time.perf_counter() - t0, 1),
            "plan": plan.describe()}


def report(results: list[dict], cmd: str, out: Path) -> None:
    from bench.report import head, machine, row
    from common.memory import MARGIN

    lines = ["# Memory plan vs measured peaks", "",
             f"Generated {time.strftime('%Y-%m-%d')} by `{cmd}`. Machine: {machine()}. Each case runs its preset for a "
             "few steps on a fleet of its own (fresh processes), then each actor's process reports its peak resident "
             "memory (VmHWM); the plan (common/memory.py) is what the run printed before any actor started. Ratio = "
             f"planned / measured; the stated margin is +-{MARGIN:.0%}.", ""]
    lines += head("case", "actor", "planned GiB (one process)", "measured peak GiB", "ratio", f"within {MARGIN:.0%}",
                  "planned parts")
    inside = total = 0
    for r in results:
        for a in r["actors"]:
            m = a["measured_gib"]
            ratio = a["planned_gib"] / m if m else None
            ok = ratio is not None and abs(ratio - 1) <= MARGIN
            inside, total = inside + ok, total + (ratio is not None)
            parts = ", ".join(f"{k} {v:.2f}" for k, v in a["parts"].items() if v >= 0.005)
            lines.append(row(r["case"], a["actor"] + (f" x{a['count']}" if a["count"] > 1 else ""),
                             f"{a['planned_gib']:.2f}", "-" if m is None else f"{m:.2f}",
                             "-" if ratio is None else f"{ratio:.2f}", "-" if ratio is None else ("yes" if ok else
                                                                                                   "**no**"), parts))
    lines += ["", f"{inside} of {total} actor figures within the margin.", ""]
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"cmd": cmd, "machine": machine(), "results": results}, indent=1))
    log(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=str(ROOT / "docs" / "memory_plan.md"))
    args = ap.parse_args()
    cases = [c for c in CASES if not args.only or c[0] in args.only.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="memory_plan-") as tmp:
        for name, preset, overrides in cases:
            log(f"{name}: {preset} {' '.join(overrides)}, {args.steps} steps")
            results.append(one_case(name, preset, overrides, args.steps, Path(tmp)))
            for a in results[-1]["actors"]:
                log(f"  {a['actor']}: planned {a['planned_gib']:.2f} GiB, measured {a['measured_gib']}")
    report(results, "python bench/memory_plan.py " + " ".join(sys.argv[1:]), Path(args.out))


if __name__ == "__main__":
    main()
