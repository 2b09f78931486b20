"""The real path: the embedded model or the tiny policy, real vLLM, real Ray, real XQuAD data.

The jobs run in this process on the session's warm fleets (tests/conftest.py `fleets`), as `raygrpo train --local`
runs them; the driver-kill test runs its job as a command. Numbers are asserted as behaviour (sync took effect,
checkpoints resumable), never as wall-clock.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.real_path import assert_engine_held_learner_weights, other_precision_overrides, run_precision, train

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
SMOKE = str(ROOT / "jobs" / "configs" / "smoke.yaml")

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def _check_run(run: Path, steps: int) -> None:
    steps_logged = _records(run, "step")
    assert [r["step"] for r in steps_logged] == list(range(1, steps + 1))
    precision = run_precision(run)
    for r in steps_logged:
        # Weight sync took effect: the engine that sampled holds the learner's weights (first update: ratio 1).
        assert_engine_held_learner_weights(r, precision)
        assert r["sync/gap"] <= (1e-3 if precision == "fp32" else 0.1)  # the probe check after the sync
        for key in ("reward/mean", "reward/std", "reward/qa", "reward/qa/f1", "reward/qa/em", "reward/qa/zero_var_frac", "learner/kl", "learner/entropy",
                    "rollout/len_mean", "timing/generate", "timing/reward", "timing/reference",
                    "timing/learn", "timing/sync"):
            assert key in r, key
        # each group's measured peak so far beside the memory plan's figure for one of its processes
        assert r["memory/learner_peak_gib"] > 0.1 and r["memory/learner_plan_gib"] > 0.1
        assert r["memory/rollout_peak_gib"] > 0.1 and r["memory/rollout_plan_gib"] > r["memory/reward_plan_gib"]
    assert "memory plan (GiB" in (run / "metrics.jsonl").read_text()  # shown before any actor started
    if steps >= 2:
        assert steps_logged[-1]["learner/kl"] > 0  # after an update the policy has left the reference
    assert _records(run, "eval")
    for name in ("last", "best"):
        assert (run / "checkpoints" / name / "model.safetensors").is_file()
    assert (run / "curves.png").stat().st_size > 10_000
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == steps


@pytest.mark.fleet("tiny-fp32")
def test_two_grpo_steps_on_local_ray_with_vllm(shared_data, tmp_path, tiny_policy_dir, fleets, capsys):
    """Two vLLM engines and two reward actors: prompts and samples are sharded, and one weight broadcast
    reaches both engines (the logprob gap is checked on every sample of every step). The point is the system, so
    the tiny policy (the embedded model runs the smoke preset under `ray job submit`, tests/jobs/test_job_submit.py),
    with the similarity reward beside QA (its F1 is 0 everywhere: no gradient) and lr 1e-3 so one update shows. In
    fp32: a random model's probe tokens are all near-uniform, so its probe moves only with the RMSNorm weights,
    whose 1e-3 steps a bf16 engine cannot hold (1 + 1e-3 rounds to 1) and the sync check's `tracks` test stops the
    run (at the presets' lr 1e-5 its probe moves less than the test's threshold: the overlap tests run it in bf16).
    The same run with the collective weight sync (a gloo group of the learner and both engines' workers) samples
    from the learner's weights too."""
    mixed = str(ROOT / "jobs" / "configs" / "mixed_rewards.yaml")
    args = [f"train.output_dir={tmp_path}", "cluster.num_rollout_actors=2", "cluster.num_reward_actors=2",
            "rollout.kv_cache_gib=1", "learner.inner_steps=2", f"model.policy={tiny_policy_dir}", "learner.lr=1e-3",
            "learner.precision=fp32", "rollout.dtype=fp32"]
    summary = train(fleets, mixed, *args, "train.run_name=smoke")
    out = capsys.readouterr().out
    assert "run_dir:" in out and "last_checkpoint:" in out and summary["finished"]
    # The job's own lines fit on one screen; engine and library logs are in the run's logs/.
    assert len(out.splitlines()) <= 40 and "pid=" not in out, out
    assert (tmp_path / "smoke" / "logs" / "rollout-1.log").stat().st_size > 0
    _check_run(tmp_path / "smoke", 2)
    for r in _records(tmp_path / "smoke", "step"):
        # The second update of a batch sees a moved policy: its ratio is no longer 1 everywhere.
        assert r["learner/ratio_max"] > 1.0 + 1e-4
        assert 0.0 <= r["learner/clip_frac_last"] <= 1.0
    train(fleets, mixed, *args, "train.run_name=collective", "cluster.weight_sync=collective")
    _check_run(tmp_path / "collective", 2)
    assert "[cluster]" not in capsys.readouterr().out  # no retry: every collective sync went through its check


@pytest.mark.fleet("tiny")
def test_resume_after_kill_continues_from_saved_step(shared_data, tmp_path, tiny_policy_dir, fleets, capsys):
    """The job SIGKILLed (no Ray: plain objects in its process) once a checkpoint is written; --resume (on a warm fleet
    of local Ray: a checkpoint is not tied to where it was written) continues after the saved step."""
    overrides = [f"train.output_dir={tmp_path}", "train.phases.0.steps=3", "train.save_every=1",
                 "train.eval_every=100", "train.eval_at_start=false", f"model.policy={tiny_policy_dir}"]
    args = ["--config", SMOKE, "--inprocess", *overrides]
    run = tmp_path / "smoke"
    proc = subprocess.Popen([PY, str(ROOT / "jobs" / "grpo_mlqa.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = run / "checkpoints" / "last" / "driver_state.json"
    deadline = time.time() + 900
    while not state.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)  # a hard kill, as a preempted node would see
    proc.wait()
    saved = json.loads(state.read_text())["step"]
    assert 1 <= saved < 3
    capsys.readouterr()
    train(fleets, SMOKE, *overrides, resume=True)
    assert f"resuming from {run / 'checkpoints' / 'last'} after step {saved}" in capsys.readouterr().out
    steps = [r["step"] for r in _records(run, "step")]
    # Steps up to the kill, then exactly the rest; a step after the checkpoint may appear twice.
    assert steps[-(3 - saved):] == list(range(saved + 1, 4))
    assert json.loads((run / "summary.json").read_text())["steps"] == 3
    # The rollout records hold every step once: the replayed step's file was rewritten, not appended.
    from common import rollout_records

    df = rollout_records.read(run)
    assert sorted(set(df["step"])) == [1, 2, 3] and not df.duplicated(["step", "prompt", "sample"]).any()


@pytest.mark.fleet("tiny-fp32")
def test_mixed_rewards_and_retrieved_eval_contexts_on_local_ray(shared_data, tmp_path, tiny_policy_dir, fleets):
    """jobs/configs/mixed_rewards.yaml (QA + 0.5 x similarity under the packaged MiniLM) for 2 steps on
    local Ray, with retrieval on: each component is logged on its own, the step reward is their weighted
    sum, and eval runs on top-3 passages from a dense index built once and reused by the next run. The point is the
    system (rewards, index, retrieval actors), so the tiny policy in fp32 on a warm fleet (the embedded model's run
    of this preset: the smoke preset under `ray job submit`, tests/jobs/test_job_submit.py)."""
    mixed = str(ROOT / "jobs" / "configs" / "mixed_rewards.yaml")
    args = [f"train.output_dir={tmp_path}", "retrieval.enabled=true", "rollout.kv_cache_gib=1",
            "train.eval_at_start=false", "learner.precision=fp32", "rollout.dtype=fp32", "data.limit=60",
            "train.save_every=100", f"model.policy={tiny_policy_dir}", "learner.lr=1e-3"]
    train(fleets, mixed, *args)
    run = tmp_path / "mixed-rewards"
    _check_run(run, 2)
    for r in _records(run, "step"):
        for key in ("reward/qa", "reward/qa/zero_var_frac", "reward/similarity", "reward/similarity/zero_var_frac"):
            assert key in r, key
        assert r["reward/mean"] == pytest.approx(r["reward/qa"] + 0.5 * r["reward/similarity"], abs=1e-5)
        assert 0.0 < r["reward/similarity"] <= 1.0
    info = [r for r in _records(run, "info") if r["message"].startswith("retrieval")][0]["data"]
    assert info["retrieval/index_status"] == "built" and info["retrieval/chunks"] >= info["retrieval/docs"] > 0
    assert all(r["eval/context"] == "retrieved" for r in _records(run, "eval"))
    assert (tmp_path / "index" / "xquad-en" / "meta.json").is_file()

    # The next job with the same config finds the index valid and loads it instead of rebuilding: the job's own
    # index step (trainer/rag.py open_index) on the job's config and task, without starting the actors again.
    from common.config import load_config
    from trainer.rag import open_index
    from trainer.run import load_task

    cfg = load_config(mixed, args)
    _, status, index_dir, _ = open_index(load_task(cfg)[1], cfg)
    assert status == "loaded" and index_dir == tmp_path / "index" / "xquad-en"


@pytest.mark.fleet("tiny")
def test_overlap_on_local_ray_with_vllm(shared_data, tmp_path, tiny_policy_dir, fleets):
    """train.overlap on the real path: the next batch is sampled by the vLLM engine while the learner trains;
    steps 2.. are one update stale (logged), every sample is recorded once, and each sync still passes the
    probe check (the engine ends on the learner's weights)."""
    train(fleets, str(ROOT / "jobs" / "configs" / "smoke.yaml"), f"train.output_dir={tmp_path}",
          "train.phases.0.steps=3", "train.eval_at_start=false", "train.overlap=true", "rollout.kv_cache_gib=1",
          f"model.policy={tiny_policy_dir}")
    run = tmp_path / "smoke"
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["kind"] == "step"]
    assert [r["rollout/staleness"] for r in steps] == [0, 1, 1]
    assert_engine_held_learner_weights(steps[0], run_precision(run))  # step 1 sampled the learner's own weights
    from common import rollout_records

    df = rollout_records.read(run)
    assert len(df) == 3 * 4 * 4 and not df.duplicated(["step", "prompt", "sample"]).any()


@pytest.mark.fleet("tiny-other")
def test_three_steps_with_overlap_in_the_other_precision(shared_data, tmp_path, tiny_policy_dir, fleets):
    """The path `precision: auto` does not take on this machine (bf16 forced where auto is fp32, fp32 where it is
    bf16), on local Ray with vLLM, with overlap: every sync passes the probe check, step 1 samples the learner's own
    weights, steps 2.. one update stale, and the mismatch and the TIS weights (stale samples: the learner's old
    logprobs in either precision) are logged. Kept small: bf16 is emulated on AVX2 CPUs."""
    train(fleets, SMOKE, f"train.output_dir={tmp_path}", "train.phases.0.steps=3", "train.eval_at_start=false",
          "train.overlap=true", "rollout.kv_cache_gib=1", "data.eval_size=4", "train.prompts_per_step=2",
          "rollout.max_new_tokens=16", *other_precision_overrides(), f"model.policy={tiny_policy_dir}")
    run = tmp_path / "smoke"
    precision = run_precision(run)
    assert [f"learner.precision={precision}"] == other_precision_overrides()[:1]
    steps = _records(run, "step")
    assert [r["rollout/staleness"] for r in steps] == [0, 1, 1]
    assert_engine_held_learner_weights(steps[0], precision)
    for r in steps:
        assert r["sync/gap"] <= (1e-3 if precision == "fp32" else 0.1) and "learner/mismatch_kl" in r
        assert "learner/tis_mean" in r  # stale samples: the learner's own old logprobs + TIS in either precision
