"""A stop a user can act on (trainer/stops.py), on the command line of `raygrpo train` with a tiny random model
in-process (seconds): said once, naming what happened, the step whose checkpoint is intact (or that none is, with
the command that starts over) and the exact command that continues, which then works; the step before an eval that
fails is kept; --resume with nothing to resume is exit 2 and creates nothing; Ctrl-C is the hint alone.
Ctrl-C on local Ray with vLLM: tests/jobs/test_faults.py."""
import json
import shlex
from pathlib import Path

import pytest

from trainer.run import main

PROG = "raygrpo train"


@pytest.fixture
def llama(tiny_llama_dir):
    return tiny_llama_dir


def _args(model: str, out: Path, *extra: str) -> list[str]:
    return ["--inprocess", "learner.precision=fp32", "rollout.dtype=fp32", f"model.policy={model}",
            "rollout.engine=hf", "task.name=countdown", f"train.output_dir={out}", "data.limit=60",
            "data.eval_size=4", "task.params.num_problems=60", "train.prompts_per_step=2", "rollout.max_new_tokens=6",
            "learner.micro_batch_size=8", "cluster.threads=1", "train.eval_at_start=false",
            "train.phases=[{kind: grpo, steps: 3}]", *extra]


def _records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def _continue(err: str) -> list[str]:
    """The arguments of the command the stop's message says continues the run."""
    command = err.rsplit("continue with: ", 1)[1].strip()
    assert command.startswith(PROG + " "), command
    return shlex.split(command)[2:]


def test_resume_with_nothing_to_resume_is_exit_2_naming_the_command_that_starts_it(llama, tmp_path, capsys):
    args = _args(llama, tmp_path, "train.run_name=r")
    assert main([*args, "--resume"], prog=PROG) == 2
    err = capsys.readouterr().err
    assert f"--resume: nothing to resume: there is no run folder {tmp_path / 'r'}; start the run with: " in err
    assert err.strip().endswith(shlex.join([*PROG.split(), *args])) and not (tmp_path / "r").exists()
    (tmp_path / "r").mkdir()  # a run that stopped before its first save
    assert main([*args, "--resume"], prog=PROG) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'r'} holds no checkpoint (the run stopped before its first save)" in err
    start = shlex.split(err.split("start the run with: ", 1)[1])
    assert start[:2] == PROG.split() and main(start[2:], prog=PROG) == 0  # the advised command runs it


def test_an_eval_that_fails_keeps_the_step_before_it_and_the_resume_runs_that_eval_once(llama, tmp_path, capsys,
                                                                                         monkeypatch):
    from trainer.run import Run

    real, calls = Run.evaluate, []

    def evaluate(self):
        calls.append(self.state.step)
        if len(calls) == 2:
            raise RuntimeError("the eval broke")
        return real(self)

    monkeypatch.setattr(Run, "evaluate", evaluate)
    args = _args(llama, tmp_path, "train.run_name=r", "train.eval_every=1", "train.save_every=100")
    assert main(args, prog=PROG) == 3
    out, err = capsys.readouterr()
    run = tmp_path / "r"
    assert err.count("the eval broke") == 1 and "the eval broke" not in out  # said once
    what, where = err.strip().split("\n")
    assert what == (f"error: stopped in the eval after step 2 by RuntimeError: the eval broke (traceback: "
                    f"{run / 'logs' / 'stop-traceback.txt'})")
    assert where.startswith(f"step 2's checkpoint is intact ({run / 'checkpoints' / 'last'}); continue with: ")
    assert "RuntimeError: the eval broke" in (run / "logs" / "stop-traceback.txt").read_text()
    assert [s["message"] for s in _records(run, "stop")] == [err.strip().removeprefix("error: ")]
    monkeypatch.setattr(Run, "evaluate", real)
    assert main(_continue(err), prog=PROG) == 0
    assert [r["step"] for r in _records(run, "step")] == [1, 2, 3]
    assert [r["step"] for r in _records(run, "eval")] == [1, 2, 3]  # the eval that failed ran once, on resume


def test_ctrl_c_prints_the_hint_alone_and_its_command_continues(llama, tmp_path, capsys, monkeypatch):
    from trainer.phases import Phase

    real = Phase.evaluate

    def evaluate(self, k):
        if k == 2 and not getattr(Phase, "_interrupted", False):
            Phase._interrupted = True
            raise KeyboardInterrupt
        return real(self, k)

    monkeypatch.setattr(Phase, "evaluate", evaluate)
    args = _args(llama, tmp_path, "train.eval_every=1", "train.run_name=r")  # the step's checkpoint before its eval
    assert main(args, prog=PROG) == 130
    out, err = capsys.readouterr()
    run = tmp_path / "r"
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert err.strip().split("\n") == [
        "interrupted (Ctrl-C) in step 2 (phase grpo, 2/3)",
        f"step 2's checkpoint is intact ({run / 'checkpoints' / 'last'}); continue with: "
        + shlex.join([*PROG.split(), *args, "--resume"])]
    assert main(_continue(err), prog=PROG) == 0
    assert [r["step"] for r in _records(run, "step")] == [1, 2, 3]


def test_a_stop_before_the_first_checkpoint_says_none_is_and_how_to_start_over(llama, tmp_path, capsys, monkeypatch):
    from trainer.run import Run

    def evaluate(self):
        raise ValueError("no eval today")

    monkeypatch.setattr(Run, "evaluate", evaluate)
    args = _args(llama, tmp_path, "train.run_name=r", "train.eval_at_start=true")
    assert main(args, prog=PROG) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: stopped in the eval at the start by ValueError: no eval today")
    assert err.strip().endswith("no checkpoint was saved before the stop; start over with: "
                                + shlex.join([*PROG.split(), *args]))
    assert "intact" not in err and "--resume" not in err


def test_the_continue_command_keeps_the_users_arguments_and_names_the_run():
    from trainer.stops import Commands

    typed = Commands(PROG, ["--config", "job.yaml", "--resume", "runs/x", "learner.lr=1e-5", "train.run_name=old"])
    assert typed.again("x", "runs/x") == "raygrpo train --config job.yaml learner.lr=1e-5 train.run_name=old --resume runs/x"
    assert typed.again("x") == "raygrpo train --config job.yaml learner.lr=1e-5 train.run_name=x --resume"
    assert typed.start_over() == "raygrpo train --config job.yaml learner.lr=1e-5 train.run_name=old"
    assert Commands().again("x") == "the same command with train.run_name=x --resume"
    assert Commands().again("x", "runs/x") == "the same command with --resume runs/x"
