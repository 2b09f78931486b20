"""The tasks behind the recipes: data, splits without leakage, reward inputs, SFT targets and scoring, with
hand-computed cases; the task contract (required members, generic metrics, retrieval, metrics read off the
rewards); the shared Task plumbing (data stream, SFT pairs, values not mutation); the registry's checks of a job
config."""
import dataclasses
import json

import pytest

from common.config import ConfigError, DataConfig, load_config
from rewards import semantic
from tasks.arithmetic import ArithmeticParams, ArithmeticTask, Problem
from tasks.base import LENGTH_METRIC, Task
from tasks.countdown import CountdownParams, CountdownTask
from tasks.domain_qa import DomainExample, DomainQAParams, DomainQATask
from tasks.labels import LabelExample, LabelParams, LabelTask
from tasks.mlqa import MLQAParams, MLQATask
from tasks.prompts import PromptRow, PromptsParams, PromptsTask
from tasks.reasoning_gym import ReasoningGymParams, ReasoningGymTask
from tasks.registry import TASKS, check_job, reward_components
from tasks.squad import QAExample, reference_sentence
from tests.fakes import HashEncoder


class WordTokenizer:
    """Token = a whitespace word, id = its length + 2: enough for lengths, prompts and targets."""
    eos_token_id = 1
    chat_template = None

    def encode(self, text, add_special_tokens=False):
        return [len(w) + 2 for w in text.split()]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.encode(text)}


def _ids(split):
    return {getattr(x, "id", None) for x in split}


# ---- arithmetic -----------------------------------------------------------------------------------------------

def test_arithmetic_splits_keep_every_copy_of_a_question_on_one_side(shared_data):
    data = DataConfig(eval_size=100, test_size=200)
    splits, stats = ArithmeticTask.load("generated", data, ArithmeticParams(num_problems=2000))
    assert stats["generated"] == 2000 and stats["distinct_questions"] < 2000  # one-digit problems repeat
    q = {name: {p.question for p in splits[name]} for name in ("train", "eval", "test")}
    assert not (q["train"] & q["eval"] or q["train"] & q["test"] or q["eval"] & q["test"])
    # the held-out splits keep one copy of each problem: each item a distinct problem, the copies counted
    for name in ("eval", "test"):
        assert len(q[name]) == len(splits[name]) and stats[f"{name}_copies_dropped"] > 0
    assert len(splits["test"]) + stats["test_copies_dropped"] == pytest.approx(200, abs=20)
    assert len(splits["eval"]) + stats["eval_copies_dropped"] == pytest.approx(100, abs=20)
    again, _ = ArithmeticTask.load("generated", data, ArithmeticParams(num_problems=2000))
    assert [p.id for p in again["eval"]] == [p.id for p in splits["eval"]]  # seeded
    assert len(splits["gsm8k"]) == 1319 and all(p.gold is not None for p in splits["gsm8k"])


@pytest.mark.parametrize("text, problem, accuracy, unparsed", [
    ("15 + 27 = 42", Problem("a", "What is 15 + 27?", answer=42), 1.0, 0.0),       # the last integer counts
    ("42. Or maybe 41", Problem("a", "q", answer=42), 0.0, 0.0),                  # ... even when wrong
    ("I don't know", Problem("a", "q", answer=42), 0.0, 1.0),                    # no integer at all
    ("-5", Problem("a", "What is 3 - 8?", answer=-5), 1.0, 0.0),                 # signs
    ("The answer is 18.", Problem("g", "q", gold="18"), 1.0, 0.0),               # GSM8K: the final number
    ("#### 1,234", Problem("g", "q", gold="1234"), 1.0, 0.0),                    # ... with a separator
])
def test_arithmetic_scores(text, problem, accuracy, unparsed):
    task = ArithmeticTask({}, ArithmeticParams(), WordTokenizer(), 64)
    per = task.score([text], [problem])
    assert per["accuracy"] == [accuracy] and per["unparsed"] == [unparsed]


def test_arithmetic_prompts_targets_and_reward_inputs():
    task = ArithmeticTask({}, ArithmeticParams(), WordTokenizer(), 64)
    p, g = Problem("a", "What is 6 / 3? Answer with an integer.", answer=2), Problem("g", "Ann has 3.", gold="3")
    assert task.content(p) == p.question and task.sft_target(p) == "2"
    assert task.reward_inputs(p) == {"answer": 2} and task.reward_inputs(g) == {"gold": "3"}
    assert "The answer is N" in task.content(g)
    with pytest.raises(ValueError, match="held out"):
        task.sft_target(g)


