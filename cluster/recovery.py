"""Surviving actors that die: a call on a group whose member died (its process killed, a node lost) is run again
from the same inputs once Ray has restarted the member (rollout and reward actors restart up to
cluster.max_restarts times; same seeds: the same samples, none lost or counted twice).

A restarted engine comes back with its initial weights and refuses to sample (StaleWeights) until it is synced
again: the caller passes `after_restart` (the weight sync) for the rollout group. A restarted reward or tool actor
comes back built with the fleet's first run's arguments and refuses calls (ActorRestarted) until `restored` builds it
with the current run's; one Ray restarted between two calls is found out by the next, not only one that died in it. A call that never answers fails
after cluster.call_timeout_s.
"""
from __future__ import annotations

from typing import Callable

from cluster.groups import ActorGroup, ActorRestarted, get, member_died_errors


def _alive(_instance) -> bool:
    return True


class Recovery:
    def __init__(self, max_restarts: int, call_timeout_s: float, backend: str, restored=None):
        """`restored(group)`: after Ray restarted a member of `group` (the fleet builds it for the current run:
        cluster/fleet.py Fleet.restored)."""
        self.max_restarts, self.timeout, self.backend = max_restarts, call_timeout_s, backend
        self.restored = restored
        self.restarts = 0  # stateless actors that died and came back (their calls were retried)

    def errors(self) -> tuple[type[BaseException], ...]:
        """A member died in the call, or was restarted before it (an engine then raises StaleWeights, a reward or
        tool actor ActorRestarted)."""
        from rollout.engine import StaleWeights

        return (*member_died_errors(self.backend), StaleWeights, ActorRestarted)

    def retried(self, group: ActorGroup, method: Callable, shard_args: list[tuple],
                kwargs: Callable[[], dict] | None = None, after_restart: Callable[[], None] | None = None) -> list:
        """`group.map_shards(method, shard_args, **kwargs())` resolved; a member that died is waited for, then
        `after_restart()` (if any), then the whole call runs again (`kwargs()` asked again: e.g. the weights
        version the resync made current)."""
        what = f"{group.name}.{method.__name__}"
        for attempt in range(self.max_restarts + 1):
            try:
                return get(group.map_shards(method, shard_args, **(kwargs() if kwargs else {})), timeout=self.timeout,
                           what=what)
            except self.errors() as err:
                self.recover(group, method.__name__, attempt, err)
                if after_restart is not None:
                    after_restart()
        raise AssertionError("unreachable")

    def recover(self, group: ActorGroup, what: str, attempt: int, err: Exception) -> None:
        """After a member of `group` died during `what` (attempt 0, 1, ...): give up after cluster.max_restarts,
        else count the restart and wait until Ray has brought the member back."""
        if attempt == self.max_restarts:
            raise RuntimeError(f"a {group.name} actor died during {what} {attempt + 1} times "
                               f"(cluster.max_restarts={self.max_restarts}); last: {err}") from err
        self.restarts += 1
        print(f"[cluster] a {group.name} actor died during {what} ({type(err).__name__}); Ray restarts it and "
              f"{what} is repeated ({self.restarts} restarts so far)", flush=True)
        self.await_restart(group)
        if self.restored is not None:
            self.restored(group)

    def await_restart(self, group: ActorGroup) -> None:
        """Until every member answers again: a restarting actor refuses calls (ActorUnavailableError) while its
        __init__ runs again (a vLLM engine: tens of seconds). A member Ray gave up on (ActorDiedError) raises."""
        if self.backend != "ray":
            return
        import time

        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

        deadline = time.time() + self.timeout
        for i, member in enumerate(group.members):
            died = 0
            while True:
                try:
                    ray.get(member.__ray_call__.remote(_alive), timeout=60)
                    break
                except ActorDiedError:
                    died += 1  # right after a death Ray may not yet say "restarting"; a few times, then it is final
                    if died > 5:
                        raise
                    time.sleep(2.0)
                except (ActorUnavailableError, GetTimeoutError) as err:
                    if time.time() > deadline:
                        raise TimeoutError(f"{group.name}-{i} did not come back within cluster.call_timeout_s "
                                           f"after a restart") from err
                    time.sleep(2.0)
