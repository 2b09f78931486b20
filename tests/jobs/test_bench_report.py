"""bench/run.py's arithmetic and report, on hand-made measurements (the run itself is `make bench`)."""
import importlib.util
from pathlib import Path


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


def _lb(update_s, mb, budget=None, mem=4.5):
    return {"sequences": 16, "precision": "bf16", "micro_batches": mb, "max_tokens_per_micro_batch": budget,
            "update_s": update_s, "reference_s": [2.0], "update_tflops": 0.15, "update_peak_share": 0.36,
            "peak_memory_gib": mem}


def test_learner_table_and_what_the_budget_did():
    m = {"learner_bench": {"preset-fixed": _lb([10.0, 11.0, 12.0], 4), "preset-budget": _lb([9.9], 2, 1024, 5.2)}}
    text = "\n".join(bench.learner_section(m))
    assert "| preset (16 sequences, bf16), micro_batch_size 4 | 4 | 11.00 [10.00, 12.00] |" in text
    assert "budget 1024 tokens | 2 | 9.90 [9.90, 9.90] |" in text and "| 5.20 |" in text
    assert "takes 0.90x the time of one group per forward (2 vs 4 micro-batches" in bench.packing_note(m)
    assert "not measured" in bench.packing_note({}) and bench.learner_section({}) == []


def test_mismatch_table_in_both_precisions():
    bf16 = [{"timing/step": 15.0, "timing/learn": 9.0, "timing/generate": 3.0, "learner/mismatch_abs_mean": 0.026,
             "learner/mismatch_kl": 9e-4, "learner/mismatch_frac_big": 0.04, "learner/logprob_diff_max": 0.2,
             "sync/gap": 0.03, "learner/tis_mean": 0.999, "learner/tis_max": 1.2, "learner/tis_clipped_frac": 0.0}]
    fp32 = [{"timing/step": 20.0, "timing/learn": 13.0, "timing/generate": 3.5, "learner/mismatch_abs_mean": 7e-6,
             "learner/mismatch_kl": 1e-10, "learner/mismatch_frac_big": 0.0, "learner/logprob_diff_max": 3e-5,
             "sync/gap": 2e-5}]
    m = {"ours": {"steps": bf16, "precision": {"learner": "bf16"}},
         "other_precision": {"steps": fp32, "precision": {"learner": "fp32"}}}
    text = "\n".join(bench.mismatch_section(m))
    assert "| bf16 | 15.0 [15.0, 15.0] | 9.0 [9.0, 9.0] | 3.0 [3.0, 3.0] | 2.6e-02 [2.6e-02, 2.6e-02] |" in text
    assert "| fp32 | 20.0 [20.0, 20.0] |" in text and text.rstrip().endswith("| - | - | - |")  # fp32: no TIS
