"""A session: the requests one rollout (an agent's run on one row) made to the endpoint, recorded token in, token
out, and the multi-turn sample they make for the learner.

A later request renders its whole conversation again (an OpenAI client sends messages, not ids). Its ids are matched
against the session's history (its first prompt, then every id the engine consumed or sampled since):
- **append-only**: the rendered ids start with the history; the new ids after it (the end of the assistant turn, a
  tool's or user's message, the next assistant header) join the sample as input (policy_mask 0);
- **retokenized**: the ids differ but the text continues the history's text (the template re-tokenized the sampled
  reply differently, the drift the field reports most for multi-turn RL: verl#6719, slime#2263): the engine is
  given the history's own ids + the new text's ids, so sampled tokens are never re-tokenized; counted;
- **rerendered**: the text does not continue it either (a template that rewrites an earlier turn, e.g. drops a
  reasoning block, or two requests of one session in flight together): the engine gets the rendered ids as they
  are and the sample restarts from them (the earlier turns' policy tokens leave the loss, counted), so the sample is
  always exactly what the engine consumed and produced.
A request with n > 1 in a session records its first choice (the others are counted).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Session:
    sid: str
    prompt: list[int] | None = None    # the ids the engine consumed for the sample's first request
    ids: list[int] = field(default_factory=list)        # everything after it: sampled and input ids
    logprobs: list[float] = field(default_factory=list)  # the engine's for sampled ids, 0.0 for input ids
    mask: list[int] = field(default_factory=list)        # 1 where the policy sampled the id
    turns: list[dict] = field(default_factory=list)
    requests: int = 0
    retokenized: int = 0
    rerendered: int = 0
    dropped_tokens: int = 0   # policy tokens of earlier turns left out by a restart
    extra_choices: int = 0    # choices of n > 1 requests beyond the first
    finish: str = ""          # the last request's finish reason
    text: str = ""            # the last policy turn's text (what the policy answered last)
    engine: int | None = None  # the engine that serves it (its prefix cache holds the history)

    def history(self) -> list[int]:
        return [] if self.prompt is None else self.prompt + self.ids

    def engine_input(self, rendered: list[int], decode: Callable[[list[int]], str],
                     encode: Callable[[str], list[int]]) -> list[int]:
        """The ids the engine is given for a request whose conversation renders to `rendered`."""
        history = self.history()
        if not history or rendered[:len(history)] == history:
            return rendered
        before, now = decode(history), decode(rendered)
        if now.startswith(before):
            self.retokenized += 1
            return history + encode(now[len(before):])
        self.rerendered += 1
        return rendered

    def record(self, consumed: list[int], sampled: list[int], logprobs: list[float], text: str, finish: str,
               choices: int = 1) -> None:
        """What the engine consumed for a request (its `engine_input`) and sampled for its first choice."""
        history = self.history()
        self.requests += 1
        self.extra_choices += choices - 1
        if self.prompt is None or consumed[:len(history)] != history:
            self.dropped_tokens += sum(self.mask)
            self.prompt, self.ids, self.logprobs, self.mask = list(consumed), [], [], []
            if self.turns:
                self.turns.append({"role": "restart", "turn": self.requests})
        else:
            new = consumed[len(history):]
            self.ids += new
            self.logprobs += [0.0] * len(new)
            self.mask += [0] * len(new)
            if new:
                self.turns.append({"role": "input", "turn": self.requests, "tokens": len(new)})
        self.ids += sampled
        self.logprobs += logprobs
        self.mask += [1] * len(sampled)
        self.finish, self.text = finish, text
        self.turns.append({"role": "policy", "turn": self.requests, "text": text, "tokens": len(sampled),
                           "finish": finish})

    def counts(self) -> dict[str, int]:
        return {"requests": self.requests, "retokenized": self.retokenized, "rerendered": self.rerendered,
                "dropped_tokens": self.dropped_tokens, "extra_choices": self.extra_choices}
