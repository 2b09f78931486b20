"""The sample stream: scored samples generated ahead of the learner, up to `train.max_staleness` updates ahead.

A *launch* is one step's first generation (its prompts drawn, its seed chosen) handed to two driver threads: one
generates (the engines, with tools and agent sessions as the run has them), one scores (the reward actors), so a
batch is scored while the next is generated and both while the learner trains. The stream keeps at most `depth`
launches ahead of the step being trained; launched at step t before the learner's update, a launch samples with
weights of version >= the learner's then, and is consumed at step t + depth at the latest: no token is more than
`depth` updates stale, by construction (a weight sync and a generation never interleave inside one engine call:
cluster/weight_sync.py's lock). Depth 0 is the synchronous step: the launch is made and waited for at once, through
the same code.

Every token's weights version is on the rollout (Rollout.versions): a single-turn sample and an agent session end
on the weights they started on; a multi-turn sample's later turns may be sampled by a newer version than its first
(a sync goes in between two turns: a partial rollout, each span with its own version).

A checkpoint holds the launches in flight (waited for, with their samples and scores: `snapshot`), so a resumed run
trains on exactly the samples the uninterrupted one would: none generated twice, none lost.
"""
from __future__ import annotations

import pickle
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.types import Rollout, ScoredRollout
from tasks.base import PromptBatch

IN_FLIGHT = "in_flight.pkl"  # a resumable checkpoint's launches in flight (trainer/run.py writes it)


@dataclass
class Launch:
    """One step's first generation: what it samples and, once done, its scored samples."""
    phase: str
    step: int                      # the sampled step it is for (RunState.grpo_steps numbering, seeds its sampling)
    batch: PromptBatch
    skipped: dict                  # the prompt pool's skips while drawing it
    seed: int
    version: int                   # the learner's version when it was launched (its samples' are >= this)
    state: dict | None = None      # the step as its reward functions read it (trainer_state), fixed at launch
    seconds: dict = field(default_factory=dict)  # its generation's and scoring's own seconds
    scored: ScoredRollout | None = None
    generated: Future | None = None  # its generation (then its scoring: `future`) in the stream's threads
    future: Future | None = None

    def result(self) -> ScoredRollout:
        if self.scored is None:
            self.scored = self.future.result()
            self.future = self.generated = None
        return self.scored


class SampleStream:
    """Launches in flight, oldest first. `generate(batch, seed) -> Rollout` and `score(rollout, batch, state) ->
    ScoredRollout` run in the stream's two threads."""

    def __init__(self, depth: int, generate: Callable[[PromptBatch, int], Rollout],
                 score: Callable[[Rollout, PromptBatch, dict | None], ScoredRollout]):
        self.depth, self.generate, self.score = depth, generate, score
        self.pending: deque[Launch] = deque()
        self._gen = self._scorer = None

    def _threads(self):
        if self._gen is None:
            self._gen = ThreadPoolExecutor(1, thread_name_prefix="raygrpo-generate")
            self._scorer = ThreadPoolExecutor(1, thread_name_prefix="raygrpo-score")
        return self._gen, self._scorer

    def launch(self, launch: Launch, ahead: bool = True) -> Launch:
        """Start generating `launch` (behind the launches already in flight) and scoring it once generated; `ahead`:
        it is for a later step (kept in flight), else for the step that waits for it now."""
        gen, scorer = self._threads()

        def generate():
            t = time.perf_counter()
            rollout = self.generate(launch.batch, launch.seed)
            launch.seconds["generate"] = time.perf_counter() - t
            return rollout

        generated = launch.generated = gen.submit(generate)

        def score():
            rollout = generated.result()
            t = time.perf_counter()
            scored = self.score(rollout, launch.batch, launch.state)
            launch.seconds["reward"] = time.perf_counter() - t
            return scored

        launch.future = scorer.submit(score)
        if ahead:
            self.pending.append(launch)
        return launch

    def take(self) -> Launch | None:
        """The oldest launch in flight (not waited for), or None."""
        return self.pending.popleft() if self.pending else None

    def restore(self, launches: list[Launch]) -> None:
        """Launches a checkpoint held (done), first in line."""
        self.pending.extendleft(reversed(launches))

    def snapshot(self) -> list[Launch]:
        """Every launch in flight, waited for (a checkpoint's: they are part of the run's state)."""
        for launch in self.pending:
            launch.result()
        return list(self.pending)

    def close(self) -> None:
        """Drop what is queued; a generation already running finishes in its thread."""
        self.pending.clear()
        for pool in (self._gen, self._scorer):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._gen = self._scorer = None


def save_in_flight(folder: Path, launches: list[Launch]) -> None:
    """A checkpoint's launches in flight (done) to <folder>/in_flight.pkl."""
    done = [Launch(x.phase, x.step, x.batch, x.skipped, x.seed, x.version, x.state, dict(x.seconds), x.result())
            for x in launches]
    with open(Path(folder) / IN_FLIGHT, "wb") as f:
        pickle.dump(done, f)


def load_in_flight(folder: Path | None, phase: str) -> list[Launch]:
    """The launches a checkpoint holds for `phase` (none where it holds none: a synchronous run's)."""
    path = Path(folder) / IN_FLIGHT if folder is not None else None
    if path is None or not path.is_file():
        return []
    with open(path, "rb") as f:
        launches = pickle.load(f)
    return [x for x in launches if x.phase == phase]


def staleness_metrics(rollout: Rollout, version: int, depth: int) -> dict[str, float]:
    """Per-token staleness of the policy's tokens against the learner's `version`: max, mean, and the share at
    each value 0..depth (the histogram: rollout/staleness_frac_<k>)."""
    ages = rollout.staleness(version)
    if not ages:
        return {"rollout/staleness": 0}
    out: dict[str, float] = {"rollout/staleness": max(ages), "rollout/staleness_mean": sum(ages) / len(ages)}
    for k in range(max(depth, max(ages)) + 1):
        out[f"rollout/staleness_frac_{k}"] = sum(a == k for a in ages) / len(ages)
    return out
