"""Agent rollouts (rollout.agent): a user's `async def run(client, row, **params)` drives each sample through the
run's OpenAI-compatible endpoint (rollout/endpoint.py), group_size sessions per row, `rollout.agent_concurrency` at
once; every request is recorded in its session, token in, token out, and each session becomes one multi-turn sample
(policy tokens in the loss, everything else masked), its records in the rollout Parquet.

The agent's return is the sample's reward: a number, or a dict of numeric parts (summed; each logged as
reward/agent/<part>; with a "reward" key, that is the reward and the rest are logged only), or None: the run's reward components score the last reply. A session that raises, outlives
`rollout.agent_timeout_s`, never calls the model, or returns something else (NaN, a string) gets no reward (it
leaves its group's statistics and the loss), is counted (agent/errors, agent/timeouts, agent/no_requests,
agent/bad_results) and the first failure of a step is said on the console: never a silent zero.

Agents run on the driver in one event loop (the endpoint serves in a thread of its own): an agent that blocks the
loop with synchronous work holds the others back; write it with `await`.
"""
from __future__ import annotations

import asyncio
import inspect
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from common.types import Rollout
from common.usercode import UserCodeError, load_function, parse_spec, takes
from rollout.sessions import Session

FAILURES = {"raised": "errors", "timeout": "timeouts", "no_requests": "no_requests", "bad_result": "bad_results"}


def load_agent(text: str, params: dict) -> Callable:
    """The agent function `text` names, checked before any actor starts: an async function (or a callable that
    returns an awaitable) taking (client, row) and the params' names. UserCodeError naming the fix."""
    spec = replace(parse_spec(text), role="agent")
    fn = load_function(spec)
    named = takes(fn)
    if named is not None:
        if len(named) < 2:
            raise UserCodeError(f"{spec.where}: {spec.attr}{inspect.signature(fn)} takes fewer than two arguments; "
                                "write it as async def run(client, row, **params)")
        missing = [k for k in params if k not in named[2:]]
        if missing and inspect.Parameter.VAR_KEYWORD not in {p.kind for p in
                                                             inspect.signature(fn).parameters.values()}:
            raise UserCodeError(f"{spec.where}: {spec.attr} does not take rollout.agent_params {missing}; add them "
                                "to its signature (or **params)")
    if not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))):
        raise UserCodeError(f"{spec.where}: {spec.attr} is not an async function; write it as async def run(client, "
                            "row, **params) (the endpoint's client is openai.AsyncOpenAI)")
    return fn


@dataclass
class Outcome:
    session: Session
    status: str               # ok | raised | timeout | no_requests | bad_result
    reward: float | None      # None: the reward components score it (status ok), or no reward (a failure)
    parts: dict[str, float]
    error: str = ""
    seconds: float = 0.0


def reward_of(result: Any) -> tuple[str, float | None, dict[str, float], str]:
    """(status, reward, parts, error) of what an agent returned.

    >>> reward_of(1)[:2], reward_of(None)[:2], reward_of({"a": 1.0, "b": 0.5})[1]
    (('ok', 1.0), ('ok', None), 1.5)
    >>> reward_of({"reward": 0.5, "a": 1.0, "b": 3.0})[1:3]   # a "reward" key is the reward, the rest are parts
    (0.5, {'a': 1.0, 'b': 3.0})
    >>> reward_of(float("nan"))[0], reward_of("yes")[0]
    ('bad_result', 'bad_result')
    """
    if result is None:
        return "ok", None, {}, ""
    values = result if isinstance(result, dict) else {"": result}
    parts: dict[str, float] = {}
    for k, v in values.items():
        if isinstance(v, bool) or isinstance(v, (int, float)) and not isinstance(v, complex):
            v = float(v)
            if math.isfinite(v):
                parts[str(k)] = v
                continue
        return "bad_result", None, {}, (f"returned {result!r}: an agent returns a finite number, a dict of finite "
                                        "numbers, or None")
    if "" in parts:
        return "ok", parts[""], {}, ""
    if "reward" in parts:
        total = parts.pop("reward")
        return "ok", total, parts, ""
    return "ok", sum(parts.values()), parts, ""


