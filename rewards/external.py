"""Reward components from outside the project, with one error policy: a user's function (`{fn: ...}`,
rewards/user.py) and a reward server (`{url: ...}`, rewards/remote.py).

A component returns ([B] values, {part: [B]}) like every reward of rewards/registry.py, except that a value may be
None: the sample has no reward from this component (RewardScorer then sums the components that scored it; a sample
no component scored leaves its group's statistics and the loss, and is counted). What happens when a call fails:
- it raised (or the server refused the batch): the batch's samples are tried one at a time to find the ones that
  raise. `on_error: raise` stops the run with the first (function, exception, sample); `skip` gives them None and
  counts them in `<name>/errors`, and the others keep their scores.
- it outlived `timeout_s`, or its process (the server) died: `raise` stops the run; `skip` drops the whole batch,
  counted.
- its result breaks the contract (NaN, infinity, a wrong length, not a number): always an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from rewards.errors import RewardError
from rewards.user import (FunctionSpec, IsolatedFunction, UserRewardError, call_arguments, check_result,
                          logged_parts)

COUNTS = ("errors",)  # parts that are counts per step (summed), not per-sample means
FIXES = {"raised": "fix the function (or the server)",
         "timeout": "make it faster or raise rewards.timeout_s (or the component's timeout_s)",
         "died": "see the actor's log in the run folder's logs/ for why it died"}


def _fix(kind: str) -> str:
    return f"{FIXES.get(kind, FIXES['raised'])}, or set rewards.on_error=skip to drop such samples (counted)"


def _sample(completions: Sequence, examples: Sequence[Mapping[str, Any]], i: int) -> str:
    return f"completion={str(completions[i])[:200]!r} fields={dict(examples[i])!r:.300}"


@dataclass
class ExternalReward:
    """The error policy over `request` (one batched call; subclasses say what a call is)."""
    name: str
    timeout_s: float = 300.0
    on_error: str = "raise"          # raise | skip

    def describe(self) -> str:
        raise NotImplementedError

    def request(self, completions: list, prompts: list, completion_ids: list | None,
                examples: Sequence[Mapping[str, Any]], state: Mapping[str, Any]) -> tuple[Any, dict]:
        """(the batch's result, what the call logged: {metrics, extra})."""
        raise NotImplementedError

    def __call__(self, completions: list[str], num_tokens: list[int], examples: Sequence[Mapping[str, Any]],
                 completion_ids: list[list[int]] | None = None,
                 state: Mapping[str, Any] | None = None) -> tuple[list, dict[str, list]]:
        """[B] completions -> ([B] values or None, {part: [B]}, '<errors>': [B] 1.0 where a failure dropped it).
        `state`: the step being scored (a function's `trainer_state`: global_step, max_steps, phase)."""
        state = dict(state or {})
        prompts = [ex.get("prompt") for ex in examples]
        if prompts and isinstance(prompts[0], list):  # a chat prompt: TRL's conversational completions
            completions = [[{"role": "assistant", "content": t}] for t in completions]
        B = len(completions)
        try:
            values, parts = self._checked(completions, prompts, completion_ids, examples, range(B), state)
            return values, {**parts, "errors": [0.0] * B}
        except UserRewardError as err:
            if err.kind == "result":
                raise RewardError(str(err)) from None  # check_result named the reward already
            if err.kind != "raised":
                return self._batch_failed(err, B, completions, examples)
            return self._one_by_one(completions, prompts, completion_ids, examples, err, state)

    def _checked(self, completions, prompts, completion_ids, examples, rows, state):
        rows = list(rows)
        pick = lambda xs: None if xs is None else [xs[i] for i in rows]  # noqa: E731
        result, logged = self.request(pick(completions), pick(prompts), pick(completion_ids), pick(list(examples)),
                                      state)
        what = f"reward '{self.name}' ({self.describe()})"
        values, parts = check_result(result, len(rows), what)
        return values, {**parts, **logged_parts(logged, len(rows), what)}

    def _batch_failed(self, err: UserRewardError, B: int, completions, examples):
        if self.on_error == "skip":
            return [None] * B, {"errors": [1.0] * B}
        tb = getattr(err, "traceback", "")
        raise RewardError(f"reward '{self.name}': {err}, on a batch of {B} (first: {_sample(completions, examples, 0)})"
                          + (f"\n{tb}" if tb else "") + f"\n{_fix(err.kind)}") from None

    def _one_by_one(self, completions, prompts, completion_ids, examples, batch_err: UserRewardError, state):
        """After a batch raised: each sample alone, to name (raise) or drop (skip) the ones that raise. When none
        raises alone, the batch's failure stands (raise) or the samples' own scores do (skip)."""
        scored: list[tuple[list, dict]] = []
        for i in range(len(completions)):
            try:
                scored.append(self._checked(completions, prompts, completion_ids, examples, [i], state))
            except UserRewardError as err:
                if err.kind == "result":
                    raise RewardError(str(err)) from None  # check_result named the reward already
                if self.on_error != "skip":
                    tb = getattr(err, "traceback", "")
                    raise RewardError(f"reward '{self.name}': {err}, on sample {i} of {len(completions)}: "
                                      f"{_sample(completions, examples, i)}" + (f"\n{tb}" if tb else "")
                                      + f"\n{_fix(err.kind)}") from None
                scored.append(([None], {"errors": [1.0]}))
        if self.on_error != "skip":  # no sample raised on its own: the batch did
            return self._batch_failed(batch_err, len(completions), completions, examples)
        keys = dict.fromkeys(k for _, p in scored for k in p if k != "errors")
        parts = {k: [p[k][0] if k in p else None for _, p in scored] for k in keys}
        return [v[0] for v, _ in scored], {**parts, "errors": [p.get("errors", [0.0])[0] for _, p in scored]}


@dataclass
class FunctionReward(ExternalReward):
    """`{fn: "file.py:name"}`: the user's function, in a child process of its own (rewards/user.py)."""
    spec: FunctionSpec | None = None
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        from dataclasses import replace

        # the child calls it through rewards/user.py `adapt`: TRL's convention, verl's, or a factory's, with the params
        run = replace(self.spec, adapter="rewards.user:adapt", init=tuple(sorted(self.params.items())))
        self.fn = IsolatedFunction(run, self.timeout_s)

    def describe(self) -> str:
        return f"{self.spec.attr} in {self.spec.where}"

    def request(self, completions, prompts, completion_ids, examples, state):
        args = call_arguments(completions, prompts, completion_ids, examples, {})  # the params went to `adapt`
        out = self.fn({**args, "trainer_state": dict(state)})
        return out["result"], out


def openrlhf_keys(prompts: list, completions: list[str], examples: list) -> dict:
    """What OpenRLHF's remote_rm_fn posts, so its reward servers answer unchanged: `query` (each prompt's text with
    its completion appended; a chat prompt's messages' contents joined), `labels` (the row's `label` column, as
    OpenRLHF's --label_key names it by default in its examples; "" where absent).

    >>> openrlhf_keys(["Q: 2+2? A:"], [" 4"], [{"label": "4"}])
    {'query': ['Q: 2+2? A: 4'], 'labels': ['4']}
    """
    def text(p) -> str:
        return p if isinstance(p, str) else "\n".join(str(m.get("content", "")) for m in p)

    return {"query": [text(p) + c for p, c in zip(prompts, completions, strict=True)],
            "labels": [ex.get("label", "") if ex.get("label") is not None else "" for ex in examples]}


@dataclass
class ServerReward(ExternalReward):
    """`{url: ...}`: a batch POSTed to a reward server (rewards/remote.py)."""
    url: str = ""
    retries: int = 2
    headers: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"server {self.url}"

    def request(self, completions, prompts, completion_ids, examples, state):
        from rewards.remote import as_result, post_batch

        fields = {k: [ex.get(k) for ex in examples] for k in dict.fromkeys(k for ex in examples for k in ex)
                  if k != "prompt"}
        body = {"prompts": prompts, "completions": completions, "fields": fields,
                **({"completion_ids": completion_ids} if completion_ids is not None else {}),
                **openrlhf_keys(prompts, completions, examples)}
        return as_result(post_batch(self.url, body, self.timeout_s, self.retries, self.headers)), {}
