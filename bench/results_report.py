"""docs/results.md from a run dir written by jobs/experiment.py: the reproduction report.

Table I (held-out English test split: base, SFT, GRPO-best, GRPO-final), Table II (zero-shot
cross-lingual), the sampling distribution, perplexity, the training-dynamics figure and bar charts.
Every number is read from <run>/eval/*.json or <run>/metrics.jsonl; the commands that wrote them are
copied from <run>/commands.log; what a person noted about the run, <run>-notes.md beside it, verbatim.

    python bench/results_report.py runs/report-xquad-en [--out docs/results.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import ci, difference, head, load, notes, paired, save, subplots  # noqa: E402
from common.metrics_log import plot_curves, read_records  # noqa: E402
from common.stats import mcnemar_exact  # noqa: E402

ORDER = ["base", "sft", "grpo-best", "grpo-final"]
CROSS = [("xquad-de", "XQuAD de"), ("xquad-es", "XQuAD es"), ("xquad-vi", "XQuAD vi"), ("xquad-zh", "XQuAD zh"),
         ("xquad-ar", "XQuAD ar"), ("xquad-hi", "XQuAD hi"), ("mlqa-de", "MLQA de (dev)")]


def table_one(tests: dict[str, dict]) -> list[str]:
    base = tests["base"]["f1"]
    lines = head("checkpoint", "F1 [95% CI]", "EM [95% CI]", "answer length (tokens)", "ΔF1 vs base", "n")
    for name, r in tests.items():
        lines.append(f"| {name} | {ci(r, 'f1')} | {ci(r, 'em')} | {r['len']:.1f} | {r['f1'] - base:+.3f} | {r['n']} |")
    return lines


def verdict(tests: dict[str, dict]) -> str:
    """The issue's question, GRPO-best > SFT > base on F1, answered from the numbers with their CIs."""
    if not all(k in tests for k in ("base", "sft", "grpo-best")):
        return "Not all of base, SFT and GRPO-best were evaluated, so the ordering is not tested here."
    b, s, g = (tests[k] for k in ("base", "sft", "grpo-best"))
    parts = [f"GRPO-best F1 {g['f1']:.3f} {'>' if g['f1'] > s['f1'] else '<='} SFT F1 {s['f1']:.3f} "
             f"{'>' if s['f1'] > b['f1'] else '<='} base F1 {b['f1']:.3f}."]
    sep = s["f1_ci"][0] > b["f1_ci"][1]
    parts.append(f"SFT over base is {'clear (the CIs do not overlap)' if sep else 'within the CIs'}.")
    d = paired(s, g, "f1")
    if d is None:  # no per-question scores: compare the two CIs
        overlap = g["f1_ci"][0] <= s["f1_ci"][1]
        parts.append(f"GRPO-best over SFT is {g['f1'] - s['f1']:+.3f} F1, "
                     f"{'inside the overlap of the two CIs: not significant at this size' if overlap else 'outside the CIs'}.")
    else:
        mean, lo, hi = d
        sig = "significant" if lo > 0 or hi < 0 else "not significant at this size (the CI holds 0)"
        parts.append(f"GRPO-best over SFT is {mean:+.3f} F1 [{lo:+.3f}, {hi:+.3f}] on the same questions (paired "
                     f"bootstrap): {sig}.")
    return " ".join(parts)


def paired_table(tests: dict[str, dict]) -> list[str]:
    """GRPO-best and GRPO-final against SFT on the same test questions: F1 and EM differences with paired
    bootstrap CIs, and McNemar's exact test on exact match."""
    if "sft" not in tests or not tests["sft"].get("per_question"):
        return []
    lines = head("comparison", "ΔF1 [95% CI]", "ΔEM [95% CI]", "EM only SFT / only GRPO", "McNemar p", "n")
    s = tests["sft"]
    for name in ("grpo-best", "grpo-final"):
        g = tests.get(name)
        if not g or not g.get("per_question"):
            continue
        f1, em = paired(s, g, "f1"), paired(s, g, "em")
        only_s, only_g, pval = mcnemar_exact([q["em"] for q in s["per_question"]], [q["em"] for q in g["per_question"]])
        lines.append(f"| {name} - sft | {f1[0]:+.3f} [{f1[1]:+.3f}, {f1[2]:+.3f}] | {em[0]:+.3f} [{em[1]:+.3f}, "
                     f"{em[2]:+.3f}] | {only_s} / {only_g} | {pval:.2f} | {len(g['per_question'])} |")
    return ["Paired on the same test questions (each question's score difference resampled, 2000 resamples, seed 0), "
            "so the questions' difficulty, which the two checkpoints share, cancels out:", "", *lines, ""]


