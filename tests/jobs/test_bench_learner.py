"""bench/learner.py, the device-independent learner benchmark, end to end on a tiny config with random weights (the
way a GPU box without the embedded model runs it): one JSON line per shape with the figures a comparison needs."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_learner_bench_prints_one_line_per_shape(tmp_path):
    from tests.tiny_models import char_tokenizer, tiny_llama

    tiny_llama(seed=0).save_pretrained(tmp_path / "cfg")
    char_tokenizer().save_pretrained(tmp_path / "cfg")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "learner.py"), "--random-init", str(tmp_path / "cfg"),
                          "--large", "--repeats", "2", "--precision", "fp32", "--threads", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["shape"] for r in rows] == ["preset", "large"]
    preset, large = rows
    assert (preset["sequences"], large["sequences"]) == (16, 512)
    for r in rows:
        assert len(r["update_s"]) == len(r["reference_s"]) == 2 and min(r["update_s"]) > 0
        assert r["update_tflops"] > 0 and 0 < r["update_peak_share"] and r["matmul_peak_gflops"] > 0
        assert r["peak_memory_gib"] > 0 and r["precision"] == "fp32" and r["max_tokens_per_micro_batch"] == 1024
    assert large["micro_batches"] > preset["micro_batches"]  # the budget cuts the large batch finer


def test_learner_bench_with_two_sharded_workers(tmp_path):
    """--workers 2: replicated workers each keep the whole state, sharded ones about half of it."""
    from tests.tiny_models import char_tokenizer, tiny_llama

    tiny_llama(seed=0).save_pretrained(tmp_path / "cfg")
    char_tokenizer().save_pretrained(tmp_path / "cfg")
    rows = {}
    for sharding in ("replicate", "fsdp"):
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "learner.py"), "--random-init", str(tmp_path / "cfg"),
                              "--repeats", "2", "--precision", "fp32", "--threads", "1", "--workers", "2",
                              "--sharding", sharding], capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-3000:]
        (rows[sharding],) = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    for r in rows.values():
        assert r["workers"] == 2 and len(r["update_s"]) == 2 and min(r["update_s"]) > 0
        assert sum(r["rows_per_worker"]) == 16 and all(r["peak_memory_gib_per_worker"])
    whole = rows["replicate"]["state_total_gib_per_worker"]
    half = rows["fsdp"]["state_total_gib_per_worker"]
    assert whole[0] == whole[1] and max(half) <= 0.6 * whole[0]
