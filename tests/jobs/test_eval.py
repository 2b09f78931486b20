"""jobs/eval.py: metric self-check against the official rules, sampling statistics, and the real path."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.eval import sample_distribution, summarize
from tasks.mlqa import MLQAParams, MLQATask
from tasks.squad import source_lang

ROOT = Path(__file__).resolve().parents[2]


class WordTokenizer:
    """Counts whitespace words as tokens: enough for answer lengths."""

    def encode(self, text, add_special_tokens=False):
        return text.split()


class Ex:
    def __init__(self, answers, id_="q", lang="en"):
        self.answers, self.id, self.lang = tuple(answers), id_, lang


def task(lang="en") -> MLQATask:
    return MLQATask({}, MLQAParams(lang=lang), WordTokenizer(), 512)


@pytest.mark.parametrize("source, lang", [
    ("xquad:de", "de"), ("xquad:zh", "zh"), ("mlqa-de", "de"),   # shortcuts name their language
    ("data/file.json", "en"), ("xquad:xx", "en"),                 # anything else: English rules
])
def test_source_lang(source, lang):
    assert source_lang(source) == lang


# Metric self-check: eval.py's per-question scores are the official rules' hand-computed cases
# (shared/reference/qa-metric-rules.md), through the same extract_answer the job uses.
@pytest.mark.parametrize("completion, golds, lang, em, f1", [
    ("Answer: the Eiffel Tower", ["Eiffel Tower"], "en", 1.0, 1.0),        # label and article dropped
    ("a cat and the dog", ["cat dog"], "en", 0.0, 0.8),                     # P 2/3, R 1 -> 0.8
    ("Der Hund", ["Hund"], "de", 1.0, 1.0),                                  # German article
    ("北京大学", ["北京"], "zh", 0.0, 2 / 3),                                  # characters: P 2/4, R 1
    ("", ["Paris"], "en", 0.0, 0.0),                                         # empty answer
])
def test_scores_follow_the_official_rules(completion, golds, lang, em, f1):
    per = task().score([completion], [Ex(golds, lang=lang)])
    assert per["em"] == [em] and per["f1"] == [pytest.approx(f1)]


def test_summary_means_and_ci_contain_the_mean():
    per = {"f1": [1.0, 0.0, 0.5, 0.5], "em": [1.0, 0.0, 0.0, 0.0], "len": [2, 4, 6, 8]}
    s = summarize(per, seed=0)
    assert (s["n"], s["f1"], s["em"], s["len"]) == (4, 0.5, 0.25, 5.0)
    assert s["f1_ci"][0] <= 0.5 <= s["f1_ci"][1]


def test_sample_distribution_hand_computed():
    # 2 questions x 3 samples; texts are question-major (q0 s0, q0 s1, q0 s2, q1 s0, ...).
    texts = ["Paris", "Paris", "Lyon",        # q0: gold Paris -> F1 1, 1, 0; majority Paris
             "blue", "red", "red"]            # q1: gold red   -> F1 0, 1, 1; majority red
    d = sample_distribution(task(), texts, [Ex(["Paris"]), Ex(["red"])], 3)
    # run j = j-th sample of each question: runs score (1+0)/2, (1+1)/2, (0+1)/2
    assert d["f1_mean"] == pytest.approx(2 / 3) and d["f1_min"] == 0.5 and d["f1_max"] == 1.0
    assert d["f1_std"] == pytest.approx(((1 / 6) ** 2 * 2 + (1 / 3) ** 2) ** 0.5 / 3 ** 0.5)
    assert d["agree_frac"] == 0.0                        # neither question has 3 identical answers
    assert d["best_of_n_f1"] == 1.0 and d["majority_vote_f1"] == 1.0


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.fleet("smollm", engines_only=True)
def test_eval_job_on_real_vllm_greedy_and_sampled(shared_data, tmp_path, fleets, capsys):
    """Real path: the embedded model in vLLM (the engine of the embedded model's warm training fleet, its weights
    reloaded from the model's folder), XQuAD-de with the German metric, greedy + 2 samples."""
    from jobs.eval import evaluate, parse_args, report

    r = evaluate(parse_args(["--data", "xquad:de", "--limit", "12", "--samples", "2", "--batch", "5",
                             "rollout.dtype=fp32"]), fleet=fleets)
    report(r)
    out = capsys.readouterr().out
    assert (r["n"], r["lang"], r["data"]) == (12, "de", "xquad:de")
    assert 0.0 <= r["f1_ci"][0] <= r["f1"] <= r["f1_ci"][1] <= 1.0
    assert r["questions_per_s"] > 0 and len(r["per_question"]) == 12
    assert r["sampling"]["samples"] == 2 and 0.0 <= r["sampling"]["agree_frac"] <= 1.0
    assert "12/12" in out            # the progress bar reached the end
    assert "[eval] F1" in out


def test_a_split_the_config_does_not_make_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "eval.py"), "--split", "test"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "has no split 'test'" in proc.stderr and "data.test_size is unset" in proc.stderr


def test_split_of_a_parallel_language_keeps_the_run_split_questions(shared_data, tmp_path):
    """--run R --split test --data xquad:de: the English test split's questions, in German (same ids),
    so cross-lingual scores never include a question trained on in English."""
    from jobs.eval import load_items, parse_args

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  source: 'xquad:en'\n  test_size: 300\n  eval_size: 50\n")
    _, en, _, train = load_items(parse_args(["--run", str(run), "--split", "test"]))
    _, de, source, _ = load_items(parse_args(["--run", str(run), "--split", "test", "--data", "xquad:de"]))
    assert (source, de[0].lang, len(de)) == ("xquad:de", "de", len(en)) and abs(len(en) - 300) < 10
    assert [e.id for e in de] == [e.id for e in en] and de[0].question != en[0].question
    assert train and not {e.id for e in train} & {e.id for e in en}  # few-shot demonstrations come from train
    with pytest.raises(SystemExit, match="no question of mlqa-de has an id"):
        load_items(parse_args(["--run", str(run), "--split", "test", "--data", "mlqa-de"]))


@pytest.mark.parametrize("args, message", [
    (["--model", "runs/nope/checkpoints/best", "--data", "xquad:de"], "model folder 'runs/nope/checkpoints/best' "
                                                                      "does not exist; pass an existing"),
    (["--data", "/tmp/raygrpo-missing.json"], "set data.source=... (jobs/eval.py: --data)"),
    (["--model", str(ROOT / "tests" / "jobs" / "data"), "--data", "xquad:de"], "has no config.json"),
])
def test_bad_model_or_data_is_a_clear_error(args, message):
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "eval.py"), *args, "--inprocess", "--limit", "2"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