# ---- countdown ------------------------------------------------------------------------------------------------

def test_countdown_splits_and_targets_score_one():
    splits, _ = CountdownTask.load("generated", DataConfig(eval_size=50), CountdownParams(num_problems=400))
    key = lambda p: (tuple(sorted(p.numbers)), p.target)  # noqa: E731
    assert not {key(p) for p in splits["train"]} & {key(p) for p in splits["eval"]}
    task = CountdownTask(splits, CountdownParams(), WordTokenizer(), 512)
    train = splits["train"][:100]
    per = task.score([task.sft_target(p) for p in train], train)  # every SFT target is an exact solution
    assert per["accuracy"] == [1.0] * 100 and per["format"] == [1.0] * 100
    assert all(3 <= len(p.numbers) <= 4 for p in train)
    assert task.reward_inputs(train[0]) == {"target": train[0].target, "numbers": list(train[0].numbers)}


@pytest.mark.parametrize("text, accuracy, fmt, valid, reward", [
    ("<answer>(25 - 5) * 3</answer>", 1.0, 1.0, 1.0, 1.0),     # 60 exactly, numbers from [25, 5, 3]
    ("<answer>25 * 3 - 5</answer>", 0.0, 1.0, 1.0, 0.6),       # 70 misses 60 by 10/60 = 0.17: the <= 0.2 tier
    ("<answer>25 * 4</answer>", 0.0, 1.0, 0.0, 0.1),           # 4 is not given
    ("the answer is 60", 0.0, 0.0, 0.0, 0.0),                  # no answer block
])
def test_countdown_scores(text, accuracy, fmt, valid, reward):
    from tasks.countdown import CountdownProblem

    task = CountdownTask({}, CountdownParams(), WordTokenizer(), 512)
    per = task.score([text], [CountdownProblem("c", (25, 5, 3), 60, "(25 - 5) * 3", "q")])
    assert (per["accuracy"], per["format"], per["valid"], per["reward"]) == ([accuracy], [fmt], [valid], [reward])


# ---- domain QA ------------------------------------------------------------------------------------------------

def test_reference_uses_the_answer_offset_not_the_first_match():
    ex = QAExample("q", "Rome is old. Cy lives in Rome now.", "Where?", ("Rome",), "en", answer_starts=(25,))
    assert reference_sentence(ex) == "Cy lives in Rome now."
    no_offset = dataclasses.replace(ex, answer_starts=())
    assert reference_sentence(no_offset) == "Rome is old."  # without an offset: the first occurrence


@pytest.fixture
def hash_encoder(monkeypatch):
    """The rewards' encoder (and so the domain task's metrics') is a deterministic bag-of-words one: no model."""
    monkeypatch.setattr(semantic, "cached_encoder", lambda spec: HashEncoder(dim=256))


def _domain(threshold=0.7):
    return DomainQATask({}, DomainQAParams(threshold=threshold), WordTokenizer(), 512)


def test_domain_scores(hash_encoder):
    task = _domain()
    ex = DomainExample("q", "c", "Where does Cy live?", "Cy lives in Rome now.", "en")
    per = task.score(["Cy lives in Rome now.", "Paris.", "Cy lives in Rome. Cy lives in Rome."], [ex] * 3)
    assert per["accuracy"] == [1.0, 0.0, 1.0] and per["similarity"][0] == pytest.approx(1.0)
    assert per["repetition_rate"] == [0.0, 0.0, 1.0]  # the third repeats a sentence
    assert per["len"] == [5.0, 1.0, 8.0]


def test_domain_consistency_over_samples(hash_encoder):
    task = _domain()
    ex = DomainExample("q", "c", "Where?", "Cy lives in Rome now.", "en")
    per = task.score_samples([["Cy lives in Rome now."] * 3,                      # all correct: consistent
                              ["Cy lives in Rome now.", "Paris.", "Paris."]],      # 1 of 3: not
                             [ex, ex])
    assert per["consistency"] == [1.0, 0.0]
    assert per["sample_spread"][0] == pytest.approx(0.0) and per["sample_spread"][1] > 0.5


def test_domain_qa_data_from_xquad(shared_data):
    splits, _ = DomainQATask.load("xquad:en", DataConfig(eval_size=50), DomainQAParams())
    for ex in splits["eval"]:
        assert ex.reference in ex.context and len(ex.reference) < len(ex.context) + 1


