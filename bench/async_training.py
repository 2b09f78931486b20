"""Where asynchronous training pays: seconds per update, samples/s and the reward curve at train.max_staleness
0, 1 and 2, on a workload whose scoring waits on something outside the engines (a judge or sandbox that takes a
fixed wait per batch: `--waits`) and on the same workload without the wait.

    python bench/async_training.py [--steps 10] [--repeats 2] [--waits 1,0] [--staleness 0,1,2] [--out docs/...md]

The workload: jobs/configs/arithmetic_easy_grpo.yaml (the embedded SmolLM2 policy, vLLM on local Ray), 4 prompts x
4 samples a step, its `arithmetic` reward plus a weight-0 user reward function that sleeps a fixed time per call
(a stand-in for a remote judge); `--waits 1,0` runs the workload with a 1 s wait and without. Every run borrows
one warm fleet (cluster/fleet.py FleetPool), so only the first pays the actors' start. Each (wait, staleness) runs `--repeats` times with seeds 0, 1, ...; the same seed draws the
same prompts in every run, so the reward curves compare step by step on the same samples budget (paired over seed
and step, mean difference with a 95% t-interval).

Writes docs/async_training.md: the machine, the command, the table (median wall seconds from one update's end to
the next's over steps 2.., the range over repeats, samples/s, mean staleness, reward), the paired reward comparison.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WAIT = '''import time


def judge(completions, **kwargs):
    """A stand-in for a remote judge or sandbox: a fixed wait per batch, no score of its own (weight 0)."""
    time.sleep({wait})
    return [0.0] * len(completions)
'''


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def one_run(pool, folder: Path, policy: str, steps: int, staleness: int, wait: float, seed: int) -> dict:
    from trainer.run import load_job, load_task, run

    judge = folder / f"judge_{str(wait).replace('.', '_')}.py"
    judge.write_text(WAIT.replace("{wait}", repr(wait)))
    name = f"wait{wait:g}-s{staleness}-seed{seed}"
    overrides = [f"model.policy={policy}", f"train.output_dir={folder}", f"train.run_name={name}",
                 f"train.phases.0.steps={steps}", "train.eval_at_start=false", f"train.eval_every={steps}",
                 f"train.save_every={steps}", "train.prompts_per_step=4", "data.eval_size=20",
                 f"train.seed={seed}", f"rollout.seed={seed}", f"train.max_staleness={staleness}",
                 f"rewards.components=[{{name: arithmetic}}, {{fn: '{judge}:judge', weight: 0.0, name: judge}}]",
                 "cluster.backend=ray"]
    cfg = load_job(str(ROOT / "jobs" / "configs" / "arithmetic_easy_grpo.yaml"), overrides)
    t0 = time.perf_counter()
    run(cfg, loaded=load_task(cfg), fleet=pool)
    wall = time.perf_counter() - t0
    recs = [json.loads(x) for x in (folder / name / "metrics.jsonl").read_text().splitlines()]
    st = [r for r in recs if r.get("kind") == "step"]
    gaps = [b["time"] - a["time"] for a, b in zip(st, st[1:])]  # wall clock from one update's end to the next's
    per_step = statistics.median(gaps) if gaps else st[0]["timing/step"]
    samples = st[-1]["sampling/samples_per_update"]
    log(f"{name}: {per_step:.2f} s a step, wall {wall:.0f} s")
    import shutil

    shutil.rmtree(folder / name / "checkpoints", ignore_errors=True)  # ~2 GB a run of SmolLM2 with its optimizer
    return {"name": name, "wait": wait, "staleness": staleness, "seed": seed, "step_s": per_step,
            "samples_per_s": samples / per_step, "wall_s": wall,
            "stale_mean": statistics.mean(r.get("rollout/staleness_mean", 0.0) for r in st),
            # where a step's time goes (medians over steps 2..): what it waited for the samples, learned, waited for
            # a generation in flight before its sync, and the generation's own seconds
            **{k: statistics.median(r.get(m, 0.0) for r in (st[1:] or st)) for k, m in (
                ("sample_wait_s", "timing/generate"), ("learn_s", "timing/learn"), ("sync_wait_s", "sync/wait_s"),
                ("generate_own_s", "stream/generate_s"), ("reward_own_s", "stream/reward_s"))},
            "rewards": [r["reward/mean"] for r in st]}


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of b - a with its 95% t-interval (pairs: same seed, same step)."""
    from scipy import stats

    d = [y - x for x, y in zip(a, b, strict=True)]
    m = statistics.mean(d)
    if len(d) < 2 or statistics.pstdev(d) == 0:
        return m, m, m
    half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return m, m - half, m + half


def cells(results: list[dict]):
    """(wait, staleness, its runs) of each table row: longest wait first, then staleness 0, 1, ..."""
    for wait in sorted({r["wait"] for r in results}, reverse=True):
        for s in sorted({r["staleness"] for r in results}):
            yield wait, s, [r for r in results if r["wait"] == wait and r["staleness"] == s]


