"""Fault injection on the real path (local Ray, vLLM, the embedded model, XQuAD): a rollout engine or a reward
actor is SIGKILLed in the middle of a run; Ray restarts it, the interrupted call is retried from its inputs, and
the run finishes with every step once, no sample lost or repeated, and the restart counted.
(Killing the driver and resuming: tests/jobs/test_grpo_job.py; a kill during a checkpoint save and a full disk:
tests/common/test_checkpoint.py.)"""
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.real_path import assert_engine_held_learner_weights, run_precision

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.ray]
STEPS = 3


def smoke_args(tmp_path: Path, policy: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "jobs" / "grpo_mlqa.py"), "--config", str(ROOT / "jobs" / "configs" / "smoke.yaml"),
            "--local", f"train.output_dir={tmp_path}", f"train.phases.0.steps={STEPS}", "train.eval_every=100",
            "train.eval_at_start=false", "rollout.kv_cache_gib=1", "data.eval_size=4", f"model.policy={policy}", *extra]


# the faults with one learner and with two data-parallel learner workers (learner/distributed.py)
WORKERS = pytest.mark.parametrize("workers", [[], ["learner.workers=2"]], ids=["1-learner", "2-learners"])


def kill_actor_after_step(tmp_path: Path, actor: str, step: int, policy: str,
                          *extra: str) -> tuple[subprocess.CompletedProcess, Path, int]:
    """Run 3 GRPO steps of the smoke preset (the tiny policy: the point is the actors, not the weights); once step
    `step` is logged, SIGKILL one of the job's `actor` processes."""
    run = tmp_path / "smoke"
    args = smoke_args(tmp_path, policy, *extra)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, killed, deadline = run / "metrics.jsonl", 0, time.time() + 1200
    while not killed and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
        if metrics.is_file() and any(json.loads(line).get("step", 0) >= step and json.loads(line)["kind"] == "step"
                                     for line in metrics.read_text().splitlines()):
            for child in psutil.Process(proc.pid).children(recursive=True):
                if child.cmdline() and child.cmdline()[0].startswith(f"ray::{actor}"):
                    child.send_signal(signal.SIGKILL)
                    killed = child.pid
                    break  # one process: with two learner workers the other lives on, waiting on its peer
    out, err = proc.communicate(timeout=max(60, deadline - time.time()))
    return subprocess.CompletedProcess(args, proc.returncode, out, err), run, killed


def check_finished_once(run: Path) -> list[dict]:
    from common import rollout_records

    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    for r in steps:  # every step sampled the learner's weights
        assert_engine_held_learner_weights(r, run_precision(run))
    df = rollout_records.read(run)
    assert sorted(set(df["step"])) == list(range(1, STEPS + 1)) and not df.duplicated(["step", "prompt", "sample"]).any()
    assert len(df) == STEPS * 4 * 4  # 4 prompts x K=4 per step: none lost, none twice
    assert json.loads((run / "summary.json").read_text())["finished"]
    return steps


@WORKERS
def test_a_killed_rollout_engine_is_restarted_and_the_step_retried(shared_data, tmp_path, tiny_policy_dir, workers):
    proc, run, killed = kill_actor_after_step(tmp_path, "VLLMEngine", 1, tiny_policy_dir, *workers)
    assert killed, "no VLLMEngine process found to kill"
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = check_finished_once(run)
    assert steps[-1]["cluster/actor_restarts"] >= 1
    assert "a rollout actor died" in proc.stdout


def test_a_killed_reward_actor_is_restarted_and_the_run_goes_on(shared_data, tmp_path, tiny_policy_dir):
    """A reward actor dies between calls or during one: either way Ray restarts it, the scores are computed
    from the same completions, and the run ends like an undisturbed one."""
    proc, run, killed = kill_actor_after_step(tmp_path, "RewardScorer", 1, tiny_policy_dir)
    assert killed, "no RewardScorer process found to kill"
    assert proc.returncode == 0, proc.stderr[-4000:]
    check_finished_once(run)


@WORKERS
def test_a_killed_learner_stops_with_one_line_and_the_run_resumes(shared_data, tmp_path, tiny_policy_dir, workers):
    """The learner holds the optimizer state, which Ray's restart would not bring back: the run stops with one line
    naming the actor and the resume command (no traceback), and --resume finishes it with every step once."""
    proc, run, killed = kill_actor_after_step(tmp_path, "Learner", 2, tiny_policy_dir, *workers)  # step 1 saved
    assert killed, "no Learner process found to kill"
    assert proc.returncode == 3, proc.stderr[-4000:]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert re.match(r"error: actor learner-\d died at step", last) and "--resume" in last, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    again = subprocess.run([*smoke_args(tmp_path, tiny_policy_dir, *workers), "--resume"], cwd=ROOT, capture_output=True,
                           text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-4000:]
    check_finished_once(run)
