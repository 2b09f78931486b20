"""One GPU for engines and learner (`cluster.placement: colocated` with GPUs; `rollout.sleep`): vLLM's sleep mode
hands the engines' GPU memory to the learner between generations instead of splitting the GPU statically.

A sampled step: generate -> `rest` (the engines sleep: level 1 offloads their weights to the CPU and drops the KV
cache; level 2 drops both) -> reward, reference, learning on the freed GPU -> the weight sync, `around_sync`:
wake the weights only, push the learner's into them, free the learner's cached GPU memory, wake the KV cache (the
engine resets its prefix cache: it was computed with the old weights), then the sync check samples. Weights are
never reloaded from disk on waking, which would undo the sync (trl#5312). A generation asked of sleeping engines
without a sync first (a DPO step with no pair learns nothing and syncs nothing) syncs first (`ensure_awake`): with
level 2 the engines hold no weights to wake.

The level follows the model's size (`sleep_level`; vLLM measured level 1 faster at 0.6B, level 2 at 8B: reloading
from the CPU costs more than a sync from the learner for a large model). CPU vLLM has no sleep mode: off there,
said in the run log.
"""
from __future__ import annotations

from typing import Callable

from rollout.engine import Engine

LEVEL2_FROM_PARAMS = 2e9  # parameters from which level 2 (drop the weights) beats level 1 (offload them)


def sleep_level(n_params: float) -> int:
    """>>> sleep_level(0.6e9), sleep_level(8e9)
    (1, 2)
    """
    return 2 if n_params >= LEVEL2_FROM_PARAMS else 1


class EngineSleep:
    """The engines' sleep state and the order of the calls around it. `call_engines(method, *args)` reaches every
    engine (Engine.sleep, Engine.wake); `free_learner_cache()` empties the learner's cached GPU memory."""

    def __init__(self, level: int | None, call_engines: Callable, free_learner_cache: Callable):
        self.level, self.call, self.free = level, call_engines, free_learner_cache
        self.asleep = False

    def rest(self) -> None:
        """After a step's generation: the engines' GPU memory goes to the learner's stages."""
        if self.level and not self.asleep:
            self.call(Engine.sleep, self.level)
            self.asleep = True

    def around_sync(self, push: Callable[[], None]) -> None:
        """`push` (the weights to the engines) inside the wake-up: weights first, then the KV cache. An engine Ray
        restarted meanwhile is awake already: waking it does nothing (Engine.wake)."""
        if not self.asleep:
            push()
            return
        self.call(Engine.wake, ["weights"])
        push()
        self.free()
        self.call(Engine.wake, ["kv_cache"])
        self.asleep = False

    def ensure_awake(self, sync: Callable[[], None]) -> None:
        """Before a generation: sleeping engines get the learner's weights again (and wake with them)."""
        if self.asleep:
            sync()
