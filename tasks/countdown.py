"""Countdown (the multi-stage GRPO -> SFT -> GRPO paper): reach a target with 3-4 numbers and + - * /.

Data: seeded solvable problems (rewards/countdown.py) at a `difficulty` (LEVELS below: the paper's 3-4 numbers up
to 99 and targets up to 1000 by default, or `easy`: 3 numbers up to 10 and targets up to 30), split so that one
(numbers, target) pair is on one side only. The answer is the expression in the last `<answer>...</answer>` block.
Reward: the tiered Countdown reward (1.0 exact, 0.8..0.3 valid misses, 0.1 bad expression in the right
format, 0.0 no answer block). Metrics, read off that reward: accuracy = exact solutions (primary), format rate
(an answer block is present), valid rate (a valid expression of the given numbers), mean reward; answer length.
SFT targets are the generator's own solutions, `<answer>(a op b) op c</answer>`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rewards.countdown import make_countdown_problems
from rewards.registry import CountdownReward
from tasks.base import GeneratedTask, apply_level


@dataclass(frozen=True)
class CountdownProblem:
    id: str
    numbers: tuple[int, ...]
    target: int
    solution: str
    question: str


@dataclass(frozen=True)
class CountdownLevel:
    sizes: tuple[int, ...]   # how many numbers a problem has
    max_number: int          # numbers are drawn from 1..max_number
    max_target: int          # targets lie in 1..max_target


# `task.params.difficulty`: named defaults of the generator's fields (issue 18). "paper" is the multi-stage paper's
# setting (the default); "easy" is three small numbers and small targets, for a model too small for the paper's
# (jobs/configs/countdown_easy_grpo_rs_grpo.yaml has the base model's measured rates on it).
LEVELS = {
    "paper": CountdownLevel(sizes=(3, 4), max_number=99, max_target=1000),
    "easy": CountdownLevel(sizes=(3,), max_number=10, max_target=30),
}


@dataclass(frozen=True)
class CountdownParams:
    """A field given explicitly wins over its difficulty level's value (difficulty: easy with max_target: 50 is
    easy with larger targets); None takes the level's."""
    num_problems: int = 5000
    difficulty: str = "paper"                # a key of LEVELS
    sizes: tuple[int, ...] | None = None     # how many numbers a problem has
    max_number: int | None = None
    max_target: int | None = None

    def __post_init__(self):
        apply_level(self, LEVELS)
        object.__setattr__(self, "sizes", tuple(self.sizes))
        if self.num_problems < 10:
            raise ValueError(f"num_problems must be >= 10, got {self.num_problems}")
        if not self.sizes or min(self.sizes) < 2 or max(self.sizes) > 8:
            raise ValueError(f"sizes must be within 2..8, got {self.sizes}")
        if self.max_number < 1 or self.max_target < 1:
            raise ValueError("max_number and max_target must be >= 1")


class CountdownTask(GeneratedTask):
    name = "countdown"
    primary_metric = "accuracy"
    reward_fields = frozenset({"target", "numbers"})
    default_rewards = ({"name": "countdown", "weight": 1.0, "params": {}},)
    Params = CountdownParams

    @staticmethod
    def generate(params: CountdownParams, seed: int) -> list[CountdownProblem]:
        raw = make_countdown_problems(params.num_problems, seed=seed, sizes=params.sizes,
                                      number_range=(1, params.max_number), max_target=params.max_target)
        return [CountdownProblem(f"countdown-{i}", tuple(p["numbers"]), p["target"], p["solution"], p["question"])
                for i, p in enumerate(raw)]

    @staticmethod
    def problem_key(problem: CountdownProblem) -> tuple:
        return tuple(sorted(problem.numbers)), problem.target

    def reward_inputs(self, example: CountdownProblem) -> dict:
        return {"target": example.target, "numbers": list(example.numbers)}

    def sft_target(self, example: CountdownProblem) -> str:
        return f"<answer>{example.solution}</answer>"

    def metrics(self, texts: list[str], examples: Sequence[CountdownProblem]) -> dict[str, list[float]]:
        """Read off the `countdown` reward: its value, and its status parts (correct, miss, invalid, no_format)."""
        values, status = self.reward_parts(CountdownReward(), texts, examples)
        return {"accuracy": status["correct"], "format": [1.0 - x for x in status["no_format"]],
                "valid": [a + b for a, b in zip(status["correct"], status["miss"], strict=True)], "reward": values}
