"""The prompts task (tasks/prompts.py): a user's rows in every format, chat messages, malformed rows skipped and counted,
splits, the prompt budget, reward inputs, SFT targets, and eval scored by the job's rewards; plus the registry's
checks of user reward functions against the fields the data really has."""
import json

import pytest

from common.config import ConfigError, DataConfig, load_config
from common.data import read_rows
from tasks.prompts import PromptRow, PromptsParams, PromptsTask, read_prompts
from tasks.registry import build_task, check_job, check_rewards
from tests.tasks.test_tasks import WordTokenizer

ROWS = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i), "level": i % 3} for i in range(10)]


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "json_object", "parquet", "csv"])
def test_every_file_format_reads_the_same_rows(tmp_path, fmt):
    path = tmp_path / f"rows.{fmt.split('_')[0]}"
    if fmt == "jsonl":
        write(path, ROWS)
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    elif fmt == "json_object":
        path.write_text(json.dumps({"data": ROWS}))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        import csv

        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
            w.writeheader()
            w.writerows(ROWS)
    rows, skipped = read_prompts(str(path), PromptsParams(answer_field="answer"))
    assert [r.prompt for r in rows] == [r["prompt"] for r in ROWS] and not skipped
    assert [r.answer for r in rows] == [r["answer"] for r in ROWS]
    level = [r.fields["level"] for r in rows]
    assert level == ([str(r["level"]) for r in ROWS] if fmt == "csv" else [r["level"] for r in ROWS])  # CSV: text


def test_unknown_format_and_missing_file_name_the_fix(tmp_path):
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown format .txt; use one of .jsonl, .json, .parquet, .csv"):
        read_rows(str(tmp_path / "rows.txt"))
    with pytest.raises(FileNotFoundError, match="data file 'nope.jsonl' does not exist"):
        read_rows("nope.jsonl")


def test_malformed_rows_are_skipped_and_counted(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join([
        json.dumps({"prompt": "ok one", "answer": "1"}),
        "{not json",                                                    # bad_json
        json.dumps(["a", "list"]),                                      # not_an_object
        json.dumps({"question": "no prompt column", "answer": "1"}),    # missing_prompt
        json.dumps({"prompt": 42, "answer": "1"}),                      # bad_prompt
        json.dumps({"prompt": "   ", "answer": "1"}),                   # empty_prompt
        json.dumps({"prompt": "no answer"}),                            # missing_answer
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "answer": "2"}),   # a chat row: fine
        json.dumps({"messages": [{"role": "robot", "content": "hi"}], "answer": "2"}),  # bad_prompt (role)
    ]) + "\n")
    rows, skipped = read_prompts(str(path), PromptsParams(answer_field="answer"))
    assert [r.id.rsplit(":", 1)[1] for r in rows] == ["1", "8"]
    assert dict(skipped) == {"bad_json": 1, "not_an_object": 1, "missing_prompt": 1, "bad_prompt": 2,
                             "empty_prompt": 1, "missing_answer": 1}
    said = skipped.describe()  # the run's note names the lines, so the user can find them
    assert "1 with not JSON (line 2)" in said and "2 with a prompt that is neither text nor a list of {role, " \
        "content} messages (line 5, line 9)" in said, said


def test_a_folder_as_data_source_is_named_as_a_folder(tmp_path):
    write(tmp_path / "rows" / "train.jsonl", ROWS)
    with pytest.raises(ValueError, match="data file '.*rows' is a folder; give one file in it \(it holds train.jsonl\)"):
        read_prompts(str(tmp_path / "rows"), PromptsParams())


def test_a_file_without_usable_rows_is_an_error_naming_file_columns_and_row(tmp_path):
    path = write(tmp_path / "q.jsonl", [{"question": "a?", "answer": "1"}] * 3)
    with pytest.raises(ValueError, match="q.jsonl: no row has a prompt column 'prompt' \\(or 'messages'\\); its columns "
                                         "are question, answer: set task.params.prompt_field"):
        read_prompts(path, PromptsParams())
    with pytest.raises(ValueError, match="answer_field 'gold' is not a column \\(columns: question, answer\\)"):
        read_prompts(path, PromptsParams(prompt_field="question", answer_field="gold"))
    path = write(tmp_path / "e.jsonl", [{"prompt": ""}, {"prompt": 3}])
    with pytest.raises(ValueError, match="e.jsonl: no usable row of 2 .* the first, line 1, has an empty prompt"):
        read_prompts(path, PromptsParams())


