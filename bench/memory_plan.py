"""The memory plan (common/memory.py) against measured peaks: each case runs a preset for a few steps on its own
fleet (fresh processes: a warm actor's peak would carry an earlier run's) and compares each actor's predicted peak
with the peak resident memory its processes reached (VmHWM, read by each process at the end of the run).

    python bench/memory_plan.py [--steps 3] [--only NAME,...] [--out docs/memory_plan.md]
    python bench/memory_plan.py --report-only      # the table again from the .json's measured peaks, planned anew

Writes docs/memory_plan.md (and .json): the machine, the command, per case and actor the plan's figure, the
measured peak and their ratio, and whether it is within common/memory.py MARGIN. `--report-only` plans each case
again with today's common/memory.py (the measured peaks stay as measured): how a change of its constants reads
against the same measurements; FITTED names the cases its constants were fitted on, the others are held out.
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
FITTED = ("grpo-bf16", "grpo-fp32", "grpo-2-sharded")  # common/memory.py's constants were set from these (2026-12-08)
NOTES = {"ppo-lora-critic": "held out at first, its critic read 2.90 GiB planned against 5.46 measured (0.53). That "
                            "showed two errors, both fixed since, so the row is no longer a clean hold-out: the plan "
                            "took the learner's optimizer for the critic (Adafactor in this preset; the critic always "
                            "uses AdamW), and no training worker counted the attention weights a CPU keeps for "
                            "backward. The critic remains the least well predicted figure."}


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def job(name: str, preset: str, overrides: list[str], folder: Path):
    from trainer.run import load_job

    return load_job(str(ROOT / "jobs" / "configs" / preset),
                    [*overrides, f"train.output_dir={folder}", f"train.run_name={name}", "train.eval_at_start=false",
                     "train.eval_every=1000", "train.save_every=1000", "cluster.backend=ray", "data.eval_size=4"])


def planned(cfg, policy: str, measured: dict) -> tuple[list[dict], object]:
    """Each actor's row: the plan's figure and parts beside the measured peak of its group (the largest process)."""
    from common.memory import memory_plan

    plan = memory_plan(cfg, policy)
    rows = []
    for a in plan.actors:
        group = {v: k for k, v in ROLE_OF_GROUP.items()}.get(a.role, a.role)
        vals = [v for v in measured.get(group, []) if v is not None]
        rows.append({"actor": a.role, "count": a.count, "planned_gib": round(a.peak_gib, 3),
                     "parts": {k: round(v, 3) for k, v in a.parts.items()},
                     "measured_gib": round(max(vals), 3) if vals else None})
    return rows, plan


def one_case(name: str, preset: str, overrides: list[str], steps: int, folder: Path) -> dict:
    from trainer.run import load_task, run

    cfg = job(name, preset, overrides, folder)
    policy, task = load_task(cfg)
    t0 = time.perf_counter()
    summary = run(cfg, max_steps=steps, loaded=(policy, task))
    measured = summary.get("peak_rss_gib") or {}
    rows, plan = planned(cfg, policy, measured)
    return {"case": name, "preset": preset, "overrides": overrides, "steps": steps, "actors": rows,
            "measured": measured, "node_planned_gib": round(plan.host_gib(), 2),
            "seconds": round(time.perf_counter() - t0, 1), "plan": plan.describe()}


def replanned(result: dict) -> dict:
    """A measured case planned again with today's common/memory.py."""
    from common.models import resolve_model

    cfg = job(result["case"], result["preset"], result["overrides"], Path(tempfile.gettempdir()))
    groups = {v: k for k, v in ROLE_OF_GROUP.items()}
    measured = result.get("measured") or {groups.get(a["actor"], a["actor"]): [a["measured_gib"]]
                                           for a in result["actors"]}  # an older .json: the largest per actor
    rows, plan = planned(cfg, resolve_model(cfg.model.policy, cfg.model.cache_dir), measured)
    return {**result, "actors": rows, "node_planned_gib": round(plan.host_gib(), 2), "plan": plan.describe()}


def report(results: list[dict], cmd: str, out: Path) -> None:
    from bench.report import head, machine, row
    from common.memory import MARGIN

    lines = ["# Memory plan vs measured peaks", "",
             f"Generated {time.strftime('%Y-%m-%d')} by `{cmd}`. Machine: {machine()}. Each case runs its preset for a "
             "few steps on a fleet of its own (fresh processes), then each actor's process reports its peak resident "
             "memory (VmHWM); the plan (common/memory.py) is what the run printed before any actor started. Ratio = "
             f"planned / measured; the stated margin is +-{MARGIN:.0%}. The plan's constants were fitted on the cases "
             f"{', '.join(FITTED)} (in-sample); the others are held out.", ""]
    lines += head("case", "fitted on it", "actor", "planned GiB (one process)", "measured peak GiB", "ratio", f"within {MARGIN:.0%}",
                  "planned parts")
    inside = total = 0
    for r in results:
        for a in r["actors"]:
            m = a["measured_gib"]
            ratio = a["planned_gib"] / m if m else None
            ok = ratio is not None and abs(ratio - 1) <= MARGIN
            inside, total = inside + ok, total + (ratio is not None)
            parts = ", ".join(f"{k} {v:.2f}" for k, v in a["parts"].items() if v >= 0.005)
            lines.append(row(r["case"], "yes" if r["case"] in FITTED else "held out", a["actor"] + (f" x{a['count']}" if a["count"] > 1 else ""),
                             f"{a['planned_gib']:.2f}", "-" if m is None else f"{m:.2f}",
                             "-" if ratio is None else f"{ratio:.2f}", "-" if ratio is None else ("yes" if ok else
                                                                                                   "**no**"), parts))
    lines += ["", f"{inside} of {total} actor figures within the margin.", ""]
    lines += [f"- {case}: {note}" for case, note in NOTES.items() if any(r["case"] == case for r in results)]
    big = [a["planned_gib"] / a["measured_gib"] for r in results for a in r["actors"]
           if a["measured_gib"] and a["actor"] not in ("reward", "driver")]
    low = [x for x in big if x < 1]
    lines += ["", f"The training workers and engines: {len(low)} of {len(big)} figures below the measured peak "
              f"(ratios {min(big):.2f} to {max(big):.2f}): the plan errs low more often than high, so the node "
              "check plans at most 90% of the node, leaving that error under Ray's 95% kill line. Not measured here: "
              "a GPU (bench/gpu_check.py prints the plan's figure beside the allocated peak), multi-turn runs, "
              "models other than the embedded one.", ""]
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"cmd": cmd, "machine": machine(), "results": results}, indent=1))
    log(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=str(ROOT / "docs" / "memory_plan.md"))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads(Path(args.out).with_suffix(".json").read_text())
        report([replanned(r) for r in saved["results"]], saved["cmd"], Path(args.out))
        return
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
