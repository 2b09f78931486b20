"""Label tasks (the NLU paper): QNLI built from SQuAD-format QA the way GLUE built it, GLUE TSV/JSONL files,
mixes of tasks, few-shot prompts, scoring with the <Judgement> format, and the registry's checks."""
from collections import Counter

import pytest

from common.config import ConfigError, DataConfig, load_config
from tasks.labels import LabelExample, LabelParams, LabelTask, qnli_from_squad, read_glue_file, to_label
from tasks.registry import check_job
from tasks.squad import load_examples
from tests.tasks.test_tasks import WordTokenizer


def ex(i, label, task="qnli", group=None):
    return LabelExample(f"e{i}", task, f"question {i}?", f"sentence {i}.", label, group or f"g{i}")


# ---- QNLI from XQuAD --------------------------------------------------------------------------------------------

def test_qnli_from_xquad_is_balanced_and_the_positive_sentence_holds_the_answer(shared_data):
    pairs, stats = qnli_from_squad("xquad:en", seed=0)
    assert Counter(p.label for p in pairs) == {"entailment": 1146, "not_entailment": 1146}
    assert stats["qnli_pairs"] == 2292 and stats["skipped_no_negative"] == 44  # 1190 questions = 1146 + 44
    answers = {e.id: e.answers[0] for e in load_examples("xquad:en", "en")[0]}
    for p in pairs[:400]:
        qid, kind = p.id.rsplit("-", 1)
        assert (answers[qid] in p.text_b) == (kind == "pos"), p  # the negative is another sentence
    assert all(a.group == b.group for a, b in zip(pairs[::2], pairs[1::2]))  # both of a question: one paragraph


def test_qnli_splits_keep_paragraphs_apart(shared_data):
    splits, _ = LabelTask.load("qnli:xquad:en", DataConfig(eval_size=100, test_size=400), LabelParams())
    groups = {k: {e.group for e in v} for k, v in splits.items()}
    assert not (groups["train"] & groups["test"] or groups["train"] & groups["eval"] or groups["eval"] & groups["test"])
    assert len(splits["test"]) == pytest.approx(400, abs=40)
    assert 0.4 < sum(e.label == "entailment" for e in splits["test"]) / len(splits["test"]) < 0.6


@pytest.mark.parametrize("lang", ["de", "zh", "hi", "es"])
def test_qnli_builds_in_other_xquad_languages(shared_data, lang):
    if not (shared_data / "xquad" / f"xquad.{lang}.json").is_file():
        pytest.skip(f"xquad.{lang}.json is not in the shared data")
    pairs, stats = qnli_from_squad(f"xquad:{lang}")
    assert stats["skipped_no_negative"] < 80  # Chinese sentences end at 。 without a space
    assert Counter(p.label for p in pairs)["entailment"] == len(pairs) // 2


# ---- GLUE files -----------------------------------------------------------------------------------------------

def test_glue_tsv_and_jsonl_files_are_read_and_bad_rows_counted(tmp_path):
    (tmp_path / "QNLI").mkdir()
    (tmp_path / "QNLI" / "train.tsv").write_text(
        "index\tquestion\tsentence\tlabel\n"
        "0\tWho won?\tThe Broncos won.\tentailment\n"
        "1\tWho won?\tIt rained.\tnot_entailment\n"
        "2\tWho lost?\tNobody.\tmaybe\n")                                   # not a QNLI label: skipped, counted
    rows, stats = read_glue_file("qnli", tmp_path / "QNLI")
    assert [r.label for r in rows] == ["entailment", "not_entailment"] and stats["skipped_malformed"] == 1
    sst = tmp_path / "sst2.tsv"
    sst.write_text("sentence\tlabel\ngreat film\t1\ndull\t0\n")                # GLUE's 0/1 class ids
    assert [r.label for r in read_glue_file("sst2", sst)[0]] == ["positive", "negative"]
    js = tmp_path / "rte.jsonl"
    js.write_text('{"text_a": "A man sleeps.", "text_b": "A man is awake.", "label": "not_entailment"}\n'
                  '{"text_a": "", "label": "entailment"}\n')                 # empty text: skipped
    rows, stats = read_glue_file("rte", js)
    assert len(rows) == 1 and rows[0].text_b == "A man is awake." and stats["skipped_malformed"] == 1
    with pytest.raises(FileNotFoundError, match="data.source"):
        read_glue_file("qnli", tmp_path / "nowhere")


