"""The multi-turn rollout loop on the driver (rollout.max_turns > 1): the engines sample every live sample in one
batched call per turn, stopping at a tool's closing tag; the tool actors answer the calls; the observations' ids are
appended and the samples go on, until each answers, runs out of turns or of tokens (rollout/turns.py holds the
samples and the rules). The engines keep prefix caching on, so a turn reads only what is new since the last.

Seeds: the first turn is a plain generation with the caller's seed (group-contiguous, G per prompt); turn t of the
live samples uses seeds.turn(seed, t), one sample per request, so a resumed run samples what the uninterrupted one
did.
"""
from __future__ import annotations

from typing import Callable

from common import seeds
from common.types import Rollout, Sampling
from rollout.turns import Turns


def generate_turns(generate: Callable[..., Rollout], run_tools: Callable[[list, list], list],
                   prompt_ids: list[list[int]], sampling: Sampling, seed: int, tools: tuple[str, ...], max_turns: int,
                   max_total_tokens: int, decode: Callable[[list[int]], str]) -> Rollout:
    """`generate(prompt_ids, sampling, seed, stop=...)` (cluster/engines.py Engines.generate),
    `run_tools([(name, arg)], [room]) -> [Observation]` (the tool actors, each observation cut to its sample's room)
    and the policy tokenizer's `decode` -> a Rollout with policy_mask and turns."""
    stop = [f"</{name}>" for name in tools]
    turns = Turns(generate(prompt_ids, sampling, seed, stop=stop), tools, max_turns, max_total_tokens, decode)
    one = Sampling(1, sampling.temperature, sampling.top_p, sampling.max_new_tokens)
    while rows := turns.live():
        turns.add_observations(rows, run_tools([turns.samples[i].call for i in rows], turns.rooms(rows)))
        rows = [i for i in rows if not turns.samples[i].done]
        if rows:
            turns.add_policy(rows, generate(turns.inputs(rows), one, seeds.turn(seed, turns.turn), stop=stop))
    return turns.rollout()
