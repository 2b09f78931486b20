"""A fleet outlives a run (cluster/fleet.py): what a run asks of it is checked before it is lent, and a run on a fleet
that served other runs gives exactly what it gives on a fleet of its own (fp32, the tiny policy, local Ray, vLLM)."""
from dataclasses import replace
from pathlib import Path

import pytest

from cluster.fleet import FleetMismatch, FleetSpec
from tests.real_path import records, train

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "jobs" / "configs" / "smoke.yaml")


def test_a_fleet_names_every_difference_a_run_would_miss():
    have = FleetSpec(model_id="llama-a", engine=("vllm", (("dtype", "fp32"), ("kv_cache_gib", 1.0))), engines=1,
                     learners=1, references=1)
    assert have.lacks(have) == []
    assert have.lacks(replace(have, references=0)) == []  # a reference held idle is fine
    need = replace(have, engines=2, critics=1, engine=("vllm", (("dtype", "bf16"), ("kv_cache_gib", 1.0))))
    missing = have.lacks(need)
    assert missing == ["engine: the fleet has vllm engines with dtype=fp32, kv_cache_gib=1.0, the run needs vllm "
                       "engines with dtype=bf16, kv_cache_gib=1.0", "engines: the fleet has 1, the run needs 2",
                       "critics: the fleet has 0, the run needs 1"]
    assert replace(have, critics=1).covering(need).critics == 1
    # another worker layout on the same engines: the training groups are built anew beside them (Fleet.regroup)
    two = replace(have, learners=2, sharding="fsdp", references=2, critics=2)
    assert have.lacks(two) and have.regroupable(two) and two.regroupable(have)
    assert not have.regroupable(need)  # other engines: a fleet of its own
    assert not replace(have, placement="colocated").regroupable(two)  # placement groups hold the bundles
    assert not have.regroupable(replace(two, learners=0))  # an eval needs no learner


# Two different runs: PPO with a critic (a reference, LoRA off, similarity reward) and GRPO with another lr, seed, reward
# mix and prompts a step. fp32 so that equal means equal.
COMMON = ["train.eval_at_start=false", "train.eval_every=100", "data.eval_size=4", "rollout.kv_cache_gib=1",
          "learner.precision=fp32", "rollout.dtype=fp32", "train.save_every=1"]
RUN_A = ["train.phases=[{kind: ppo, steps: 2, epochs: 1, minibatches: 1}]", "learner.lr=1e-3",
         "rewards.components=[{name: similarity}]"]
RUN_B = ["train.phases.0.steps=3", "learner.lr=3e-4", "train.seed=7", "rollout.seed=3", "train.prompts_per_step=2",
         "rewards.components=[{name: similarity}, {name: qa, weight: 0.5}]"]


def _numbers(run: Path) -> list[dict]:
    """Every step's numbers that do not depend on the clock."""
    return [{k: v for k, v in r.items() if not k.startswith(("timing/", "perf/", "stream/", "memory/"))
             and k not in ("time", "sync/seconds", "sync/pause_s", "sync/wait_s")}
            for r in records(run, "step")]


def _weights(run: Path, name: str = "model.safetensors", folder: str = "") -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / "last" / folder / name))


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.mark.slow
def test_runs_back_to_back_on_one_fleet_equal_each_on_its_own(shared_data, tmp_path, tiny_policy_dir, ray_session):
    from cluster.fleet import Fleet, FleetPool

    policy = f"model.policy={tiny_policy_dir}"
    pool = FleetPool(keep=1)  # this test's own fleet: it must see the first run on a new one
    try:
        a1 = Path(train(pool, SMOKE, *COMMON, *RUN_A, policy, f"train.output_dir={tmp_path}", "train.run_name=a1")["run_dir"])
        fleet: Fleet = pool.fleets[0]
        b1 = Path(train(pool, SMOKE, *COMMON, *RUN_B, policy, f"train.output_dir={tmp_path}", "train.run_name=b1")["run_dir"])
        a2 = Path(train(pool, SMOKE, *COMMON, *RUN_A, policy, f"train.output_dir={tmp_path}", "train.run_name=a2")["run_dir"])
        assert pool.started == 1 and pool.fleets == [fleet] and fleet.runs == 3  # all three on the one fleet
        # B on a fleet of its own (another pool: a fresh fleet)
        alone = FleetPool(keep=1)
        try:
            b2 = Path(train(alone, SMOKE, *COMMON, *RUN_B, policy, f"train.output_dir={tmp_path}",
                            "train.run_name=b2")["run_dir"])
        finally:
            alone.close()
    finally:
        pool.close()
    a, b = _numbers(a1), _numbers(b1)
    assert len(a) == 2 and len(b) == 3 and a[0]["learner/grad_norm"] > 1e-3  # runs that really trained
    assert a[-1]["critic/vf_loss"] > 0 and b[-1]["learner/kl"] > 0
    # a run after another on the fleet = the same run first on it; B after A = B on a fleet of its own
    assert _numbers(a2) == a
    assert _numbers(b2) == b
    assert _same_weights(_weights(a1), _weights(a2)) and _same_weights(_weights(b1), _weights(b2))
    assert _same_weights(_weights(a1, "critic.safetensors", "trainer"), _weights(a2, "critic.safetensors", "trainer"))
    # each run's actors wrote their logs into its own folder
    for run in (a1, b1, a2):
        assert (run / "logs" / "rollout-0.log").stat().st_size > 0, run


def test_the_docs_sweep_runs_every_lr_on_one_fleet(tmp_path, monkeypatch, tiny_llama_dir):
    """docs/examples/sweep_on_one_fleet.py as docs/cluster.md shows it (in-process here, tiny random Llama: the
    Ray path of a shared fleet is the test above): one fleet started, each run its own numbers."""
    import importlib.util

    from cluster import fleet as fleet_module

    model = tiny_llama_dir
    started = []
    real_init = fleet_module.Fleet.__init__
    monkeypatch.setattr(fleet_module.Fleet, "__init__", lambda self, *a, **k: (started.append(1), real_init(self, *a, **k))[1])
    spec = importlib.util.spec_from_file_location("sweep", ROOT / "docs" / "examples" / "sweep_on_one_fleet.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    overrides = ["cluster.backend=inprocess", "learner.precision=fp32", "rollout.dtype=fp32", f"model.policy={model}",
                 "rollout.engine=hf", "task.name=countdown", f"train.output_dir={tmp_path / 'runs'}", "data.limit=60",
                 "data.eval_size=4", "task.params.num_problems=60", "train.prompts_per_step=2",
                 "rollout.max_new_tokens=6", "learner.micro_batch_size=8", "cluster.threads=1",
                 "train.eval_at_start=false", "train.phases=[{kind: grpo, steps: 2}]"]
    summaries = sweep.sweep(None, [1e-3, 1e-2], overrides)
    assert [Path(s["run_dir"]).name for s in summaries] == ["lr-0.001", "lr-0.01"] and len(started) == 1
    assert all(s["finished"] and s["steps"] == 2 for s in summaries)
    first, second = (records(Path(s["run_dir"]), "step")[0] for s in summaries)
    assert first["learner/lr"] > 0 and second["learner/lr"] == pytest.approx(10 * first["learner/lr"])  # its own lr
