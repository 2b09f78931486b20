"""bench/run.py's arithmetic and report, on hand-made measurements (the run itself is `make bench`)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_model_flops_by_hand():
    # 2 x (body 100 x 10 positions + head 50 x 4 positions) = 2400 a forward; learn = 3 passes
    step = {"learner/tokens_forward": 10, "learner/head_positions": 4}
    assert bench.flops([step], {"body": 100, "head": 50}, 1.0) == [2400]
    assert bench.flops([step], {"body": 100, "head": 50}, 3.0) == [7200]


def test_body_params_of_smollm2_shape(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                num_key_value_heads=3, vocab_size=49152).save_pretrained(tmp_path)
    p = bench.body_params(str(tmp_path))
    # per layer: q,o 576x576 each; k,v 576x192 each; gate, up, down 576x1536 each
    assert p["body"] == 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)
    assert p["head"] == 576 * 49152


def _steps(n, step_s, gen, learn):
    return [{"timing/step": step_s, "timing/generate": gen, "timing/reward": 0.01, "timing/reference": 2.0,
             "timing/learn": learn, "timing/sync": 0.5, "perf/samples_per_s": 16 / step_s,
             "perf/tokens_per_s_generate": 80.0, "rollout/len_mean": 40.0, "learner/tokens_forward": 1000,
             "learner/head_positions": 500, "learner/logprob_diff_mean": 1e-5, "learner/logprob_diff_max": 5e-5}
            for _ in range(n)]


def test_report_states_the_ratio_and_every_stage():
    m = {"threads": 2, "repeats": 3, "inner_steps": 1, "params": {"body": 1e8, "head": 3e7},
         "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 8, "isa": "AVX2", "flags": ["avx2"],
                     "auto_precision": "fp32", "versions": {"torch": "x"}, "date": "2026-01-01"},
         "matmul": {"fp32": {"shapes": {"forward": [100.0, 110.0]}, "peak": 100.0},
                    "bf16": {"shapes": {"forward": [10.0]}, "peak": 10.0}},
         "ours": {"steps": _steps(3, 20.0, 8.0, 6.0), "precision": {"learner": "fp32", "engines": ["fp32"]},
                  "peak_rss_gib": {"learner": [3.5], "rollout": [3.0]}},
         "hf_generate": {"tokens_per_s": [20.0, 40.0]},
         "sync": {"push": [0.5], "reload_alone": [0.4], "probe": [0.3], "bytes": 2**20},
         "trl": {"step_s": [200.0, 100.0, 100.0, 100.0], "samples_per_step": 16, "completion_len": [40, 40, 40, 40],
                 "reward": [0, 0, 0, 0], "trl": "1.16.0"}}
    text = bench.report(m, "python bench/run.py")
    assert "ratio vs TRL GRPOTrainer: 5.0x" in text  # 0.8 samples/s against 0.16 (the first TRL step dropped)
    for stage in bench.STAGES:
        assert f"| {stage} |" in text
    # learn: 3 x 2 x (1e8 x 1000 + 3e7 x 500) = 6.9e11 FLOPs in 6 s = 115 GFLOP/s against a 100 peak
    assert "115 [115, 115] GFLOP/s achieved" in text and "115% of peak" in text
    assert "2.67x HF generate" in text  # 80 against the median of 20 and 40
    assert "Test CPU" in text and "**fp32**" in text


def test_micro_batch_table_and_what_packing_did():
    slow = {"4": [10.0, 11.0, 12.0], "8": [12.0, 12.0, 12.0], "16": [13.2, 13.2, 13.2]}
    assert "changes little here (1.09x / 1.20x" in bench.packing_note({"micro_batches": slow})
    noise = {"4": [10.0], "8": [9.6], "16": [10.4]}  # a 4% gain is within a noisy machine's spread
    assert "changes little here (0.96x / 1.04x" in bench.packing_note({"micro_batches": noise})
    fast = {"4": [10.0], "8": [8.0], "16": [7.0]}
    assert "takes 0.80x / 0.70x the time" in bench.packing_note({"micro_batches": fast})
    assert "not measured" in bench.packing_note({})
