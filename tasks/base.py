"""The task contract: what a recipe needs to know about a task, and nothing about how it is trained.

A task is data (named splits: train, eval, test and any extra held-out sets), a prompt per example, the
fields its rewards read, an SFT target per example and per-example metrics with one *primary* metric
(higher is better) that picks the best checkpoint. The recipes and jobs/eval.py know a task only through
`Task`, and the retrieval accessors below are how retrieval reads a QA example (every QA example also keeps
`.question` and `.context`, which retrieval read before the accessors existed).

What a task must provide (`Task` declares it; a task class missing one fails where it is defined):
- class attributes `name`, `primary_metric` (a key of `metrics`), `reward_fields` (the keys of
  `reward_inputs`) and `default_rewards` (the reward components of a config that names none; None: the config
  must name them, as for `prompts`, whose rewards are the user's);
- methods `load`, `content`, `reward_inputs`, `sft_target` and `metrics`.
What it may provide, with defaults here: `Params` (the frozen dataclass of its `task.params`),
`default_source`, `all_examples`, `cuttable` (a part of the prompt that may lose its tail to fit),
`eval_samples` with `score_samples`, a label set (`label_set`), retrieval (`retrievable`, with
`retrieval_query`, `retrieval_document` and `with_context`) and fields known only from the data (`fields_from_data`
with `fields`: the prompts task's columns). Every task receives the job's reward components (`self.rewards`), for a
task whose metrics are its rewards.
What every task gets, computed once here: the generic metrics, added by `score` to the task's `metrics` (the
answer's length in tokens, `LENGTH_METRIC`; jobs/eval.py reads it) and by `prompt_stats` to its prompts (how
many were truncated to fit, their lengths); the training stream; SFT pairs; means. A metric that the task's
reward computes too is read off the reward component (`reward_parts`), so the two have one definition.

Shared bases: `GeneratedTask` (below) for seeded generated problems (arithmetic, countdown) and `QATask`
(tasks/qa.py) for questions on a context from SQuAD-format data (mlqa, domain_qa).

Your own data needs no new task: `task.name: prompts` (tasks/prompts.py) reads rows of a file and scores them with
your reward functions (docs/your_task.md). How to add a task to the project: one file tasks/<name>.py with the task's own logic only (its example dataclass, a frozen
Params dataclass if it has parameters, and a subclass of `Task`, `GeneratedTask` or `QATask` that sets the
required class attributes and implements the required methods), and one line `"<name>": <Class>` in `TASKS` in
tasks/registry.py. `check_job` then checks its params and that its default rewards read only fields it
provides, and tests/tasks/test_tasks.py holds every registered task to this contract.

Tasks are values: `with_split` returns a new task, it never changes one in place.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar, Sequence

from common import seeds
from common.data import fit_prompt, three_way_split

LENGTH_METRIC = "len"  # the generic per-example metric `Task.score` adds: the answer's length in tokens


@dataclass(frozen=True)
class PromptBatch:
    indices: list[int]               # [P] positions in the train split
    prompt_ids: list[list[int]]      # [P]
    reward_inputs: list[dict]        # [P] what reward functions read, one per prompt

    def groups(self, picked: list[int]) -> "PromptBatch":
        """These prompts (indices into the P), in that order."""
        return PromptBatch([self.indices[g] for g in picked], [self.prompt_ids[g] for g in picked],
                           [self.reward_inputs[g] for g in picked])

    @staticmethod
    def concat(parts: list["PromptBatch"]) -> "PromptBatch":
        return PromptBatch([i for b in parts for i in b.indices], [p for b in parts for p in b.prompt_ids],
                           [x for b in parts for x in b.reward_inputs])


@dataclass(frozen=True)
class NoParams:
    """A task without parameters of its own."""


def apply_level(params, levels: dict) -> None:
    """`task.params.difficulty`: fill the None fields of a frozen params dataclass from its named level (a
    dataclass whose fields are a subset of the params'); a field given explicitly wins over the level's value."""
    if params.difficulty not in levels:
        raise ValueError(f"difficulty must be one of {', '.join(levels)}, got {params.difficulty!r}")
    level = levels[params.difficulty]
    for f in fields(level):
        if getattr(params, f.name) is None:
            object.__setattr__(params, f.name, getattr(level, f.name))


def split_by(items: Sequence, key, data) -> dict[str, list]:
    """{"train", "eval"[, "test"]} of `items`, grouped by `key` (no group on two sides), sized by the data
    section (eval_size / eval_fraction, test_size, split_seed); "test" only when data.test_size is set."""
    train, eval_, test = three_way_split(items, key, data.eval_fraction, data.split_seed, data.eval_size,
                                         data.test_size)
    return {"train": train, "eval": eval_, **({"test": test} if test else {})}


def split_names(splits: dict[str, list]) -> str:
    return ", ".join(f"{k} ({len(v)})" for k, v in splits.items())


def means(per: dict[str, list[float | None]]) -> dict[str, float]:
    """The mean of every per-example metric over the examples that have it (None: a sample no reward scored).

    >>> means({"reward": [1.0, None, 0.0], "len": [3.0, 5.0, 4.0], "none": [None]})
    {'reward': 0.5, 'len': 4.0}
    """
    out = {}
    for k, v in per.items():
        got = [x for x in v if x is not None]
        if got:
            out[k] = sum(got) / len(got)
    return out


class Task(ABC):
    """The contract (the module docstring lists it) and what every task shares."""
    # ---- required class attributes (checked where a task class is defined) ------------------------------
    name: ClassVar[str] = ""
    primary_metric: ClassVar[str] = ""              # a key of metrics()' result; higher is better
    reward_fields: ClassVar[frozenset[str]] = frozenset()  # the keys of reward_inputs()
    default_rewards: ClassVar[tuple[dict, ...] | None] = ()  # [{name, weight, params}] when the config names none;
    # None: the config must name them (rewards.components)
    # ---- optional class attributes --------------------------------------------------------------------------
    Params: ClassVar[type] = NoParams               # frozen dataclass of the task's own `task.params`
    default_source: ClassVar[str] = ""              # data.source when the config names none
    eval_samples: ClassVar[int] = 0                 # > 0: eval also samples this many answers per example
    retrievable: ClassVar[bool] = False             # True: retrieval may replace the examples' documents
    fields_from_data: ClassVar[bool] = False        # True: `fields()` reads the loaded rows (reward_fields: the least)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in vars(cls):
            return  # a shared base (GeneratedTask, QATask): the tasks built on it declare these
        missing = [a for a in ("name", "primary_metric", "reward_fields") if not getattr(cls, a)]
        missing += ["default_rewards"] if cls.default_rewards == () else []
        if missing:
            raise TypeError(f"task class {cls.__name__} does not set {', '.join(missing)}: every task declares "
                            "them (tasks/base.py, the task contract)")

    def __init__(self, splits: dict[str, list], params: Any, tokenizer: Any, max_prompt_tokens: int,
                 seed: int = 0, stats: dict | None = None, contexts: dict[str, str] | None = None,
                 rewards: tuple[dict, ...] = ()):
        self.splits, self.params, self.tokenizer = splits, params, tokenizer
        self.rewards = tuple(rewards)  # the job's reward components (tasks.registry.reward_components)
        self.max_prompt_tokens, self.seed = max_prompt_tokens, seed
        self.stats = {**(stats or {}), **{k: len(v) for k, v in splits.items()}}
        self.contexts = contexts or {}  # split -> "retrieved" where retrieval replaced the gold contexts
        self._prompts: dict[str, tuple[list[list[int]], dict[str, float]]] = {}
        self._perms: dict[int, list[int]] = {}

    # ---- what a task must provide -------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def load(cls, source: str, data: Any, params: Any) -> tuple[dict[str, list], dict]:
        """(splits, stats) from `source` with the data section's sizes and seed."""

    @abstractmethod
    def content(self, example: Any, cut: str | None = None) -> str:
        """The user message of `example`; `cut` replaces its cuttable part (see `cuttable`) when given."""

    @abstractmethod
    def reward_inputs(self, example: Any) -> dict:
        """What the reward components read of `example`: a dict with keys among `reward_fields`."""

    @abstractmethod
    def sft_target(self, example: Any) -> str:
        """The answer SFT teaches for `example`."""

    @abstractmethod
    def metrics(self, texts: list[str], examples: Sequence[Any]) -> dict[str, list[float]]:
        """The task's own per-example metrics of one answer per example, the primary metric among them (the
        generic ones are `score`'s)."""

    # ---- what a task may provide --------------------------------------------------------------------------
    @classmethod
    def all_examples(cls, source: str, data: Any, params: Any) -> list:
        """Every example of `source`, unsplit (jobs/eval.py --split all); by default the splits' union."""
        splits, _ = cls.load(source, data, params)
        return [ex for name in ("train", "eval", "test") for ex in splits.get(name, [])]

    def fields(self) -> frozenset[str]:
        """The fields `reward_inputs` provides (the prompts task reads them off its rows)."""
        return self.reward_fields

    def cuttable(self, example: Any) -> str | None:
        """The part of the prompt that may lose its tail to fit the budget (a QA context), or None."""
        return None

    def score_samples(self, samples: list[list[str]], examples: Sequence[Any]) -> dict[str, list[float]]:
        """Per-example metrics of `eval_samples` sampled answers per example (e.g. their consistency)."""
        return {}

    def gold_calls(self, example: Any) -> tuple[list[tuple[str, str]], str] | None:
        """A gold multi-turn trace of `example` for SFT with tools: ([(tool, argument)] the policy calls in order, the
        final answer text), or None (the task has none: SFT trains on `sft_target` alone)."""
        return None

    def label_set(self, example: Any) -> tuple[str, ...] | None:
        """The labels an answer to `example` chooses among (a classification task), or None (a free answer)."""
        return None

    def retrieval_query(self, example: Any) -> str:
        """What retrieval searches with for `example` (a `retrievable` task's question)."""
        raise TypeError(f"task {self.name!r} is not retrievable")

    def retrieval_document(self, example: Any) -> str:
        """The document of `example` that retrieval replaces (a QA context); the index is built from these."""
        raise TypeError(f"task {self.name!r} is not retrievable")

    def with_context(self, example: Any, text: str) -> Any:
        """A copy of `example` whose document is `text` (retrieved passages)."""
        raise TypeError(f"task {self.name!r} is not retrievable")

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
                          {k: v for k, v in self.stats.items() if k not in self.splits}, contexts, self.rewards)

    def position(self, g: int) -> int:
        """The g-th training example drawn: a fresh seeded permutation every epoch, so the data position is a
        function of the draw count alone and resuming needs nothing but that count."""
        n = len(self.splits["train"])
        epoch = g // n
        if epoch not in self._perms:
            perm = list(range(n))
            random.Random(seeds.data_epoch(self.seed, epoch)).shuffle(perm)
            self._perms[epoch] = perm
        return self._perms[epoch][g % n]

    def train_batch(self, first: int, n: int) -> PromptBatch:
        """Draws `first` .. `first + n - 1` of the training stream."""
        return self.batch_of([self.position(first + j) for j in range(n)])

    def batch_of(self, idx: list[int]) -> PromptBatch:
        """The training examples at these positions of the train split."""
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

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """[B] the answers' lengths in tokens of the task's tokenizer."""
        return [len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]

    def score(self, texts: list[str], examples: Sequence[Any]) -> dict[str, list[float]]:
        """Per-example metrics of one answer per example: the task's own (`metrics`), then the generic ones
        (LENGTH_METRIC: the answer's length in tokens)."""
        if len(texts) != len(examples):
            raise ValueError(f"task {self.name!r}: {len(texts)} answers for {len(examples)} examples")
        per = self.metrics(texts, examples)
        if LENGTH_METRIC in per:
            raise ValueError(f"task {self.name!r} computes {LENGTH_METRIC!r} itself; it is Task.score's")
        return {**per, LENGTH_METRIC: [float(n) for n in self.token_counts(texts)]}

    def reward_parts(self, reward: Any, texts: Sequence[str],
                     examples: Sequence[Any]) -> tuple[list[float], dict[str, list[float]]]:
        """`reward` (a component of rewards.registry) on one answer per example, fed the reward inputs training
        feeds it: ([B] values, {part: [B]}). A metric that the reward computes too is read from here, so the
        metric and the reward have one definition and cannot drift apart."""
        if len(texts) != len(examples):
            raise ValueError(f"task {self.name!r}: {len(texts)} answers for {len(examples)} examples")
        return reward(list(texts), self.token_counts(texts), [self.reward_inputs(ex) for ex in examples])

    def evaluate(self, texts: list[str], examples: Sequence[Any]) -> dict[str, float]:
        """Mean of every per-example metric of `score`."""
        return means(self.score(texts, examples))


