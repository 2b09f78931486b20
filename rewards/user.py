"""Reward functions from the user's own code, called the way TRL calls them.

A component `{fn: "path/to/my_rewards.py:score"}` (a file) or `{fn: "my_package.rewards:score"}` (an importable
module) names a function that scores a batch:

    def score(completions: list[str], prompts: list[str], **columns) -> list[float | None]

`completions` are the sampled answers (for a chat prompt, TRL's conversational form: `[{"role": "assistant",
"content": text}]` each), `prompts` the rows' prompts as the data file holds them (a string, or the list of chat
messages), `completion_ids` the sampled token ids, and every other column of the row arrives as a keyword argument
holding one value per sample (TRL: `reward_kwargs`). A function with `**kwargs` gets every field; one without gets
only the fields it names, so `def score(completions, answer)` works too. `params` of the component are passed as
further keyword arguments. It returns one score per sample, or `None` for a sample it does not score, or a dict
`{"rewards": [...], "<part>": [...]}` whose other lists are logged as `reward/<name>/<part>`. NaN, infinity, a
wrong length or a non-number are errors, never a silent zero.

Besides TRL's keywords (`completions`, `prompts`, `completion_ids`, the row's fields) a function that names them gets
`trainer_state` (the step: `global_step`, `max_steps`, `epoch`, `phase`), `log_metric(name, value)` (logged as
`reward/<name>/<metric>`, averaged over the step) and `log_extra(column, values)` (one value per sample, into the
rollout records as `<name>/<column>`). A score may be a bool (1.0 / 0.0); an `async def` function is awaited. A
function that takes no `completions` but returns one that does is a factory (TRL's `get_cosine_scaled_reward`,
`get_repetition_penalty_reward`, ...): it is called once with the component's params and what it returns scores.

verl's convention is recognised by its signature: a function that names `solution_str` (and not `completions`) is
called once per sample as verl's reward managers call it, with the names it takes of `data_source`, `solution_str`
(the answer's text), `ground_truth` (the row's `reward_model.ground_truth`, as verl's Parquet holds it, or a
`ground_truth` column) and `extra_info` (the row's, or {}), plus the component's params; it returns a number, a
bool, or a dict whose `score` is the reward and whose other numbers are parts (verl's `reward_extra_info`).

The driver imports and checks each function before any actor starts (`check_signature`: the file, the function and
its signature against the task's fields), exiting 2 with the fix. Reward actors call it in a child process of its
own (`IsolatedFunction`, common/usercode.py): a call that outlives `rewards.timeout_s` kills the child (the next call starts a new one),
and a crash of the child is an error naming the function, not a dead actor.
"""
from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from common.usercode import (FunctionSpec, IsolatedFunction, UserCallError, UserCodeError, load_function,  # noqa: F401
                             parse_spec, plain, takes)

UserRewardError = UserCallError  # a reward function's failure: raised | timeout | died | result

FIXED_ARGS = ("completions", "prompts", "completion_ids")  # what every call passes besides the fields
TRAINER_ARGS = ("trainer_state", "log_metric", "log_extra")  # TRL's: passed where the function names them
RESULT_KEY = "rewards"  # a dict result's list of scores; its other keys are parts
VERL_ARGS = ("data_source", "solution_str", "ground_truth", "extra_info")  # verl's compute_score, per sample
VERL_SCORE = "score"  # a verl dict result's reward; its other numbers are parts


def _named(fn: Callable) -> tuple[list[str], bool]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return [], True
    return ([p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)],
            any(p.kind is p.VAR_KEYWORD for p in params))


def convention(fn: Callable) -> str:
    """How `fn` is called: 'verl' (per sample, `solution_str`), 'trl' (a batch, `completions`, or **kwargs), or
    'factory' (neither: called with the params, it returns the function that scores)."""
    named, var_kw = _named(fn)
    if "solution_str" in named and "completions" not in named:
        return "verl"
    if "completions" in named or var_kw:
        return "trl"
    return "factory"


def ground_truth(example: Mapping[str, Any]) -> Any:
    """verl's ground truth of a row: `reward_model.ground_truth` (verl's Parquet), else a `ground_truth` column."""
    rm = example.get("reward_model")
    if isinstance(rm, Mapping) and "ground_truth" in rm:
        return rm["ground_truth"]
    return example.get("ground_truth")


