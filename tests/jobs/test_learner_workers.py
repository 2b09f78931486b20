"""learner.workers=2 on the real path (local Ray, vLLM, XQuAD, the tiny policy in fp32), sharded (fsdp, the default
for several workers) and replicated: the first update equals the one-worker run's to 1e-6, the run resumes with two
workers (taken back to its checkpoint after step 1) equals it uninterrupted, the checkpoint written from the shards
loads in plain transformers, and every step's samples came from the learner's weights (the bucket-by-bucket sync, its check and the engine-vs-learner gap hold)."""
import json
from pathlib import Path

import pytest

from tests.real_path import assert_engine_held_learner_weights, train

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.fleet("tiny-fp32")]


def _smoke(fleets, tmp_path: Path, policy: str, name: str, *extra: str, resume: bool = False,
           max_steps: int | None = None) -> dict:
    return train(fleets, str(ROOT / "jobs" / "configs" / "smoke.yaml"), f"train.output_dir={tmp_path}",
                 f"train.run_name={name}", "train.phases.0.steps=2", "train.eval_every=100",
                 "train.eval_at_start=false", "train.save_every=1", "rollout.kv_cache_gib=1", "data.eval_size=4",
                 f"model.policy={policy}", "learner.precision=fp32", "rollout.dtype=fp32",
                 # the tiny random policy scores F1 0 on every sample (no advantage, no gradient: any two runs would
                 # "agree"); cosine similarity to the gold answer differs from sample to sample, so every update is real
                 "rewards.components=[{name: similarity}]", *extra, resume=resume, max_steps=max_steps)


def _weights(run: Path) -> dict:
    return _weights_at(run / "checkpoints" / "last")


def _weights_at(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "model.safetensors"))


def test_two_learner_workers_take_the_one_worker_update_and_resume(shared_data, tmp_path, tiny_policy_dir, fleets):
    _smoke(fleets, tmp_path, tiny_policy_dir, "one", max_steps=1)
    # two sharded workers, 2 steps uninterrupted (the checkpoint after step 1 kept as step-000001)
    _smoke(fleets, tmp_path, tiny_policy_dir, "two", "learner.workers=2", "train.keep_checkpoints=2")
    run = tmp_path / "two"
    a, b = _weights(tmp_path / "one"), _weights_at(run / "checkpoints" / "step-000001")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(run / "checkpoints" / "step-000001")  # written from shards
    assert all(plain.state_dict()[k].equal(v) for k, v in b.items())
    want = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "2 learner workers, fsdp" in (run / "metrics.jsonl").read_text()  # the plan says how workers held it
    ref = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    s1, r1 = next(r for r in want if r["kind"] == "step"), next(r for r in ref if r["kind"] == "step")
    assert r1["learner/grad_norm"] > 1e-3 and r1["reward/std"] > 0  # a step that moves the weights
    for key in ("reward/mean", "learner/pg_loss", "learner/kl", "learner/grad_norm", "learner/entropy"):  # the same samples, the same step
        assert s1[key] == pytest.approx(r1[key], rel=1e-5, abs=1e-7), key
    # replicated workers beside one reference process serving both: the same update, one reference copy
    _smoke(fleets, tmp_path, tiny_policy_dir, "replicated", "learner.workers=2", "learner.sharding=replicate",
           "learner.reference_workers=1", max_steps=1)
    r = _weights(tmp_path / "replicated")
    assert max((a[k] - r[k]).abs().max().item() for k in a) <= 1e-6
    peak = json.loads((tmp_path / "replicated" / "summary.json").read_text())["peak_rss_gib"]
    assert len(peak["learner"]) == 2 and len(peak["reference"]) == 1
    # the sharded run as if stopped after step 1 (its last checkpoint gone), resumed over the collective weight sync (a
    # gloo group of worker 0 and the engine's worker; every worker gathers): step 2 again, the same
    last = _weights(run)
    import shutil

    for name in ("last", "last.old"):
        shutil.rmtree(run / "checkpoints" / name, ignore_errors=True)
    _smoke(fleets, tmp_path, tiny_policy_dir, "two", "learner.workers=2", "train.keep_checkpoints=2",
           "cluster.weight_sync=collective", resume=True)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert_engine_held_learner_weights(r, "fp32")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and len(summary["peak_rss_gib"]["learner"]) == 2
    assert len(summary["peak_rss_gib"]["reference"]) == 2
    want_steps = [r for r in want if r["kind"] == "step"]
    for got, exp in zip(steps, want_steps, strict=True):
        for key, value in exp.items():
            if isinstance(value, float) and not key.startswith(("timing/", "perf/", "sync/", "stream/", "memory/")) and key != "time":
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (exp["step"], key)
    again = _weights(run)
    assert max((last[k] - again[k]).abs().max().item() for k in last) <= 1e-6


def test_ppo_with_two_workers_and_one_or_two_critics_takes_the_one_worker_update(shared_data, tmp_path,
                                                                                  tiny_policy_dir, fleets):
    """PPO (full fine-tuning, a critic): the first update of the policy and of the critic is the same with one
    learner and one critic, two learners and two critics (data parallel), and two learners beside one critic."""
    ppo = ["train.phases=[{kind: ppo, steps: 1, epochs: 1, minibatches: 1}]"]
    runs = {"one": [], "two": ["learner.workers=2"],
            "two-critic1": ["learner.workers=2", "learner.critic_workers=1"]}
    for name, extra in runs.items():
        _smoke(fleets, tmp_path, tiny_policy_dir, name, *ppo, *extra, max_steps=1)
    from safetensors.torch import load_file

    step = next(json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["kind"] == "step")
    assert step["learner/grad_norm"] > 1e-3 and step["critic/vf_loss"] > 0  # both models really moved
    base = _weights(tmp_path / "one")
    critic = load_file(str(tmp_path / "one" / "checkpoints" / "last" / "trainer" / "critic.safetensors"))
    for name in ("two", "two-critic1"):
        got = _weights(tmp_path / name)
        assert max((base[k] - got[k]).abs().max().item() for k in base) <= 1e-6, name
        got_critic = load_file(str(tmp_path / name / "checkpoints" / "last" / "trainer" / "critic.safetensors"))
        assert got_critic.keys() == critic.keys()
        assert max((critic[k] - got_critic[k]).abs().max().item() for k in critic) <= 1e-6, name
    peak = json.loads((tmp_path / "two-critic1" / "summary.json").read_text())["peak_rss_gib"]
    assert len(peak["learner"]) == 2 and len(peak["critic"]) == 1
