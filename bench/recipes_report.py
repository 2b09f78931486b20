"""docs/recipes.md from the recipe run dirs written by bench/recipes.py: tables, paired tests and figures.

Every number is read from <runs>/<run>/metrics.jsonl, summary.json, rs_sft traces and eval/*.json; the commands
that wrote them are copied from <runs>/commands.log; what a person noted about a recipe, <runs>/<recipe>-notes.md
(recipe: arithmetic, countdown, domain_qa, nlu), verbatim.

    python bench/recipes_report.py runs/recipes [--out docs/recipes.md]
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import (ci, claim, comparison, head, load, machine, notes, paired, row, save,  # noqa: E402
                          spread, subplots, verdict)
from common.metrics_log import phase_spans, read_records  # noqa: E402

# What each paper claims, the one place a report states it; the sections test it against the paired differences.
PAPERS = {
    "arithmetic": ("The SFT-vs-GRPO arithmetic paper's claim that GRPO generalises at least as well as SFT (GRPO best "
                   "- SFT best on the held-out problems)", None),
    "countdown": ("The multi-stage paper's claim that the stages raise exact solutions (grpo2 - base on the held-out "
                  "problems)", None),
    "nlu": ("The NLU paper's PPO > SFT on label tasks", 0.063),  # +6.3 points (its Table 9)
}


def wall_minutes(run: Path) -> tuple[float, float]:
    """(minutes from the run's first record to its last, minutes of training steps alone)."""
    recs = read_records(run / "metrics.jsonl")
    times = [r["time"] for r in recs if "time" in r]
    steps = sum(r.get("timing/step", 0.0) for r in recs if r.get("kind") == "step")
    return (max(times) - min(times)) / 60, steps / 60


def budget(run: Path) -> str:
    """What a run trained on, from its step records: SFT examples (steps x batch) or GRPO prompts x samples."""
    from common.config import load_config

    cfg = load_config(run / "config.yaml")
    steps = [r for r in read_records(run / "metrics.jsonl") if r.get("kind") == "step"]
    parts = []
    for name, phase in zip(cfg.train.phase_names(), cfg.train.phases):
        n = sum(1 for r in steps if r.get("phase") == name)
        if phase.kind in ("sft", "rs_sft"):
            parts.append(f"{name}: {n} steps x {phase.batch_size} = {n * phase.batch_size} examples")
        elif phase.kind == "dpo" and not phase.online:
            parts.append(f"{name}: {n} steps x {phase.batch_size} = {n * phase.batch_size} pairs")
        elif phase.kind in ("grpo", "ppo", "dpo"):
            p, g = phase.prompts_per_step or cfg.train.prompts_per_step, cfg.rollout_for(phase).group_size
            parts.append(f"{name}: {n} steps x {p} prompts x {g} samples = {n * p * g} samples")
    return "; ".join(parts)


def evals_of(runs: Path, run_names: list[str]) -> dict[str, dict]:
    return {path.stem: load(path) for name in run_names for path in sorted((runs / name / "eval").glob("*.json"))}


# ---- arithmetic ---------------------------------------------------------------------------------------------

def arithmetic(runs: Path, figs: dict) -> list[str]:
    names = ["arithmetic-sft", "arithmetic-grpo"]
    if not all((runs / n / "metrics.jsonl").is_file() for n in names):
        return ["(the arithmetic runs are not there yet)"]
    ev = evals_of(runs, names)
    lines = [f"Training budgets: {budget(runs / names[0])} (arithmetic-sft); {budget(runs / names[1])} "
             "(arithmetic-grpo).", "",
             *head("model", "test accuracy [95% CI]", "no integer in answer", "answer length (tokens)",
                   "training wall-clock (min; of it, steps)", "n")]
    walls = {n: wall_minutes(runs / n) for n in names}
    for key, label, run in (("test-base", "base (SmolLM2-135M-Instruct)", None),
                            ("test-sft-best", "SFT, best by validation", "arithmetic-sft"),
                            ("test-sft-final", "SFT, final", "arithmetic-sft"),
                            ("test-grpo-best", "GRPO, best by validation", "arithmetic-grpo"),
                            ("test-grpo-final", "GRPO, final", "arithmetic-grpo")):
        r = ev.get(key)
        if r is None:
            continue
        wall = f"{walls[run][0]:.1f} ({walls[run][1]:.1f})" if run else "-"
        lines.append(f"| {label} | {ci(r, 'accuracy')} | {r['unparsed']:.3f} | {r['len']:.1f} | {wall} | {r['n']} |")
    lines.append("")
    for a, b in (("test-base", "test-sft-best"), ("test-base", "test-grpo-best"), ("test-sft-best", "test-grpo-best")):
        if a in ev and b in ev:
            lines.append(f"- {comparison(ev[a], ev[b], 'accuracy', (a[5:], b[5:]))}")
    gsm = [(k, ev[k]) for k in ("gsm8k-base", "gsm8k-sft-best", "gsm8k-grpo-best") if k in ev]
    if gsm:
        lines += ["", f"GSM8K (the first {gsm[0][1]['n']} test problems, up to 256 new tokens, final-number match):", "",
                  *head("model", "GSM8K accuracy [95% CI]", "no number", "answer length")]
        lines += [f"| {k[6:]} | {ci(r, 'accuracy')} | {r['unparsed']:.3f} | {r['len']:.1f} |" for k, r in gsm]
    if all(k in ev for k in ("test-base", "test-sft-best", "test-grpo-best")):
        base, sft, grpo = ev["test-base"], ev["test-sft-best"], ev["test-grpo-best"]
        lines += ["", f"**Reading.** On held-out problems, SFT's best checkpoint ({sft['accuracy']:.3f}) is "
                  f"{verdict(paired(base, sft, 'accuracy'))} the base model and GRPO's ({grpo['accuracy']:.3f}) is "
                  f"{verdict(paired(base, grpo, 'accuracy'))} it. SFT trained {walls['arithmetic-sft'][0]:.0f} min, "
                  f"GRPO {walls['arithmetic-grpo'][0]:.0f} min (wall-clock of the whole run, evals included). "
                  f"{claim(PAPERS['arithmetic'][0], paired(sft, grpo, 'accuracy'), 'accuracy')}."]
    plot_learning_speed(runs, names, figs["arithmetic"])
    return lines + ["", f"![validation accuracy against wall-clock]({figs['arithmetic'].name})"]


def gradient_table(runs: Path, names: list[str]) -> list[str]:
    """Where each GRPO run's samples went, from its step records: groups with a signal (of those drawn) in the first
    and last third, groups kept, prompts drawn and samples generated per update, seconds per update."""
    lines = head("run", "groups with a signal, first third -> last third", "groups kept per update",
                 "prompts drawn per update", "samples per update", "s per update", "steps")
    for name in names:
        steps = [r for r in read_records(runs / name / "metrics.jsonl")
                 if r.get("kind") == "step" and "sampling/prompts_drawn" in r]
        if not steps:
            continue
        k = max(1, len(steps) // 3)
        sig = lambda rs: sum(r["sampling/signal_frac"] * r["sampling/prompts_drawn"] for r in rs) / sum(  # noqa: E731
            r["sampling/prompts_drawn"] for r in rs)
        mean = lambda key: statistics.fmean(r[key] for r in steps)  # noqa: E731
        lines.append(row(name, f"{sig(steps[:k]):.0%} -> {sig(steps[-k:]):.0%}", f"{mean('sampling/groups_kept'):.2f}",
                         f"{mean('sampling/prompts_drawn'):.2f}", f"{mean('sampling/samples_per_update'):.1f}",
                         f"{mean('timing/step'):.1f}", str(len(steps))))
    return lines


def arithmetic_rl(runs: Path, figs: dict) -> list[str]:
    """Issue 18's arithmetic targets: GRPO (dynamic sampling) from the base model >= base + 0.15, and SFT -> GRPO >=
    SFT, paired on the same test problems."""
    names = ["arithmetic-grpo-ds", "arithmetic-sft-grpo-ds"]
    present = [n for n in names if (runs / n / "metrics.jsonl").is_file()]
    if not present:
        return ["(the arithmetic dynamic-sampling runs are not there yet)"]
    ev = evals_of(runs, ["arithmetic-sft", *present])
    lines = ["Training budgets: " + "; ".join(f"{budget(runs / n)} ({n})" for n in present) + ".", "",
             *head("model", "test accuracy [95% CI]", "no integer in answer", "answer length (tokens)", "n")]
    for key, label in (("test-base", "base"), ("test-sft-best", "SFT, best"),
                       ("test-grpo-ds-best", "GRPO + dynamic sampling from base, best"),
                       ("test-sft-grpo-ds-best", "SFT -> GRPO + dynamic sampling, best")):
        if key in ev:
            r = ev[key]
            lines.append(f"| {label} | {ci(r, 'accuracy')} | {r['unparsed']:.3f} | {r['len']:.1f} | {r['n']} |")
    lines.append("")
    for a, b, target in (("test-base", "test-grpo-ds-best", " (target: >= +0.15)"),
                         ("test-sft-best", "test-sft-grpo-ds-best", " (target: CI above 0)"),
                         ("test-sft-best", "test-grpo-ds-best", "")):
        if a in ev and b in ev:
            lines.append(f"- {comparison(ev[a], ev[b], 'accuracy', (a[5:], b[5:]))}{target}")
    lines += ["", "Validation accuracy (greedy) by step, and per update the groups drawn that were all right / all "
              "wrong (no gradient):", ""]
    for n in present:
        recs = read_records(runs / n / "metrics.jsonl")
        val = ", ".join(f"{r['step']}: {r['eval/accuracy']:.3f}" for r in recs if r.get("kind") == "eval")
        steps = [r for r in recs if r.get("kind") == "step" and "sampling/prompts_drawn" in r]
        if steps:
            mean = lambda key: statistics.fmean(r[key] for r in steps)  # noqa: E731
            short = sum(r.get("sampling/short", 0.0) for r in steps)
            lines.append(f"- {n}: {val}; all right {mean('sampling/all_right'):.1f}, all wrong "
                         f"{mean('sampling/all_wrong'):.1f} of {mean('sampling/prompts_drawn'):.1f} drawn; "
                         f"{short:.0f} of {len(steps)} steps ran out of rounds before 4 groups with a signal.")
    gsm = [(k, ev[k]) for k in ("gsm8k-grpo-ds-best", "gsm8k-sft-grpo-ds-best") if k in ev]
    if gsm:
        lines += ["", f"GSM8K transfer (the first {gsm[0][1]['n']} test problems, up to 256 new tokens):", "",
                  *head("model", "GSM8K accuracy [95% CI]", "no number", "answer length")]
        lines += [f"| {k[6:]} | {ci(r, 'accuracy')} | {r['unparsed']:.3f} | {r['len']:.1f} |" for k, r in gsm]
    return lines + ["", "Where the samples went:", "", *gradient_table(runs, present)]


MLQA_ARMS = (("mlqa-grpo", "test-grpo-best", "SFT -> GRPO, best"),
             ("mlqa-grpo-ds", "test-grpo-ds-best", "SFT -> GRPO + dynamic sampling, best"),
             ("mlqa-dpo", "test-dpo-best", "SFT -> DPO (online pairs), best"),
             ("mlqa-grpo-rppb", "test-grpo-rppb-best", "SFT -> GRPO, REINFORCE++-baseline advantages, best"),
             ("mlqa-grpo-z", "test-grpo-z-best", "SFT -> GRPO, today's z-score advantages, best"),
             ("mlqa-grpo-t1k8", "test-grpo-t1k8-best", "SFT -> GRPO, T 1.0 and K=8 on 8 questions a step, best"))


def mlqa_rl(runs: Path, figs: dict) -> list[str]:
    """Issue 18's MLQA target: SFT -> GRPO >= SFT + 0.05 F1 on the held-out test split (paired CI above 0), today's
    GRPO beside dynamic sampling and DPO from the same SFT model, with the wall-clock each took."""
    return mlqa_arms(runs, MLQA_ARMS[:3], [("test-grpo-best", "test-grpo-ds-best"), ("test-grpo-best", "test-dpo-best")])


def mlqa_estimator(runs: Path, figs: dict) -> list[str]:
    """Issue 18's MLQA with another advantage estimator (REINFORCE++-baseline) and with more exploration (T 1.0,
    K=8, the same samples) beside today's z-score GRPO, all from their own SFT model, each against it and against
    today's GRPO."""
    return mlqa_arms(runs, MLQA_ARMS[3:], [(f"test-grpo-z-{c}", f"test-grpo-{a}-{c}") for c in ("best", "final")
                                           for a in ("rppb", "t1k8")])


def mlqa_arms(runs: Path, arms: tuple, pairs: list[tuple[str, str]]) -> list[str]:
    """The MLQA arms that finished, each tested against the SFT model they all start from and the `pairs` of arms
    against each other (paired, the same 500 questions); validation curves and where the samples went."""
    started = [n for n, _, _ in arms if (runs / n / "metrics.jsonl").is_file()]
    names = [n for n in started if (load(runs / n / "summary.json") or {}).get("finished")]
    if not names:
        return ["(the MLQA GRPO runs are not there yet)"]
    unfinished = [n for n in started if n not in names]
    ev = evals_of(runs, ["mlqa-sft", *names])
    walls = {n: wall_minutes(runs / n) for n in names}
    lines = ["Training budgets: " + "; ".join(f"{budget(runs / n)} ({n})" for n in names) + ". All start from "
             "the same SFT model (`mlqa-sft`, one epoch) with the same seed; each run's best checkpoint is chosen by "
             "F1 on the 200 validation questions, then tested once on the 500 test questions.", "",
             *head("model", "F1 [95% CI]", "EM [95% CI]", "answer length (tokens)",
                   "GRPO wall-clock (min; of it, steps)", "n")]
    finals = [(k.replace("-best", "-final"), label.replace(", best", ", final"), n) for n, k, label in arms]
    for key, label, run in (("test-sft", "SFT", None), *((k, label, n) for n, k, label in arms), *finals):
        if key in ev:
            r = ev[key]
            wall = f"{walls[run][0]:.1f} ({walls[run][1]:.1f})" if run in walls else "-"
            lines.append(f"| {label} | {ci(r, 'f1')} | {ci(r, 'em')} | {r['len']:.1f} | {wall} | {r['n']} |")
    lines.append("")
    for b in [k for _, k, _ in arms] + [k for k, _, _ in finals]:
        if "test-sft" in ev and b in ev:
            target = " (issue 18's target for SFT -> GRPO: >= +0.05, CI above 0)" if "grpo" in b else ""
            lines.append(f"- {comparison(ev['test-sft'], ev[b], 'f1', ('sft', b[5:]))}{target}")
    for a, b in pairs:
        if a in ev and b in ev:
            lines.append(f"- {comparison(ev[a], ev[b], 'f1', (a[5:], b[5:]))}")
    lines += ["", *head("run", "validation F1 at the SFT start", "best (step)", "last", "KL at the end")]
    for n in names:
        recs = read_records(runs / n / "metrics.jsonl")
        evs = [r for r in recs if r.get("kind") == "eval"]
        steps = [r for r in recs if r.get("kind") == "step"]
        if evs:
            best = max(evs, key=lambda r: r["eval/f1"])
            kl = steps[-1].get("learner/kl") if steps else None  # a DPO step logs no sampled-token KL
            lines.append(f"| {n} | {evs[0]['eval/f1']:.3f} | {best['eval/f1']:.3f} ({best['step']}) | "
                         f"{evs[-1]['eval/f1']:.3f} | {'-' if kl is None else f'{kl:.3f}'} |")
    lines += [f"\n(not reported: {', '.join(unfinished)}, started and not finished)"] if unfinished else []
    return lines + ["", "Where the samples went (DPO: a group with a signal gives one pair):", "",
                    *gradient_table(runs, names)]


def qnli_rl(runs: Path, figs: dict) -> list[str]:
    """Issue 18's QNLI: SFT -> GRPO (LoRA) with dynamic sampling against SFT, paired on the same test questions."""
    name = "qnli-grpo-ds"
    if not (runs / name / "metrics.jsonl").is_file():
        return ["(the QNLI dynamic-sampling run is not there yet)"]
    ev = evals_of(runs, ["qnli-sft", name])
    lines = [f"Training budget: {budget(runs / name)}; from the SFT model (`qnli-sft`, best) with fresh LoRA adapters.",
             "", *head("model", "accuracy [95% CI]", "wrong format", "answers 'entailment'", "n")]
    for key, label in (("test-sft", "SFT"), ("test-grpo-ds-best", "SFT -> GRPO + dynamic sampling, best"),
                       ("test-grpo-ds-final", "SFT -> GRPO + dynamic sampling, final")):
        if key in ev:
            r = ev[key]
            said = [q.get("prediction", "") for q in r["per_question"]]
            ent = sum("not_entailment" not in s and "entailment" in s for s in said) / max(1, len(said))
            lines.append(f"| {label} | {ci(r, 'accuracy')} | {r['wrong_format']:.3f} | {ent:.2f} | {r['n']} |")
    lines.append("")
    for b in ("test-grpo-ds-best", "test-grpo-ds-final"):
        if "test-sft" in ev and b in ev:
            lines.append(f"- {comparison(ev['test-sft'], ev[b], 'accuracy', ('sft', b[5:]))}")
    summary = load(runs / name / "summary.json") or {}
    lines += ["", f"The best checkpoint by validation accuracy is step {summary.get('best_step', '?')} "
              f"({summary.get('best_phase', '?')}; step 0 is the SFT start).", "", "Where the samples went:", "",
              *gradient_table(runs, [name])]
    return lines


def plot_learning_speed(runs: Path, names: list[str], png: Path) -> None:
    fig, axes = subplots(1, 2, figsize=(11, 4))
    for name in names:
        recs = read_records(runs / name / "metrics.jsonl")
        t0 = min(r["time"] for r in recs if "time" in r)
        evals = [r for r in recs if r.get("kind") == "eval"]
        axes[0].plot([(r["time"] - t0) / 60 for r in evals], [r["eval/accuracy"] for r in evals], "o-", label=name)
        axes[1].plot([r["step"] for r in evals], [r["eval/accuracy"] for r in evals], "o-", label=name)
    axes[0].set_xlabel("wall-clock minutes since the run started")
    axes[1].set_xlabel("optimizer steps (SFT) / rollout steps (GRPO)")
    for a in axes:
        a.set_ylabel("validation accuracy (greedy)")
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle("Arithmetic: SFT vs GRPO, validation accuracy (greedy)")
    save(fig, png)


# ---- countdown ----------------------------------------------------------------------------------------------

def countdown(runs: Path, figs: dict, name: str = "countdown-grpo-rs-grpo", fig: str = "countdown") -> list[str]:
    run = runs / name
    if not (run / "metrics.jsonl").is_file():
        return ["(the Countdown run is not there yet)"]
    recs = read_records(run / "metrics.jsonl")
    evals = [r for r in recs if r.get("kind") == "eval"]
    n_val = next((r["eval/n"] for r in evals if "eval/n" in r), "?")
    lines = [f"Training budget: {budget(run)}.", "",
             f"Validation ({n_val} problems, greedy) through the stages, as the paper's Table 1 lays them out:", "",
             *head("step", "stage", "accuracy (exact)", "format rate", "valid expression", "mean reward")]
    lines += [f"| {r['step']} | {r['phase']} | {r['eval/accuracy']:.3f} | {r['eval/format']:.3f} | "
              f"{r['eval/valid']:.3f} | {r['eval/reward']:.3f} |" for r in evals]
    kept = next((r["data"] for r in recs if "rs_sft/kept" in r.get("data", {})), None)
    if kept:
        from common.config import load_config

        cfg = load_config(run / "config.yaml")
        threshold = next(p.threshold for p in cfg.train.phases if p.kind == "rs_sft")
        lines += ["", f"RS-SFT sampled {kept['rs_sft/sampled']} completions for {kept['rs_sft/prompts']} training "
                  f"problems and kept **{kept['rs_sft/kept']}** distinct finished completions with reward >= "
                  f"{threshold} ({kept['rs_sft/prompts_with_kept']} problems had at least one); mean sampled reward "
                  f"{kept['rs_sft/reward_mean']:.3f}."]
    ev = evals_of(runs, [name])
    from common.config import load_config

    stages = ["base", *load_config(run / "config.yaml").train.phase_names()]
    tests = [(k, ev[f"test-{k}"]) for k in (*stages, "best") if f"test-{k}" in ev]
    if tests:
        lines += ["", f"Held-out test split ({tests[0][1]['n']} problems never trained on), greedy:", "",
                  *head("checkpoint", "accuracy [95% CI]", "format rate [95% CI]", "valid", "answer length")]
        lines += [f"| {k} | {ci(r, 'accuracy')} | {ci(r, 'format')} | {r['valid']:.3f} | {r['len']:.1f} |" for k, r in tests]
        if "test-base" in ev and "test-grpo2" in ev:
            lines += ["", f"- {comparison(ev['test-base'], ev['test-grpo2'], 'format', ('base', 'grpo2'))}",
                      f"- {comparison(ev['test-base'], ev['test-grpo2'], 'accuracy', ('base', 'grpo2'))}"]
        done = [k for k in stages if f"test-{k}" in ev]
        if len(done) > 2:  # each stage against the one before it, on the same problems
            lines += ["", "Each stage against the one before it (exact accuracy, paired on the same test problems):",
                      "", *[f"- {comparison(ev[f'test-{a}'], ev[f'test-{b}'], 'accuracy', (a, b))}"
                            for a, b in zip(done, done[1:])]]
    if evals:
        test = paired(ev["test-base"], ev["test-grpo2"], "accuracy") if "test-base" in ev and "test-grpo2" in ev else None
        rs_steps = sum(1 for r in recs if r.get("kind") == "step" and r.get("phase") == "rs_sft")
        lines += ["", stages_reading(evals, rs_steps, load(run / "summary.json") or {}, test)]
    plot_countdown(recs, figs[fig])
    return lines + ["", f"![Countdown through the stages]({figs[fig].name})"]


def countdown_easy(runs: Path, figs: dict) -> list[str]:
    """Issue 18's Countdown: the easy level after a format cold start; each stage above the one before, the last
    >= 10% exact."""
    return countdown(runs, figs, "countdown-easy", "countdown-easy")


def stages_reading(evals: list[dict], rs_steps: int, summary: dict, test: tuple | None) -> str:
    """What the stages did on validation (exact accuracy, format, valid expressions), RS-SFT's steps, the checkpoint
    validation chose, and the paper's claim against the test split (test: paired grpo2 - base, or None)."""
    first, last = evals[0], evals[-1]
    top = max(evals, key=lambda r: r["eval/accuracy"])  # ties keep the earlier, as the best checkpoint does
    text = (f"**Reading.** On validation, exact accuracy {first['eval/accuracy']:.3f} at step {first['step']} -> "
            f"{last['eval/accuracy']:.3f} at step {last['step']} (highest {top['eval/accuracy']:.3f}, step {top['step']}); "
            f"format rate {first['eval/format']:.2f} -> {last['eval/format']:.2f}; valid expressions "
            f"{first['eval/valid']:.3f} -> {last['eval/valid']:.3f}. The last greedy answer: "
            f"`{last.get('eval/sample', '')[:60].strip()}`. RS-SFT took {rs_steps} optimizer steps. The best checkpoint "
            f"by validation accuracy is step {summary.get('best_step', '?')} ({summary.get('best_phase', '?')}).")
    return text + (f" {claim(PAPERS['countdown'][0], test, 'accuracy')}." if test else "")


def plot_countdown(recs: list[dict], png: Path) -> None:
    steps = [r for r in recs if r.get("kind") == "step"]
    grpo = [r for r in steps if "reward/countdown/no_format" in r]
    evals = [r for r in recs if r.get("kind") == "eval"]
    fig, axes = subplots(1, 2, figsize=(12, 4))
    axes[0].plot([r["step"] for r in grpo], [1 - r["reward/countdown/no_format"] for r in grpo], ".-", lw=0.8,
                 label="format rate (sampled, per step)")
    axes[0].plot([r["step"] for r in grpo], [r["reward/countdown/correct"] for r in grpo], ".-", lw=0.8,
                 label="exact (sampled, per step)")
    for key, style in (("eval/format", "s--"), ("eval/accuracy", "o-")):
        axes[1].plot([r["step"] for r in evals], [r[key] for r in evals], style, label=key.split("/")[1] + " (greedy)")
    for a in axes:
        for name, first, last in phase_spans(steps):
            a.axvspan(first - 0.5, last + 0.5, alpha=0.08, color={"rs_sft": "tab:green"}.get(name, "tab:blue"))
            a.text((first + last) / 2, 1.01, name, transform=a.get_xaxis_transform(), ha="center", fontsize=8)
        a.set_xlabel("step (GRPO rollout steps; RS-SFT optimizer steps)")
        a.set_ylim(-0.02, 1.02)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    axes[0].set_title("training samples")
    axes[1].set_title("validation, greedy")
    save(fig, png)


# ---- domain QA ----------------------------------------------------------------------------------------------

def domain_qa(runs: Path, figs: dict) -> list[str]:
    name = "domain-qa-sft-grpo"
    if not (runs / name / "metrics.jsonl").is_file():
        return ["(the domain-QA run is not there yet)"]
    ev = evals_of(runs, [name])
    rows = [(k, ev[f"test-{k}"]) for k in ("base", "sft", "best", "grpo-final") if f"test-{k}" in ev]
    val = [r for r in read_records(runs / name / "metrics.jsonl") if r.get("kind") == "eval"]
    during = [f"Validation during training ({val[0]['eval/n'] if val else '?'} questions; greedy, and 3 samples per "
              "question for consistency):", "", *head("step", "stage", "accuracy (sim >= 0.7)", "mean similarity",
                                                     "repetition rate", "answer length", "consistency")]
    during += [f"| {r['step']} | {r['phase']} | {r['eval/accuracy']:.3f} | {r['eval/similarity']:.3f} | "
             f"{r['eval/repetition_rate']:.3f} | {r['eval/len']:.1f} | {r.get('eval/consistency', float('nan')):.3f} |"
             for r in val]
    if not rows:
        return [f"Training budget: {budget(runs / name)}.", "", *during, "",
                "(the held-out test evaluations of this run are not there yet)"]
    lines = [f"Training budget: {budget(runs / name)}.", "", *during, "",
             f"Held-out test questions ({rows[0][1]['n'] if rows else '?'}, paragraphs never trained on); greedy "
             "answers, and 3 sampled answers per question (T 0.8, top-p 0.9) for consistency:", "",
             *head("model", "accuracy (sim >= 0.7) [95% CI]", "mean similarity", "repetition rate",
                   "answer length (tokens)", "consistency of 3 samples", "seconds / answer")]
    for k, r in rows:
        s = r.get("sampling", {})
        lines.append(f"| {k} | {ci(r, 'accuracy')} | {r['similarity']:.3f} | {r['repetition_rate']:.3f} | "
                     f"{r['len']:.1f} | {s.get('consistency', float('nan')):.3f} | {r['seconds'] / r['n']:.2f} |")
    if "test-base" in ev and "test-best" in ev:
        lines += ["", f"- {comparison(ev['test-base'], ev['test-best'], 'accuracy', ('base', 'best'))}",
                  f"- {comparison(ev['test-base'], ev['test-best'], 'similarity', ('base', 'best'))}"]
    if "test-sft" in ev and "test-best" in ev:
        lines.append(f"- {comparison(ev['test-sft'], ev['test-best'], 'accuracy', ('sft', 'best'))}")
    if "test-base" in ev and "test-best" in ev:
        a, b, best = ev["test-base"], ev["test-best"], (load(runs / name / "summary.json") or {}).get("best_phase", "?")
        lines += ["", f"**Reading.** After SFT -> GRPO the best checkpoint's similarity accuracy is "
                  f"{verdict(paired(a, b, 'accuracy'))} the base model's ({a['accuracy']:.3f} -> {b['accuracy']:.3f}); "
                  f"answers go from {a['len']:.0f} to {b['len']:.0f} tokens and the repetition rate from "
                  f"{a['repetition_rate']:.3f} to {b['repetition_rate']:.3f}. The best checkpoint is {best}'s (chosen on "
                  "the validation split)."]
    return lines


# ---- NLU: QNLI ----------------------------------------------------------------------------------------------

def step_seconds(run: Path) -> str:
    """Median [min, max] seconds of a run's training steps."""
    t = sorted(r["timing/step"] for r in read_records(run / "metrics.jsonl") if r.get("kind") == "step"
               and "timing/step" in r)
    return f"{statistics.median(t):.1f} [{t[0]:.1f}, {t[-1]:.1f}]" if t else "-"


def peak_gib(run: Path, group: str) -> str:
    summary = load(run / "summary.json") or {}
    vals = [v for v in (summary.get("peak_rss_gib") or {}).get(group, []) if v is not None]
    return f"{max(vals):.2f}" if vals else "-"


def nlu(runs: Path) -> list[str]:
    names = {m: f"qnli-{m}" for m in ("sft", "grpo-lora", "grpo-full", "ppo-lora", "ppo-rm")}
    if not (runs / "qnli-sft" / "metrics.jsonl").is_file():
        return ["(the QNLI runs are not there yet: `python bench/recipes.py --only nlu`)"]
    ev = evals_of(runs, list(names.values()))
    start = (f" Zero-shot, the base model's answers miss the format on {ev['test-zero-shot']['wrong_format']:.0%} of the "
             "test questions." if "test-zero-shot" in ev else "")
    lines = ["Held-out QNLI built from XQuAD-en (paragraphs never trained on), greedy, the NLU paper's Table 9 shape. "
             "The RL runs start from the SFT model with fresh LoRA adapters (KL reference: the SFT model): an answer "
             "outside the `<Judgement>` format earns -1, and a group whose answers all earn the same carries no "
             f"signal.{start} Each RL row is that run's best checkpoint by validation accuracy, which may be its "
             "starting point (step 0, the SFT model).",
             "", *head("method", "accuracy [95% CI]", "wrong format", "s / training step, median [min, max]",
                       "checkpoint at step", "n")]
    rows = [("zero-shot (base)", "test-zero-shot", None), ("few-shot, k=4 (base)", "test-few-shot-4", None),
            ("SFT (LoRA)", "test-sft", "sft"), ("SFT -> GRPO (LoRA)", "test-grpo-lora", "grpo-lora"),
            ("SFT -> GRPO (full fine-tuning)", "test-grpo-full", "grpo-full"),
            ("SFT -> PPO (LoRA, rule reward)", "test-ppo-lora", "ppo-lora"),
            ("SFT -> PPO (LoRA, reward model)", "test-ppo-rm", "ppo-rm"),
            ("SFT -> GRPO (LoRA), final", "test-grpo-lora-final", "grpo-lora"),
            ("SFT -> PPO (LoRA, rule reward), final", "test-ppo-lora-final", "ppo-lora"),
            ("SFT -> PPO (LoRA, reward model), final", "test-ppo-rm-final", "ppo-rm")]
    for label, key, m in rows:
        if key in ev:
            r, run = ev[key], (runs / names[m] if m else None)
            summary = (load(run / "summary.json") or {}) if run else {}
            best = summary.get("steps", "-") if key.endswith("-final") else summary.get("best_step", "-")
            lines.append(f"| {label} | {ci(r, 'accuracy')} | {r['wrong_format']:.3f} | "
                         f"{step_seconds(run) if run else '-'} | {best} | {r['n']} |")
    mem = [(label, runs / names[m]) for label, key, m in rows
           if m and not key.endswith("-final") and (runs / names[m] / "summary.json").is_file()]
    if mem:
        groups = ("learner", "reference", "critic", "rollout", "reward", "driver")
        lines += ["", "Peak resident memory of each actor (GiB, VmHWM read by the actor itself at the end of the run; '-' "
                  "where the run has no such actor: with LoRA the learner serves the reference with its adapters off):",
                  "", *head("run", "steps", "s / step", *groups)]
        for label, run in mem:
            n = sum(1 for r in read_records(run / "metrics.jsonl") if r.get("kind") == "step")
            lines.append(row(label, n, step_seconds(run), *(peak_gib(run, g) for g in groups)))
    lines.append("")
    for a, b in (("test-zero-shot", "test-few-shot-4"), ("test-zero-shot", "test-sft"), ("test-sft", "test-grpo-lora"),
                 ("test-sft", "test-ppo-lora"), ("test-grpo-lora", "test-ppo-lora"), ("test-ppo-lora", "test-ppo-rm"),
                 ("test-sft", "test-grpo-lora-final"), ("test-sft", "test-ppo-lora-final"),
                 ("test-sft", "test-ppo-rm-final"), ("test-grpo-lora-final", "test-ppo-lora-final")):
        if a in ev and b in ev:
            lines.append(f"- {comparison(ev[a], ev[b], 'accuracy', (a[5:], b[5:]))}")
    if "test-sft" in ev and "test-zero-shot" in ev:
        rl = ("grpo-lora", "ppo-lora", "ppo-rm")
        lines += ["", nlu_reading(ev, {m: (load(runs / names[m] / "summary.json") or {}).get("best_step") for m in rl})]
    rm = load(runs / "rm-qnli" / "rm_report.json")
    if rm:
        h = rm["history"][-1]
        held = (f"held-out pair accuracy {h['held_out_rm_accuracy']:.3f} on {rm['held_out_pairs']} pairs"
                if rm["held_out_pairs"] else "no held-out pair: none of the held-out prompts' samples disagreed")
        lines += ["", f"Reward model (MiniLM backbone, Bradley-Terry): {rm['pairs']} training pairs from {rm['prompts']} "
                  f"prompts x {rm['samples']} samples of the base policy (2-shot prompts, T 1.0), ordered by the label "
                  f"reward ({rm['pairs'] / rm['prompts']:.2f} pairs a prompt: a pair needs two samples of a prompt that "
                  f"disagree); training pair accuracy {rm['train']['rm_accuracy']:.3f}; {held}; "
                  f"{rm['seconds'] / 60:.0f} min to sample and train."]
    langs = sorted({k.split("-", 1)[0] for k in ev if not k.startswith("test-")})
    if langs:
        models = [(m, label) for m, label in (("base", "base"), ("sft", "SFT"), ("grpo-lora", "GRPO"),
                                              ("ppo-lora", "PPO")) if any(f"{lang}-{m}" in ev for lang in langs)]
        n = {ev[k]["n"] for k in ev if not k.startswith("test-")}
        lines += ["", "Zero-shot transfer of the English-trained models to QNLI built the same way from the other "
                  f"XQuAD languages (the same held-out paragraphs, translated; n = {', '.join(map(str, sorted(n)))} "
                  "questions a language):", "",
                  *head("lang", *(label for _, label in models))]
        for lang in langs:
            cells = [ci(ev[f"{lang}-{m}"], "accuracy") if f"{lang}-{m}" in ev else "-" for m, _ in models]
            lines.append(row(lang, *cells))
    return lines


def label_shares(r: dict) -> str:
    """The share of each label among an eval's greedy answers ('unformatted' where none is given)."""
    found = [m.group(1) if (m := re.search(r"<Judgement>\s*([a-z_]+)", q["prediction"])) else "unformatted"
             for q in r["per_question"]]
    return ", ".join(f"{k} {found.count(k) / len(found):.2f}" for k in sorted(set(found)))


def nlu_reading(ev: dict[str, dict], best_steps: dict[str, int | None]) -> str:
    """What the models answer, what SFT did to the format, which RL runs never left their start (best checkpoint at
    step 0), and the paper's PPO > SFT against the paired differences (best and final checkpoints)."""
    said = "; ".join(f"{k[5:]}: {label_shares(ev[k])}" for k in ("test-sft", "test-grpo-lora-final",
                                                                "test-ppo-lora-final", "test-ppo-rm-final") if k in ev)
    zero, sft = ev["test-zero-shot"], ev["test-sft"]
    fmt = "lowers" if sft["wrong_format"] < zero["wrong_format"] else "does not lower"
    stuck = [m for m, step in best_steps.items() if step == 0]
    text = (f"**Reading.** The test labels are balanced (tasks/labels.py), so 0.5 is chance. What the models answer "
            f"(share of each label among the greedy answers): {said}. SFT {fmt} the wrong-format rate "
            f"({zero['wrong_format']:.3f} -> {sft['wrong_format']:.3f}); its accuracy is {sft['accuracy']:.3f}. "
            + (f"No RL run ({', '.join(stuck)}) beat its starting point on validation, so their best checkpoints are "
               "the SFT model; their final checkpoints are the rows marked final." if len(stuck) == len(best_steps)
               else f"RL runs whose best checkpoint is their start (the SFT model): {', '.join(stuck) or 'none'}."))
    paper, size = PAPERS["nlu"]
    for key in ("test-ppo-lora", "test-ppo-lora-final"):
        if key in ev:
            text += f" {claim(f'{paper} ({key[5:]} - sft)', paired(sft, ev[key], 'accuracy'), 'accuracy', size)}."
    return text


# ---- search (issue 28) ------------------------------------------------------------------------------------------

SEARCH_ARMS = (("search-none", "no context (the question alone)"),
               ("search-rag", "top-3 passages of the dense index in the prompt (RAG)"),
               ("search-tool", "the policy searches the index itself (multi-turn, Search-R1)"))


def search(runs: Path, figs: dict) -> list[str]:
    """Issue 28: XQuAD-en answered with no context, with the top-3 retrieved passages in the prompt, and by a policy
    that calls the search tool itself, each SFT -> GRPO at one budget and seed from the embedded model, tested on the
    same 500 questions (paired): F1, tool calls per answer, the share of answers whose gold paragraph was retrieved,
    turns, tokens, and seconds per GRPO step."""
    names = [n for n, _ in SEARCH_ARMS if (load(runs / n / "summary.json") or {}).get("finished")]
    if not names:
        return ["(the search runs are not there yet)"]
    label = dict(SEARCH_ARMS)
    lines = ["Training budget, every arm: " + budget(runs / names[0]) + ". From the embedded model, the same seed and "
             "splits; the SFT targets are the gold answers (the search arm: gold search traces, `<search>question"
             "</search>`, the tool's real observation, `<answer>span</answer>`, observations masked out of the loss, "
             "since the 135M model never calls the tool on its own); best checkpoint by F1 on 200 validation "
             "questions; every checkpoint tested once on the same 500 test questions.", "",
             *head("arm", "checkpoint", "F1 [95% CI]", "EM", "tool calls per answer", "gold paragraph retrieved",
                   "policy turns", "completion tokens (policy)", "n")]
    ev = {n: evals_of(runs, [n]) for n in names}
    for n in names:
        for key, what in (("test-base", "base model"), ("test-sft", "SFT"), ("test-best", "SFT -> GRPO, best"),
                          ("test-last", "SFT -> GRPO, final")):
            r = ev[n].get(key)
            if r is None:
                continue
            get = lambda k, fmt="{:.2f}": fmt.format(r[k]) if k in r else "-"  # noqa: E731
            tokens = f"{r['completion_tokens']:.0f} ({r['policy_tokens']:.0f})" if "completion_tokens" in r \
                else f"{r['len']:.0f}"
            lines.append(row(label[n], what, ci(r, "f1"), f"{r['em']:.3f}", get("tool_calls"),
                             get("gold_retrieved", "{:.3f}"), get("turns"), tokens, r["n"]))
    lines.append("")
    best = {n: ev[n]["test-best"] for n in names if "test-best" in ev[n]}
    for a, b in (("search-none", "search-tool"), ("search-rag", "search-tool"), ("search-none", "search-rag")):
        if a in best and b in best:
            lines.append(f"- {comparison(best[a], best[b], 'f1', (a, b))}")
    for n in names:
        for key, what in (("test-best", "best"), ("test-last", "final")):
            if "test-sft" in ev[n] and key in ev[n]:
                lines.append(f"- {comparison(ev[n]['test-sft'], ev[n][key], 'f1', (n + ' SFT', n + ' ' + what))}")
    lines += ["", "Seconds per GRPO step: 3 steps of each arm from its SFT model, run apart on a quiet machine "
              "(`search-<arm>-time`), median [min, max]; the other columns are means over the training run's GRPO steps.",
              "", *head("arm", "s per GRPO step", "of it generate / learn (median)", "tool calls per sample",
                        "observation tokens per sample", "learner tokens per sample",
                        "validation F1: SFT end -> best (step)")]
    for n in names:
        recs = read_records(runs / n / "metrics.jsonl")
        steps = [r for r in recs if r.get("kind") == "step" and r.get("phase") == "grpo"]
        evs = [r for r in recs if r.get("kind") == "eval"]
        if not steps:
            continue
        mean = lambda k: statistics.fmean(r.get(k, 0.0) for r in steps)  # noqa: E731
        timed = [r for r in read_records(runs / f"{n}-time" / "metrics.jsonl") if r.get("kind") == "step"] \
            if (runs / f"{n}-time" / "metrics.jsonl").is_file() else []
        med = lambda k: statistics.median(r.get(k, 0.0) for r in timed)  # noqa: E731
        seconds = (spread([r["timing/step"] for r in timed], "{:.1f}"), f"{med('timing/generate'):.1f} / "
                   f"{med('timing/learn'):.1f}") if timed else ("not measured apart", "-")
        sft_end = next((r for r in evs if r.get("phase") == "sft"), None)
        top = max(evs, key=lambda r: r.get("eval/f1", -1.0)) if evs else None
        lines.append(row(label[n], *seconds, f"{mean('tools/calls_per_sample'):.2f}",
                         f"{mean('rollout/observation_tokens'):.0f}",
                         f"{mean('learner/tokens_forward') / mean('sampling/samples_per_update'):.0f}",
                         f"{sft_end['eval/f1']:.3f} -> {top['eval/f1']:.3f} ({top['step']})" if sft_end and top else "-"))
    return lines + ["", "Where the samples went:", "", *gradient_table(runs, names)]


# ---- the document -------------------------------------------------------------------------------------------

HOW = """| recipe | command | reproduces |
|---|---|---|
| MLQA SFT -> GRPO | `python jobs/grpo_mlqa.py --config jobs/configs/xquad_en_sft_grpo.yaml --local` | the MLQA paper: SFT then GRPO on extractive QA, reward 0.7 F1 + 0.3 EM - length penalty, K=4, T 0.8, top-p 0.9, clip 0.2, beta 0.04, lr 1e-5; results in [results.md](results.md) |
| arithmetic SFT | `python jobs/train.py --config jobs/configs/arithmetic_sft.yaml --local` | the SFT-vs-GRPO arithmetic paper, SFT side: lr 2e-5, batch 2, 3 epochs |
| arithmetic GRPO | `python jobs/train.py --config jobs/configs/arithmetic_grpo.yaml --local` | the same paper, GRPO side: lr 5e-6, 2 prompts x group 4, KL 0.05 (squared log-ratio), T 0.7, top-p 0.9, 100 steps, eval every 10, mean-only advantages |
| Countdown GRPO -> RS-SFT -> GRPO | `python jobs/train.py --config jobs/configs/countdown_grpo_rs_grpo.yaml --local` | the multi-stage paper: GRPO, SFT on the policy's own correct traces, GRPO again; clip 0.25 |
| domain QA SFT -> GRPO | `python jobs/train.py --config jobs/configs/domain_qa_sft_grpo.yaml --local` | the domain-QA system: MiniLM similarity reward - repetition penalty; similarity accuracy, repetition, length, consistency |
| XQuAD-en with a search tool | `python jobs/train.py --config jobs/configs/xquad_en_search_grpo.yaml --local` (with an `sft` phase first, as `bench/recipes.py --only search` runs it) | Search-R1: the policy writes `<search>query</search>`, the dense index's top-3 passages come back in `<information>`, reward = the MLQA paper's QA reward on the final `<answer>` |
| QNLI SFT / GRPO / PPO, LoRA | `python jobs/train.py --config jobs/configs/qnli_ppo_lora.yaml --local` (or `qnli_sft`, `qnli_grpo_lora`) | the NLU paper: PPO with a critic and LoRA rank 16 on label tasks, against SFT, GRPO and zero/few-shot; a Bradley-Terry reward model (`jobs/reward_model.py`) for PPO-RM |

Every preset also runs under `ray job submit` and with `--inprocess`; `jobs/eval.py --run <run dir> --split test`
evaluates any checkpoint of any recipe on its held-out split. `tests/jobs/test_recipes.py` runs each preset for 2
steps a phase on local Ray with vLLM and the embedded model."""


def previous_sections(out: Path) -> dict[str, str]:
    """The "## " sections of an earlier report, by heading."""
    if not out.is_file():
        return {}
    parts = ("\n" + out.read_text()).split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1].strip("\n") for part in parts}