def build(fn: Callable, spec: FunctionSpec, params: Mapping[str, Any]) -> Callable:
    """What a factory (a function or class that takes no `completions`) returns for the component's params: the
    function that scores; UserCodeError naming the fix where it raises or does not return one that scores."""
    sig = f"{spec.attr}{_signature(fn)}"
    try:
        built = fn(**params)
    except Exception as err:  # noqa: BLE001 -- the user's code, named in the message
        raise UserCodeError(
            f"{spec.where}: function {sig} does not take 'completions', so it is read as a factory (TRL's "
            f"get_*_reward: called with the component's params, it returns the function that scores), and "
            f"{spec.attr}(**{dict(params)}) raised {type(err).__name__}: {err}. Write a reward as def {spec.attr}"
            f"(completions, prompts, **kwargs) -> list[float], verl's as def {spec.attr}(data_source, solution_str, "
            "ground_truth, extra_info=None), or give the factory's arguments in the component's params") from None
    if not callable(built) or convention(built) == "factory":
        raise UserCodeError(
            f"{spec.where}: function {sig} does not take 'completions'; write it as def {spec.attr}(completions, "
            f"prompts, **kwargs) -> list[float] (or verl's def {spec.attr}(data_source, solution_str, ground_truth, "
            f"extra_info=None)); read as a factory, it returned a {type(built).__name__}, which does not score either")
    return built


def _signature(fn: Callable) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def check_function(fn: Callable, spec: FunctionSpec, fields: Sequence[str], params: Mapping[str, Any]) -> str:
    """A component's function checked against the task's `fields` and its `params` in its convention (which it
    returns: trl, verl, factory); UserCodeError naming the fix."""
    kind = convention(fn)
    if kind == "factory":
        check_signature(build(fn, spec, params), spec, fields, {})
    elif kind == "verl":
        check_verl_signature(fn, f"{spec.where}: function {spec.attr}", fields, params)
    else:
        check_signature(fn, spec, fields, params)
    return kind


def adapt(fn: Callable, params: dict) -> Callable:
    """In the child that runs a component's function: one call per batch of this module's call arguments (plus
    `trainer_state`), whatever the function's convention, returning {result, metrics, extra}."""
    kind = convention(fn)
    if kind == "verl":
        return verl_batch(fn, params)
    if kind == "factory":
        name = getattr(fn, "__name__", "factory")
        fn, params = build(fn, FunctionSpec(name, name, module=getattr(fn, "__module__", None)), params), {}
    return trl_batch(fn, params)


@dataclass
class TrainerState:
    """What a reward function reads of the run as TRL's `trainer_state` (transformers' TrainerState fields that mean
    something here): the step being scored (`global_step`, counted over every phase), the run's `max_steps` (0 where
    a phase is given in epochs), the phase's name and `epoch` (None: a stream of prompts, not epochs)."""
    global_step: int = 0
    max_steps: int = 0
    phase: str = ""
    epoch: float | None = None


def trl_batch(fn: Callable, params: Mapping[str, Any]) -> Callable:
    """A TRL-convention function in the child: the keywords it names (all, with **kwargs) and its params,
    `trainer_state` built from the step's dict, and `log_metric` / `log_extra` collecting what it logs."""
    named, var_kw = _named(fn)

    def batch(trainer_state: dict | None = None, **kwargs) -> dict:
        from common.usercode import awaited

        metrics: dict[str, list[float]] = {}
        extra: dict[str, list] = {}

        def log_metric(name: str, value: float) -> None:
            metrics.setdefault(str(name), []).append(float(value))

        def log_extra(column: str, values: list) -> None:
            extra.setdefault(str(column), []).extend(plain(list(values)))

        kwargs.update(params, trainer_state=TrainerState(**(trainer_state or {})), log_metric=log_metric,
                      log_extra=log_extra)
        if not var_kw:
            kwargs = {k: v for k, v in kwargs.items() if k in named}
        # the child's protocol makes the whole answer plain (common/usercode.py _serve)
        return {"result": awaited(fn(**kwargs)), "metrics": metrics, "extra": extra}

    return batch


