"""bench/gpu_check.py, the one command a lent GPU runs (DEVELOPERS.md: 15 minutes, no Ray, no vLLM), in its CPU dry
run: every step runs on a tiny config and leaves its figures in gpu_check.json, so the command cannot rot between
the GPUs it meets."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_dry_run_passes_every_step(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "DRY": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and result["failed"] == [] and result["env"]["device"] == "cpu"
    steps = result["steps"]
    assert list(steps) == ["learner", "learner17", "fsdp", "gpu_tests", "hf_job", "hf_async"]
    assert steps["learner"]["rows"][0]["update_s"] and steps["learner17"]["rows"][0]["update_tflops"] > 0
    assert steps["fsdp"]["rows"][0]["sharding"] == "fsdp"
    # the memory plan's figure beside each measured peak (common/memory.py; on the GPU: allocated memory)
    assert steps["learner"]["rows"][0]["planned_memory_gib"] > 0 and steps["learner"]["rows"][0]["peak_memory_gib"] > 0
    assert steps["fsdp"]["rows"][0]["planned_memory_gib_per_worker"][0] > 0
    run = tmp_path / "runs" / "gpu-check"
    assert any(json.loads(x)["kind"] == "step" for x in (run / "metrics.jsonl").read_text().splitlines())
    assert "==== hf_job" in (tmp_path / "gpu_check.log").read_text()
    async_steps = [json.loads(x) for x in (tmp_path / "runs" / "gpu-check-async" / "metrics.jsonl").read_text()
                   .splitlines() if json.loads(x)["kind"] == "step"]
    assert async_steps and all("rollout/staleness" in r for r in async_steps)
