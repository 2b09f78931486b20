"""Fault injection on the real path (local Ray, vLLM, the tiny policy, XQuAD): a rollout engine or a reward actor is
SIGKILLed in the middle of a run; Ray restarts it, the fleet builds it for the current run, the interrupted call is
retried from its inputs, and the run finishes with every step once, no sample lost or repeated, and the restarts
counted. A killed learner stops the run naming it and the resume command; the resumed run finishes it.
The jobs borrow the session's warm fleets (tests/conftest.py); a fleet whose learner died is replaced.
(Killing the driver and resuming: tests/jobs/test_grpo_job.py; a kill during a checkpoint save and a full disk:
tests/common/test_checkpoint.py.)"""
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.real_path import assert_engine_held_learner_weights, run_precision, train

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.ray]
STEPS = 3
SMOKE = str(ROOT / "jobs" / "configs" / "smoke.yaml")


def smoke_args(tmp_path: Path, policy: str, *extra: str) -> list[str]:
    return [f"train.output_dir={tmp_path}", f"train.phases.0.steps={STEPS}", "train.eval_every=100",
            "train.eval_at_start=false", "rollout.kv_cache_gib=1", "data.eval_size=4", f"model.policy={policy}", *extra]


# the faults with one learner and with two sharded learner workers (learner/fsdp.py)
WORKERS = pytest.mark.parametrize("workers", [pytest.param([], marks=pytest.mark.fleet("tiny"), id="1-learner"),
                                              pytest.param(["learner.workers=2"], marks=pytest.mark.fleet("tiny-2"),
                                                           id="2-learners")])


def member_pid(group, index: int = 0) -> int:
    """The process id of a group member (from Ray's actor table: the member may be busy with a call)."""
    import ray

    return ray._private.state.actors(group.members[index]._actor_id.hex())["Pid"]


class Killer(threading.Thread):
    """Once the run in `run` has logged step `step`, SIGKILLs member 0 of the group `role` of the fleet the run borrowed
    (the pool's most recently lent), for each (step, role) of `plan`."""

    def __init__(self, fleets, run: Path, plan: list[tuple[int, str]]):
        super().__init__(daemon=True)
        self.fleets, self.metrics, self.plan, self.killed, self.done = fleets, run / "metrics.jsonl", plan, [], False

    def run(self):
        deadline = time.time() + 900
        for step, role in self.plan:
            while not self.done and time.time() < deadline:
                if self.metrics.is_file() and any(
                        json.loads(line).get("kind") == "step" and json.loads(line)["step"] >= step
                        for line in self.metrics.read_text().splitlines()):
                    break
                time.sleep(0.2)
            if self.done:
                return
            pid = member_pid(getattr(self.fleets.fleets[-1], role))
            os.kill(pid, signal.SIGKILL)  # a hard kill, as a lost node would see
            self.killed.append((role, pid))


def run_killing(fleets, tmp_path: Path, policy: str, plan: list[tuple[int, str]], *extra: str):
    """The smoke preset for 3 steps with the actors of `plan` killed on the way; (the run's summary or the error it
    stopped with, the run folder, the kills done)."""
    run = tmp_path / "smoke"
    killer = Killer(fleets, run, plan)
    killer.start()
    try:
        result = train(fleets, SMOKE, *smoke_args(tmp_path, policy, *extra))
    except Exception as err:  # noqa: BLE001 -- a stop the test asserts on
        result = err
    finally:
        killer.done = True
        killer.join(timeout=30)
    return result, run, killer.killed


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
def test_a_killed_rollout_engine_and_reward_actor_are_restarted_and_their_calls_retried(
        shared_data, tmp_path, tiny_policy_dir, fleets, workers, capsys):
    """An engine dies after step 1 (during or between calls) and a reward actor after step 2: Ray restarts each, the
    restarted engine is synced before it samples, and the run ends like an undisturbed one."""
    plan = [(1, "rollout"), (2, "reward")] if not workers else [(1, "rollout")]
    summary, run, killed = run_killing(fleets, tmp_path, tiny_policy_dir, plan, *workers)
    assert [role for role, _ in killed] == [role for _, role in plan]
    assert isinstance(summary, dict) and summary["finished"], summary
    steps = check_finished_once(run)
    assert steps[-1]["cluster/actor_restarts"] >= len(plan)
    out = capsys.readouterr().out
    assert "a rollout actor died" in out and (workers or "a reward actor died" in out), out[-3000:]


@pytest.mark.parametrize("workers", [  # last in their groups: a fleet whose learner died is never lent again
    pytest.param([], marks=pytest.mark.fleet("tiny", breaks=True), id="1-learner"),
    pytest.param(["learner.workers=2"], marks=pytest.mark.fleet("tiny-2", breaks=True), id="2-learners")])
def test_a_killed_learner_stops_with_one_line_and_the_run_resumes(shared_data, tmp_path, tiny_policy_dir, fleets,
                                                                 workers):
    """The learner holds the optimizer state, which Ray's restart would not bring back: the run stops with one line
    naming the actor and the resume command, and --resume (on a new fleet: this one lost its learner) finishes it with
    every step once."""
    from trainer.run import ActorLost

    err, run, killed = run_killing(fleets, tmp_path, tiny_policy_dir, [(2, "learner")], *workers)  # step 1 saved
    assert killed and isinstance(err, ActorLost), err
    message = str(err)
    what, where = message.split("\n")  # what happened; which checkpoint and the command that continues
    assert what.startswith("actor learner-0 died in step ") and "Error)" in what, what
    assert re.match(r"step \d's checkpoint is intact \(.*\); continue with: the same command with "
                    r"train.run_name=smoke --resume$", where), where
    stops = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"stop"' in line]
    assert [s["message"] for s in stops if s["kind"] == "stop"] == [message]
    train(fleets, SMOKE, *smoke_args(tmp_path, tiny_policy_dir, *workers), resume=True)
    check_finished_once(run)


@pytest.mark.fleet("tiny")
def test_ctrl_c_on_local_ray_prints_the_hint_alone_and_its_command_finishes_the_run(tmp_path, tiny_policy_dir, fleets):
    """`raygrpo train --local` interrupted as a terminal does (SIGINT to its whole process group) after its first
    checkpoint: exit 130 and the two-line hint, no Ray traceback; the command the hint gives finishes the run (its
    arguments through the same `main`, on a warm fleet of this session: the command's own fleet start is the first
    run's)."""
    import shlex
    import subprocess
    import sys

    from trainer.run import main

    raygrpo = str(Path(sys.executable).with_name("raygrpo"))
    args = ["train", "--config", SMOKE, "--local", *smoke_args(tmp_path, tiny_policy_dir, "train.save_every=1",
                                                                "train.phases.0.steps=2")]
    run = tmp_path / "smoke"
    proc = subprocess.Popen([raygrpo, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    state = run / "checkpoints" / "last" / "driver_state.json"
    deadline = time.time() + 600
    while not state.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:] + err[-3000:]
    lines = err.strip().splitlines()
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err[-3000:]
    assert lines[-2].startswith("interrupted (Ctrl-C) in ") and len(lines) == 2, err[-3000:]
    command = lines[-1].split("continue with: ", 1)[1]
    assert command.startswith("raygrpo train ") and command.endswith("train.run_name=smoke --resume")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # where the user typed it
    try:
        assert main(shlex.split(command)[2:], prog="raygrpo train", fleet=fleets) == 0
    finally:
        os.chdir(cwd)
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]
    assert steps == [1, 2] and json.loads((run / "summary.json").read_text())["finished"]