# ---- the shared plumbing --------------------------------------------------------------------------------------

def _mlqa(n=10):
    ex = [QAExample(f"q{i}", f"context {i}", f"question {i}?", (f"answer {i}",), "en") for i in range(n)]
    return MLQATask({"train": ex, "eval": ex[:2]}, MLQAParams(), WordTokenizer(), 512, seed=3)


def test_the_training_stream_is_a_seeded_permutation_per_epoch():
    task = _mlqa(10)
    first, second = [task.position(g) for g in range(10)], [task.position(g) for g in range(10, 20)]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert [_mlqa(10).position(g) for g in range(20)] == first + second  # a function of the draw count alone
    batch = task.train_batch(4, 3)
    assert batch.indices == first[4:7]
    assert batch.reward_inputs[0] == {"answers": [f"answer {first[4]}"], "lang": "en"}


def test_sft_pairs_end_in_eos_and_follow_the_split_order():
    task = _mlqa(10)
    pairs = task.sft_pairs(limit=3)
    assert len(pairs) == 3 and all(t[-1] == WordTokenizer.eos_token_id for _, t in pairs)
    assert pairs[1][1] == WordTokenizer().encode("answer 1") + [1]


def test_with_split_returns_a_new_task():
    task = _mlqa(4)
    retrieved = [dataclasses.replace(ex, context="[1] passage") for ex in task.splits["eval"]]
    other = task.with_split("eval", retrieved, context="retrieved")
    assert other is not task and other.contexts == {"eval": "retrieved"} and task.contexts == {}
    assert task.splits["eval"][0].context == "context 0" and other.splits["eval"][0].context == "[1] passage"


def test_task_params_are_checked_with_a_fix():
    with pytest.raises(ValueError, match="has no param 'lng'. Did you mean 'lang'"):
        MLQATask.make_params({"lng": "de"})
    with pytest.raises(ValueError, match="template must contain {question}"):
        MLQATask.make_params({"template": "Context: {context}"})
    with pytest.raises(ValueError, match="ops must be"):
        ArithmeticTask.make_params({"ops": "^"})


# ---- the contract ---------------------------------------------------------------------------------------------

def test_a_task_missing_a_required_member_fails_where_it_is_defined():
    with pytest.raises(TypeError, match="Half does not set primary_metric, reward_fields, default_rewards"):
        class Half(Task):
            name = "half"


def test_a_task_missing_a_required_method_cannot_be_built():
    class NoMetrics(Task):
        name, primary_metric, reward_fields = "no_metrics", "accuracy", frozenset({"answer"})
        default_rewards = ({"name": "arithmetic", "weight": 1.0, "params": {}},)
        load = content = reward_inputs = sft_target = None

    with pytest.raises(TypeError, match="metrics"):
        NoMetrics({}, None, WordTokenizer(), 64)


def _one_of_each():
    """(task, example, answer) of every registered task."""
    qa = QAExample("q", "Cy lives in Rome now.", "Where does Cy live?", ("Rome",), "en")
    return [
        (MLQATask({}, MLQAParams(), WordTokenizer(), 512), qa, "in Rome"),
        (DomainQATask({}, DomainQAParams(), WordTokenizer(), 512), DomainQATask.from_qa(qa), "Cy lives in Rome."),
        (ArithmeticTask({}, ArithmeticParams(), WordTokenizer(), 64), Problem("a", "What is 2 + 2?", answer=4), "4"),
        (CountdownTask({}, CountdownParams(), WordTokenizer(), 64),
         CountdownTask.generate(CountdownParams(num_problems=10), 0)[0], "<answer>1 + 2</answer>"),
        (LabelTask({}, LabelParams(), WordTokenizer(), 64),
         LabelExample("l", "qnli", "Who?", "Cy did.", "entailment", "g"), "<Judgement>entailment</Judgement> yes"),
        (PromptsTask({}, PromptsParams(), WordTokenizer(), 64, rewards=({"name": "arithmetic", "weight": 1.0,
                                                                          "params": {}},)),
         PromptRow("r", "What is 2 + 2?", None, {"answer": 4}), "4"),
        (ReasoningGymTask({}, ReasoningGymParams(dataset="chain_sum"), WordTokenizer(), 64), _rg_problem(),
         "<answer>3</answer>"),
    ]


