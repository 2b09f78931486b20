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

The driver imports and checks each function before any actor starts (`check_signature`: the file, the function and
its signature against the task's fields), exiting 2 with the fix. Reward actors call it in a child process of its
own (`IsolatedFunction`, common/usercode.py): a call that outlives `rewards.timeout_s` kills the child (the next call starts a new one),
and a crash of the child is an error naming the function, not a dead actor.
"""
from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

from common.usercode import (FunctionSpec, IsolatedFunction, UserCallError, UserCodeError, load_function,  # noqa: F401
                             parse_spec, plain, takes)

UserRewardError = UserCallError  # a reward function's failure: raised | timeout | died | result

FIXED_ARGS = ("completions", "prompts", "completion_ids")  # what every call passes besides the fields
RESULT_KEY = "rewards"  # a dict result's list of scores; its other keys are parts


def check_signature(fn: Callable, spec: FunctionSpec, fields: Sequence[str],
                       params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The keyword arguments a call passes `fn` (None: all of them, it takes **kwargs), after checking that it can
    be called TRL's way with the task's `fields` and the component's `params`; UserCodeError naming the fix."""
    label = f"{spec.where}: function {spec.attr}"
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise UserCodeError(f"{label}: its signature cannot be read ({err})") from err
    kinds = {p.name: p for p in sig.parameters.values()}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in kinds.values())
    named = [n for n, p in kinds.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    given = set(FIXED_ARGS) | set(fields) | set(params)
    clash = sorted(set(params) & (set(fields) | set(FIXED_ARGS)))
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
    unknown = [k for k in params if k not in named and not var_kw]
    if unknown:
        raise UserCodeError(f"{label}{sig} takes no arguments {unknown} (the component's params); add them to the "
                            "signature or drop them from params")
    return None if var_kw else tuple(named)


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
        if isinstance(v, bool) or not isinstance(v, (int, float)):
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