async def _one(fn: Callable, client, row: dict, params: dict, session: Session, timeout: float) -> Outcome:
    start = time.perf_counter()
    try:
        result = await asyncio.wait_for(fn(client, row, **params), timeout)
    except asyncio.TimeoutError:
        return Outcome(session, "timeout", None, {}, f"did not finish within rollout.agent_timeout_s={timeout:g} s",
                       time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - the user's code: counted and named, the run goes on
        return Outcome(session, "raised", None, {}, f"raised {type(err).__name__}: {err}", time.perf_counter() - start)
    status, reward, parts, error = reward_of(result)
    if session.requests == 0:
        status, reward, error = "no_requests", None, "never called the model (no request reached the endpoint)"
    return Outcome(session, status, reward, parts, error, time.perf_counter() - start)


async def run_sessions(fn: Callable, endpoint, rows: list[dict], group_size: int, params: dict, timeout: float,
                       concurrency: int, prefix: str, model: str = "policy") -> list[Outcome]:
    """group_size sessions per row (row-major: sample j of row i at i * G + j), at most `concurrency` at once."""
    import openai

    gate = asyncio.Semaphore(concurrency)

    async def session(i: int, j: int) -> Outcome:
        sid = f"{prefix}-{i}-{j}"
        async with gate:
            url = endpoint.open(sid)
            async with openai.AsyncOpenAI(base_url=url, api_key=endpoint.token, max_retries=0,
                                          timeout=timeout) as client:
                out = await _one(fn, client, dict(rows[i]), params, endpoint.sessions[sid], timeout)
            endpoint.close(sid)
            return out

    return list(await asyncio.gather(*(session(i, j) for i in range(len(rows)) for j in range(group_size))))


def outcomes_rollout(outcomes: list[Outcome], group_size: int, filler: int) -> Rollout:
    """The sessions as a multi-turn Rollout; a session with no request (or none recorded) is one masked `filler`
    token (its reward is None: it never reaches the loss). The last `turns` entry of each sample is the agent's."""
    p_ids, c_ids, lps, masks, texts, finishes, turns = [], [], [], [], [], [], []
    for o in outcomes:
        s = o.session
        if s.prompt is None:
            p_ids.append([filler]), c_ids.append([filler]), lps.append([0.0]), masks.append([0])
            texts.append(""), finishes.append("stop")
        else:
            p_ids.append(s.prompt), c_ids.append(s.ids), lps.append(s.logprobs), masks.append(s.mask)
            texts.append(s.text), finishes.append(s.finish)
        record = {"role": "agent", "status": o.status, "reward": o.reward, "parts": o.parts,
                  "seconds": round(o.seconds, 3), **s.counts()}
        if o.error:
            record["agent_failure"] = f"agent session {s.sid} {o.error}"
        turns.append([*s.turns, record])
    return Rollout(p_ids, c_ids, lps, texts, finishes, group_size, policy_mask=masks, turns=turns)


def agent_records(rollout: Rollout) -> list[dict | None]:
    """[B] each sample's agent record (None: not an agent rollout)."""
    if rollout.turns is None:
        return [None] * len(rollout.texts)
    return [ts[-1] if ts and ts[-1].get("role") == "agent" else None for ts in rollout.turns]


def agent_metrics(rollout: Rollout) -> dict[str, float]:
    """agent/sessions, agent/<failure> counts, agent/requests_per_session, agent/seconds_mean and the sessions'
    token-in-token-out counts (sessions/retokenized, sessions/rerendered, sessions/dropped_tokens)."""
    recs = [r for r in agent_records(rollout) if r is not None]
    if not recs:
        return {}
    n = len(recs)
    out = {"agent/sessions": n, "agent/requests_per_session": sum(r["requests"] for r in recs) / n,
           "agent/seconds_mean": sum(r["seconds"] for r in recs) / n,
           **{f"agent/{name}": sum(r["status"] == k for r in recs) for k, name in FAILURES.items()},
           **{f"sessions/{k}": sum(r[k] for r in recs) for k in ("retokenized", "rerendered", "dropped_tokens",
                                                                  "extra_choices")}}
    return out


def with_agent_rewards(rollout: Rollout, rewards: list, comps: dict) -> tuple[list, dict]:
    """The rewards of an agent rollout: the agent's where it returned one (its parts as components agent/<part>),
    the components' where it returned None, no reward where its session failed."""
    recs = agent_records(rollout)
    if not any(recs):
        return rewards, comps
    rewards, comps = list(rewards), {k: list(v) for k, v in comps.items()}
    comps["agent"] = [None] * len(rewards)
    for i, rec in enumerate(recs):
        if rec is None or rec["status"] != "ok":
            rewards[i] = None
            continue
        if rec["reward"] is not None:
            rewards[i] = comps["agent"][i] = rec["reward"]
        for k, v in rec["parts"].items():
            comps.setdefault(f"agent/{k}", [None] * len(rewards))[i] = v
    return rewards, comps