def selection_check(tests: dict[str, dict], val: list[dict]) -> list[str]:
    """Whether GRPO-best's lead over SFT on the validation split, where it was chosen, holds on the test split."""
    sft_val = next((r for r in val if r.get("phase") == "sft"), None)
    grpo = [r for r in val if r.get("phase") == "grpo"]
    if not all(k in tests for k in ("sft", "grpo-best")) or sft_val is None or not grpo:
        return []
    test = paired(tests["sft"], tests["grpo-best"], "f1")
    if test is None:
        return []
    best = max(grpo, key=lambda r: r["eval/f1"])
    gain = best["eval/f1"] - sft_val["eval/f1"]
    return [f"**Validation against test.** GRPO-best is the highest of {len(grpo)} GRPO validation evals "
            f"({best.get('eval/n', '?')} questions): F1 {best['eval/f1']:.3f} at step {best['step']} against SFT's "
            f"{sft_val['eval/f1']:.3f} ({gain:+.3f}). On the {tests['sft']['n']} test questions, GRPO-best - SFT is "
            f"{difference(test, 'F1')}: {held_up(gain, test)}.", ""]


def held_up(gain: float, test: tuple[float, float, float]) -> str:
    """What became on test of a validation gain (gain: GRPO-best - SFT on validation; test: the paired difference
    on test)."""
    _, lo, hi = test
    if gain <= 0:
        return "validation showed no gain over SFT"
    if lo > 0:
        return "the validation gain holds"
    return ("the validation gain does not hold (" + ("the CI holds 0" if hi >= 0 else "GRPO-best is lower") + "); a "
            "maximum over several noisy validation evals is biased upward, the test split, scored once, is not")


def grpo_budget(cfg_text: str) -> tuple[int | None, int]:
    """(GRPO steps, prompts per step) from a run's config: the grpo phase's own values, else train's."""
    import yaml

    train = (yaml.safe_load(cfg_text) or {}).get("train", {})
    phase = next((ph for ph in train.get("phases") or [] if ph.get("kind") == "grpo"), {})
    return phase.get("steps") or train.get("steps"), phase.get("prompts_per_step") or train.get("prompts_per_step", 4)


def dynamics_summary(steps: list[dict], cfg_text: str) -> str:
    """What GRPO had to learn from: questions seen, groups with no signal, KL, clipping, wall-clock."""
    import yaml

    if not steps:
        return ""
    _, per_step = grpo_budget(cfg_text)
    inner = (yaml.safe_load(cfg_text) or {}).get("learner", {}).get("inner_steps", 1)
    mean = lambda k: sum(r.get(k) or 0.0 for r in steps) / len(steps)  # noqa: E731
    seconds = sum(r.get("timing/step") or 0.0 for r in steps)
    clip = f" Mean clip fraction {mean('learner/clip_frac'):.3f}, " + (
        "with one update per rollout batch (learner.inner_steps=1): the ratio differs from 1 only by the "
        "vLLM-vs-learner gap." if inner == 1 else f"with {inner} updates per rollout batch.")
    wall = f" The GRPO steps took {seconds / 60:.0f} min ({seconds / len(steps):.1f} s a step)." if seconds else ""
    return (f"GRPO ran {len(steps)} steps of {per_step} questions ({len(steps) * per_step} questions seen, "
            f"{len(steps) * per_step} groups).{wall} "
            f"In {mean('reward/zero_std_group_frac'):.0%} of groups all K samples got the same reward, which gives "
            f"zero advantage and no gradient. Final KL to the reference is {steps[-1].get('learner/kl', 0):.3f}. "
            f"The mean sampled answer is {mean('rollout/len_mean'):.1f} tokens long.{clip}")


