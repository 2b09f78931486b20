"""`task.params.difficulty` of the generated tasks (issue 18): a named level of the generator's fields, explicit
fields winning over it, the default level generating exactly what the tasks generated before levels existed."""
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from rewards.countdown import countdown_score
from rewards.numeric import arithmetic_reward
from tasks import arithmetic, countdown
from tasks.arithmetic import ArithmeticParams, ArithmeticTask
from tasks.countdown import CountdownParams, CountdownTask
from tasks.registry import check_job

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"


def digest(problems) -> str:
    text = json.dumps([dataclasses.asdict(p) for p in problems], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Computed before `difficulty` existed (seed 42 = data.split_seed's default, 5000 problems = the default count):
# a preset without `difficulty` trains and evaluates on exactly the problems it did.
@pytest.mark.parametrize("task, params, pinned", [
    (CountdownTask, CountdownParams(), "88a43a0f9c084b40"),
    (ArithmeticTask, ArithmeticParams(), "89beaf61e71fed8a"),
    (CountdownTask, CountdownParams(difficulty="paper"), "88a43a0f9c084b40"),  # the default level, named
    (ArithmeticTask, ArithmeticParams(difficulty="paper"), "89beaf61e71fed8a"),
])
def test_the_default_level_generates_the_problems_of_before(task, params, pinned):
    assert digest(task.generate(params, 42)) == pinned


def test_the_default_level_is_the_papers():
    assert CountdownParams() == CountdownParams(sizes=(3, 4), max_number=99, max_target=1000)
    assert ArithmeticParams() == ArithmeticParams(ops="+-*/", min_digits=1, max_digits=2)


@pytest.mark.parametrize("level", sorted(countdown.LEVELS))
def test_countdown_levels_respect_their_ranges_and_every_problem_is_solvable(level):
    params = CountdownParams(num_problems=500, difficulty=level)
    spec = countdown.LEVELS[level]
    assert (params.sizes, params.max_number, params.max_target) == (spec.sizes, spec.max_number, spec.max_target)
    for p in CountdownTask.generate(params, seed=7):
        assert len(p.numbers) in spec.sizes and all(1 <= x <= spec.max_number for x in p.numbers)
        assert 1 <= p.target <= spec.max_target
        assert countdown_score(f"<answer>{p.solution}</answer>", p.target, list(p.numbers)) == (1.0, "correct")


_QUESTION = re.compile(r"What is (\d+) ([-+*/]) (\d+)\? Answer with an integer\.")


@pytest.mark.parametrize("level", sorted(arithmetic.LEVELS))
def test_arithmetic_levels_respect_their_ranges_and_every_answer_is_right(level):
    params = ArithmeticParams(num_problems=500, difficulty=level)
    spec = arithmetic.LEVELS[level]
    assert (params.ops, params.min_digits, params.max_digits) == (spec.ops, spec.min_digits, spec.max_digits)
    for p in ArithmeticTask.generate(params, seed=7):
        a, op, b = _QUESTION.fullmatch(p.question).groups()
        assert op in spec.ops
        if op != "/":  # a quotient's dividend is b * q and may have more digits
            assert all(spec.min_digits <= len(x) <= spec.max_digits for x in (a, b))
        assert arithmetic_reward(f"{a} {op} {b} = {p.answer}", p.answer) == 1.0


def test_the_easy_levels_are_easier():
    easy, paper = countdown.LEVELS["easy"], countdown.LEVELS["paper"]
    assert max(easy.sizes) <= min(paper.sizes) and easy.max_number < paper.max_number
    assert easy.max_target < paper.max_target
    easy, paper = arithmetic.LEVELS["easy"], arithmetic.LEVELS["paper"]
    assert set(easy.ops) < set(paper.ops) and easy.max_digits <= paper.max_digits


@pytest.mark.parametrize("params, field, value", [
    (CountdownParams(difficulty="easy", max_target=50), "max_target", 50),   # the explicit field wins ...
    (CountdownParams(difficulty="easy", max_target=50), "sizes", countdown.LEVELS["easy"].sizes),  # ... alone
    (CountdownParams(difficulty="easy", sizes=[3, 4]), "sizes", (3, 4)),     # a YAML list becomes a tuple
    (CountdownParams(max_number=9), "max_number", 9),                        # over the default level too
    (ArithmeticParams(difficulty="easy", ops="+"), "ops", "+"),
    (ArithmeticParams(difficulty="easy", ops="+"), "max_digits", arithmetic.LEVELS["easy"].max_digits),
])
def test_an_explicit_field_wins_over_the_level(params, field, value):
    assert getattr(params, field) == value


def test_generation_follows_an_override():
    problems = CountdownTask.generate(CountdownParams(num_problems=200, difficulty="easy", max_target=5), seed=1)
    assert all(p.target <= 5 and len(p.numbers) == 3 for p in problems)


@pytest.mark.parametrize("task", ["countdown", "arithmetic"])
def test_an_unknown_level_is_a_config_error_naming_the_levels(task):
    with pytest.raises(ConfigError, match=r"task.params of task .*difficulty must be one of paper, easy, got 'hard'"):
        check_job(load_config(overrides=[f"task.name={task}", "task.params.difficulty=hard"]))


def test_a_level_cannot_hide_a_bad_explicit_field():
    with pytest.raises(ValueError, match="sizes must be within 2..8"):
        CountdownParams(difficulty="easy", sizes=(1,))
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        ArithmeticParams(difficulty="easy", min_digits=2)  # easy's max_digits is 1: the override conflicts


@pytest.mark.parametrize("preset, task", [("countdown_easy_grpo_rs_grpo", CountdownTask),
                                          ("arithmetic_easy_grpo", ArithmeticTask)])
def test_the_easy_presets_pass_the_job_checks_and_use_the_easy_level(preset, task):
    cfg = load_config(str(CONFIGS / f"{preset}.yaml"))
    check_job(cfg)
    params = task.make_params(dict(cfg.task.params))
    assert params.difficulty == "easy"
    assert task.make_params({"difficulty": "easy"}) == dataclasses.replace(params, num_problems=5000)