def logged_parts(logged: Mapping[str, Any], n: int, what: str) -> dict[str, list]:
    """What a function logged with log_metric (a value per call, on each of its n samples) and log_extra (one value per
    sample) as parts of its component; a log_extra column of another length is an error naming it."""
    parts: dict[str, list] = {}
    for name, values in (logged.get("metrics") or {}).items():
        parts[name] = [sum(values) / len(values)] * n
    for column, values in (logged.get("extra") or {}).items():
        if len(values) != n:
            raise UserRewardError(f"{what} logged {len(values)} values of column {column!r} with log_extra for {n} "
                                  "completions; log one per completion", "result")
        parts[column] = [v if v is None or isinstance(v, (int, float, str)) else str(v) for v in values]
    return parts


def verl_batch(fn: Callable, params: Mapping[str, Any]) -> Callable:
    """verl's per-sample `compute_score` over a batch of this module's call arguments (in the child): each sample's
    text, the row's ground truth, data_source and extra_info, the names it takes of them and its params."""
    named, var_kw = _named(fn)

    def batch(completions: list, trainer_state: dict | None = None, **columns) -> dict:
        from common.usercode import awaited

        n = len(completions)
        rows = [{k: v[i] for k, v in columns.items() if isinstance(v, list) and len(v) == n} for i in range(n)]
        rewards, parts = [], {}
        for i, (text, row) in enumerate(zip(completions, rows)):
            if isinstance(text, list):  # TRL's conversational form: the answer's text
                text = text[-1]["content"]
            one = {"data_source": row.get("data_source"), "solution_str": text, "ground_truth": ground_truth(row),
                   "extra_info": row.get("extra_info") or {}}
            got = plain(awaited(fn(**{k: v for k, v in one.items() if var_kw or k in named}, **params)))
            if isinstance(got, Mapping):
                if VERL_SCORE not in got:
                    raise TypeError(f"returned a dict without {VERL_SCORE!r} (keys: {sorted(got)}) for sample {i}; "
                                    f"verl's convention puts the reward under {VERL_SCORE!r}")
                for k, v in got.items():
                    if k != VERL_SCORE and isinstance(v, (int, float)):
                        parts.setdefault(k, [None] * n)[i] = v
                got = got[VERL_SCORE]
            rewards.append(got)
        return {"result": {RESULT_KEY: rewards, **parts}, "metrics": {}, "extra": {}}

    return batch


