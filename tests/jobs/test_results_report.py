"""bench/results_report.py rebuilds docs/results.md from a run dir alone (synthetic run, real code)."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("results_report", ROOT / "bench" / "results_report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def _eval(f1, em, n=500, lo=None, hi=None, model="m"):
    return {"model": model, "f1": f1, "em": em, "len": 9.5, "n": n, "f1_ci": [lo or f1 - 0.03, hi or f1 + 0.03],
            "em_ci": [em - 0.03, em + 0.03], "per_question": [{"id": f"q{i}", "f1": f1, "em": em} for i in range(n)]}


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "r"
    (run / "eval").mkdir(parents=True)
    for name, f1, model in (("base", 0.11, "embedded"), ("sft", 0.50, "ck/sft"), ("grpo-best", 0.55, "ck/best"),
                            ("grpo-final", 0.54, "ck/last")):
        (run / "eval" / f"test-{name}.json").write_text(json.dumps(_eval(f1, f1 - 0.1, model=model)))
    (run / "eval" / "cross-xquad-de-base.json").write_text(json.dumps(_eval(0.05, 0.0, 150)))
    (run / "eval" / "cross-xquad-de-grpo-best.json").write_text(json.dumps(_eval(0.20, 0.1, 150)))
    (run / "eval" / "sampling-grpo-best.json").write_text(json.dumps({**_eval(0.55, 0.45, 200), "sampling": {
        "samples": 5, "temperature": 0.8, "top_p": 0.9, "f1_mean": 0.5, "f1_std": 0.01, "f1_min": 0.49,
        "f1_max": 0.52, "em_mean": 0.4, "em_std": 0.01, "agree_frac": 0.6, "best_of_n_f1": 0.7,
        "majority_vote_f1": 0.53}}))
    (run / "eval" / "perplexity.json").write_text(json.dumps([
        {"model": "embedded", "perplexity": 12.0, "nll_per_token": 2.48, "tokens": 950},
        {"model": "ck/best", "perplexity": 13.5, "nll_per_token": 2.6, "tokens": 950}]))
    steps = [{"kind": "step", "step": s, "reward/mean": 0.1 * s, "learner/kl": 0.001 * s, "learner/clip_frac": 0.0}
             for s in range(1, 4)]
    evals = [{"kind": "eval", "step": s, "eval/f1": f, "eval/em": f - 0.1, "phase": p}
             for s, f, p in ((0, 0.5, "sft"), (2, 0.56, "grpo"), (3, 0.55, "grpo"))]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in steps + evals) + "\n")
    (run / "config.yaml").write_text("train:\n  steps: 3\n")
    (run / "commands.log").write_text("2026-11-22 10:00:00 $ python jobs/eval.py --model embedded ...\n")
    return run


def test_report_has_both_tables_the_verdict_and_figures(tmp_path):
    run = _run(tmp_path)
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    assert report.main([str(run), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| grpo-best | 0.550 [0.520, 0.580] |" in text and "| +0.440 |" in text     # ΔF1 vs base
    assert "| XQuAD de | 0.050 / 0.000 | 0.200 [0.170, 0.230] | 0.100 | +0.150 | 150 |" in text
    assert "GRPO-best F1 0.550 > SFT F1 0.500 > base F1 0.110" in text
    # every question scores 0.50 under SFT and 0.55 under GRPO-best: the paired difference has no spread
    assert "GRPO-best over SFT is +0.050 F1 [+0.050, +0.050] on the same questions (paired bootstrap): significant" in text
    assert "| grpo-best - sft | +0.050 [+0.050, +0.050] |" in text
    assert "best validation F1 0.560 at step 2" in text
    assert "| grpo-best | 13.50 |" in text and "| 0.500 ± 0.010 |" in text
    assert "python jobs/eval.py --model embedded" in text            # provenance: the commands
    for name in ("dynamics", "checkpoints", "crosslingual"):
        png = tmp_path / "docs" / f"results-{name}.png"
        assert png.stat().st_size > 10_000 and f"(results-{name}.png)" in text


def test_report_says_whether_the_validation_gain_holds_on_test(tmp_path):
    run = _run(tmp_path)
    out = tmp_path / "results.md"
    assert report.main([str(run), "--out", str(out)]) == 0
    # validation: SFT 0.500, GRPO-best 0.560 at step 2 (+0.060); test: every question +0.050
    assert "F1 0.560 at step 2 against SFT's 0.500 (+0.060). On the 500 test questions, GRPO-best - SFT is +0.050 F1 " \
           "[95% CI +0.050, +0.050]: the validation gain holds." in out.read_text()
    (run / "eval" / "test-grpo-best.json").write_text(json.dumps(_eval(0.49, 0.39, model="ck/best")))
    (tmp_path / "runs" / "r-notes.md").write_text("Another job shared the cores.")  # <runs>/<run>-notes.md
    assert report.main([str(run), "--out", str(out)]) == 0
    text = out.read_text()
    assert "GRPO-best F1 0.490 <= SFT F1 0.500" in text and "The test split (500 questions" in text
    assert "GRPO-best - SFT is -0.010 F1 [95% CI -0.010, -0.010]: the validation gain does not hold (GRPO-best is " \
           "lower)" in text
    assert "Notes on this measurement: Another job shared the cores." in text


def test_held_up_each_outcome():
    assert report.held_up(-0.01, (0.05, 0.01, 0.09)) == "validation showed no gain over SFT"
    assert report.held_up(0.06, (0.05, 0.01, 0.09)) == "the validation gain holds"
    assert report.held_up(0.06, (0.0, -0.03, 0.03)).startswith("the validation gain does not hold (the CI holds 0)")
    assert report.held_up(0.06, (-0.05, -0.09, -0.01)).startswith("the validation gain does not hold (GRPO-best is lower)")


def test_dynamics_summary_states_the_clip_fraction_it_measured():
    steps = [{"reward/zero_std_group_frac": 0.5, "learner/kl": 0.01, "rollout/len_mean": 6.0, "learner/clip_frac": c,
              "timing/step": 30.0} for c in (0.0, 0.02)]
    text = report.dynamics_summary(steps, "learner:\n  inner_steps: 2\ntrain:\n  prompts_per_step: 4\n")
    assert "Mean clip fraction 0.010, with 2 updates per rollout batch." in text
    assert "GRPO ran 2 steps of 4 questions" in text and "(30.0 s a step)." in text
    assert "with one update per rollout batch" in report.dynamics_summary(steps, "train:\n  steps: 2\n")


def _per_question(f1s, ems):
    return [{"id": f"q{i}", "f1": f, "em": e} for i, (f, e) in enumerate(zip(f1s, ems))]


def test_paired_table_hand_computed(tmp_path):
    """SFT right on q0,q1; GRPO right on q1,q2,q3: ΔF1 = ΔEM = (3 - 2) / 4 = +0.25; EM discordant 1 / 2."""
    sft = {**_eval(0.5, 0.5, n=4), "per_question": _per_question([1, 1, 0, 0], [1, 1, 0, 0])}
    best = {**_eval(0.75, 0.75, n=4), "per_question": _per_question([0, 1, 1, 1], [0, 1, 1, 1])}
    lines = report.paired_table({"sft": sft, "grpo-best": best})
    row = next(line for line in lines if line.startswith("| grpo-best - sft"))
    assert row.startswith("| grpo-best - sft | +0.250 [") and "| 1 / 2 | 1.00 | 4 |" in row
    mean, lo, hi = report.paired(sft, best, "f1")
    assert mean == 0.25 and lo <= 0.25 <= hi


def test_paired_refuses_different_questions():
    a = {**_eval(0.5, 0.5, n=2), "per_question": _per_question([1, 0], [1, 0])}
    b = {**_eval(0.5, 0.5, n=2), "per_question": [{"id": "other", "f1": 1, "em": 1}, {"id": "q1", "f1": 0, "em": 0}]}
    import pytest

    with pytest.raises(SystemExit, match="not scored on the same questions"):
        report.paired(a, b, "f1")


def test_group_classes_and_signal_table_from_rollout_records(tmp_path):
    """Four groups of K=2 over steps 1-3: one with a signal, one all right, one all wrong, one equally partial."""
    from common import rollout_records

    run = tmp_path / "run"
    groups = {1: [(0.0, 1.0), (1.0, 1.0)], 2: [(0.0, 0.0)], 3: [(0.5, 0.5)]}  # step -> groups' rewards
    for step, gs in groups.items():
        rows = [{"step": step, "phase": "grpo", "prompt": p, "sample": k, "reward": r}
                for p, g in enumerate(gs) for k, r in enumerate(g)]
        rollout_records.write_step(run, step, rows)
    cls = report.group_classes(rollout_records.read(run))
    assert cls == {"signal": 0.25, "all right": 0.25, "all wrong": 0.25, "equal partial": 0.25}
    steps = [{"kind": "step", "step": s, "reward/mean": 0.1 * s, "learner/kl": 0.01 * s, "rollout/len_mean": 5.0}
             for s in (1, 2, 3)]
    lines = report.signal_table(run, steps, [{"step": 3, "eval/f1": 0.6}])
    assert "| 1-1 | 0.100 | 50% | 50% | 0% | 0.010 | 5.0 | n/a |" in lines  # step 1: signal + all right
    assert "| 3-3 | 0.300 | 0% | 0% | 0% | 0.030 | 5.0 | 0.600 |" in lines  # step 3: equal partial


def test_budget_read_from_the_grpo_phase():
    cfg = "train:\n  prompts_per_step: 4\n  phases:\n    - {kind: sft, epochs: 1}\n    - {kind: grpo, steps: 60, prompts_per_step: 16}\n"
    assert report.grpo_budget(cfg) == (60, 16)
    assert report.grpo_budget("train:\n  steps: 60\n") == (60, 4)


def test_sections_the_experiment_did_not_run_are_left_out(tmp_path):
    """`jobs/experiment.py --parts test` writes only the test evals: the report has Table I and no empty tables."""
    run = _run(tmp_path)
    for f in (run / "eval").glob("*.json"):
        if not f.name.startswith("test-"):
            f.unlink()
    out = tmp_path / "results.md"
    assert report.main([str(run), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Results: base vs SFT vs GRPO on XQuAD\n") and "## Table I" in text
    assert "Table II" not in text and "Sampling distribution" not in text and "## General language" not in text
    assert "Not evaluated in this run (`jobs/experiment.py --parts`): cross-lingual transfer, sampling distribution, " \
           "perplexity." in text
