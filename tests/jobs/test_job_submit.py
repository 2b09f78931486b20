"""`ray start --head` + `ray job submit` of the smoke preset must reach SUCCEEDED, and the job and its
actors must be visible through the dashboard's APIs.

Token authentication (Ray 2.60): a plain `ray.init()` anywhere on the machine writes ~/.ray/auth_token,
after which a new head enables token auth and a client without RAY_AUTH_MODE=token is refused. We set
RAY_AUTH_MODE=token for head and client alike, which works on a fresh machine (the head creates the
token) and on a used one (both read the existing file): the README says the same.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PORT = 8299  # dashboard
# `ray stop --force` ends every Ray process of the machine, the session's cluster too: these run first (tests/conftest.py)
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.own_ray]


def _ray(*args, env, timeout=300):
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _get(url: str, env) -> object:
    req = urllib.request.Request(url)
    token = Path.home() / ".ray" / "auth_token"
    if token.is_file():
        req.add_header("Authorization", f"Bearer {token.read_text().strip()}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def head():
    from tests.conftest import end_ray_session

    end_ray_session()
    # Ray's socket paths must stay short, so not under pytest's deep tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="rg", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    out = _ray("start", "--head", "--num-cpus", "2", "--dashboard-host", "127.0.0.1", "--dashboard-port",
               str(PORT), "--port", "6399", "--temp-dir", temp_dir, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    try:
        yield env
    finally:
        _ray("stop", "--force", env=env)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait(address: str, submission: str, env, seen_actors: set | None = None, timeout: float = 1200) -> str:
    status, deadline = None, time.time() + timeout
    while time.time() < deadline:
        jobs = _get(f"{address}/api/jobs/", env)
        status = next(j["status"] for j in jobs if j.get("submission_id") == submission)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        if seen_actors is not None:
            try:
                actors = _get(f"{address}/api/v0/actors?limit=100", env)["data"]["result"]["result"]
                seen_actors |= {a["class_name"] for a in actors}
            except Exception:  # the state API can lag while the job starts; polling again is enough
                pass
        time.sleep(3)
    return status


def test_job_submit_smoke_preset_succeeds_and_is_visible(head, shared_data, tmp_path):
    env = head
    address = f"http://127.0.0.1:{PORT}"
    out_dir = tmp_path / "runs"
    submit = _ray("job", "submit", "--address", address, "--no-wait", "--submission-id", "smoke-test",
                  "--runtime-env-json", json.dumps({"env_vars": {"RAYGRPO_SHARED_DATA": str(shared_data)}}),
                  "--", "python", str(ROOT / "jobs" / "grpo_mlqa.py"), "--config",
                  str(ROOT / "jobs" / "configs" / "smoke.yaml"), f"train.output_dir={out_dir}", env=env)
    assert submit.returncode == 0, submit.stderr[-2000:]
    seen_actors: set[str] = set()
    status = _wait(address, "smoke-test", env, seen_actors)
    logs = _ray("job", "logs", "--address", address, "smoke-test", env=env).stdout
    assert status == "SUCCEEDED", logs[-4000:]
    assert {"VLLMEngine", "Learner", "Reference", "RewardScorer"} <= seen_actors, seen_actors
    assert "last_checkpoint:" in logs
    assert (out_dir / "smoke" / "checkpoints" / "last" / "model.safetensors").is_file()


def test_job_submit_ships_your_own_data_and_reward_with_the_working_dir(head, tmp_path, tiny_policy_dir):
    """docs/your_task.md on a cluster: `ray job submit --working-dir <your folder> -- raygrpo train --config job.yaml`;
    the data file and the reward function come from the shipped folder (relative paths), not from this checkout. (Also
    the claim that a recipe other than MLQA runs under `ray job submit`: `raygrpo train` is jobs/train.py's entry point,
    and every preset runs on local Ray in tests/jobs/test_recipes.py.)"""
    address = f"http://127.0.0.1:{PORT}"
    folder, out_dir = tmp_path / "mine", tmp_path / "runs"
    shutil.copytree(ROOT / "docs" / "examples" / "your_task", folder)
    submit = _ray("job", "submit", "--address", address, "--no-wait", "--submission-id", "your-task",
                  "--working-dir", str(folder), "--", "raygrpo", "train", "--config", "job.yaml",
                  f"train.output_dir={out_dir}", "train.phases.0.steps=2", "train.eval_at_start=false",
                  "logging.mlflow=false", "rollout.max_new_tokens=16", f"model.policy={tiny_policy_dir}", env=head)
    assert submit.returncode == 0, submit.stderr[-2000:]
    status = _wait(address, "your-task", head)
    logs = _ray("job", "logs", "--address", address, "your-task", env=head).stdout
    assert status == "SUCCEEDED", logs[-4000:]
    assert "task: prompts" in logs and "[step 2 | grpo 2/2]" in logs
    assert "reward/score/correct" in (out_dir / "my-task" / "metrics.jsonl").read_text()
