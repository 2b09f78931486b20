"""Integer arithmetic (the SFT-vs-GRPO arithmetic paper): "What is 15 + 27? Answer with an integer."

Data: seeded generated problems (rewards/numeric.py) at a `difficulty` (LEVELS below): the paper's +, -, *,
exact / on one- and two-digit operands by default, or one-digit + and - (`easy`); split into train / eval / test
with every copy of a question on one side, so no held-out question was trained on. GSM8K's test set
(../shared/data/gsm8k) is an extra, harder held-out split `gsm8k` with its own scoring (the final number of a
worked solution); it is evaluated by jobs/eval.py, never trained on.
Reward: 1 when the last integer of the completion is the answer (`arithmetic`). Metrics, read off that reward
(`gsm8k` on GSM8K): accuracy (primary), the fraction with no integer at all; answer length in tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from common.data import shared_data_dir
from rewards.numeric import gsm8k_gold, make_arithmetic_problems
from rewards.registry import ArithmeticReward, GSM8KReward
from tasks.base import GeneratedTask, apply_level

GSM8K_FILE = "gsm8k/test.jsonl"
GSM8K_INSTRUCTION = "Solve the problem step by step, then end with 'The answer is N.'"


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: int | None = None   # arithmetic problems
    gold: str | None = None     # GSM8K: the final number after '####'


@dataclass(frozen=True)
class ArithmeticLevel:
    ops: str          # operators drawn from, a string of + - * /
    min_digits: int   # each operand has min_digits..max_digits digits (a quotient's dividend may have more)
    max_digits: int


# `task.params.difficulty`: named defaults of the generator's fields (issue 18). "paper" is the SFT-vs-GRPO paper's
# setting (the default); "easy" is one-digit + and -, only 200 distinct questions, where a 135M model is right often
# enough for most GRPO groups to carry a signal (jobs/configs/arithmetic_easy_grpo.yaml has the measured rates).
LEVELS = {
    "paper": ArithmeticLevel(ops="+-*/", min_digits=1, max_digits=2),
    "easy": ArithmeticLevel(ops="+-", min_digits=1, max_digits=1),
}


@dataclass(frozen=True)
class ArithmeticParams:
    """A field given explicitly wins over its difficulty level's value (difficulty: easy with ops: "+" is easy
    with additions only); None takes the level's."""
    num_problems: int = 5000             # generated before the split (duplicates stay on one side)
    difficulty: str = "paper"            # a key of LEVELS
    ops: str | None = None
    min_digits: int | None = None
    max_digits: int | None = None
    gsm8k: bool = True                   # add the `gsm8k` held-out split when the shared file exists
    gsm8k_instruction: str = GSM8K_INSTRUCTION

    def __post_init__(self):
        apply_level(self, LEVELS)
        if self.num_problems < 10:
            raise ValueError(f"num_problems must be >= 10, got {self.num_problems}")
        if not self.ops or set(self.ops) - set("+-*/"):
            raise ValueError(f"ops must be a non-empty string of + - * /, got {self.ops!r}")
        if not 1 <= self.min_digits <= self.max_digits <= 6:
            raise ValueError(f"need 1 <= min_digits <= max_digits <= 6, got {self.min_digits}, {self.max_digits}")


def load_gsm8k(path, limit: int | None = None) -> list[Problem]:
    """GSM8K rows {"question", "answer": "... #### N"} -> Problems with the gold final number."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            out.append(Problem(id=f"gsm8k-{i}", question=row["question"], gold=str(gsm8k_gold(row["answer"]))))
            if limit is not None and len(out) >= limit:
                break
    return out


class ArithmeticTask(GeneratedTask):
    name = "arithmetic"
    primary_metric = "accuracy"
    reward_fields = frozenset({"answer"})
    default_rewards = ({"name": "arithmetic", "weight": 1.0, "params": {}},)
    Params = ArithmeticParams

    @staticmethod
    def generate(params: ArithmeticParams, seed: int) -> list[Problem]:
        raw = make_arithmetic_problems(params.num_problems, seed=seed, ops=tuple(params.ops),
                                       digits=(params.min_digits, params.max_digits))
        return [Problem(id=f"arith-{i}", question=p["question"], answer=p["answer"]) for i, p in enumerate(raw)]

    @staticmethod
    def problem_key(problem: Problem) -> str:
        return problem.question

    @classmethod
    def load(cls, source, data, params):
        """The generated splits, and GSM8K's test set as the held-out split `gsm8k` where the shared file is."""
        splits, stats = super().load(source, data, params)
        stats["distinct_questions"] = len({p.question for split in splits.values() for p in split})
        gsm8k = shared_data_dir() / GSM8K_FILE
        if params.gsm8k and gsm8k.is_file():
            splits["gsm8k"] = load_gsm8k(gsm8k)
        elif params.gsm8k:
            stats["gsm8k"] = f"absent ({gsm8k}); the gsm8k split is skipped"
        return splits, stats

    def content(self, example: Problem, cut: str | None = None) -> str:
        if example.gold is not None:
            return f"{example.question}\n{self.params.gsm8k_instruction}"
        return example.question

    def reward_inputs(self, example: Problem) -> dict:
        return {"answer": example.answer} if example.gold is None else {"gold": example.gold}

    def sft_target(self, example: Problem) -> str:
        if example.gold is not None:
            raise ValueError("GSM8K problems are held out: there is no SFT target for them")
        return str(example.answer)

    def metrics(self, texts: list[str], examples: Sequence[Problem]) -> dict[str, list[float]]:
        """Accuracy and the unparsed rate: the value and the `unparsed` part of the problem's reward (`arithmetic`,
        or `gsm8k` for a GSM8K problem)."""
        out: dict[str, list[float]] = {"accuracy": [], "unparsed": []}
        for text, ex in zip(texts, examples, strict=True):
            values, parts = self.reward_parts(ArithmeticReward() if ex.gold is None else GSM8KReward(), [text], [ex])
            out["accuracy"] += values
            out["unparsed"] += parts["unparsed"]
        return out
