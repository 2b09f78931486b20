"""Placement groups on a simulated multi-node cluster (ray.cluster_utils.Cluster: three raylets on this machine):
`disaggregated` puts each engine and the training actors on nodes of their own, `colocated` everything on one;
the learner's weights reach every engine (the sync check's probe on each engine, and the gap before the sync)."""
import pytest


pytestmark = [pytest.mark.ray]


@pytest.fixture
def llama(tiny_llama_dir):
    return tiny_llama_dir


@pytest.fixture
def three_nodes(own_ray):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def system_on(cluster, llama, placement: str):
    from cluster.system import open_system
    from common.config import load_config

    cfg = load_config(None, [f"model.policy={llama}", "rollout.engine=hf", f"cluster.address={cluster.address}",
                             f"cluster.placement={placement}", "cluster.num_rollout_actors=2", "cluster.threads=1",
                             "task.name=arithmetic"])
    return open_system(cfg, llama, [{"name": "arithmetic", "weight": 1.0, "params": {}}])


def perturb(system) -> None:
    """Move the learner's weights (as a training step would)."""
    def noise(learner):
        import torch

        with torch.no_grad():
            for p in learner.model.parameters():
                p.add_(0.05 * torch.randn_like(p))

    from cluster.groups import get

    get(system.learner.members[0].__ray_call__.remote(noise))


def test_disaggregated_engines_and_learner_on_nodes_of_their_own(three_nodes, llama):
    system = system_on(three_nodes, llama, "disaggregated")
    try:
        nodes = system.nodes()
        learner, engines = nodes["learner"][0], nodes["rollout"]
        assert len({learner, *engines}) == 3  # three bundles, three nodes
        assert nodes["reference"] == [learner]  # the reference trains beside the learner
        perturb(system)
        with pytest.raises(RuntimeError, match="weight sync failed: engine rollout-0"):
            system.weights.verify()  # the engines still serve the old weights
        system.sync_weights()  # one object from the learner's node to both engine nodes, checked on each
        system.weights.verify()
    finally:
        system.shutdown()


def test_colocated_puts_everything_on_one_node(three_nodes, llama):
    import ray

    system = system_on(three_nodes, llama, "colocated")
    try:
        nodes = system.nodes()
        assert len({*nodes["learner"], *nodes["reference"], *nodes["rollout"]}) == 1
    finally:
        system.shutdown()
    assert not ray.is_initialized()


def test_a_placement_that_cannot_fit_names_what_it_asked_for(three_nodes, llama, monkeypatch):
    from cluster import placement

    monkeypatch.setattr(placement.Placement.__init__, "__defaults__", (5.0, 1))  # a short wait; one learner worker
    from cluster.system import open_system
    from common.config import load_config

    cfg = load_config(None, [f"model.policy={llama}", "rollout.engine=hf", f"cluster.address={three_nodes.address}",
                             "cluster.placement=disaggregated", "cluster.num_rollout_actors=3"])  # needs 4 nodes
    with pytest.raises(RuntimeError, match=r"could not place 4 bundles .* disaggregated needs one node per engine"):
        open_system(cfg, llama, [{"name": "arithmetic", "weight": 1.0, "params": {}}])
