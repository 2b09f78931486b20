"""Requests of many sessions to a group of rollout engines (rollout/endpoint.py's `submit`): each engine serves
what has queued for it as one batch (`Engine.serve`), one batch in flight per engine, so requests that arrive while
a batch runs go together in the next; a session stays on the engine it started on (its prefix cache holds the
history), a new session goes to the engine with the fewest sessions open.

Runs in the endpoint's event loop: on Ray an engine's call is awaited as a future, in-process it runs in a worker
thread (one; the engine is not shared between threads).
"""
from __future__ import annotations

import asyncio

from cluster.groups import ActorGroup
from rollout.engine import Engine


class EngineDispatch:
    def __init__(self, group: ActorGroup, tag=None):
        """`tag()`: the weights version every engine must hold (cluster/weight_sync.py), None for any."""
        self.group, self.tag = group, tag or (lambda: None)
        n = len(group.members)
        self.queues: list[list] = [[] for _ in range(n)]
        self.busy = [False] * n
        self.open = [0] * n        # sessions each engine serves
        self.batches: list[int] = []  # requests per batch sent, for the run's metrics
        self.engine_of: dict[str, int] = {}
        self.pumps: set = set()  # the running pump tasks, held: the event loop keeps only weak references to tasks
        self.worker = None
        if group.backend == "inprocess":
            # In-process engines run in one worker thread with the torch thread count of the thread that built them:
            # vLLM's CPU attention plans its work for that count and stops ("thread_num == thread_num") otherwise. vLLM
            # replaces torch.set_num_threads with a no-op once its worker binds threads: torch._C's is the real one.
            import torch
            from concurrent.futures import ThreadPoolExecutor

            threads = torch.get_num_threads()
            self.worker = ThreadPoolExecutor(1, thread_name_prefix="raygrpo-engine",
                                             initializer=lambda: torch._C.set_num_threads(threads))

    def place(self, sid: str | None) -> int:
        if sid is None:
            return min(range(len(self.open)), key=lambda i: (len(self.queues[i]) + self.busy[i], i))
        if sid not in self.engine_of:
            i = min(range(len(self.open)), key=lambda i: (self.open[i], i))
            self.engine_of[sid] = i
            self.open[i] += 1
        return self.engine_of[sid]

    def release(self, sid: str) -> None:
        i = self.engine_of.pop(sid, None)
        if i is not None:
            self.open[i] -= 1

    async def submit(self, session, prompt_ids: list[int], params):
        i = self.place(session.sid if session is not None else None)
        if session is not None:
            session.engine = i
        done = asyncio.get_running_loop().create_future()
        self.queues[i].append((prompt_ids, params, done))
        if not self.busy[i]:
            self.busy[i] = True
            pump = asyncio.ensure_future(self._pump(i))
            self.pumps.add(pump)
            pump.add_done_callback(self.pumps.discard)
        return await done

    async def _pump(self, i: int) -> None:
        try:
            while self.queues[i]:
                batch, self.queues[i] = self.queues[i], []
                self.batches.append(len(batch))
                try:
                    outs = await self._serve(i, [p for p, _, _ in batch], [s for _, s, _ in batch])
                except Exception as err:  # noqa: BLE001 - every request of the batch fails with it
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(err)
                    continue
                for (_, _, done), out in zip(batch, outs, strict=True):
                    if not done.done():
                        done.set_result(out)
        finally:
            self.busy[i] = False

    async def _serve(self, i: int, prompts: list[list[int]], params: list) -> list:
        tag = self.tag()
        if self.group.backend == "inprocess":
            member = self.group.members[i]
            return await asyncio.get_running_loop().run_in_executor(
                self.worker, lambda: member.serve(prompts, params, weights_version=tag))
        ref = self.group.call(Engine.serve, prompts, params, index=i, weights_version=tag)
        return await asyncio.wrap_future(ref.future())
