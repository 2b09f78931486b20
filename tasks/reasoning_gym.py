"""reasoning-gym's procedural generators as a task (`task.name: reasoning_gym`): one generator or a weighted mix,
each with its own config (difficulty fields, sizes), no data download at all.

    task:
      name: reasoning_gym
      params:
        datasets: [{name: basic_arithmetic, weight: 2, config: {min_terms: 2, max_terms: 2}}, {name: chain_sum}]
        size: 2000

Data: `size` training problems generated with seed data.split_seed; the eval problems (data.eval_size, default 200)
and the test problems (data.test_size) from the seeds after train's (reasoning-gym seeds problem i with seed + i),
any problem whose question an earlier split holds dropped: a held-out problem is one the policy never trained on. The prompt is the question
after reasoning-gym's own system prompt (`system_prompt`; "" for none), which asks for the answer in
<answer></answer>. Reward: the generator's own `score_answer` on that answer (`reasoning_gym`, rewards/
procedural.py), with `formatted` (an answer in the tags) as its part. Metrics: accuracy (the mean score, primary),
formatted, and the accuracy of each generator of a mix. The package is raygrpo's `envs` extra: a run without it stops
before any actor starts, naming the install.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from rewards.registry import ReasoningGymReward
from tasks.base import Task

EVAL_SIZE = 200  # held-out problems when data.eval_size is None
DEFAULT = "basic_arithmetic"  # the generator when params name none


@dataclass(frozen=True)
class RGProblem:
    id: str
    question: str
    answer: str | None
    source: str          # the generator that made it
    entry: str           # its entry as JSON (question, answer, metadata): what score_answer reads


@dataclass(frozen=True)
class ReasoningGymParams:
    datasets: tuple = ()               # [{name, weight (default 1), config ({})}]: a weighted mix
    dataset: str | None = None         # or one generator by name (neither: basic_arithmetic)
    config: dict = field(default_factory=dict, hash=False)  # its config
    size: int = 2000                   # training problems
    system_prompt: str | None = None   # None: reasoning-gym's default; "": none
    answer_tag: str = "answer"

    def __post_init__(self):
        if self.datasets and self.dataset:
            raise ValueError("name one generator (dataset: basic_arithmetic, with its config) or a mix (datasets: "
                             "[{name, weight, config}]), not both")
        if not self.datasets and not self.dataset:
            object.__setattr__(self, "dataset", DEFAULT)
        if self.config and not self.dataset:
            raise ValueError("config goes with dataset; in a mix, each entry of datasets has its own config")
        specs = self.specs()
        for s in specs:
            if not isinstance(s, dict) or "name" not in s or set(s) - {"name", "weight", "config"}:
                raise ValueError(f"datasets entries are {{name, weight, config}}, got {s!r}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")

    def specs(self) -> list[dict]:
        return list(self.datasets) if self.datasets else [{"name": self.dataset, "config": dict(self.config)}]


def generate(params: ReasoningGymParams, seed: int, size: int) -> list[RGProblem]:
    """`size` problems of the params' generator or mix, seeded; ValueError naming the generator and its fix."""
    from rewards.procedural import require

    try:
        rg = require()
    except ImportError as err:  # before any actor starts: the job stops naming the install (exit 2)
        raise ValueError(f"task reasoning_gym: {err}") from None
    specs = params.specs()
    known = sorted(rg.factory.DATASETS)
    for s in specs:
        if s["name"] not in known:
            import difflib

            close = difflib.get_close_matches(s["name"], known, n=3)
            raise ValueError(f"reasoning-gym has no generator {s['name']!r}" + (f"; did you mean {', '.join(close)}?"
                             if close else "") + f" ({len(known)} generators: reasoning_gym.factory.DATASETS)")
    try:
        if len(specs) == 1:
            ds = rg.create_dataset(specs[0]["name"], seed=seed, size=size, **dict(specs[0].get("config") or {}))
        else:
            from reasoning_gym.composite import DatasetSpec

            ds = rg.create_dataset("composite", seed=seed, size=size, datasets=[
                DatasetSpec(s["name"], float(s.get("weight", 1.0)), dict(s.get("config") or {})) for s in specs])
    except (TypeError, ValueError, AssertionError) as err:
        raise ValueError(f"reasoning-gym refused the config of {', '.join(s['name'] for s in specs)}: "
                         f"{type(err).__name__}: {err}; fix task.params") from err
    out = []
    for i, entry in enumerate(ds):
        entry = {"question": entry["question"], "answer": entry.get("answer"), "metadata": entry["metadata"]}
        source = entry["metadata"].get("source_dataset", specs[0]["name"])
        out.append(RGProblem(f"{source}-{seed}-{i}", entry["question"], None if entry["answer"] is None else
                             str(entry["answer"]), source, json.dumps(entry, default=str)))
    return out


