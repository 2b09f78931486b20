"""vLLM's sleep mode around a step (cluster/sleep.py), by the order of the calls (CPU vLLM has no sleep mode, so the
order is what can be tested here; the config and plan decide when it is on)."""
import pytest

from cluster.sleep import EngineSleep, sleep_level
from common.config import ConfigError, load_config
from common.plan import make_plan


def recorder(level):
    calls = []
    sleep = EngineSleep(level, lambda method, *a: calls.append((method.__name__, *a)), lambda: calls.append(("free",)))
    return sleep, calls


def test_a_step_sleeps_after_generation_and_wakes_weights_then_kv_cache_around_the_push():
    sleep, calls = recorder(1)
    sleep.rest()
    sleep.rest()  # a second rest of sleeping engines asks nothing
    sleep.around_sync(lambda: calls.append(("push",)))
    assert calls == [("sleep", 1), ("wake", ["weights"]), ("push",), ("free",), ("wake", ["kv_cache"])]
    assert not sleep.asleep


def test_sleeping_engines_asked_to_generate_are_synced_first_and_awake_ones_are_left_alone():
    sleep, calls = recorder(2)
    sleep.ensure_awake(lambda: calls.append(("sync",)))
    assert calls == []  # awake: nothing to do
    sleep.rest()
    sleep.ensure_awake(lambda: sleep.around_sync(lambda: calls.append(("push",))))
    assert calls == [("sleep", 2), ("wake", ["weights"]), ("push",), ("free",), ("wake", ["kv_cache"])]


def test_off_means_no_call_at_all():
    sleep, calls = recorder(None)
    sleep.rest()
    sleep.around_sync(lambda: calls.append(("push",)))
    assert calls == [("push",)]


def test_the_level_follows_the_model_size():
    assert sleep_level(135e6) == 1 and sleep_level(1.7e9) == 1 and sleep_level(8e9) == 2


@pytest.mark.parametrize("overrides,sleep,line", [
    ([], "off", None),                                                     # no GPUs, not colocated
    (["cluster.placement=colocated"], "off", "engine sleep mode off (it needs vLLM on a GPU)"),  # a CPU box
    (["cluster.placement=colocated", "cluster.gpus_per_rollout_actor=0.5", "cluster.gpus_per_learner=0.5"], "auto",
     "engines sleep between generations (auto)"),
    (["cluster.gpus_per_rollout_actor=1", "rollout.sleep=level2"], "level2", "engines sleep between generations"),
])
def test_the_plan_says_whether_engines_sleep(overrides, sleep, line):
    plan = make_plan(load_config(overrides=overrides))
    assert plan.sleep == sleep
    actors = plan.describe()[-1]
    assert (line in actors) if line else "sleep" not in actors


@pytest.mark.parametrize("overrides,fix", [
    (["rollout.sleep=level1"], "CPU vLLM has none"),
    (["rollout.sleep=level1", "rollout.engine=hf", "cluster.gpus_per_rollout_actor=1"], "the hf engine has none"),
    (["cluster.placement=colocated", "cluster.gpus_per_rollout_actor=1", "train.overlap=true"],
     "set train.max_staleness=0 or rollout.sleep=off"),
])
def test_sleep_config_errors_name_the_fix(overrides, fix):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert fix in str(err.value)
