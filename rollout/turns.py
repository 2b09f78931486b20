"""The samples of a multi-turn rollout as they grow, token in, token out (rollout.max_turns > 1).

A sample is its prompt's ids followed by spans: what the policy sampled (its engine logprobs, policy_mask 1) and what
a tool answered (an observation's ids, tokenized once by the tool actor, policy_mask 0, logprob 0.0 as a
placeholder). The next turn's input is exactly prompt + every id so far: the history is never decoded and
re-templated, the retokenization drift the field reports most for multi-turn RL (verl#6719, slime#2263). A policy
turn that ends with a tool's closing tag, `</search>`, is a call of that tool on the text since its opening tag.

A sample ends when a turn ends without a call (the answer, or EOS), at the per-turn token limit ("length"), at
`max_total_tokens` of completion (policy and observations together; "length"), or when it calls a tool in its last
allowed turn ("max_turns": the call is not answered). Its `turns` record keeps every policy text, call, observation
and how many tokens each has. The driver's loop that asks the engines and the tool actors is cluster/turns.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from common.types import Rollout


def tool_call(text: str, names: tuple[str, ...]) -> tuple[str, str | None] | None:
    """(tool, argument) when `text` ends with a tool's closing tag, the argument None when no opening tag precedes
    it (a call that cannot be parsed); None when the text ends otherwise.

    >>> tool_call("I will look. <search>capital of France</search>", ("search",))
    ('search', 'capital of France')
    >>> tool_call("no opening </search>", ("search",))
    ('search', None)
    >>> tool_call("<answer>Paris</answer>", ("search",)) is None
    True
    """
    stripped = text.rstrip()
    for name in names:
        close = f"</{name}>"
        if stripped.endswith(close):
            body = stripped[: -len(close)]
            start = body.rfind(f"<{name}>")
            return name, (body[start + len(name) + 2:].strip() or None) if start >= 0 else None
    return None


@dataclass
class Sample:
    prompt: list[int]
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # the weights version of each token (-1: an observation's)
    turns: list[dict] = field(default_factory=list)
    text: str = ""
    finish: str = ""            # set when the sample is done
    call: tuple[str, str | None] | None = None  # the call the last policy turn made, waiting for its observation

    @property
    def done(self) -> bool:
        return bool(self.finish)


class Turns:
    """A batch of multi-turn samples: group-contiguous like a Rollout, G samples per prompt."""

    def __init__(self, first: Rollout, tools: tuple[str, ...], max_turns: int, max_total_tokens: int,
                 decode: Callable[[list[int]], str] | None = None):
        """`decode`: the policy's tokenizer's, for a policy turn cut at the token budget (its text is then the decode
        of the ids the sample keeps, never the engine's longer text)."""
        self.tools, self.max_turns, self.budget, self.decode = tools, max_turns, max_total_tokens, decode
        self.group_size = first.group_size
        self.samples = [Sample(list(p)) for p in first.prompt_ids]
        self.turn = 1
        self.add_policy(list(range(len(self.samples))), first)

    def live(self) -> list[int]:
        """The samples waiting for a tool's observation (those are the next turn's)."""
        return [i for i, s in enumerate(self.samples) if not s.done and s.call is not None]

    def rooms(self, rows: list[int]) -> list[int]:
        """The tokens each of `rows` has left of rollout.max_total_tokens."""
        return [self.budget - len(self.samples[i].ids) for i in rows]

    def inputs(self, rows: list[int]) -> list[list[int]]:
        """The exact ids each of `rows` continues from: its prompt and every completion id so far."""
        return [self.samples[i].prompt + self.samples[i].ids for i in rows]

    def add_policy(self, rows: list[int], part: Rollout) -> None:
        """What the engines sampled for `rows` (one sample each, in order) this turn."""
        versions = part.versions or [[-1] * len(c) for c in part.completion_ids]
        for i, ids, lps, text, finish, vs in zip(rows, part.completion_ids, part.old_logprobs, part.texts,
                                                 part.finish_reasons, versions, strict=True):
            s = self.samples[i]
            room = self.budget - len(s.ids)
            cut = len(ids) > room
            if cut:
                if self.decode is None:
                    raise ValueError("a policy turn runs past rollout.max_total_tokens and Turns has no decode to "
                                     "give its text")
                ids, lps, vs = ids[:room], lps[:room], vs[:room]
                text = self.decode(ids)  # what the policy's kept tokens say, not the engine's longer text
            s.ids += ids
            s.logprobs += lps
            s.mask += [1] * len(ids)
            s.versions += vs
            s.text += text
            call = None if cut or finish != "stop" else tool_call(text, self.tools)
            s.turns.append({"role": "policy", "turn": self.turn, "text": text, "tokens": len(ids)})
            if call is None:
                s.finish = "length" if cut or finish == "length" else "stop"
            elif self.turn >= self.max_turns or len(s.ids) >= self.budget:
                s.finish = "max_turns" if self.turn >= self.max_turns else "length"
                s.turns[-1]["unanswered_call"] = call[0]
            else:
                s.call = call

    def add_observations(self, rows: list[int], observations: list) -> None:
        """The tools' answers to the calls of `rows` (tools/toolbox.py Observation each), already cut by the tool
        actor to the room each sample had left (`rooms`), their text the decode of the ids kept."""
        for i, obs in zip(rows, observations, strict=True):
            s = self.samples[i]
            room = self.budget - len(s.ids)
            if len(obs.ids) > room:
                raise ValueError(f"an observation of {len(obs.ids)} tokens for a sample with {room} left: the tool "
                                 "actor cuts it to the room it is given (rooms)")
            ids = obs.ids
            s.ids += ids
            s.logprobs += [0.0] * len(ids)
            s.mask += [0] * len(ids)
            s.versions += [-1] * len(ids)
            s.text += obs.text
            name, arg = s.call
            s.turns.append({"role": "tool", "turn": self.turn, "tool": name, "arg": arg, "status": obs.status,
                            "text": obs.text, "tokens": len(ids), "seconds": obs.seconds, **obs.meta})
            s.call = None
            if obs.cut or len(s.ids) >= self.budget:
                s.finish = "length"  # no room left to answer
        self.turn += 1

    def rollout(self) -> Rollout:
        ss = self.samples
        return Rollout([s.prompt for s in ss], [s.ids for s in ss], [s.logprobs for s in ss], [s.text for s in ss],
                       [s.finish for s in ss], self.group_size, policy_mask=[s.mask for s in ss],
                       turns=[s.turns for s in ss],
                       versions=[s.versions for s in ss] if any(v >= 0 for s in ss for v in s.versions) else None)


def turn_metrics(rollout: Rollout) -> dict[str, float]:
    """rollout/turns_mean, rollout/observation_tokens (mean per sample), tools/calls_per_sample, tools/calls,
    tools/errors (calls whose observation is not ok), tools/seconds, and how many calls went unanswered
    (`tools/unanswered`: made in the last allowed turn)."""
    if rollout.turns is None:
        return {}
    B = len(rollout.turns)
    tool = [t for turns in rollout.turns for t in turns if t["role"] == "tool"]
    return {"rollout/turns_mean": sum(sum(t["role"] == "policy" for t in ts) for ts in rollout.turns) / B,
            "rollout/observation_tokens": sum(t["tokens"] for t in tool) / B,
            "rollout/policy_tokens_mean": sum(rollout.policy_tokens()) / B,
            "tools/calls_per_sample": len(tool) / B, "tools/calls": len(tool),
            "tools/errors": sum(t["status"] != "ok" for t in tool),
            "tools/malformed": sum(t["status"] == "malformed" for t in tool),
            "tools/timeouts": sum(t["status"] == "timeout" for t in tool),
            "tools/seconds": sum(t["seconds"] for t in tool),
            "tools/unanswered": sum("unanswered_call" in t for ts in rollout.turns for t in ts)}


def sample_turns(rollout: Rollout, gold_docs: list[int | None] | None = None) -> dict[str, list[float]]:
    """Per sample of a multi-turn rollout: `turns` (policy turns), `tool_calls`, `completion_tokens` (policy and
    observations), `policy_tokens`, and with `gold_docs` (the index's doc id of each sample's gold document, None
    where it has none) `gold_retrieved`: 1.0 when some search call of the sample returned a passage of it."""
    out: dict[str, list[float]] = {"turns": [], "tool_calls": [], "completion_tokens": [], "policy_tokens": []}
    for turns, ids, n in zip(rollout.turns, rollout.completion_ids, rollout.policy_tokens(), strict=True):
        out["turns"].append(float(sum(t["role"] == "policy" for t in turns)))
        out["tool_calls"].append(float(sum(t["role"] == "tool" for t in turns)))
        out["completion_tokens"].append(float(len(ids)))
        out["policy_tokens"].append(float(n))
    if gold_docs is not None:
        out["gold_retrieved"] = [None if gold is None else float(any(gold in t.get("doc_ids", ()) for t in turns))
                                 for turns, gold in zip(rollout.turns, gold_docs, strict=True)]
    return out
