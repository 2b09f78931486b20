"""What a recipe needs to know about a task, and nothing about how it is trained.

A task is data (named splits: train, eval, test and any extra held-out sets), a prompt per example, the
fields its rewards read, an SFT target per example and a scorer of answers with one *primary* metric
(higher is better) that picks the best checkpoint. The recipe engine (jobs/engine.py) knows a task only
through this class: it never reads an example's fields.

A subclass sets the class attributes and implements `load`, `content`, `reward_inputs`, `sft_target` and
`score` (and `cuttable` when part of a prompt may be cut to fit, `score_samples` when `eval_samples` > 0).
Tasks are values: `with_split` returns a new task, it never changes one in place.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar, Sequence

from common.data import fit_prompt, three_way_split


@dataclass(frozen=True)
class PromptBatch:
    indices: list[int]               # [P] positions in the train split
    prompt_ids: list[list[int]]      # [P]
    reward_inputs: list[dict]        # [P] what reward functions read, one per prompt


@dataclass(frozen=True)
class NoParams:
    """A task without parameters of its own."""


def split_by(items: Sequence, key, data) -> dict[str, list]:
    """{"train", "eval"[, "test"]} of `items`, grouped by `key` (no group on two sides), sized by the data
    section (eval_size / eval_fraction, test_size, split_seed); "test" only when data.test_size is set."""
    train, eval_, test = three_way_split(items, key, data.eval_fraction, data.split_seed, data.eval_size,
                                         data.test_size)
    return {"train": train, "eval": eval_, **({"test": test} if test else {})}


def split_names(splits: dict[str, list]) -> str:
    return ", ".join(f"{k} ({len(v)})" for k, v in splits.items())


class Task:
    name: ClassVar[str] = ""
    primary_metric: ClassVar[str] = ""              # a key of score()'s result; higher is better
    reward_fields: ClassVar[frozenset[str]] = frozenset()  # the keys of reward_inputs()
    default_rewards: ClassVar[tuple[dict, ...]] = ()  # [{name, weight, params}] when the config names none
    default_source: ClassVar[str] = ""
    eval_samples: ClassVar[int] = 0                 # > 0: eval also samples this many answers per example
    Params: ClassVar[type] = NoParams               # frozen dataclass of the task's own `task.params`

    def __init__(self, splits: dict[str, list], params: Any, tokenizer: Any, max_prompt_tokens: int,
                 seed: int = 0, stats: dict | None = None, contexts: dict[str, str] | None = None):
        self.splits, self.params, self.tokenizer = splits, params, tokenizer
        self.max_prompt_tokens, self.seed = max_prompt_tokens, seed
        self.stats = {**(stats or {}), **{k: len(v) for k, v in splits.items()}}
        self.contexts = contexts or {}  # split -> "retrieved" where retrieval replaced the gold contexts
        self._prompts: dict[str, tuple[list[list[int]], dict[str, float]]] = {}
        self._perms: dict[int, list[int]] = {}

    # ---- what a subclass provides ------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str, data: Any, params: Any) -> tuple[dict[str, list], dict]:
        """(splits, stats) from `source` with the data section's sizes and seed."""
        raise NotImplementedError

    @classmethod
    def all_examples(cls, source: str, data: Any, params: Any) -> list:
        """Every example of `source`, unsplit (jobs/eval.py --split all); by default the splits' union."""
        splits, _ = cls.load(source, data, params)
        return [ex for name in ("train", "eval", "test") for ex in splits.get(name, [])]

    def content(self, example: Any, cut: str | None = None) -> str:
        """The user message of `example`; `cut` replaces its cuttable part (see `cuttable`) when given."""
        raise NotImplementedError

    def cuttable(self, example: Any) -> str | None:
        """The part of the prompt that may lose its tail to fit the budget (a QA context), or None."""
        return None

    def reward_inputs(self, example: Any) -> dict:
        raise NotImplementedError

    def sft_target(self, example: Any) -> str:
        raise NotImplementedError

    def score(self, texts: list[str], examples: Sequence[Any]) -> dict[str, list[float]]:
        """Per-example metrics of one answer per example, the primary metric among them."""
        raise NotImplementedError

    def score_samples(self, samples: list[list[str]], examples: Sequence[Any]) -> dict[str, list[float]]:
        """Per-example metrics of `eval_samples` sampled answers per example (e.g. their consistency)."""
        return {}

    # ---- shared -------------------------------------------------------------------------------------------
    @classmethod
    def make_params(cls, raw: dict) -> Any:
        """The task's params from the config's `task.params` (ValueError naming the fix on a bad key)."""
        import difflib

        names = [f.name for f in fields(cls.Params)] if is_dataclass(cls.Params) else []
        for key in raw:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"task '{cls.name}' has no param '{key}'.{hint} Its params: {', '.join(names) or '(none)'}")
        return cls.Params(**raw)

    def prompt_ids(self, example: Any) -> tuple[list[int], bool]:
        """Chat-formatted prompt ids of one example, and whether its cuttable part was cut to fit."""
        cut = self.cuttable(example)
        label = f"{self.name} example {example.id!r}" if hasattr(example, "id") else f"a {self.name} example"
        if cut is None:
            return fit_prompt(self.tokenizer, lambda _: self.content(example), "", self.max_prompt_tokens,
                              label=label)
        return fit_prompt(self.tokenizer, lambda c: self.content(example, c), cut, self.max_prompt_tokens,
                          label=label)

    def prompts(self, split: str) -> list[list[int]]:
        return self._built(split)[0]

    def prompt_stats(self, split: str) -> dict[str, float]:
        return self._built(split)[1]

    def _built(self, split: str):
        if split not in self._prompts:
            if split not in self.splits:
                raise KeyError(f"task {self.name!r} has no split {split!r}; it has {split_names(self.splits)}")
            built = [self.prompt_ids(ex) for ex in self.splits[split]]
            lengths = [len(ids) for ids, _ in built] or [0]
            self._prompts[split] = ([ids for ids, _ in built], {
                "prompts": len(built), "truncated": sum(cut for _, cut in built),
                "mean_prompt_tokens": sum(lengths) / len(lengths), "max_prompt_tokens": max(lengths)})
        return self._prompts[split]

    def with_split(self, split: str, examples: list, context: str | None = None) -> "Task":
        """A new task whose `split` holds `examples` (e.g. retrieved contexts); prompts are rebuilt."""
        splits = {**self.splits, split: list(examples)}
        contexts = {**self.contexts, **({split: context} if context else {})}
        return type(self)(splits, self.params, self.tokenizer, self.max_prompt_tokens, self.seed,
                          {k: v for k, v in self.stats.items() if k not in self.splits}, contexts)

    def position(self, g: int) -> int:
        """The g-th training example drawn: a fresh seeded permutation every epoch, so the data position is a
        function of the draw count alone and resuming needs nothing but that count."""
        n = len(self.splits["train"])
        epoch = g // n
        if epoch not in self._perms:
            perm = list(range(n))
            random.Random(self.seed * 100_003 + epoch).shuffle(perm)
            self._perms[epoch] = perm
        return self._perms[epoch][g % n]

    def train_batch(self, first: int, n: int) -> PromptBatch:
        """Draws `first` .. `first + n - 1` of the training stream."""
        idx = [self.position(first + j) for j in range(n)]
        train, prompts = self.splits["train"], self.prompts("train")
        return PromptBatch(idx, [prompts[i] for i in idx], [self.reward_inputs(train[i]) for i in idx])

    def target_ids(self, text: str) -> list[int]:
        """An SFT target's token ids, ending in EOS so the policy learns to stop."""
        return list(self.tokenizer.encode(text, add_special_tokens=False)) + [self.tokenizer.eos_token_id]

    def sft_pairs(self, limit: int | None = None) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, target ids) of the first `limit` training examples, in split order."""
        n = len(self.splits["train"]) if limit is None else min(limit, len(self.splits["train"]))
        prompts = self.prompts("train")
        return [(prompts[i], self.target_ids(self.sft_target(self.splits["train"][i]))) for i in range(n)]

    def evaluate(self, texts: list[str], examples: Sequence[Any]) -> dict[str, float]:
        """Mean of every per-example metric of `score`."""
        per = self.score(texts, examples)
        return {k: sum(v) / len(v) for k, v in per.items() if v}