def report(results: list[dict], args, cmd: str) -> str:
    from bench.report import machine

    lines = ["# Asynchronous training: where a staleness bound pays", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.", "", f"Command: `{cmd}`", "",
             "Workload: jobs/configs/arithmetic_easy_grpo.yaml, the embedded SmolLM2-135M-Instruct policy on vLLM "
             f"(local Ray, one engine, one learner), 4 prompts x 4 samples a step, {args.steps} steps a run; its "
             "`arithmetic` reward and a weight-0 user reward function that waits a fixed time per batch (a judge or "
             "sandbox stand-in). One warm fleet for every run. Seconds per update: the wall clock from one "
             "update's end to the next's, the median over each run's steps 2.., then the median over repeats "
             "[range]. Mean staleness: the policy tokens' mean over the run.", "",
             "| judge wait | max_staleness | s / update | samples/s | mean staleness | mean reward | repeats |",
             "|---|---|---|---|---|---|---|"]
    for wait, s, rs in cells(results):
        steps = [r["step_s"] for r in rs]
        lines.append(f"| {wait:g} s | {s} | {statistics.median(steps):.2f} [{min(steps):.2f}, {max(steps):.2f}] | "
                     f"{statistics.median(r['samples_per_s'] for r in rs):.2f} | "
                     f"{statistics.mean(r['stale_mean'] for r in rs):.2f} | "
                     f"{statistics.mean(x for r in rs for x in r['rewards']):.3f} | {len(rs)} |")
    if all("learn_s" in r for r in results):
        lines += ["", "Where an update's seconds go (medians): the wait for its samples, learning, the sync's wait for "
                  "a generation in flight; and the generation's and scoring's own seconds (overlapped above 0):", "",
                  "| judge wait | max_staleness | sample wait | learn | sync wait | generation (own) | scoring (own) |",
                  "|---|---|---|---|---|---|---|"]
        for wait, s_, rs in cells(results):
            cell = lambda k: f"{statistics.median(r[k] for r in rs):.2f}"  # noqa: E731
            lines.append(f"| {wait:g} s | {s_} | {cell('sample_wait_s')} | {cell('learn_s')} | "
                         f"{cell('sync_wait_s')} | {cell('generate_own_s')} | {cell('reward_own_s')} |")
    lines += ["", "Reward curves on the same samples budget, paired by seed and step (mean reward at staleness k minus "
              "at 0, 95% t-interval):", ""]
    for wait in sorted({r["wait"] for r in results}, reverse=True):
        base = {r["seed"]: r["rewards"] for r in results if r["wait"] == wait and r["staleness"] == 0}
        for s in sorted({r["staleness"] for r in results} - {0}):
            other = {r["seed"]: r["rewards"] for r in results if r["wait"] == wait and r["staleness"] == s}
            seeds = sorted(set(base) & set(other))
            a = [x for k in seeds for x in base[k]]
            b = [x for k in seeds for x in other[k]]
            m, lo, hi = paired(a, b)
            lines.append(f"- wait {wait:g} s, staleness {s} vs 0: {m:+.3f} [{lo:+.3f}, {hi:+.3f}] over {len(a)} "
                         "(seed, step) pairs")
    lines += ["", reading(results), ""]
    return "\n".join(lines)


def reading(results: list[dict]) -> str:
    """What the table says, in words, from the figures."""
    out = []
    for wait in sorted({r["wait"] for r in results}, reverse=True):
        med = {s: statistics.median(r["step_s"] for r in results if r["wait"] == wait and r["staleness"] == s)
               for s in sorted({r["staleness"] for r in results})}
        if 0 not in med:
            continue
        parts = [f"staleness {s}: {med[0] / v:.2f}x" for s, v in med.items() if s]
        out.append(f"With a {wait:g} s judge wait, updates per second against the synchronous step: "
                   + ", ".join(parts) + ".")
    if all("learn_s" in r for r in results) and {0, 1} <= {r["staleness"] for r in results}:
        own = lambda k, s: statistics.median(r[k] for r in results if r["staleness"] == s)  # noqa: E731
        out.append(f"Run beside each other, the parts slow down: a generation's own seconds go from "
                   f"{own('generate_own_s', 0):.1f} (alone) to {own('generate_own_s', 1):.1f} (beside learning) and "
                   f"learning from {own('learn_s', 0):.1f} to {own('learn_s', 1):.1f}: where engine, reference and "
                   "learner share the same cores, overlapping them costs more than the wait it hides. The design "
                   "point is generation and learning on devices of their own, not measured here.")
    return " ".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--waits", default="1,0", help="the judge's seconds per batch, one workload each")
    ap.add_argument("--staleness", default="0,1,2")
    ap.add_argument("--out", default=str(ROOT / "docs" / "async_training.md"))
    ap.add_argument("--report-only", action="store_true", help="rewrite --out from its .json beside it (no runs)")
    args = ap.parse_args(argv)
    if args.report_only:
        saved = Path(args.out).with_suffix(".json")
        results = json.loads(saved.read_text())
        old = Path(args.out).read_text() if Path(args.out).is_file() else ""
        cmd = next((x.strip("`") for x in old.splitlines() if x.startswith("Command: ")), "Command: ?")[9:].strip("`")
        args.steps = len(results[0]["rewards"])
        Path(args.out).write_text(report(results, args, cmd))
        return 0
    cmd = "python bench/async_training.py " + " ".join(argv if argv is not None else sys.argv[1:])

    from cluster.fleet import FleetPool

    results = []
    pool = FleetPool(keep=1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for wait in (float(x) for x in args.waits.split(",")):
                for seed in range(args.repeats):
                    for s in (int(x) for x in args.staleness.split(",")):
                        results.append(one_run(pool, Path(tmp), args.policy, args.steps, s, wait, seed))
                        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))  # so far
    finally:
        pool.close()
    text = report(results, args, cmd.strip())
    Path(args.out).write_text(text)
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