MEASURED_ON = "Measured on:"
SAMPLES_SUMMARY = "Where the samples went, every recipe"
GRADIENT_HEAD = "| run | groups with a signal, first third -> last third |"


def placeholder(section: list[str]) -> bool:
    """A section that is only its "(the ... runs are not there yet)" line."""
    return len([x for x in section if x.strip()]) == 1 and section[0].startswith("(")


def samples_summary(body: list[str]) -> list[str]:
    """One table of every section's "where the samples went" rows (issue 18's table across recipes), read from the
    sections themselves, so it says what they say, with the machine each was measured on (seconds per update are
    comparable within a machine only)."""
    rows, machine_of, i = [], "?", 0
    while i < len(body):
        line = body[i]
        if line.startswith("## "):
            machine_of = "?"
        elif line.startswith(MEASURED_ON):
            machine_of = line[len(MEASURED_ON):].strip().rstrip(".")
        elif line.startswith(GRADIENT_HEAD):
            i += 2  # the header and its |---| line
            while i < len(body) and body[i].startswith("| "):
                rows.append(f"{body[i]} {machine_of} |")
                i += 1
            continue
        i += 1
    if not rows:
        return []
    return [f"## {SAMPLES_SUMMARY}", "", "The rows of every section's table above, in one place: of the groups drawn, "
            "the share whose K rewards differ (a gradient) early and late in the run; with dynamic sampling the "
            "groups kept per update are those with a signal and the prompts drawn per update what it took to find "
            "them (without it, the two are the batch).", "",
            *head("run", "groups with a signal, first third -> last third", "groups kept per update",
                  "prompts drawn per update", "samples per update", "s per update", "steps", "measured on"),
            *rows, ""]


