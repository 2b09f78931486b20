"""Reading a run's metrics.jsonl: a resumed run's replayed steps replace the abandoned attempt's."""
import json

from common.metrics_log import phase_spans, read_records


def test_replayed_steps_of_a_resumed_run_replace_the_abandoned_ones(tmp_path):
    rows = [{"kind": "eval", "step": 0}, {"kind": "step", "step": 1}, {"kind": "step", "step": 2},
            {"kind": "eval", "step": 2}, {"kind": "step", "step": 3, "try": 1},    # killed after step 3...
            {"kind": "info", "message": "resumed"},                              # ...resumed from step 2
            {"kind": "step", "step": 3, "try": 2}, {"kind": "step", "step": 4}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = read_records(path)
    assert [(r["kind"], r.get("step")) for r in got] == [
        ("eval", 0), ("step", 1), ("step", 2), ("eval", 2), ("info", None), ("step", 3), ("step", 4)]
    assert next(r for r in got if r.get("step") == 3)["try"] == 2


def test_phase_spans_of_a_run():
    steps = [{"step": i, "phase": p} for i, p in enumerate(["sft", "sft", "grpo1", "rs_sft", "grpo2"], 1)]
    assert phase_spans(steps) == [("sft", 1, 2), ("grpo1", 3, 3), ("rs_sft", 4, 4), ("grpo2", 5, 5)]


def test_tensorboard_sink_writes_step_and_eval_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from common.metrics_log import MetricsLog, TensorBoardSink

    log = MetricsLog(tmp_path / "metrics.jsonl", sinks=[TensorBoardSink(tmp_path / "tb")])
    log.step(1, {"phase": "grpo", "reward/mean": 0.25, "learner/kl": 0.01, "sample/completion": "text"})
    log.step(2, {"phase": "grpo", "reward/mean": 0.5, "learner/kl": 0.02})
    log.eval(2, {"phase": "grpo", "eval/f1": 0.4})
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("reward/mean")] == [0.25, 0.5]
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("eval/f1")] == [(2, 0.4)]
    assert "sample/completion" not in acc.Tags()["scalars"]


def test_an_eval_line_keeps_each_metrics_full_name(tmp_path, capsys):
    from common.metrics_log import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.eval(3, {"phase": "grpo", "eval/reward/errors": 0.0, "eval/tools/errors": 1.0, "eval/seconds": 2.0,
                 "eval/tools/seconds": 0.5})
    line = capsys.readouterr().out.strip()
    assert line == ("[eval @ step 3 (grpo)] reward/errors 0.0000 tools/errors 1.0000 seconds 2.0000 "
                    "tools/seconds 0.5000")