@pytest.mark.parametrize("task, raw, want", [
    ("qnli", "entailment", "entailment"),
    ("qnli", 1, "not_entailment"),          # the hub's class id
    ("mnli", "2", "contradiction"),
    ("sst2", "Positive", "positive"),
    ("sst2", 7, None),                      # no such class
    ("rte", None, None),
])
def test_labels_from_names_and_class_ids(task, raw, want):
    assert to_label(task, raw) == want


# ---- prompts and scoring ----------------------------------------------------------------------------------------

def test_few_shot_prompts_carry_k_balanced_training_demonstrations():
    train = [ex(i, "entailment" if i % 3 else "not_entailment") for i in range(30)]
    splits = {"train": train, "eval": [ex(100, "entailment")]}
    task = LabelTask(splits, LabelParams(few_shot=4), WordTokenizer(), 4096)
    demos = task.demonstrations()
    assert len(demos) == 4 and Counter(d.label for d in demos) == {"entailment": 2, "not_entailment": 2}
    assert all(d in train for d in demos)
    text = task.content(splits["eval"][0])
    # every question says how to answer (one tag) and every demonstration answers (another)
    assert text.count("<Judgement>") == 2 * 4 + 1 and text.endswith(task.question(splits["eval"][0]))
    with pytest.raises(ValueError, match="training split"):
        LabelTask({"eval": splits["eval"]}, LabelParams(few_shot=2), WordTokenizer(), 4096).demonstrations()
    zero = LabelTask(splits, LabelParams(), WordTokenizer(), 4096)
    assert zero.content(splits["eval"][0]) == task.question(splits["eval"][0])


def test_scores_and_per_task_accuracy_in_a_mix():
    examples = [ex(0, "entailment"), ex(1, "not_entailment"), ex(2, "positive", "sst2"), ex(3, "negative", "sst2")]
    texts = ["<Judgement>entailment</Judgement>",        # right
             "<Judgement>entailment</Judgement>",        # another label
             "positive",                                 # no judgement block: wrong format
             "<Judgement>Negative</Judgement>"]          # right
    task = LabelTask({"train": examples}, LabelParams(), WordTokenizer(), 512)
    per = task.score(texts, examples)
    assert per["accuracy"] == [1.0, 0.0, 0.0, 1.0] and per["wrong_format"] == [0.0, 0.0, 1.0, 0.0]
    assert per["len"] == [1.0, 1.0, 1.0, 1.0]  # one whitespace word each
    means = task.evaluate(texts, examples)
    assert means["accuracy"] == 0.5 and means["accuracy_qnli"] == 0.5 and means["accuracy_sst2"] == 0.5
    assert task.sft_target(examples[0]) == "<Judgement>entailment</Judgement>"
    assert task.reward_inputs(examples[2]) == {"label": "positive", "task": "sst2",
                                               "prompt": task.question(examples[2])}


def test_registry_checks_a_label_job(tmp_path):
    cfg = load_config(None, ["task.name=labels"])
    check_job(cfg)  # the label reward reads label and task, which the task provides
    bad = load_config(None, ["task.name=labels", "rewards.components=[{name: qa, weight: 1.0}]"])
    with pytest.raises(ConfigError, match="label"):
        check_job(bad)
    with pytest.raises(ConfigError, match="few_shot"):
        check_job(load_config(None, ["task.name=labels", "task.params.few_shot=99"]))
    with pytest.raises(ValueError, match="glue task"):
        LabelTask.load("glue:xquad:en", DataConfig(), LabelParams())


def test_cross_lingual_qnli_test_split_is_the_english_one_translated(shared_data, tmp_path):
    """jobs/eval.py --run R --split test --data qnli:xquad:de: the pairs of the English test paragraphs, in German."""
    from jobs.eval import load_items, parse_args

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: {name: labels}\ndata: {source: 'qnli:xquad:en', test_size: 400}\n")
    _, en, _, train = load_items(parse_args(["--run", str(run), "--split", "test"]))
    _, de, source, _ = load_items(parse_args(["--run", str(run), "--split", "test", "--data", "qnli:xquad:de",
                                              "task.params.few_shot=2"]))
    assert source == "qnli:xquad:de" and len(de) > 0.95 * len(en)
    assert {e.id for e in de} <= {e.id for e in en} and de[0].text_a != en[0].text_a
    assert all(a.label == b.label for a, b in zip(de, (x for x in en if x.id in {d.id for d in de})))
    assert not {e.group.split(":")[-1] for e in train} & {e.group.split(":")[-1] for e in en}