class ReasoningGymTask(Task):
    name = "reasoning_gym"
    primary_metric = "accuracy"
    reward_fields = frozenset({"entry"})
    default_rewards = ({"name": "reasoning_gym", "weight": 1.0, "params": {}},)
    default_source = "generated"
    Params = ReasoningGymParams

    @classmethod
    def make_params(cls, raw: dict) -> Any:
        raw = dict(raw)
        if isinstance(raw.get("datasets"), list):
            raw["datasets"] = tuple(raw["datasets"])
        return super().make_params(raw)

    @classmethod
    def load(cls, source, data, params):
        if source != "generated":
            raise ValueError(f"task reasoning_gym generates its problems (data.source 'generated'), got {source!r}")
        train = generate(params, data.split_seed, params.size)
        seen = {p.question for p in train}
        splits = {"train": train}
        # reasoning-gym seeds problem i of a dataset with seed + i: the held-out sets start where train's seeds end
        n_eval = data.eval_size or EVAL_SIZE
        held = [("eval", n_eval, params.size)] + ([("test", data.test_size, params.size + n_eval)]
                                                  if data.test_size else [])
        stats = {"generators": ", ".join(s["name"] for s in params.specs())}
        for name, size, offset in held:
            problems, kept = generate(params, data.split_seed + offset, size), []
            for p in problems:  # one copy of each problem, none that an earlier split holds
                if p.question not in seen:
                    seen.add(p.question)
                    kept.append(p)
            splits[name] = kept
            stats[f"{name}_seen_dropped"] = len(problems) - len(kept)
        return splits, stats

    def system_prompt(self) -> str | None:
        if self.params.system_prompt is not None:
            return self.params.system_prompt or None
        from reasoning_gym.utils import SYSTEM_PROMPTS

        return SYSTEM_PROMPTS["default"]

    def prompt_ids(self, example: RGProblem) -> tuple[list[int], bool]:
        from common.data import fit_prompt

        return fit_prompt(self.tokenizer, lambda _: example.question, "", self.max_prompt_tokens,
                          system_prompt=self.system_prompt(), label=f"reasoning_gym problem {example.id!r}")

    def content(self, example: RGProblem, cut: str | None = None) -> str:
        return example.question

    def reward_inputs(self, example: RGProblem) -> dict:
        return {"entry": example.entry}

    def sft_target(self, example: RGProblem) -> str:
        if example.answer is None:
            raise ValueError(f"reasoning-gym problem {example.id} has no reference answer to train toward")
        return f"<{self.params.answer_tag}>{example.answer}</{self.params.answer_tag}>"

    def metrics(self, texts: list[str], examples: Sequence[RGProblem]) -> dict[str, list[float | None]]:
        """accuracy (the generator's score), formatted; with a mix, accuracy/<generator> on its own problems."""
        values, parts = self.reward_parts(ReasoningGymReward(answer_tag=self.params.answer_tag), texts, examples)
        out: dict[str, list[float | None]] = {"accuracy": values, "formatted": parts["formatted"]}
        sources = sorted({ex.source for ex in examples})
        if len(sources) > 1:
            for s in sources:
                out[f"accuracy/{s}"] = [v if ex.source == s else None for v, ex in zip(values, examples)]
        return out
