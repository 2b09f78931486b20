"""Where the actors run: Ray placement groups from `cluster.placement`.

    none            Ray's default scheduling (on one machine everything lands there anyway)
    colocated       one STRICT_PACK group: engines, learner, reference and critic on one node (a single GPU box)
    spread          one SPREAD group over the same bundles: Ray spreads them over the nodes it has
    disaggregated   one STRICT_SPREAD group: the training bundle (learner, reference, critic) and each engine's
                    bundle on a node of its own, so generation and training never share a node

Bundle 0 holds the training actors (their CPUs and `cluster.gpus_per_learner`), bundle 1 + i engine i
(`cluster.gpus_per_rollout_actor`); with `learner.workers: N`, bundle engines + j holds learner worker j, reference shard j and
critic worker j (j >= 1; another `gpus_per_learner` each). Reward and retrieval actors are small and stateless: default scheduling.
A group that cannot be placed (too few nodes, GPUs or CPUs) fails after `timeout_s` naming what it asked for.
"""
from __future__ import annotations

from typing import Callable

STRATEGY = {"colocated": "STRICT_PACK", "spread": "SPREAD", "disaggregated": "STRICT_SPREAD"}
# CPUs each actor asks Ray for (cluster/system.py uses the same numbers)
TRAIN_CPUS = {"learner": 0.5, "reference": 0.2, "critic": 0.2}
ENGINE_CPUS = 0.5
REWARD_CPUS = 0.1     # a reward scorer, and a retriever


class Placement:
    def __init__(self, mode: str, n_engines: int, gpus_per_engine: float, gpus_per_learner: float,
                 timeout_s: float = 120.0, learner_workers: int = 1):
        import ray
        from ray.util.placement_group import placement_group

        self.mode = mode
        train = {"CPU": round(sum(TRAIN_CPUS.values()), 3), **({"GPU": gpus_per_learner} if gpus_per_learner else {})}
        engine = {"CPU": ENGINE_CPUS, **({"GPU": gpus_per_engine} if gpus_per_engine else {})}
        worker = {"CPU": round(sum(TRAIN_CPUS.values()), 3),
                  **({"GPU": gpus_per_learner} if gpus_per_learner else {})}
        self.n_engines = n_engines
        self.bundles = [train] + [dict(engine) for _ in range(n_engines)] + [dict(worker)
                                                                             for _ in range(learner_workers - 1)]
        self.group = placement_group(self.bundles, strategy=STRATEGY[mode], name="raygrpo")
        try:
            ray.get(self.group.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as err:
            ray.util.remove_placement_group(self.group)
            nodes = len([n for n in ray.nodes() if n["Alive"]])
            raise RuntimeError(
                f"cluster.placement={mode} could not place {len(self.bundles)} bundles {self.bundles} "
                f"({STRATEGY[mode]}) within {timeout_s:.0f} s on {nodes} alive node(s): "
                + ("disaggregated needs one node per engine plus one for training; " if mode == "disaggregated" else "")
                + "add nodes or resources, or use cluster.placement=none") from err

    def _strategy(self, bundle: int):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return PlacementGroupSchedulingStrategy(placement_group=self.group, placement_group_bundle_index=bundle)

    def learners(self) -> Callable[[int], object]:
        """For ActorGroup.create(placement=...): learner worker i (and reference shard i, critic worker i), worker 0
        in the training bundle, the others in theirs."""
        return lambda i: self._strategy(0 if i == 0 else self.n_engines + i)

    def engines(self) -> Callable[[int], object]:
        """Engine i in bundle 1 + i."""
        return lambda i: self._strategy(1 + i)

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.group)


def node_of(_instance) -> str:
    """Run on an actor (ActorGroup member.__ray_call__): the id of the node it lives on."""
    import ray

    return ray.get_runtime_context().get_node_id()


def check_gpus_per_node(need: int, what: str) -> None:
    """An actor that spans `need` GPUs of one node (a tensor-parallel engine) fits on some alive node, else a
    RuntimeError naming the setting and the largest node."""
    import ray

    most = max((n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if most < need:
        raise RuntimeError(f"{what}={need} needs {need} GPUs on one node; the largest node of this cluster has "
                           f"{most:g}: lower {what} or add a node with {need} GPUs")