def _rg_problem():
    """A reasoning-gym problem as the task makes it (the package is the [envs] extra)."""
    pytest.importorskip("reasoning_gym", reason="reasoning-gym is raygrpo's [envs] extra")
    from tasks.reasoning_gym import RGProblem

    entry = {"question": "1 + 2 =", "answer": "3", "metadata": {"source_dataset": "chain_sum", "source_index": 0}}
    return RGProblem("chain_sum-0-0", entry["question"], "3", "chain_sum", json.dumps(entry))


def test_score_adds_the_generic_length_to_every_tasks_own_metrics(hash_encoder):
    cases = _one_of_each()
    # every task but verifiers, whose answers its environment's rubric scores in agent sessions (tests/tasks/
    # test_verifiers_env.py, tests/jobs/test_environments.py)
    assert sorted(type(task).name for task, _, _ in cases) == sorted(set(TASKS) - {"verifiers"})
    for task, example, answer in cases:
        per = task.score([answer], [example])
        assert list(per)[-1] == LENGTH_METRIC and per[LENGTH_METRIC] == [float(len(answer.split()))], task.name
        assert task.primary_metric in per and list(per)[:-1] == list(task.metrics([answer], [example]))
        assert task.evaluate([answer], [example]) == {k: v[0] for k, v in per.items()}
        with pytest.raises(ValueError, match="2 answers for 1 examples"):
            task.score([answer, answer], [example])


@pytest.mark.parametrize("text", ["Answer: Rome", "in Rome, Italy", "", "Paris"])
def test_qa_metrics_are_the_qa_rewards_parts(text):
    from rewards.registry import RewardScorer

    task, example, _ = _one_of_each()[0]
    _, parts = RewardScorer(list(task.default_rewards)).score([text], [len(text.split())], [task.reward_inputs(example)])
    per = task.score([text], [example])
    assert (per["f1"], per["em"]) == (parts["qa/f1"], parts["qa/em"])


def test_retrieval_reads_a_qa_task_through_its_accessors():
    cases = {type(task).name: (task, example) for task, example, _ in _one_of_each()}
    assert {name for name, cls in TASKS.items() if cls.retrievable} == {"mlqa", "domain_qa"}
    for name in ("mlqa", "domain_qa"):
        task, example = cases[name]
        assert (task.retrieval_query(example), task.retrieval_document(example)) == (example.question, example.context)
        other = task.with_context(example, "[1] passage")
        assert other.context == "[1] passage" and example.context == "Cy lives in Rome now."
    task, example = cases["countdown"]
    with pytest.raises(TypeError, match="'countdown' is not retrievable"):
        task.retrieval_query(example)


def test_a_label_task_declares_its_label_set():
    cases = {type(task).name: (task, example) for task, example, _ in _one_of_each()}
    assert cases["labels"][0].label_set(cases["labels"][1]) == ("entailment", "not_entailment")
    assert cases["mlqa"][0].label_set(cases["mlqa"][1]) is None


# ---- the registry's checks ------------------------------------------------------------------------------------

def test_every_task_is_registered_and_feeds_its_own_rewards():
    for name, cls in TASKS.items():
        if name == "verifiers":  # its samples are agent sessions, scored by the environment's rubric
            cfg = load_config(overrides=[f"task.name={name}"])
            assert cfg.rollout.agent == "tasks.verifiers_env:run" and reward_components(cfg) == []
            continue
        if cls.default_rewards is None:  # the prompts task: the config names the user's rewards, or it is an error
            with pytest.raises(ConfigError, match="has no reward of its own: name yours in rewards.components"):
                reward_components(load_config(overrides=[f"task.name={name}"]))
            continue
        cfg = load_config(overrides=[f"task.name={name}"])
        check_job(cfg)  # the task's default rewards read only fields it provides
        assert [c["name"] for c in reward_components(cfg)] == [c["name"] for c in cls.default_rewards]
        assert cls.primary_metric and cls.name == name


@pytest.mark.parametrize("overrides, message", [
    (["task.name=countdwn"], "Did you mean 'countdown'?"),
    (["task.name=domain_qa", "rewards.components=[{name: arithmetic}]"], "use one of gsm8k, similarity, repetition"),
    (["task.name=arithmetic", "task.params.num_problems=3"], "num_problems must be >= 10"),
])
def test_the_registry_refuses_with_a_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_job(load_config(overrides=overrides))