def test_chat_rows_conversational_prompts_and_a_trailing_answer(tmp_path):
    path = write(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}], "id": 1},
        {"prompt": [{"role": "user", "content": "3+3?"}], "answer": "6"},  # TRL's conversational prompt column
    ])
    rows, _ = read_prompts(path, PromptsParams())
    assert rows[0].is_chat and [m["role"] for m in rows[0].prompt] == ["system", "user"] and rows[0].answer == "4"
    assert rows[1].is_chat and rows[1].answer is None and rows[1].fields == {"answer": "6"}


def _task(rows, tokenizer=None, max_prompt_tokens=64, rewards=(), **params):
    p = PromptsParams(**params)
    return PromptsTask({"train": rows, "eval": rows[:1]}, p, tokenizer or WordTokenizer(), max_prompt_tokens,
                       rewards=rewards)


def test_reward_inputs_fields_and_sft_targets():
    row = PromptRow("f:1", "What is 2 + 2?", "4", {"answer": "4", "level": 1})
    task = _task([row], answer_field="answer")
    assert task.reward_inputs(row) == {"prompt": "What is 2 + 2?", "answer": "4", "level": 1, "reference": "4"}
    assert task.fields() == {"prompt", "answer", "level", "reference"}
    assert task.sft_target(row) == "4" and task.content(row) == "What is 2 + 2?"
    bare = PromptRow("f:2", "hi", None, {})
    with pytest.raises(ValueError, match="set task.params.answer_field"):
        _task([bare]).sft_target(bare)


def test_chat_prompts_use_the_policys_template_and_the_system_prompt(tiny_policy_dir):
    from common.models import load_tokenizer

    tok = load_tokenizer(tiny_policy_dir)
    text = PromptRow("f:1", "What is 2 + 2?", None, {})
    chat = PromptRow("f:2", ({"role": "user", "content": "What is 2 + 2?"},), None, {})
    task = _task([text, chat], tok, 256, system_prompt="Answer with a number.")
    a, b = (tok.decode(task.prompt_ids(r)[0]) for r in (text, chat))
    assert a == b and "Answer with a number." in a and a.rstrip().endswith("assistant")
    assert task.reward_inputs(chat)["prompt"] == [{"role": "user", "content": "What is 2 + 2?"}]


def test_prompts_over_the_budget_are_skipped_and_counted():
    rows = [PromptRow(f"f:{i}", " ".join(["w"] * (10 if i % 2 else 100)), None, {}) for i in range(6)]
    task = PromptsTask({"train": rows, "eval": rows[1:2]}, PromptsParams(), WordTokenizer(), 50)
    assert len(task.splits["train"]) == 3 and task.stats["prompt_too_long_train"] == 3
    assert "over rollout.max_prompt_tokens=50: 3 of train" in task.stats["notes"][0]
    with pytest.raises(ValueError, match="every eval prompt is over rollout.max_prompt_tokens=50 \\(the longest has 100"):
        PromptsTask({"train": rows, "eval": rows[:1]}, PromptsParams(), WordTokenizer(), 50)


def test_splits_from_eval_size_or_an_eval_file(tmp_path):
    src = write(tmp_path / "train.jsonl", ROWS + ROWS[:2])  # two repeated prompts: one side only
    splits, stats = PromptsTask.load(src, DataConfig(eval_size=3), PromptsParams())
    assert (len(splits["train"]), len(splits["eval"])) in ((9, 3), (8, 4)) and stats["rows_used"] == 12
    assert not {r.prompt for r in splits["train"]} & {r.prompt for r in splits["eval"]}
    with pytest.raises(ValueError, match="data.eval_size=200 rows held out leave none of its 12 usable rows .* set "
                                         "data.eval_size \\(e.g. 2\\) or give task.params.eval_source"):
        PromptsTask.load(src, DataConfig(), PromptsParams())
    held = write(tmp_path / "eval.jsonl", [{"prompt": "held out?"}, {"text": "bad"}])
    splits, stats = PromptsTask.load(src, DataConfig(), PromptsParams(eval_source=held))
    assert [r.prompt for r in splits["eval"]] == ["held out?"] and len(splits["train"]) == 12
    assert stats["eval_skipped_missing_prompt"] == 1 and stats["notes"] == [
        f"{held}: 1 of 2 rows used; skipped 1 with no prompt column (line 2)"]


REWARD = '''
def score(completions, level, **kwargs):
    return {"rewards": [None if c == "skip" else float(len(c)) for c in completions], "level": [float(x) for x in level]}
'''