def check_signature(fn: Callable, spec: FunctionSpec, fields: Sequence[str],
                       params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The keyword arguments a call passes `fn` (None: all of them, it takes **kwargs), after checking that it can
    be called TRL's way with the task's `fields` and the component's `params`; UserCodeError naming the fix."""
    label = f"{spec.where}: function {spec.attr}"
    if convention(fn) == "verl":
        return check_verl_signature(fn, label, fields, params)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise UserCodeError(f"{label}: its signature cannot be read ({err})") from err
    kinds = {p.name: p for p in sig.parameters.values()}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in kinds.values())
    named = [n for n, p in kinds.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    given = set(FIXED_ARGS) | set(TRAINER_ARGS) | set(fields) | set(params)
    clash = sorted(set(params) & (set(fields) | set(FIXED_ARGS) | set(TRAINER_ARGS)))
    if clash:
        raise UserCodeError(f"{label}: params {clash} have the names of fields every call passes already; rename "
                            "them in the component's params")
    positional = [n for n, p in kinds.items() if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if positional:
        raise UserCodeError(f"{label}{sig}: parameters {positional} are positional-only, and reward functions are "
                            "called with keyword arguments (TRL's convention); drop the '/' from the signature")
    if "completions" not in named and not var_kw:
        raise UserCodeError(f"{label}{sig} does not take 'completions'; write it as "
                            f"def {spec.attr}(completions, prompts, **kwargs) -> list[float]")
    for name, p in kinds.items():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and name not in given:
            close = difflib.get_close_matches(name, sorted(given), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserCodeError(
                f"{label}{sig} needs argument {name!r}, which no call passes: the task provides the fields "
                f"{', '.join(sorted(fields)) or '(none)'} besides {', '.join(FIXED_ARGS)}.{hint} Rename the parameter, "
                "give it a default, add the column to the data, or pass it in the component's params")
    _check_params_taken(label, sig, params, named, var_kw)
    return None if var_kw else tuple(named)


def _check_params_taken(label: str, sig, params: Mapping[str, Any], named: Sequence[str], var_kw: bool) -> None:
    unknown = [k for k in params if k not in named and not var_kw]
    if unknown:
        raise UserCodeError(f"{label}{sig} takes no arguments {unknown} (the component's params); add them to the "
                            "signature or drop them from params")


def check_verl_signature(fn: Callable, label: str, fields: Sequence[str],
                         params: Mapping[str, Any]) -> None:
    """verl's compute_score against the task's fields: what it needs is passed, and its ground truth has a source."""
    sig = inspect.signature(fn)
    named, var_kw = _named(fn)
    given = set(VERL_ARGS) | set(params)
    for name, p in sig.parameters.items():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and name not in given:
            raise UserCodeError(f"{label}{sig} (verl's convention: it names solution_str) needs argument {name!r}; "
                                f"a call passes {', '.join(VERL_ARGS)} and the component's params. Give it a default "
                                "or pass it in params")
    _check_params_taken(label, sig, params, named, var_kw)
    if ("ground_truth" in named or var_kw) and not {"reward_model", "ground_truth"} & set(fields):
        raise UserCodeError(f"{label}{sig} reads ground_truth, and the rows have neither verl's reward_model column "
                            "({ground_truth: ...}) nor a ground_truth column (they have: "
                            f"{', '.join(sorted(fields)) or 'none'}); add one to the data")


def call_arguments(completions: list, prompts: list, completion_ids: list | None,
                   examples: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of one batched call: the fixed ones, one list per field, the params (the child passes the
    function the ones it takes: `takes`)."""
    columns = {k: [ex.get(k) for ex in examples] for k in dict.fromkeys(k for ex in examples for k in ex)
               if k != "prompt"}
    kwargs: dict[str, Any] = {"completions": completions, "prompts": prompts, **columns, **params}
    if completion_ids is not None:
        kwargs["completion_ids"] = completion_ids
    return kwargs


def _scores(values: Any, n: int, what: str) -> list[float | None]:
    if not isinstance(values, list):
        raise UserRewardError(f"{what} returned a {type(values).__name__}; return a list of {n} scores (float, or "
                              f"None for a sample it does not score), or a dict with '{RESULT_KEY}'", "result")
    if len(values) != n:
        raise UserRewardError(f"{what} returned {len(values)} scores for {n} completions; return one per "
                              "completion (None where it has none)", "result")
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bool):  # TRL's accuracy-style functions may return True/False
            v = float(v)
        if not isinstance(v, (int, float)):
            raise UserRewardError(f"{what} returned {v!r} ({type(v).__name__}) for sample {i}; a score is a number "
                                  "or None", "result")
        if not math.isfinite(v):
            raise UserRewardError(f"{what} returned {v} for sample {i}; a score must be finite (None means 'no "
                                  "reward for this sample')", "result")
        out.append(float(v))
    return out


def check_result(result: Any, n: int, what: str) -> tuple[list[float | None], dict[str, list[float | None]]]:
    """([n] scores, {part: [n]}) of a function's (plain) result; UserRewardError naming the fix otherwise.

    >>> check_result([1.0, None], 2, "f")
    ([1.0, None], {})
    >>> check_result({"rewards": [0.5], "format": [1]}, 1, "f")
    ([0.5], {'format': [1.0]})
    """
    if isinstance(result, dict):
        if RESULT_KEY not in result:
            raise UserRewardError(f"{what} returned a dict without '{RESULT_KEY}' (keys: {sorted(result)}); a dict "
                                  f"result holds the scores under '{RESULT_KEY}' and named parts beside them", "result")
        if "errors" in result:
            raise UserRewardError(f"{what} returned a part named 'errors', which is the name of the count of samples "
                                  "its failures dropped; rename the part", "result")
        parts = {k: _scores(v, n, f"{what} (part {k!r})") for k, v in result.items() if k != RESULT_KEY}
        return _scores(result[RESULT_KEY], n, what), parts
    return _scores(result, n, what), {}
