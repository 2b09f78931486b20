"""Generation on a group of rollout engines: prompts sharded across engines, each shard with its own seed
(common/seeds.py), optionally cut into batches with a progress bar. Training (through TrainingSystem, with restart
recovery and the weights version each engine must hold) and jobs/eval.py (a bare group) generate through this one
class, so the same prompts and seed give the same samples in both.
"""
from __future__ import annotations

import sys
from typing import Callable

from cluster.groups import ActorGroup, get, shard
from cluster.recovery import Recovery
from common import seeds
from common.types import Rollout, Sampling
from rollout.engine import Engine


class Pending:
    """A generation in flight (Engines.generate_async): its futures, its inputs, the weights version it samples."""

    def __init__(self, futures: list, inputs: tuple, version: int | None):
        self.futures, self.inputs, self.version = futures, inputs, version


class Engines:
    def __init__(self, group: ActorGroup, recovery: Recovery | None = None, weights=None,
                 timeout: float | None = None):
        """`recovery` retries a call whose engine died; `weights` (cluster/weight_sync.py) is the version the
        engines must hold and the resync after a restart. Both None: a bare group (jobs/eval.py). `timeout`:
        seconds a generation may take (cluster.call_timeout_s)."""
        self.group, self.recovery, self.weights, self.timeout = group, recovery, weights, timeout

    @property
    def version(self) -> int | None:
        """Syncs of the run so far (a sample's staleness counts them)."""
        return self.weights.version if self.weights is not None else None

    @property
    def tag(self) -> tuple[int, int] | None:
        """What every engine must hold to sample (cluster/weight_sync.py WeightSync.tag)."""
        return self.weights.tag if self.weights is not None else None

    def _run(self, method: Callable, shard_args: list[tuple]) -> list:
        if self.recovery is None:
            return get(self.group.map_shards(method, shard_args), timeout=self.timeout,
                       what=f"{self.group.name}.{method.__name__}")
        # engines are told which weights they must hold (a restarted one refuses, StaleWeights); after a restart
        # the learner's weights are sent and checked first
        return self.recovery.retried(self.group, method, shard_args, lambda: {"weights_version": self.tag},
                                     after_restart=self.weights.resync)

    def _generate_args(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int, start: int = 0,
                       stop: list[str] | None = None) -> list:
        """One `generate` call's arguments per engine shard (each shard its own seed)."""
        shards = shard(prompt_ids, len(self.group.members))
        s = sampling
        return [(part, s.group_size, s.temperature, s.top_p, s.max_new_tokens, seeds.shard(seed, start + i), stop)
                for i, part in enumerate(shards)]

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int, batch: int | None = None,
                 progress: str | None = None, stop: list[str] | None = None) -> Rollout:
        """K samples per prompt (group-contiguous); in batches of `batch` prompts (None: one) with a progress bar
        named `progress` (None: none); `stop` strings end a sample (tool calls)."""
        parts = []
        for start, chunk in self._batches(prompt_ids, batch, progress):
            parts += self._run(Engine.generate, self._generate_args(chunk, sampling, seed, start, stop))
        return Rollout.concat(parts)

    def greedy(self, prompt_ids: list[list[int]], max_new_tokens: int, batch: int | None = None,
               progress: str | None = None) -> list[str]:
        texts: list[str] = []
        for _, chunk in self._batches(prompt_ids, batch, progress):
            shards = shard(chunk, len(self.group.members))
            texts += [t for part in self._run(Engine.greedy, [(s, max_new_tokens) for s in shards]) for t in part]
        return texts

    def _batches(self, prompt_ids: list, batch: int | None, progress: str | None):
        size = batch or max(1, len(prompt_ids))
        bar = None
        if progress is not None:
            from tqdm import tqdm

            bar = tqdm(total=len(prompt_ids), desc=progress, unit="q", file=sys.stdout, mininterval=5.0,
                       dynamic_ncols=False, ncols=90, disable=False)  # ours, despite TQDM_DISABLE
        for start in range(0, len(prompt_ids), size):
            yield start, prompt_ids[start:start + size]
            if bar is not None:
                bar.update(min(size, len(prompt_ids) - start))
        if bar is not None:
            bar.close()

    def generate_async(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int) -> Pending:
        """Start `generate` and return at once (train.overlap): the engines sample with the weights they hold now
        (a weight sync sent meanwhile waits in each engine's queue until the generation is done)."""
        args = self._generate_args(prompt_ids, sampling, seed)
        return Pending(self.group.map_shards(Engine.generate, args, weights_version=self.tag),
                       (prompt_ids, sampling, seed), self.version)

    def collect(self, pending: Pending) -> tuple[Rollout, int | None]:
        """(rollout, weights version it was sampled with) of a `generate_async`; an engine that died meanwhile is
        recovered and the rollout generated again from the same inputs, with the weights of now."""
        try:
            return Rollout.concat(get(pending.futures, timeout=self.timeout, what="rollout.generate")), pending.version
        except self.recovery.errors() as err:
            self.weights.engine_restarted(0, err, "generate")
            self.weights.sync()
            return self.generate(*pending.inputs), self.version