def test_eval_metrics_are_the_rewards_and_means_skip_unscored(tmp_path):
    (tmp_path / "r.py").write_text(REWARD)
    comps = ({"name": "score", "fn": f"{tmp_path / 'r.py'}:score", "weight": 2.0, "params": {}, "timeout_s": 30.0,
              "on_error": "raise"},)
    rows = [PromptRow(f"f:{i}", f"q{i}", None, {"level": i}) for i in range(3)]
    task = _task(rows, rewards=comps, primary="score/level")
    per = task.score(["abc", "skip", "a"], rows)
    assert per["reward"] == [6.0, None, 2.0] and per["score"] == [3.0, None, 1.0] and per["score/level"] == [0, 1, 2]
    assert task.primary_metric == "score/level"
    assert task.evaluate(["abc", "skip", "a"], rows) == {"reward": 4.0, "score": 2.0, "score/level": 1.0,
                                                        "score/errors": 0.0, "len": 1.0}
    with pytest.raises(ValueError, match="task.params.primary 'score/nope' is not among the eval metrics"):
        _task(rows, rewards=comps, primary="score/nope").score(["a"], rows[:1])


# ---- the registry's checks against the loaded data (before any actor) ---------------------------------------------

def _cfg(tmp_path, *overrides):
    src = write(tmp_path / "rows.jsonl", ROWS)
    return load_config(overrides=["task.name=prompts", f"data.source={src}", "data.eval_size=2", *overrides])


def test_a_job_needs_rewards_and_checks_them_against_the_datas_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.py").write_text(REWARD + "\ndef wrong(completions, answr):\n    return [0.0]\n")
    with pytest.raises(ConfigError, match="task 'prompts' has no reward of its own"):
        check_job(_cfg(tmp_path))
    ok = _cfg(tmp_path, "rewards.components=[{fn: r.py:score}, {name: gsm8k, weight: 0}]",
              "task.params.answer_field=answer")
    check_job(ok)
    check_rewards(build_task(ok, WordTokenizer()), ok)  # score reads `level`, gsm8k the answer as `reference`
    bad = _cfg(tmp_path, "rewards.components=[{fn: r.py:wrong}]")
    with pytest.raises(ConfigError, match="rewards.components.0 \\(wrong\\): .*needs argument 'answr'.*Did you mean "
                                          "'answer'"):
        check_rewards(build_task(bad, WordTokenizer()), bad)
    gsm = _cfg(tmp_path, "rewards.components=[{name: gsm8k}]")  # no answer_field: no reference for gsm8k
    with pytest.raises(ConfigError, match="reward 'gsm8k' reads example fields \\['gold\\|reference'\\]"):
        check_rewards(build_task(gsm, WordTokenizer()), gsm)
    with pytest.raises(ConfigError, match="task.params.primary 'acc' names no reward component"):
        cfg = _cfg(tmp_path, "rewards.components=[{fn: r.py:score}]", "task.params.primary=acc")
        check_rewards(build_task(cfg, WordTokenizer()), cfg)
    with pytest.raises(ConfigError, match="no reward server answers at http://127.0.0.1:9/score"):
        cfg = _cfg(tmp_path, "rewards.components=[{url: 'http://127.0.0.1:9/score'}]")
        check_rewards(build_task(cfg, WordTokenizer()), cfg)
    with pytest.raises(ConfigError, match="an sft phase trains toward reference answers"):
        cfg = _cfg(tmp_path, "rewards.components=[{fn: r.py:score}]", "train.phases=[{kind: sft, steps: 1}]")
        check_rewards(build_task(cfg, WordTokenizer()), cfg)


@pytest.mark.parametrize("components, message", [
    ("[{fn: a.py:f, url: 'http://x:1/'}]", "gives both fn and url"),
    ("[{fn: a.py:mean}]", "name 'mean' is taken by the step's metrics"),
    ("[{name: qa, timeout_s: 3}]", "timeout_s and on_error are for fn and url components"),
    ("[{fn: a.py:f}, {fn: b.py:f}]", "names a reward twice .* give each fn / url component its own name"),
    ("[{weight: 1}]", "needs name .*, fn: 'file.py:function' or url"),
])
def test_component_configs_that_cannot_be_are_refused(components, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[f"rewards.components={components}"])


def test_fn_components_are_named_after_their_function_and_get_the_run_policy():
    from tasks.registry import reward_components

    cfg = load_config(overrides=["rewards.components=[{fn: my.py:score}, {url: 'http://h:1/s', on_error: skip}]",
                                 "rewards.timeout_s=9"])
    a, b = reward_components(cfg)
    assert (a["name"], a["timeout_s"], a["on_error"]) == ("score", 9.0, "raise")
    assert (b["name"], b["timeout_s"], b["on_error"]) == ("server", 9.0, "skip")