def earlier_machine_of(out: Path) -> str | None:
    """The machine an earlier report's header names (reports before per-section labels had one for all)."""
    m = re.search(r"Machine: ([^;]+?)(?:;|\. Policy:)", out.read_text()) if out.is_file() else None
    return m.group(1) if m else None


def reasoning_gym(runs: Path, figs: dict) -> list[str]:
    """Issue 35: GRPO on reasoning-gym's generators, the held-out problems before and after, paired."""
    name = "rg-grpo"
    if not (runs / name / "metrics.jsonl").is_file():
        return ["(the reasoning-gym run is not there yet)"]
    ev = evals_of(runs, [name])
    wall = wall_minutes(runs / name)
    lines = [f"Training budget: {budget(runs / name)}; {wall[0]:.1f} min ({wall[1]:.1f} of steps).", "",
             *head("model", "test accuracy [95% CI]", "answer in tags [95% CI]", "answer length (tokens)", "n")]
    for key, label in (("test-base", "base (SmolLM2-135M-Instruct)"), ("test-sft", "SFT (the phase's end)"),
                       ("test-grpo-best", "SFT -> GRPO, best by validation"), ("test-grpo-final", "SFT -> GRPO, final")):
        r = ev.get(key)
        if r is not None:
            lines.append(f"| {label} | {ci(r, 'accuracy')} | {ci(r, 'formatted')} | {r['len']:.1f} | {r['n']} |")
    lines.append("")
    for a, b in (("test-base", "test-sft"), ("test-sft", "test-grpo-best"), ("test-sft", "test-grpo-final"),
                 ("test-base", "test-grpo-best")):
        if a in ev and b in ev:
            lines += [f"- {comparison(ev[a], ev[b], m, (a[5:], b[5:]))}" for m in ("accuracy", "formatted")]
    if all(k in ev for k in ("test-base", "test-sft", "test-grpo-best")):
        base, sft, grpo = ev["test-base"], ev["test-sft"], ev["test-grpo-best"]
        lines += ["", f"**Reading.** On {base['n']} held-out problems: SFT ({sft['accuracy']:.3f}) is "
                  f"{verdict(paired(base, sft, 'accuracy'))} the base model ({base['accuracy']:.3f}), and GRPO's best "
                  f"checkpoint ({grpo['accuracy']:.3f}) is {verdict(paired(sft, grpo, 'accuracy'))} SFT, the start of "
                  "its phase."]
    return lines