def group_classes(rollouts) -> dict[str, float]:
    """Fractions of GRPO groups by what their K rewards offered: a signal (rewards differ), or none because all K
    were right (reward >= 0.9), all wrong (<= 0.1) or equally partial. rollouts: the run's rollout records."""
    g = rollouts.groupby(["step", "prompt"])["reward"].agg(["min", "max", "mean"])
    flat = (g["max"] - g["min"]) < 1e-6
    return {"signal": float((~flat).mean()), "all right": float((flat & (g["mean"] >= 0.9)).mean()),
            "all wrong": float((flat & (g["mean"] <= 0.1)).mean()),
            "equal partial": float((flat & (g["mean"] > 0.1) & (g["mean"] < 0.9)).mean())}


def signal_table(run: Path, steps: list[dict], val: list[dict]) -> list[str]:
    """The run in thirds: reward, what the groups offered (from the rollout records), KL, answer length, and the
    validation F1 at the end of each third; what a reader needs to see why GRPO did or did not add to SFT."""
    if len(steps) < 3:
        return []
    try:
        from common import rollout_records

        rollouts = rollout_records.read(run)
        rollouts = rollouts[rollouts["phase"] == "grpo"] if "phase" in rollouts else rollouts
    except (FileNotFoundError, ImportError):
        rollouts = None
    first = steps[0]["step"] - 1  # global step before GRPO's first
    n = len(steps)
    cuts = [0, n // 3, 2 * n // 3, n]
    lines = head("GRPO steps", "reward", "groups with a signal", "all K right", "all K wrong", "KL", "answer tokens",
                 "validation F1 at the end")
    for a, b in zip(cuts, cuts[1:]):
        part = steps[a:b]
        mean = lambda k: sum(r.get(k) or 0.0 for r in part) / len(part)  # noqa: E731
        lo, hi = part[0]["step"], part[-1]["step"]
        cls = group_classes(rollouts[(rollouts["step"] >= lo) & (rollouts["step"] <= hi)]) \
            if rollouts is not None and len(rollouts) else None
        vf = [r["eval/f1"] for r in val if lo <= r["step"] <= hi]
        cells = ([f"{cls['signal']:.0%}", f"{cls['all right']:.0%}", f"{cls['all wrong']:.0%}"] if cls
                 else [f"{1 - mean('reward/zero_std_group_frac'):.0%}", "n/a", "n/a"])
        lines.append(f"| {lo - first}-{hi - first} | {mean('reward/mean'):.3f} | {' | '.join(cells)} | "
                     f"{part[-1].get('learner/kl', 0):.3f} | {mean('rollout/len_mean'):.1f} | "
                     f"{f'{vf[-1]:.3f}' if vf else 'n/a'} |")
    src = "rollout records (`<run>/rollouts/`)" if rollouts is not None else "step metrics (no rollout records)"
    return [f"The run in thirds (from the {src} and metrics.jsonl; KL at the third's last step):", "", *lines, ""]


def table_two(evals: Path) -> tuple[list[str], list[tuple[str, float, float]]]:
    lines = head("set", "base F1 / EM", "GRPO-best F1 [95% CI]", "GRPO-best EM", "ΔF1", "n")
    bars = []
    for key, label in CROSS:
        b, g = load(evals / f"cross-{key}-base.json"), load(evals / f"cross-{key}-grpo-best.json")
        if g is None:
            continue
        base_txt = f"{b['f1']:.3f} / {b['em']:.3f}" if b else "n/a"
        delta = f"{g['f1'] - b['f1']:+.3f}" if b else "n/a"
        lines.append(f"| {label} | {base_txt} | {ci(g, 'f1')} | {g['em']:.3f} | {delta} | {g['n']} |")
        bars.append((label, b["f1"] if b else float("nan"), g["f1"]))
    return lines, bars


def sampling_table(s: dict | None, greedy: dict | None) -> list[str]:
    if s is None:
        return ["(no sampling run)"]
    d = s["sampling"]
    n = s["n"]
    greedy_f1 = sum(q["f1"] for q in greedy["per_question"][:n]) / n if greedy else float("nan")
    return [f"GRPO-best, first {n} test questions, {d['samples']} samples each at T={d['temperature']}, "
            f"top-p {d['top_p']}. A run is the j-th sample of every question.", "",
            *head("greedy F1", "sampled F1 mean ± std over runs", "min", "max", "EM mean ± std", "all samples agree",
                  "best-of-n F1", "majority-vote F1"),
            f"| {greedy_f1:.3f} | {d['f1_mean']:.3f} ± {d['f1_std']:.3f} | {d['f1_min']:.3f} | {d['f1_max']:.3f} | "
            f"{d['em_mean']:.3f} ± {d['em_std']:.3f} | {d['agree_frac']:.2f} | {d['best_of_n_f1']:.3f} | "
            f"{d['majority_vote_f1']:.3f} |"]


def perplexity_table(rows: list | None, names: dict[str, str]) -> list[str]:
    if not rows:
        return ["(no perplexity run)"]
    lines = head("checkpoint", "perplexity", "NLL / token", "tokens")
    for r in rows:
        lines.append(f"| {names.get(r['model'], r['model'])} | {r['perplexity']:.2f} | {r['nll_per_token']:.3f} | "
                     f"{r['tokens']} |")
    return lines


def optional_sections(cross_lines: list[str], cross_png: str, sampling: dict | None, perplexity: list | None,
                      tests: dict[str, dict], names: dict[str, str]) -> list[str]:
    """Table II, the sampling distribution and perplexity, each where the experiment ran it (--parts)."""
    lines = []
    if len(cross_lines) > 2:
        lines += ["## Table II: zero-shot cross-lingual (trained on English only)", "",
                  "XQuAD is parallel, so every XQuAD row scores the same questions: those of the English test split, "
                  "translated. No question the model trained on in English is scored in another language. The MLQA-de "
                  "row uses the first questions of the German dev file, in file order; MLQA shares no questions with "
                  "XQuAD.", "", *cross_lines, "", f"![cross-lingual]({cross_png})", ""]
    if sampling:
        lines += ["## Sampling distribution", "", *sampling_table(sampling, tests.get("grpo-best")), ""]
    if perplexity:
        lines += ["## General language ability: perplexity on held-out English text", "",
                  "Twelve short paragraphs written for this project (jobs/data/heldout_text.txt); lower is better.", "",
                  *perplexity_table(perplexity, names), ""]
    missing = [name for name, have in (("cross-lingual transfer", len(cross_lines) > 2), ("sampling distribution",
               sampling), ("perplexity", perplexity)) if not have]
    if missing:
        lines += [f"Not evaluated in this run (`jobs/experiment.py --parts`): {', '.join(missing)}.", ""]
    return lines


def grouped_bars(png: Path, labels: list[str], series: list[tuple[str, list[float], list | None]], ylabel: str,
                 title: str, rotation: int = 0) -> None:
    """Two bars per label (series: (name, values, yerr or None)), saved as a PNG."""
    import numpy as np

    fig, ax = subplots(figsize=(max(7, len(labels)), 4))
    x = np.arange(len(labels))
    for off, (name, vals, err) in zip((-0.2, 0.2), series):
        ax.bar(x + off, vals, 0.4, yerr=err, capsize=3 if err else 0, label=name)
    ax.set_xticks(x, labels, rotation=rotation)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    save(fig, png)


def bar_charts(tests: dict[str, dict], cross: list, png_ckpt: Path, png_cross: Path) -> None:
    rows = list(tests.values())

    def with_ci(key: str, name: str):
        return (name, [r[key] for r in rows],
                [[r[key] - r[f"{key}_ci"][0] for r in rows], [r[f"{key}_ci"][1] - r[key] for r in rows]])

    grouped_bars(png_ckpt, list(tests), [with_ci("f1", "F1"), with_ci("em", "EM")], "held-out English test",
                 "Checkpoints (95% bootstrap CIs)")
    if cross:
        grouped_bars(png_cross, [c[0] for c in cross],
                     [("base", [c[1] for c in cross], None), ("GRPO-best", [c[2] for c in cross], None)],
                     "F1 (zero-shot)", "Cross-lingual transfer of English training", rotation=20)


def annotate_commands(log: str) -> str:
    """Mark a command whose output file a later command wrote again: that earlier attempt failed or was
    stopped, and the result in the run dir comes from the later one."""
    lines = log.splitlines()
    outs = [line.split("--out ")[1].split()[0] if "--out " in line else None for line in lines]
    return "\n".join(f"{line}   # superseded (rerun below)" if out and out in outs[i + 1:] else line
                     for i, (line, out) in enumerate(zip(lines, outs)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = p.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    evals = run / "eval"
    recs = read_records(run / "metrics.jsonl")
    cfg = (run / "config.yaml").read_text()
    tests = {k: r for k in ORDER if (r := load(evals / f"test-{k}.json"))}
    if "base" not in tests:
        raise SystemExit(f"error: {evals}/test-base.json missing; run jobs/experiment.py first")
    stem = out.with_suffix("")
    pngs = {k: Path(f"{stem}-{k}.png") for k in ("dynamics", "checkpoints", "crosslingual")}
    plot_curves(run / "metrics.jsonl", pngs["dynamics"], primary="f1", title=f"{run.name}: GRPO after SFT")
    cross_lines, bars = table_two(evals)
    bar_charts(tests, bars, pngs["checkpoints"], pngs["crosslingual"])
    val = [r for r in recs if r.get("kind") == "eval"]
    best = max((r for r in val if r.get("phase") == "grpo"), key=lambda r: r["eval/f1"], default=None)
    names = {r["model"]: k for k, r in tests.items()}
    rel = lambda q: q.relative_to(out.parent).as_posix() if q.is_relative_to(out.parent) else str(q)  # noqa: E731
    log = (run / "commands.log").read_text() if (run / "commands.log").is_file() else ""
    commands = annotate_commands(log.strip()) if log else "(none logged)"
    config = next((w.split("--config ")[1].split()[0] for w in log.splitlines() if "--config " in w),
                  "jobs/configs/report_xquad_en.yaml")
    grpo_steps = [r for r in recs if r.get("kind") == "step" and "reward/mean" in r]
    lines = [
        "# Results: base vs SFT vs GRPO on XQuAD" + (", and cross-lingual transfer" if len(cross_lines) > 2 else ""), "",
        f"Generated by `python bench/results_report.py {args.run}` from the run dir `{run}` (written by "
        f"`python jobs/experiment.py --config {config}`). Embedded SmolLM2-135M-Instruct, "
        "2 CPU cores, no GPU. CIs are 95% percentile bootstraps over questions (1000 resamples, seed 0).", "",
        "## Table I: held-out English (XQuAD-en test split)", "",
        f"The test split ({tests['base']['n']} questions, whole paragraphs) was cut before training and used for nothing else; "
        "GRPO-best was chosen on a separate validation split"
        + (f" (best validation F1 {best['eval/f1']:.3f} at step {best['step']})" if best else "") + ".", "",
        *table_one(tests), "", verdict(tests), "", *paired_table(tests),
        dynamics_summary(grpo_steps, cfg), "", *signal_table(run, grpo_steps, val),
        f"![checkpoints]({rel(pngs['checkpoints'])})", "",
        *selection_check(tests, val), *notes(run.parent, run.name),
        *optional_sections(cross_lines, rel(pngs["crosslingual"]), load(evals / "sampling-grpo-best.json"),
                           load(evals / "perplexity.json"), tests, names),
        "## Training dynamics", "", "Reward, KL to the reference, clip fraction and validation F1/EM against step "
        "(step 0 = after SFT).", "", f"![dynamics]({rel(pngs['dynamics'])})", "",
        "## Provenance", "", "Commands, in the order they ran (`<run>/commands.log`). A superseded command failed or was "
        "stopped and ran again later; the result file in the run dir is from the last run.", "", "```", commands, "```", "",
        "Training config (`<run>/config.yaml`):", "", "```yaml", cfg.strip(), "```", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out} and {', '.join(str(p) for p in pngs.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
