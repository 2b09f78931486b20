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


class Engines:
    def __init__(self, group: ActorGroup, recovery: Recovery | None = None, weights=None,
                 timeout: float | None = None):
        """`recovery` retries a call whose engine died; `weights` (cluster/weight_sync.py) is the version the
        engines must hold and the resync after a restart. Both None: a bare group (jobs/eval.py). `timeout`:
        seconds a generation may take (cluster.call_timeout_s)."""
        self.group, self.recovery, self.weights, self.timeout = group, recovery, weights, timeout

    @property
    def version(self) -> int | None:
        """The learner updates the engines hold (cluster/weight_sync.py learner_version): a sample's version."""
        return self.weights.learner_version if self.weights is not None else None

    @property
    def tag(self) -> tuple[int, int] | None:
        """What every engine must hold to sample (cluster/weight_sync.py WeightSync.tag)."""
        return self.weights.tag if self.weights is not None else None

    def _run(self, method: Callable, shard_args: list[tuple]) -> list:
        return self._versioned(method, shard_args)[0]

    def _versioned(self, method: Callable, shard_args: list[tuple]) -> tuple[list, int | None]:
        """(the call's results, the weights version that answered it: None for a bare group). No weight sync is
        sent during the call (the sync's lock): every engine answers with the one version."""
        if self.recovery is None:
            return get(self.group.map_shards(method, shard_args), timeout=self.timeout,
                       what=f"{self.group.name}.{method.__name__}"), None
        # engines are told which weights they must hold (a restarted one refuses, StaleWeights); after a restart
        # the learner's weights are sent and checked first
        self.weights.let_sync_first()
        with self.weights.lock:
            return self.recovery.retried(self.group, method, shard_args, lambda: {"weights_version": self.tag},
                                         after_restart=self.weights.resync), self.version

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
            got, version = self._versioned(Engine.generate, self._generate_args(chunk, sampling, seed, start, stop))
            parts += got if version is None else [r.sampled_by(version) for r in got]
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
