"""Eval F1/EM over training for finished runs, written to docs/quality.md with each run's curves PNG and what a
person noted about a run (<run>-notes.md beside it), verbatim.

    python bench/quality_report.py runs/xquad-en-grpo runs/xquad-en-sft-grpo
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import head, notes  # noqa: E402
from common.metrics_log import plot_curves, read_records  # noqa: E402

PAPER_SFT = "3 epochs over the whole split"  # the MLQA paper's SFT, which these runs may shorten


def how_to_read(runs: list[Path]) -> str:
    """What the numbers rest on, read from the runs: the eval size, updates per rollout batch and the clipping they
    allow, SFT's budget against the paper's."""
    import yaml

    cfgs = [yaml.safe_load((r / "config.yaml").read_text()) or {} for r in runs if (r / "config.yaml").is_file()]
    recs = [r for run in runs for r in read_records(run / "metrics.jsonl")]
    n = ", ".join(map(str, sorted({int(r["eval/n"]) for r in recs if r.get("kind") == "eval" and "eval/n" in r})))
    asked = ", ".join(map(str, sorted({c.get("data", {}).get("eval_size") for c in cfgs} - {None})))
    clip = max((r.get("learner/clip_frac", 0.0) for r in recs if r.get("kind") == "step" and "reward/mean" in r),
               default=0.0)
    inner = ", ".join(map(str, sorted({c.get("learner", {}).get("inner_steps", 1) for c in cfgs})))
    sft = "; ".join(sorted({f"{e:g} epoch{'s' * (e != 1)} over {p.get('limit') or 'all the'} training questions"
                            for c in cfgs for p in c.get("train", {}).get("phases") or [] if p.get("kind") == "sft"
                            for e in [p.get("epochs", 3)]}))
    return "\n".join([
        "### How to read these numbers", "",
        f"- Eval questions: {n}{f' (asked for {asked})' if asked else ''}: the held-out split keeps whole contexts "
        "together (no context is seen in training), so it ends at a context boundary.",
        f"- Optimizer updates per rollout batch (`learner.inner_steps`): {inner}; the largest clip fraction of any GRPO "
        f"step: {clip:.3f}. With one update the ratio differs from 1 only by the engine-vs-learner gap (per run above); "
        "with two, the second update sees a moved policy and can clip (logged as `learner/clip_frac_last`).",
        *([f"- SFT: {sft} (the paper: {PAPER_SFT})."] if sft else []),
        f"- One run each, one seed, {n} questions an eval; no confidence intervals here.", ""])


def describe(run: Path) -> tuple[str, str]:
    recs = read_records(run / "metrics.jsonl")
    evals = [r for r in recs if r.get("kind") == "eval"]
    steps = [r for r in recs if r.get("kind") == "step" and "reward/mean" in r]  # GRPO steps (not SFT's)
    cfg = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
    base = evals[0]
    best = max(evals, key=lambda r: r["eval/f1"])
    last = evals[-1]
    gaps = [r["learner/logprob_diff_max"] for r in steps]
    seconds = sum(r["timing/step"] for r in steps) + sum(r.get("eval/seconds", 0) for r in evals)
    png = ROOT / "docs" / f"curves-{run.name}.png"
    plot_curves(run / "metrics.jsonl", png, primary="f1", title=run.name)
    rows = "\n".join(f"| {r['step']}{' (SFT)' if r.get('phase') == 'sft' else ''} | {r['eval/f1']:.3f} | "
                     f"{r['eval/em']:.3f} | {r['eval/len']:.1f} |" for r in evals)
    text = (f"### {run.name}\n\n"
            f"{len(steps)} GRPO steps, {seconds / 60:.0f} min of steps and evals; {int(base['eval/n'])} held-out "
            f"questions, greedy. Start F1 {base['eval/f1']:.3f} -> best F1 {best['eval/f1']:.3f} at step "
            f"{best['step']} (delta {best['eval/f1'] - base['eval/f1']:+.3f}); final F1 {last['eval/f1']:.3f}. "
            f"vLLM-vs-learner logprob gap: max over all steps {max(gaps):.1e}. Mean clip fraction "
            f"{sum(r['learner/clip_frac'] for r in steps) / len(steps):.3f}.\n\n"
            + "\n".join(head("step", "eval F1", "eval EM", "answer tokens")) + "\n" + rows +
            f"\n\n![curves]({png.name})\n\n<details><summary>config</summary>\n\n```yaml\n{cfg}```\n</details>\n"
            + "".join(f"\n{line}" for line in notes(run.parent, run.name)))
    return text, png.name


def summary_rows(runs: list[str]) -> str:
    """One row per checkpoint: the base model (first eval of the first run), then per run the SFT model
    (if any), the best and the final GRPO checkpoint."""
    rows = []
    for i, r in enumerate(runs):
        evals = [e for e in read_records(Path(r) / "metrics.jsonl") if e.get("kind") == "eval"]
        first = evals[0]
        if i == 0 and first.get("phase") != "sft":
            rows.append(("base model", first))
        if first.get("phase") == "sft":
            rows.append((f"{Path(r).name}: after SFT", first))
        best = max(evals, key=lambda e: e["eval/f1"])
        rows.append((f"{Path(r).name}: best (step {best['step']})", best))
        rows.append((f"{Path(r).name}: final (step {evals[-1]['step']})", evals[-1]))
    base = rows[0][1]["eval/f1"]
    lines = head("checkpoint", "F1", "EM", "answer tokens", "ΔF1 vs base")
    lines += [f"| {name} | {e['eval/f1']:.3f} | {e['eval/em']:.3f} | {e['eval/len']:.1f} | "
              f"{e['eval/f1'] - base:+.3f} |" for name, e in rows]
    return "\n".join(lines)


def main(runs: list[str]) -> int:
    parts = [summary_rows(runs) + "\n"] + [describe(Path(r))[0] for r in runs]
    doc = ROOT / "docs" / "quality.md"
    doc.write_text("# GRPO on XQuAD English with the embedded SmolLM2-135M-Instruct\n\n"
                   "Generated by `python bench/quality_report.py " + " ".join(runs) + "` from the runs' "
                   "metrics.jsonl. The commands that produced the runs are in docs/quality-commands.md.\n\n"
                   + "\n".join(parts) + "\n" + how_to_read([Path(r) for r in runs]))
    print(doc.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
