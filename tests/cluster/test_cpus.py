"""The Ray CPUs a job's actors ask for, counted before any starts: a job that asks for more than the cluster has
stops with the fix instead of waiting forever on an actor Ray cannot place."""
import pytest

from cluster.fleet import check_cpus, fleet_spec
from common.config import load_config
from common.plan import make_plan


def _need(*overrides: str) -> float:
    cfg = load_config(overrides=list(overrides))
    return fleet_spec(cfg, make_plan(cfg), "any", model_id="any").cpus()


def test_hand_counted():
    # 1 engine 0.5 + 1 reward 0.1 + learner 0.5 + reference 0.2 (GRPO with a sampled-token KL, full fine-tuning)
    assert _need() == pytest.approx(1.3)
    # two learner workers, each with a reference shard: 0.5 + 0.1 + 2 x 0.5 + 2 x 0.2
    assert _need("learner.workers=2") == pytest.approx(2.0)
    assert _need("learner.workers=2", "learner.reference_workers=1") == pytest.approx(1.8)
    ppo = "train.phases=[{kind: ppo, steps: 1}]"
    assert _need(ppo, "learner.workers=2") == pytest.approx(2.4)  # + 2 critics x 0.2 (what hung on 2 cores)
    assert _need(ppo, "learner.workers=2", "learner.critic_workers=1") == pytest.approx(2.2)
    assert _need("cluster.num_rollout_actors=3", "cluster.num_reward_actors=2") == pytest.approx(2.4)
    assert _need("retrieval.enabled=true") == pytest.approx(1.4)  # + a retriever


def test_too_few_cpus_name_the_fix():
    check_cpus(2.0, 2.0, local=True)
    with pytest.raises(RuntimeError, match=r"ask for 2.4 Ray CPUs and the cluster has 2, .*: raise cluster.num_cpus"):
        check_cpus(2.4, 2.0, local=True)
    with pytest.raises(RuntimeError, match="add nodes or CPUs to the cluster"):
        check_cpus(2.4, 2.0, local=False)