def write_report(runs: Path, out: Path, command: str | None = None) -> None:
    """The report from the run dirs; a recipe whose runs are not under `runs` keeps its section (and commands)
    from the earlier report at `out`, so recipes can be run, and reported, one at a time."""
    figs = {k: out.with_name(f"{out.stem}-{k}.png") for k in ("arithmetic", "countdown", "countdown-easy")}
    commands = (runs / "commands.log").read_text().strip() if (runs / "commands.log").is_file() else ""
    before = previous_sections(out)
    # each section's probe is a run only its own recipe writes (arithmetic-sft and qnli-sft are shared with issue 18's
    # recipes: probing them rebuilt the older sections from part of their runs)
    recipes = [("Arithmetic: SFT vs GRPO (the SFT-vs-GRPO arithmetic paper)", "arithmetic-grpo", arithmetic),
               ("Countdown: GRPO -> RS-SFT -> GRPO (the multi-stage paper)", "countdown-grpo-rs-grpo", countdown),
               ("Domain QA: SFT -> GRPO with similarity and repetition rewards", "domain-qa-sft-grpo", domain_qa),
               ("Label tasks: zero-shot, few-shot, SFT, GRPO, PPO on QNLI (the NLU paper)", "qnli-grpo-lora", nlu),
               ("Arithmetic: GRPO with dynamic sampling, from the base and from SFT", "arithmetic-grpo-ds",
                arithmetic_rl),
               ("MLQA: SFT -> GRPO, today's GRPO and dynamic sampling", "mlqa-grpo", mlqa_rl),
               ("QNLI: SFT -> GRPO with dynamic sampling", "qnli-grpo-ds", qnli_rl),
               ("MLQA: SFT -> GRPO, another estimator and more exploration, from one SFT model", "mlqa-grpo-rppb",
                mlqa_estimator),
               ("Countdown, easy level: format cold start, then GRPO -> RS-SFT -> GRPO", "countdown-easy",
                countdown_easy),
               ("XQuAD-en with search: no context, top-3 RAG, and the policy calling the search tool", "search-tool",
                search),
               ("reasoning-gym: GRPO on procedural problems with the generators' verifiers", "rg-grpo",
                reasoning_gym)]
    body, kept = [], False
    earlier_machine = earlier_machine_of(out)
    for heading, probe, build in recipes:
        measured_before = heading in before and not placeholder(before[heading].split("\n"))
        section = None
        if (runs / probe / "metrics.jsonl").is_file() or not measured_before:
            section = build(runs, figs) if build is not nlu else build(runs)
        if section is None or (placeholder(section) and measured_before):
            text = before[heading]  # its runs are not here, or not all of them: the measured section stays
            if earlier_machine and not text.startswith(MEASURED_ON) and not text.startswith("("):
                text = f"{MEASURED_ON} {earlier_machine}.\n\n{text}"  # a section kept from before the label
            body += [f"## {heading}", "", *text.split("\n"), ""]
            kept = True
        else:  # and what the person who ran the recipe saw (e.g. other work on the machine): <runs>/nlu-notes.md
            if not placeholder(section):  # a "not there yet" line has no machine
                section = [f"{MEASURED_ON} {machine()}.", "", *section]
            body += [f"## {heading}", "", *section, "", *notes(runs, build.__name__)]
    body += samples_summary(body)
    if kept:  # the commands behind the kept sections, then this run's
        earlier = before.get("Provenance", "").strip("`\n").strip()
        commands = "\n".join(x for x in (earlier, commands) if x)
    text = "\n".join([
        "# Recipes of the method, measured", "",
        f"Generated by `{command or f'python bench/recipes.py --runs {runs.name}'}` (report only: `python "
        f"bench/recipes_report.py {runs.name}`) from the run dirs alone. Machine: {machine()}; each section names "
        "the machine it was measured on (a section kept from an earlier report keeps its own). Policy: the embedded "
        "SmolLM2-135M-Instruct. CIs are 95% percentile bootstraps over items (1000 resamples); comparisons of two "
        "models are paired, on the same items.", "", "## Running a recipe", "", HOW, "",
        *body,
        "## Provenance", "", "```", commands or "(none logged)", "```", ""])
    out.write_text(text)
    print(f"wrote {out}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs")
    p.add_argument("--out", default=str(ROOT / "docs" / "recipes.md"))
    args = p.parse_args(argv)
    write_report(Path(args.runs), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
