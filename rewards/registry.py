"""Reward functions by name, and the batch adapters that reward actors run.

A job's config lists components `{name, weight, params}`; the total reward of a completion is
sum_i weight_i * value_i. Every component's value and its parts (parse failures, F1/EM, ...) are
returned separately, so a job logs each one and the fraction of groups where it has zero variance
(a component with zero variance in every group teaches nothing).

Each entry of `REWARDS` is a class: its dataclass fields are the component's `params` (validated once
at config time, see `check_params`), `needs` names the example fields it reads, and
`__call__(completions, num_tokens, examples) -> ([B] values, {part: [B]})` scores a batch.
Per-sample rewards are pure functions of (completion, example) in rewards/qa.py, numeric.py, countdown.py,
nlu.py; the semantic ones (semantic.py) embed a batch at once with an encoder held once per actor.
Tasks read their metrics off these same components (tasks/base.py `Task.reward_parts`), so a task's
metric and the reward that computes it too have one definition.

Beside the registry's names, a component may be the user's own function (`fn`) or a reward server (`url`):
rewards/external.py. Those may return None for a sample (no reward from that component); the total of a sample is
the weighted sum of the components that scored it (TRL's convention for several reward functions), and a sample no
component scored has total None: it leaves its group's statistics and the loss, and is counted.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from rewards import countdown, nlu, numeric, qa
from rewards.errors import RewardError

Values = tuple[list[float], dict[str, list[float]]]


def _per_sample(fn: Callable[[str, int, Mapping[str, Any]], tuple[float, dict[str, float]]],
                name: str, completions: list[str], num_tokens: list[int],
                examples: list[Mapping[str, Any]]) -> Values:
    """Run a per-sample reward over a batch; re-raise any exception with the sample attached."""
    values: list[float] = []
    parts: dict[str, list[float]] = {}
    for i, (text, n, ex) in enumerate(zip(completions, num_tokens, examples)):
        try:
            v, p = fn(text, n, ex)
        except Exception as err:
            raise RewardError(f"reward '{name}' raised on sample {i}: {type(err).__name__}: {err}; "
                              f"completion={text[:200]!r} example={dict(ex)!r:.300}") from err
        values.append(float(v))
        for k, x in p.items():
            parts.setdefault(k, []).append(float(x))
    return values, parts


class _PerSampleReward:
    """Batch adapter for rewards defined per sample by `_one(completion, num_tokens, example)`."""
    name = ""

    def __call__(self, completions, num_tokens, examples) -> Values:
        return _per_sample(self._one, self.name, completions, num_tokens, examples)


@dataclass(frozen=True)
class QAReward(_PerSampleReward):
    """Extractive QA: f1_weight*F1 + em_weight*EM - length_coef*max(0, tokens - length_free_tokens)."""
    f1_weight: float = 0.7
    em_weight: float = 0.3
    length_free_tokens: int = 64
    length_coef: float = 0.001
    metric: str = "official"  # official (MLQA rules per language) | squad | simple (paper; a deviation)
    answer_tag: str | None = None  # the prediction is the last <tag>...</tag> (none: empty), e.g. after searches
    needs = ("answers", "lang")
    name = "qa"

    def __post_init__(self):
        if self.metric not in qa.QA_METRICS:
            raise ValueError(f"metric must be one of {qa.QA_METRICS}, got {self.metric!r}")

    def prediction(self, text: str) -> str:
        """What is scored of an answer: its last <answer_tag> block, or (no tag) the extracted answer."""
        if self.answer_tag is None:
            return qa.extract_answer(text)
        return qa.extract_answer(countdown.last_tag_content(text, self.answer_tag) or "")

    def _one(self, text: str, n: int, ex: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        pred = self.prediction(text)
        r, parts = qa.qa_reward(pred, list(ex["answers"]), ex["lang"], n, self.f1_weight, self.em_weight,
                                self.length_free_tokens, self.length_coef, self.metric)
        return r, {**parts, "empty": float(not pred)}


@dataclass(frozen=True)
class ArithmeticReward(_PerSampleReward):
    """1.0 when the last integer of the completion equals example['answer'], else 0.0."""
    needs = ("answer",)
    name = "arithmetic"

    def _one(self, text, n, ex):
        return numeric.arithmetic_reward(text, int(ex["answer"])), {
            "unparsed": float(numeric.last_integer(text) is None)}


@dataclass(frozen=True)
class GSM8KReward(_PerSampleReward):
    """1.0 when the completion's final number equals the gold number: example['gold'] (a GSM8K answer field,
    ending '#### N', or a number), else example['reference'] (the prompts task's answer column)."""
    needs = ("gold|reference",)
    name = "gsm8k"

    def _one(self, text, n, ex):
        return numeric.gsm8k_reward(text, ex["gold"] if "gold" in ex else ex["reference"]), {
            "unparsed": float(numeric.extract_number(text) is None)}


@dataclass(frozen=True)
class ReasoningGymReward(_PerSampleReward):
    """reasoning-gym's own `score_answer` of the problem's generator on the completion's <answer> (rewards/
    procedural.py); `formatted` is 1 where the completion wrote an answer in the tags."""
    needs = ("entry",)
    name = "reasoning_gym"
    answer_tag: str = "answer"

    def _one(self, text, n, ex):
        from rewards.procedural import score

        value, formatted = score(text, ex["entry"], self.answer_tag)
        return value, {"formatted": float(formatted)}


@dataclass(frozen=True)
class CountdownReward(_PerSampleReward):
    """Tiered Countdown reward (1.0 correct ... 0.1 right format, 0.0 wrong format); see countdown.py."""
    needs = ("target", "numbers")
    name = "countdown"

    def _one(self, text, n, ex):
        reward, status = countdown.countdown_score(text, int(ex["target"]), list(ex["numbers"]))
        return reward, {s: float(status == s) for s in countdown.STATUSES}


@dataclass(frozen=True)
class LabelReward(_PerSampleReward):
    """GLUE-style label in <Judgement></Judgement>: 1 correct, 0 wrong, -1 wrong format."""
    needs = ("label", "task")
    name = "label"

    def _one(self, text, n, ex):
        r = nlu.label_reward(text, ex["label"], ex["task"])
        return r, {"wrong_format": float(r == nlu.WRONG_FORMAT)}


@dataclass(frozen=True)
class STSBReward(_PerSampleReward):
    """STS-B regression in <Judgement></Judgement>: 2.5 - |y_hat - y|, -2.5 for wrong format."""
    needs = ("score",)
    name = "stsb"

    def _one(self, text, n, ex):
        r = nlu.stsb_reward(text, float(ex["score"]))
        return r, {"wrong_format": float(r == nlu.STSB_WRONG_FORMAT)}


def _semantic():
    from rewards import semantic  # numpy + the encoder: imported only by actors that use them

    return semantic


@dataclass(frozen=True)
class SimilarityReward:
    """Cosine similarity of completion and example['reference'] (or its first answer) under the encoder;
    a cross-encoder's score instead when `cross_encoder` names one."""
    encoder: str | None = None        # None = the packaged all-MiniLM-L6-v2
    cross_encoder: str | None = None  # HF id or folder of a sentence-transformers CrossEncoder
    needs = ("reference|answers",)

    def __call__(self, completions, num_tokens, examples) -> Values:
        refs = [ex["reference"] if "reference" in ex else ex["answers"][0] for ex in examples]
        sem = _semantic()
        try:
            if self.cross_encoder:
                values = sem.cross_encoder_scores(sem.load_cross_encoder(self.cross_encoder), completions, refs)
            else:
                values = sem.similarity(sem.cached_encoder(self.encoder), completions, refs)
        except Exception as err:
            raise RewardError(f"reward 'similarity' raised on a batch of {len(completions)}: "
                              f"{type(err).__name__}: {err}; first completion={completions[0][:200]!r}") from err
        return values, {}


@dataclass(frozen=True)
class RepetitionReward:
    """Minus a repetition penalty: emb_weight * (max cosine between two sentences of the completion,
    above `threshold`) + ngram_weight * (fraction of repeated word n-grams). In [-(emb+ngram), 0]."""
    encoder: str | None = None
    n: int = 3
    threshold: float = 0.8
    emb_weight: float = 0.5
    ngram_weight: float = 0.5
    needs = ()

    def __call__(self, completions, num_tokens, examples) -> Values:
        sem = _semantic()
        try:
            ngram = [sem.ngram_repetition(t, self.n) for t in completions]
            emb = sem.sentence_repetition(sem.cached_encoder(self.encoder), completions, self.threshold)
        except Exception as err:
            raise RewardError(f"reward 'repetition' raised on a batch of {len(completions)}: "
                              f"{type(err).__name__}: {err}; first completion={completions[0][:200]!r}") from err
        values = [-(self.emb_weight * e + self.ngram_weight * g) for e, g in zip(emb, ngram)]
        return values, {"ngram": ngram, "sentence": emb}


@dataclass(frozen=True)
class RewardModelReward:
    """A trained reward model's score of (example['prompt'], completion), times `scale`."""
    path: str = ""                    # the folder jobs/reward_model.py wrote
    scale: float = 1.0
    max_length: int = 384
    needs = ("prompt",)

    def __post_init__(self):
        if not self.path:
            raise ValueError("reward 'reward_model' needs params.path: the folder jobs/reward_model.py wrote")

    def __call__(self, completions, num_tokens, examples) -> Values:
        from rewards.reward_model import scores

        try:
            values = scores(self.path, [ex["prompt"] for ex in examples], completions, self.max_length)
        except FileNotFoundError:
            raise
        except Exception as err:
            raise RewardError(f"reward 'reward_model' raised on a batch of {len(completions)}: "
                              f"{type(err).__name__}: {err}; first completion={completions[0][:200]!r}") from err
        return [self.scale * v for v in values], {}


REWARDS: dict[str, type] = {
    "qa": QAReward,
    "arithmetic": ArithmeticReward,
    "gsm8k": GSM8KReward,
    "countdown": CountdownReward,
    "reasoning_gym": ReasoningGymReward,
    "label": LabelReward,
    "stsb": STSBReward,
    "similarity": SimilarityReward,
    "repetition": RepetitionReward,
    "reward_model": RewardModelReward,
}


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError naming the fix for an unknown reward name, an unknown param, or a bad value."""
    if name not in REWARDS:
        close = difflib.get_close_matches(name, REWARDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown reward '{name}'.{hint} Known rewards: {', '.join(REWARDS)}")
    cls = REWARDS[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"reward '{name}' has no param '{key}'.{hint} "
                             f"Its params: {', '.join(fields) or '(none)'}")
    cls(**params)  # value checks in __post_init__


def missing_fields(name: str, example_keys: set[str]) -> list[str]:
    """The example fields reward `name` needs that `example_keys` lacks ('a|b' = either)."""
    return [need for need in REWARDS[name].needs if not set(need.split("|")) & example_keys]


def build_component(c: Mapping[str, Any]):
    """The scorer of one component dict ({name, weight, params} of the registry, or {fn | url, ...} from outside)."""
    if c.get("fn"):
        from rewards.external import FunctionReward
        from rewards.user import parse_spec

        return FunctionReward(c["name"], c["timeout_s"], c["on_error"], spec=parse_spec(c["fn"]),
                              params=dict(c.get("params") or {}))
    if c.get("url"):
        from rewards.external import ServerReward

        params = dict(c.get("params") or {})
        return ServerReward(c["name"], c["timeout_s"], c["on_error"], url=c["url"], retries=int(params.get("retries", 2)),
                            headers=dict(params.get("headers") or {}))
    return REWARDS[c["name"]](**c.get("params", {}))


def weighted_total(values: list[tuple[float, list[float | None]]]) -> list[float | None]:
    """Per sample, sum of weight * value over the components that scored it; None where none did.

    >>> weighted_total([(1.0, [1.0, None, None]), (0.5, [2.0, 4.0, None])])
    [2.0, 2.0, None]
    """
    n = len(values[0][1]) if values else 0
    out: list[float | None] = []
    for i in range(n):
        got = [(w, v[i]) for w, v in values if v[i] is not None]
        out.append(sum(w * x for w, x in got) if got else None)
    return out


class RewardScorer:
    """Scores batches with the weighted sum of the configured components (held by a stateless actor)."""

    def __init__(self, components: list[Mapping[str, Any]]):
        """components: [{"name", "weight", "params"}] (or with "fn" / "url": rewards/external.py); built once, so an
        encoder loads once per actor and a user function's process starts once. None: an agent's returns are the
        rewards (rollout.agent) and nothing else scores a sample."""
        self.components = [(c["name"], float(c.get("weight", 1.0)), build_component(c)) for c in components]

    def score(self, completions: list[str], num_tokens: list[int], examples: list[Mapping[str, Any]],
              completion_ids: list[list[int]] | None = None, state: Mapping[str, Any] | None = None) -> Values:
        """[B] completions -> ([B] total rewards (None: no component scored it), {"<name>": [B] value,
        "<name>/<part>": [B]}). `completion_ids` and `state` (the step being scored: global_step, max_steps,
        phase) reach the components from outside (user functions, servers)."""
        if not (len(completions) == len(num_tokens) == len(examples)):
            raise ValueError(f"score: {len(completions)} completions, {len(num_tokens)} token counts, "
                             f"{len(examples)} examples; they must match")
        from rewards.external import ExternalReward

        weighted: list[tuple[float, list[float | None]]] = []
        comps: dict[str, list] = {}
        for name, weight, fn in self.components:
            if isinstance(fn, ExternalReward):
                values, parts = fn(completions, num_tokens, examples, completion_ids, state)
            else:
                values, parts = fn(completions, num_tokens, examples)
            bad = next((i for i, v in enumerate(values) if v is not None and not math.isfinite(v)), None)
            if bad is not None:  # one NaN would make every advantage of its group NaN, and the update with it
                raise RewardError(f"reward '{name}' returned {values[bad]} on sample {bad}; a reward must be a finite "
                                  f"number. completion={completions[bad][:200]!r} example={dict(examples[bad])!r:.300}")
            comps[name] = values
            comps.update({f"{name}/{k}": v for k, v in parts.items()})
            weighted.append((weight, values))
        # no component (rollout.agent, whose returns are the rewards): nothing here scores a sample
        return (weighted_total(weighted) if weighted else [None] * len(completions)), comps


def component_metrics(components: Mapping[str, list], group_size: int) -> dict[str, float]:
    """Per component: its mean over the samples it scored (None: not scored), and for reward values (not parts)
    the fraction of groups of `group_size` whose scored values are all equal (zero variance: no learning signal from
    that component; a group with fewer than two scored values counts as one). Where some sample went unscored,
    `<name>/unscored` counts them; a part named `errors` (rewards/external.py) is a count, summed.

    >>> component_metrics({"qa": [1.0, 1.0, 0.0, 1.0], "qa/em": [1.0, 1.0, 0.0, 1.0]}, 2)
    {'qa': 0.75, 'qa/zero_var_frac': 0.5, 'qa/em': 0.75}
    >>> component_metrics({"mine": [1.0, None, 0.0, 0.5], "mine/errors": [0.0, 1.0, 0.0, 0.0]}, 2)
    {'mine': 0.5, 'mine/zero_var_frac': 0.5, 'mine/unscored': 1, 'mine/errors': 1.0}
    """
    from rewards.external import COUNTS

    out: dict[str, float] = {}
    for key, values in components.items():
        scored = [v for v in values if v is not None]
        if any(isinstance(v, str) for v in scored):
            continue  # a text column a function logged (log_extra): in the rollout records, not a metric
        if key.rsplit("/", 1)[-1] in COUNTS and "/" in key:
            out[key] = float(sum(scored))
            continue
        if scored:
            out[key] = sum(scored) / len(scored)
        if "/" not in key:
            groups = [[v for v in values[i:i + group_size] if v is not None] for i in range(0, len(values), group_size)]
            out[f"{key}/zero_var_frac"] = sum(len(g) < 2 or max(g) == min(g) for g in groups) / len(groups)
            if len(scored) < len(values):
                out[f"{key}/unscored"] = len(values) - len(scored)
    return out
