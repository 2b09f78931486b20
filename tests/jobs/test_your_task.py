"""Your own task on the real path: docs/examples/your_task copied to a folder outside the repo (a JSONL, a reward file,
a config), trained with the installed `raygrpo` command on local Ray with vLLM and the tiny policy; a reward server
beside it; the named errors before any actor starts; a reward that raises mid-run, then resumes after the fix; one
that is skipped; the GSM8K reward written again as a user function, scoring like the built-in."""
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.real_path import train

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "your_task"
RAYGRPO = str(Path(sys.executable).with_name("raygrpo"))


def user_folder(tmp_path: Path) -> Path:
    """The doc's files in a folder of the user's, outside the repo."""
    folder = tmp_path / "my_project"
    shutil.copytree(EXAMPLE, folder)
    return folder


def steps(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ray
def test_your_own_data_and_reward_on_local_ray(tmp_path, tiny_policy_dir):
    """The doc's job, 2 GRPO steps, with the reward server serving the same function as a second component: the
    user reward's values and its parts reach metrics.jsonl, the rollout records and MLflow."""
    folder = user_folder(tmp_path)
    port = free_port()
    server = subprocess.Popen([sys.executable, "reward_server.py", "--port", str(port)], cwd=folder,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "scoring at" in server.stdout.readline()
        proc = subprocess.run([RAYGRPO, "train", "--config", "job.yaml", "--local", f"model.policy={tiny_policy_dir}",
                               "train.phases.0.steps=2", "train.eval_every=2", "rollout.max_new_tokens=24",
                               "rollout.temperature=1.0",
                               "rewards.components=[{fn: my_rewards.py:score}, "
                               f"{{url: 'http://127.0.0.1:{port}/score', name: server, weight: 0}}]"],
                              cwd=folder, capture_output=True, text=True, timeout=900)
    finally:
        server.kill()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = folder / "runs" / "my-task"
    recs = steps(run)
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        for key in ("reward/score", "reward/score/correct", "reward/score/brevity", "reward/score/errors",
                    "reward/server", "reward/server/brevity", "reward/unscored"):
            assert key in r, key
        assert r["reward/score"] == pytest.approx(r["reward/server"]) and r["reward/score/errors"] == 0
        assert r["reward/mean"] == pytest.approx(r["reward/score"])  # the server's weight is 0
    from common import rollout_records

    df = rollout_records.read(run)
    assert len(df) == 2 * 4 * 4 and (df["reward/score/brevity"] <= 0).all()
    assert (df["reward/score"] - df["reward/server"]).abs().max() < 1e-9  # the same function, two transports
    assert df["reward_inputs"].map(json.loads).map(lambda x: x["topic"]).isin(["add", "sub", "mul", "div"]).all()
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    assert "eval/reward" in evals[-1] and "eval/score/correct" in evals[-1]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    run_id = (run / "mlflow_run_id").read_text()
    history = client.get_metric_history(run_id, "reward/score/brevity")
    assert [m.step for m in history] == [1, 2]
    info = client.get_run(run_id)
    assert info.info.status == "FINISHED" and info.data.params["task.name"] == "prompts"
    assert "rewards.components" in info.data.params
    # `raygrpo samples` reads the run's records from the user's folder
    shown = subprocess.run([RAYGRPO, "samples", "runs/my-task", "-n", "1"], cwd=folder, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "score/brevity" in shown.stdout, shown.stderr


FLAKY = '''
def flaky(completions, **kwargs):
    """No reward for an empty answer; raises on answers of an odd number of characters (rewards.on_error=skip)."""
    if any(len(c) % 2 for c in completions if c):
        raise RuntimeError("odd")
    return [None if not c else float(len(c)) for c in completions]
'''


@pytest.mark.slow
@pytest.mark.fleet("tiny")
def test_skipped_and_unscored_samples_leave_the_loss_and_are_counted(tmp_path, tiny_policy_dir, fleets, monkeypatch,
                                                                    capsys):
    folder = user_folder(tmp_path)
    (folder / "flaky.py").write_text(FLAKY)
    monkeypatch.chdir(folder)
    train(fleets, "job.yaml", f"model.policy={tiny_policy_dir}", "train.phases.0.steps=2", "train.eval_at_start=false",
          "logging.mlflow=false", "train.prompts_per_step=8", "rewards.components=[{fn: flaky.py:flaky}]",
          "rollout.temperature=1.0",  # the tiny policy's P(EOS) is 0.15 at T=1: varied lengths
          "rewards.on_error=skip", "task.params.primary=flaky")
    out = capsys.readouterr().out
    from common import rollout_records

    run = folder / "runs" / "my-task"
    df = rollout_records.read(run)
    for r in steps(run):
        rows = df[df["step"] == r["step"]]
        dropped = rows["reward"].isna()
        errors = (rows["completion"].str.len() % 2 == 1).sum()
        assert r["reward/flaky/errors"] == errors and r["reward/unscored"] == dropped.sum() > 0
        # the learner saw exactly the scored samples' tokens; the dropped ones have no advantage
        assert r["learner/head_positions"] == rows.loc[~dropped, "completion_tokens"].sum()
        assert rows.loc[dropped, "advantage"].fillna(0).eq(0).all()
    assert "got no reward" in out


RAISES = '''
from pathlib import Path

def score(completions, **kwargs):
    calls = Path("calls.txt")
    calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
    if len(calls.read_text()) >= 2 and not Path("fixed").exists():  # from step 2 on, until the fix
        raise ValueError("my bug")
    return [float(len(c)) for c in completions]
'''


@pytest.mark.slow
@pytest.mark.fleet("tiny")
def test_a_reward_that_raises_stops_the_run_naming_it_and_resume_after_the_fix_finishes(tmp_path, tiny_policy_dir,
                                                                                       fleets, monkeypatch, capsys):
    from trainer.run import RewardFailed

    folder = user_folder(tmp_path)
    (folder / "my_rewards.py").write_text(RAISES)
    monkeypatch.chdir(folder)
    args = [f"model.policy={tiny_policy_dir}", "train.phases.0.steps=2", "train.eval_at_start=false",
            "train.save_every=1", "logging.mlflow=false"]
    with pytest.raises(RewardFailed) as stop:
        train(fleets, "job.yaml", *args)
    message = str(stop.value)
    assert "reward 'score': reward function score (reward file my_rewards.py) raised ValueError: my bug" in message
    assert message.count("reward 'score'") == 1 and message.startswith("stopped in step 2 (phase ")
    assert "on sample 0 of 16: completion=" in message and "Traceback (most recent call last)" in message
    assert message.endswith("step 1's checkpoint is intact (runs/my-task/checkpoints/last); continue with: the same "
                            "command with train.run_name=my-task --resume"), message
    run = folder / "runs" / "my-task"
    assert [r["step"] for r in steps(run)] == [1]
    assert json.loads((run / "checkpoints" / "last" / "driver_state.json").read_text())["step"] == 1
    (folder / "fixed").write_text("")
    capsys.readouterr()
    train(fleets, "job.yaml", *args, resume=True)
    assert [r["step"] for r in steps(run)] == [1, 2] and "resuming from" in capsys.readouterr().out


HANGS = '''
import time

def score(completions, **kwargs):
    time.sleep(3600)
'''


@pytest.mark.slow
@pytest.mark.fleet("tiny")
def test_a_reward_that_hangs_hits_the_deadline(tmp_path, tiny_policy_dir, fleets, monkeypatch):
    from trainer.run import RewardFailed

    folder = user_folder(tmp_path)
    (folder / "my_rewards.py").write_text(HANGS)
    monkeypatch.chdir(folder)
    t = time.monotonic()
    with pytest.raises(RewardFailed, match=r"did not return within rewards.timeout_s=3 s"):
        train(fleets, "job.yaml", f"model.policy={tiny_policy_dir}", "train.phases.0.steps=1",
              "train.eval_at_start=false", "rewards.timeout_s=3", "logging.mlflow=false")
    assert time.monotonic() - t < 600


WRONG = '''
def score(completions, answr):
    return [0.0 for _ in completions]
'''


@pytest.mark.parametrize("overrides, files, message", [
    (["rewards.components=[{fn: missing.py:score}]"], {}, "reward file missing.py ('missing.py:score') does not "
                                                          "exist"),
    (["rewards.components=[{fn: my_rewards.py:scor}]"], {}, "has no function 'scor'. Did you mean 'score'?"),
    (["rewards.components=[{fn: wrong.py:score}]"], {"wrong.py": WRONG},
     "needs argument 'answr', which no call passes: the task provides the fields answer, reference, topic"),
    (["task.params.prompt_field=question"], {}, "no row has a prompt column 'question' (or 'messages'); its columns "
                                                "are prompt, answer, topic"),
    (["data.source=bad.jsonl"], {"bad.jsonl": '{"prompt": ""}\n[1]\n'},
     "data file bad.jsonl: no usable row of 2 (skipped: 1 an empty prompt, 1 not a JSON object); the first, line 1"),
])
def test_named_errors_before_any_actor_starts(tmp_path, tiny_policy_dir, monkeypatch, capsys, overrides, files,
                                              message):
    from trainer.run import main

    folder = user_folder(tmp_path)
    for name, text in files.items():
        (folder / name).write_text(text)
    monkeypatch.chdir(folder)
    code = main(["--config", "job.yaml", "--inprocess", f"model.policy={tiny_policy_dir}", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (folder / "runs").exists()  # no run dir, no actor


def test_the_gsm8k_reward_as_a_user_function_scores_like_the_builtin(shared_data):
    """docs/examples/gsm8k/gsm8k_reward.py and the built-in `gsm8k` on the same samples: every answer field of the
    GSM8K test split, and completions written the ways models write them."""
    from rewards.registry import RewardScorer

    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    completions, examples = [], []
    for row in rows:
        gold = row["answer"].rpartition("####")[2].strip()
        n = int(gold.replace(",", ""))
        for text in (row["answer"], f"The answer is {gold}.", f"The answer is {n + 1}.", f"\\boxed{{{n}}} or {n + 2}",
                     f"So {n}. Answer: {n - 1}", "I do not know", f"{n:,}.00 dollars", f"#### {gold}\nmaybe 3",
                     f"answer = −{n}", f"first {n}, then the answer is"):
            completions.append(text)
            examples.append({"prompt": row["question"], "answer": row["answer"], "gold": row["answer"]})
    scorer = RewardScorer([{"name": "gsm8k", "weight": 1.0, "params": {}},
                           {"name": "mine", "fn": str(ROOT / "docs/examples/gsm8k/gsm8k_reward.py") + ":gsm8k",
                            "weight": 0.0, "params": {}, "timeout_s": 120.0, "on_error": "raise"}])
    _, comps = scorer.score(completions, [1] * len(completions), examples)
    assert comps["mine"] == comps["gsm8k"]
    assert 0.2 < sum(comps["gsm8k"]) / len(completions) < 0.8  # both right and wrong answers among them
