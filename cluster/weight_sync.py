"""The learner's weights to every rollout engine, and the check that they arrived.

Transports (cluster.weight_sync):
  object_store  the learner's weights become one object in the Ray object store (the return value of
                `named_arrays`) that every engine reads (zero-copy numpy on a node) and reloads in place; from
                sharded learner workers, one bucket (a decoder layer, or the embedding and head) at a time, so no
                process holds a second whole copy of the model
  collective    a process group of the learner (rank 0) and every engine's worker (common/collective.py: gloo on
                CPU, NCCL on GPU); rank 0 broadcasts tensor by tensor straight into the engines' reload. Built
                again after an engine restart (a restarted engine is in no group).

After either, every engine scores the probe sequence (the learner's own likely tokens) and cluster/sync_check.py
judges it against the learner's logprobs, in fp32 and in bf16 (`verify`). Engines know the version of the weights
they hold; one restarted by Ray refuses to sample until it has been synced again (rollout/engine.py).
"""
from __future__ import annotations

import time

from cluster.groups import ActorGroup, get, handoff
from cluster.recovery import Recovery
from cluster.sync_check import SyncCheck
from common.config import ClusterConfig
from learner.policy import Learner
from rollout.engine import Engine


def _rendezvous(_learner) -> tuple[str, int]:
    """On the learner's node: its address and a free port for the weight-sync group's store."""
    import ray

    from common.collective import free_port

    return ray.util.get_node_ip_address(), free_port()