class GeneratedTask(Task):
    """The base of the tasks on seeded generated problems (arithmetic, countdown): data.source 'generated', the
    first data.limit problems, split so that every copy of a problem (`problem_key`) is on one side only. The
    held-out splits (eval, test) keep one copy of each problem: a generator that repeats problems (the easy levels'
    small spaces: 200 distinct easy arithmetic problems in 5000, 1581 easy Countdown ones) would otherwise score one
    problem many times and report CIs over copies as if they were problems. Training keeps every copy (the train
    stream is unchanged). The problems carry their prompt as `.question`."""
    default_source = "generated"

    @staticmethod
    @abstractmethod
    def generate(params: Any, seed: int) -> list:
        """The task's problems, seeded."""

    @staticmethod
    @abstractmethod
    def problem_key(problem: Any) -> Hashable:
        """Problems with one key are copies of one problem: no split holds one that another split holds."""

    @classmethod
    def load(cls, source, data, params):
        if source != "generated":
            raise ValueError(f"task {cls.name} reads data.source 'generated' (seeded problems), got {source!r}")
        problems = cls.generate(params, data.split_seed)
        problems = problems[: data.limit] if data.limit else problems
        splits, stats = split_by(problems, cls.problem_key, data), {"generated": len(problems)}
        for name in ("eval", "test"):
            if name in splits:
                seen, kept = set(), []
                for p in splits[name]:
                    if cls.problem_key(p) not in seen:
                        seen.add(cls.problem_key(p))
                        kept.append(p)
                stats[f"{name}_copies_dropped"] = len(splits[name]) - len(kept)
                splits[name] = kept
        return splits, stats

    def content(self, example: Any, cut: str | None = None) -> str:
        return example.question
