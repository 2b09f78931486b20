"""Step and eval records reach the Ray node's Prometheus endpoint as raygrpo_* gauges (real local Ray).
The same on a real job: tests/jobs/test_recipes.py scrapes the endpoint while each preset trains."""
import time
import urllib.request

import pytest

from common.metrics_log import MetricsLog

pytestmark = [pytest.mark.ray]


def test_step_and_eval_records_reach_the_prometheus_endpoint(tmp_path, ray_session):
    from cluster.metrics_export import PrometheusSink, endpoint

    port = ray_session.metrics_port
    assert endpoint().endswith(f":{port}/metrics")
    log = MetricsLog(tmp_path / "metrics.jsonl", sinks=[PrometheusSink("run-x")])
    log.step(3, {"phase": "grpo", "reward/mean": 0.625, "learner/kl": 0.01, "timing/step": 2.5, "flag": True})
    log.eval(3, {"phase": "grpo", "eval/f1": 0.4})
    lines, deadline = [], time.time() + 60
    while time.time() < deadline:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        lines = [line for line in body.splitlines() if line.startswith("ray_raygrpo_")]
        if any(line.startswith("ray_raygrpo_eval{") for line in lines):
            break
        time.sleep(1)

    def value(name):
        return [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{")
                and 'run="run-x"' in line and 'phase="grpo"' in line]
    assert value("ray_raygrpo_reward_mean") == [0.625] and value("ray_raygrpo_step") == [3.0]
    assert value("ray_raygrpo_step_seconds") == [2.5] and value("ray_raygrpo_kl") == [0.01]
    assert value("ray_raygrpo_eval") == [0.4] and any('metric="f1"' in line for line in lines)


def test_a_failing_sink_never_stops_training(tmp_path, capsys):
    def broken(record):
        raise RuntimeError("exporter down")

    log = MetricsLog(tmp_path / "m.jsonl", sinks=[broken])
    log.step(1, {"reward/mean": 0.5})
    log.step(2, {"reward/mean": 0.5})
    out = capsys.readouterr().out
    assert out.count("metrics sink broken failed (RuntimeError: exporter down)") == 1
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2