class WeightSync:
    def __init__(self, learner: ActorGroup, rollout: ActorGroup, cluster: ClusterConfig, recovery: Recovery,
                 precision: str, tensor_parallel_size: int = 1, run: int = 1):
        """`precision`: fp32 when the learner and every engine run fp32, else bf16 (the run plan's). `run`: the
        fleet's count of runs (cluster/fleet.py), the first half of the version the engines hold."""
        self.learner, self.rollout, self.c, self.recovery = learner, rollout, cluster, recovery
        self.tensor_parallel_size = tensor_parallel_size
        self.run = run
        self.version = 0  # syncs so far in this run; engines refuse to sample from another version (StaleWeights)
        self.base = 0  # a resumed run's version at its checkpoint (the engines start on those weights as version 0)
        # held by a sync and by every engine call that must sample one version (cluster/engines.py): with
        # train.max_staleness > 0 the driver generates in a thread of its own (trainer/stream.py)
        import threading

        self.lock = threading.RLock()
        self.wanted = threading.Event()  # a sync waits for the lock: a generation not yet sent lets it go first
        self.meta = None  # the collective transport's tensor list
        self.buckets = None  # sharded learner workers: how many buckets a sync sends (learner/fsdp.py)
        self.check = SyncCheck(precision, cluster.sync_tolerance)
        self.last: dict[str, float] = {}  # the last check's metrics (sync/gap, ...), logged with each step
        if cluster.weight_sync == "collective":
            self.start_collective()
        self.probe = self.learner.run(Learner.probe_sequence) if cluster.verify_sync else None
        if cluster.verify_sync:  # engines and learner start from the same weights: the check's baseline
            self.verify()

    def start_collective(self) -> None:
        """The weight-sync process group of the learner (rank 0) and every engine's worker."""
        c = self.c
        host, port = get(self.learner.members[0].__ray_call__.remote(_rendezvous))
        tp = self.tensor_parallel_size  # every shard of every engine is a rank: engine i's are 1 + i*tp ...
        world, backend = 1 + tp * len(self.rollout.members), "nccl" if c.gpus_per_learner > 0 else "gloo"
        futs = [self.learner.call(Learner.init_sync_group, host, port, world, backend, index=0),  # worker 0 sends
                *[self.rollout.call(Engine.init_sync_group, host, port, world, 1 + i * tp, backend, index=i)
                  for i in range(len(self.rollout.members))]]
        get(futs, timeout=c.call_timeout_s, what=f"the {backend} weight-sync group at {host}:{port}")
        self.meta = self.learner.run(Learner.weights_meta)

    @property
    def tag(self) -> tuple[int, int]:
        """What the engines must hold: (the fleet's run, this run's syncs); an engine Ray restarted holds (0, 0)."""
        return (self.run, self.version)

    @property
    def learner_version(self) -> int:
        """The learner updates the engines' weights hold, counted over the whole run (across resumes): what a
        sampled token is stamped with and its staleness counts."""
        return self.base + self.version

    def push(self) -> None:
        """The learner's weights to every engine as version `self.version` (no check)."""
        c = self.c
        if c.weight_sync == "collective":  # rank 0 broadcasts while every engine receives into its reload
            futs = [self.learner.call(Learner.broadcast_weights),
                    *self.rollout.call_all(Engine.receive_weights, self.meta, self.tag)]
            get(futs, timeout=c.call_timeout_s, what="the collective weight sync")
        elif not self.learner.lockstep:  # one object in the store, read by every engine of a node without a copy
            weights = handoff(self.learner.call(Learner.named_arrays))
            get(self.rollout.call_all(Engine.update_weights, weights, self.tag), timeout=c.call_timeout_s,
                what="rollout.update_weights")
        else:  # sharded learner workers: one bucket (an FSDP unit's weights) gathered, sent, reloaded, freed at a time
            if self.buckets is None:
                self.buckets = len(self.learner.run(Learner.weight_buckets))
            for i in range(self.buckets):
                part = handoff(self.learner.call(Learner.bucket_arrays, i))
                get(self.rollout.call_all(Engine.update_weights, part, self.tag), timeout=c.call_timeout_s,
                    what=f"rollout.update_weights (bucket {i + 1} of {self.buckets})")

    def sync(self, around=None, new: bool = True) -> None:
        """A new version to every engine (`new`; else the current one again), then checked on each. An engine that
        dies on the way is restarted by Ray and gets it again. `around(push)`: runs the push (sleeping engines wake
        around it: cluster/sleep.py). Holds `lock`: no generation is sent meanwhile (cluster/engines.py)."""
        t0 = time.perf_counter()
        self.wanted.set()
        with self.lock:
            self.wanted.clear()
            t1 = time.perf_counter()
            self._sync(around, new)
        # the engines' pause (no generation while the weights move and are checked), and the wait for a
        # generation in flight to end first (train.max_staleness: the stream's)
        self.last = {**self.last, "sync/pause_s": time.perf_counter() - t1, "sync/wait_s": t1 - t0}

    def let_sync_first(self, most_s: float = 5.0) -> None:
        """Before a generation takes the lock: a sync waiting for it goes first (the learner waits on the sync, the
        stream's next launch does not wait on anything), for at most `most_s`."""
        import time

        deadline = time.monotonic() + most_s
        while self.wanted.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)

    def _sync(self, around, new: bool) -> None:
        if new:
            self.version += 1
        for attempt in range(self.c.max_restarts + 1):
            try:
                around(self.push) if around is not None else self.push()
                if self.c.verify_sync:
                    self.verify()
                return
            except self.recovery.errors() as err:
                self.engine_restarted(attempt, err, "the weight sync")

    def engine_restarted(self, attempt: int, err: Exception, during: str) -> None:
        """An engine died during `during`: wait for it (Recovery), then `restarted`."""
        self.recovery.recover(self.rollout, during, attempt, err)
        self.restarted()

    def restarted(self) -> None:
        """After an engine restart: its probe history starts again, and the collective group it is no longer in
        is built again."""
        for i in range(len(self.rollout.members)):
            self.check.forget(i)
        if self.c.weight_sync == "collective":
            self.start_collective()

    def resync(self) -> None:
        """A restarted engine holds its initial weights: the learner's are sent (and checked) again, as the version
        they are (a version counts learner updates: a sample's staleness)."""
        self.restarted()
        self.sync(new=False)

    def verify(self) -> None:
        """Every engine serves the learner's weights: each scores the probe sequence and cluster/sync_check.py
        judges it (agrees, moved, tracks); a failure (SyncFailed, a RuntimeError) names the engine. A sync that
        silently did nothing, a known failure of broadcast-based syncs, would leave the engine on the old policy."""
        if self.probe is None:
            self.probe = self.learner.run(Learner.probe_sequence)
        prompt, completion = self.probe
        want = self.learner.run(Learner.logprobs, [prompt], [completion])[0]
        probes = get(self.rollout.call_all(Engine.probe_logprobs, prompt, completion),
                     timeout=self.c.call_timeout_s, what="rollout.probe_logprobs")
        self.last = self.check.check(probes, want)
