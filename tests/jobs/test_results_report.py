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
            "em_ci": [em - 0.03, em + 0.03], "per_question": [{"f1": f1, "em": em}] * n}


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
    assert "not significant at this size" in text                    # 0.52 lower bound <= 0.53 upper bound
    assert "best validation F1 0.560 at step 2" in text
    assert "| grpo-best | 13.50 |" in text and "| 0.500 ± 0.010 |" in text
    assert "python jobs/eval.py --model embedded" in text            # provenance: the commands
    for name in ("dynamics", "checkpoints", "crosslingual"):
        png = tmp_path / "docs" / f"results-{name}.png"
        assert png.stat().st_size > 10_000 and f"(results-{name}.png)" in text


def test_report_says_where_and_why_not_when_grpo_does_not_beat_sft(tmp_path):
    run = _run(tmp_path)
    (run / "eval" / "test-grpo-best.json").write_text(json.dumps(_eval(0.49, 0.39, model="ck/best")))
    out = tmp_path / "results.md"
    assert report.main([str(run), "--out", str(out)]) == 0
    text = out.read_text()
    assert "GRPO-best F1 0.490 <= SFT F1 0.500" in text
    assert "**Where and why not.**" in text and "(0.500 -> 0.560 F1 at step 2" in text
