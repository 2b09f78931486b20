"""bench/'s reports on hand-made measurements: bench/run.py's arithmetic and report (the run itself is `make bench`),
and the finding sentences of bench/report.py, bench/recipes_report.py and bench/run.py, one per outcome."""
import doctest
import importlib.util
from pathlib import Path

from bench import recipes_report, report


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


def _missed(tmp_path=None):
    """The measurements above with TRL as fast as ours (ratio 1x) and a 5 GiB learner: two targets missed."""
    m = {"threads": 2, "repeats": 3, "inner_steps": 1, "params": {"body": 1e8, "head": 3e7},
         "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 8, "isa": "AVX2", "flags": ["avx2"],
                     "auto_precision": "fp32", "versions": {"torch": "x"}, "date": "2026-01-01"},
         "matmul": {"fp32": {"shapes": {"forward": [100.0]}, "peak": 100.0}, "bf16": {"shapes": {}, "peak": 10.0}},
         "ours": {"steps": _steps(3, 20.0, 8.0, 6.0), "precision": {"learner": "fp32", "engines": ["fp32"]},
                  "peak_rss_gib": {"learner": [5.0], "rollout": [4.5], "reward": [0.2]}},
         "hf_generate": {"tokens_per_s": [20.0, 40.0]},
         "sync": {"push": [0.5], "reload_alone": [0.4], "probe": [0.3], "bytes": 2**20},
         "trl": {"step_s": [20.0, 20.0, 20.0], "samples_per_step": 16, "completion_len": [40, 40, 40],
                 "reward": [0, 0, 0], "trl": "1.16.0"},
         "learn_profile": {"wall_s": 6.0, "total_s": 5.0, "top": [["aten::mm", 3.0, 10], ["aten::addmm", 0.5, 2],
                                                                  ["aten::add", 1.0, 5]]}}
    return m


def test_targets_missed_say_where_the_time_and_memory_go():
    text = bench.report(_missed(), "python bench/run.py")
    assert "| samples/s vs TRL GRPOTrainer | >= 5x | 1.0x | **missed** |" in text
    assert "| largest actor peak RSS | <= 4 GiB | 5.00 GiB | **missed** |" in text
    assert "| generation tokens/s vs HF generate | >= 2.5x | 2.67x | met |" in text
    # stages of a 20 s step: learn 6, generate 8, reference 2; vLLM 80 tok/s against HF's median 30
    assert "learn 30%, generation 40%, reference 10%. vLLM generates 2.7x as fast as transformers' generate here; " \
           "with free generation on our side the ratio would be 1.7x." in text
    # TRL: 16 samples x 40 tokens = 640 tokens at 30 tok/s = 21 s of its 20 s step
    assert "At the 30 tok/s of HF generate measured here, TRL's 640 completion tokens a step take about 21 s of its " \
           "20 s step (107%)." in text
    assert "Above the target: learner 5.00 GiB, rollout 4.50 GiB (the Memory table)." in text
    assert "Target: no actor above 4 GiB." in text and "(target 2.5x)" in text and "(target <= 5%)" in text


def test_profile_reading_counts_every_matrix_multiply():
    # aten::mm 3.0 s + aten::addmm 0.5 s of 5.0 s self CPU time
    assert bench.profile_reading(_missed()["learn_profile"]).startswith("Matrix multiplies (aten::*mm) take 70% ")
    assert bench.profile_reading(None) == ""


def test_scaling_reading_faster_slower_same():
    text = bench.scaling_reading(10.0, {"2 engines": 25.0, "overlap": 8.0, "2 reward actors": 10.0}, 0.01, 2)
    assert text.startswith("On 2 cores, each configuration's median step against the 10.00 s of 1 engine and 1 reward "
                           "actor: 2 engines 25.00 s (2.50x, slower); overlap 8.00 s (0.80x, faster); 2 reward actors "
                           "10.00 s (1.00x, the same).")
    assert text.endswith("is 0.010 s (0.10% of the step).")


def test_report_of_a_raw_file_includes_its_notes(tmp_path):
    raw = tmp_path / "benchmarks.json"
    assert "Notes on this measurement" not in bench.report(_missed(), "cmd", raw)
    (tmp_path / "benchmarks-notes.md").write_text("A test run shared the cores.\n")
    assert bench.report(_missed(), "cmd", raw).endswith("Notes on this measurement: A test run shared the cores.\n")


# ---- bench/report.py: the shared sentences ----------------------------------------------------------------------

def test_report_doctests():
    assert doctest.testmod(report).failed == 0


def test_claim_each_outcome():
    paper = "The paper's B > A"
    assert report.claim(paper, (0.1, 0.05, 0.15), "accuracy") == \
        "The paper's B > A: reproduced: +0.100 accuracy [95% CI +0.050, +0.150]"
    assert report.claim(paper, (-0.1, -0.15, -0.05), "accuracy").startswith("The paper's B > A: contradicted: -0.100")
    assert report.claim(paper, (0.01, -0.12, 0.14), "accuracy", 0.063) == (
        "The paper's B > A: not shown here (the CI holds 0): +0.010 accuracy [95% CI -0.120, +0.140]; the paper's "
        "+0.063 lies inside the CI")
    assert report.claim(paper, (0.0, 0.0, 0.0), "accuracy", 0.063).endswith("+0.063 lies above the CI")
    assert report.claim(paper, (0.3, 0.2, 0.4), "accuracy", 0.063).endswith("+0.063 lies below the CI")


def _items(scores, predictions=None):
    return {"per_question": [{"id": f"q{i}", "accuracy": float(s), "prediction": (predictions or [""] * len(scores))[i]}
                             for i, s in enumerate(scores)], "accuracy": sum(scores) / len(scores)}


def test_paired_comparison_by_hand():
    """A right on q0, q1; B right on q1, q2, q3: B - A = (3 - 2) / 4 = +0.25; McNemar: 1 only A, 2 only B."""
    a, b = _items([1, 1, 0, 0]), _items([0, 1, 1, 1])
    text = report.comparison(a, b, "accuracy", ("a", "b"))
    assert text.startswith("b - a: +0.250 accuracy [95% CI ") and "on the same 4 items" in text
    assert "1 items only a got right, 2 only b, p = 1." in text
    assert report.verdict(report.paired(_items([0, 0]), _items([1, 1]), "accuracy")) == "higher than"


# ---- bench/recipes_report.py: the readings ----------------------------------------------------------------------

def _val(step, acc, fmt, valid, sample="x"):
    return {"kind": "eval", "step": step, "eval/accuracy": acc, "eval/format": fmt, "eval/valid": valid,
            "eval/sample": sample}


def test_stages_reading_when_the_stages_raise_accuracy_and_when_not():
    up = [_val(0, 0.0, 0.1, 0.0), _val(10, 0.2, 0.9, 0.4), _val(20, 0.3, 0.95, 0.5, "(1 + 2) * 3")]
    text = recipes_report.stages_reading(up, 8, {"best_step": 20, "best_phase": "grpo2"}, (0.25, 0.2, 0.3))
    assert "exact accuracy 0.000 at step 0 -> 0.300 at step 20 (highest 0.300, step 20)" in text
    assert "format rate 0.10 -> 0.95; valid expressions 0.000 -> 0.500. The last greedy answer: `(1 + 2) * 3`." in text
    assert "RS-SFT took 8 optimizer steps. The best checkpoint by validation accuracy is step 20 (grpo2)." in text
    assert text.endswith("(grpo2 - base on the held-out problems): reproduced: +0.250 accuracy [95% CI +0.200, +0.300].")
    flat = [_val(0, 0.0, 0.1, 0.0), _val(10, 0.0, 0.9, 0.0, "3 + 4 = 7")]
    text = recipes_report.stages_reading(flat, 0, {"best_step": 0, "best_phase": "base"}, (0.0, 0.0, 0.0))
    assert "(highest 0.000, step 0)" in text and "RS-SFT took 0 optimizer steps" in text
    assert "not shown here (the CI holds 0)" in text
    bare = recipes_report.stages_reading(flat, 0, {}, None)  # no summary, no test evals
    assert bare.endswith("is step ? (?).") and "paper" not in bare


def test_nlu_reading_from_the_answers_and_the_paired_differences():
    right = "<Judgement> entailment"
    zero = {**_items([0] * 20, ["no"] * 20), "wrong_format": 1.0}
    sft = {**_items([1, 0] * 10, [right] * 20), "wrong_format": 0.0}
    ev = {"test-zero-shot": zero, "test-sft": sft, "test-ppo-lora": sft,
          "test-ppo-lora-final": {**_items([1] * 20, [right] * 20), "wrong_format": 0.0}}
    text = recipes_report.nlu_reading(ev, {"grpo-lora": 0, "ppo-lora": 0, "ppo-rm": 0})
    assert "sft: entailment 1.00; ppo-lora-final: entailment 1.00." in text
    assert "SFT lowers the wrong-format rate (1.000 -> 0.000); its accuracy is 0.500." in text
    assert "No RL run (grpo-lora, ppo-lora, ppo-rm) beat its starting point on validation" in text
    assert "PPO > SFT on label tasks (ppo-lora - sft): not shown here (the CI holds 0): +0.000 accuracy [95% CI " \
           "+0.000, +0.000]; the paper's +0.063 lies above the CI." in text
    # the final PPO checkpoint is right on every item, SFT on every other one: +1 on 10 items, 0 on 10
    assert "(ppo-lora-final - sft): reproduced: +0.500 accuracy" in text and "+0.063 lies below the CI." in text
    moved = recipes_report.nlu_reading({**ev, "test-sft": {**sft, "wrong_format": 1.0}}, {"grpo-lora": 0, "ppo-lora": 5})
    assert "SFT does not lower the wrong-format rate" in moved
    assert "RL runs whose best checkpoint is their start (the SFT model): grpo-lora." in moved


def test_recipes_report_includes_each_recipes_notes(tmp_path):
    (tmp_path / "countdown-notes.md").write_text("The eval ran beside another job.\n")
    out = tmp_path / "recipes.md"
    recipes_report.write_report(tmp_path, out)
    section = out.read_text().split("## Countdown")[1].split("\n## ")[0]
    assert section.strip().endswith("(the Countdown run is not there yet)\n\nNotes on this measurement: The eval ran "
                                    "beside another job.")
    assert out.read_text().count("Notes on this measurement") == 1


def test_quality_notes_read_from_the_runs(tmp_path):
    import json

    from bench import quality_report

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("data: {eval_size: 200}\nlearner: {inner_steps: 1}\n"
                                     "train: {phases: [{kind: sft, epochs: 1, limit: 256}, {kind: grpo}]}\n")
    recs = [{"kind": "eval", "step": 0, "eval/n": 202}, {"kind": "step", "step": 1, "reward/mean": 0.1,
                                                         "learner/clip_frac": 0.002}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    text = quality_report.how_to_read([run])
    assert "- Eval questions: 202 (asked for 200)" in text
    assert "(`learner.inner_steps`): 1; the largest clip fraction of any GRPO step: 0.002." in text
    assert "- SFT: 1 epoch over 256 training questions (the paper: 3 epochs over the whole split)." in text


def test_gradient_table_by_hand(tmp_path):
    """Where a dynamic-sampling run's samples went, from its step records (3 steps: thirds of one step each)."""
    import json

    recs = [{"kind": "step", "step": i + 1, "sampling/prompts_drawn": d, "sampling/signal_frac": f,
             "sampling/groups_kept": 4, "sampling/samples_per_update": 4 * d, "timing/step": t}
            for i, (d, f, t) in enumerate([(8, 0.5, 10.0), (4, 1.0, 6.0), (10, 0.4, 11.0)])]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rows = recipes_report.gradient_table(tmp_path, ["r"])
    # first third: 4 of 8 with a signal = 50%; last: 4 of 10 = 40%; kept 4; drawn (8+4+10)/3 = 7.33; s (10+6+11)/3 = 9
    assert rows[2] == "| r | 50% -> 40% | 4.00 | 7.33 | 29.3 | 9.0 | 3 |"


def test_countdown_easy_compares_each_stage_with_the_one_before(tmp_path):
    """The stages come from the run's own phases (a cold-start sft first here); each evaluated stage is paired
    with the evaluated stage before it on the same test problems."""
    import json

    run = tmp_path / "countdown-easy"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(
        "task: {name: countdown, params: {difficulty: easy}}\n"
        "train: {phases: [{kind: sft, limit: 8, epochs: 1}, {kind: grpo, steps: 1}, "
        "{kind: rs_sft, prompts: 4}, {kind: grpo, steps: 1}]}\n")
    recs = [{"kind": "step", "step": 1, "phase": "sft"}, {"kind": "step", "step": 2, "phase": "grpo1"},
            {"kind": "eval", "step": 2, "phase": "grpo1", "eval/n": 4, "eval/accuracy": 0.25, "eval/format": 1.0,
             "eval/valid": 0.5, "eval/reward": 0.4, "eval/sample": "<answer>1+2</answer>"}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    for stage, scores in (("base", [0, 0, 0, 0]), ("sft", [1, 0, 0, 0]), ("grpo1", [1, 1, 0, 0])):
        ev = _items(scores)
        for q in ev["per_question"]:
            q["format"] = 1.0
        ev.update(accuracy_ci=[0.0, 1.0], format=1.0, format_ci=[1.0, 1.0], valid=1.0, len=9.0, n=4)
        (run / "eval" / f"test-{stage}.json").write_text(json.dumps(ev))
    text = "\n".join(recipes_report.countdown_easy(tmp_path, {"countdown-easy": tmp_path / "cd.png"}))
    assert "| sft | 0.250 [0.000, 1.000] |" in text and "| rs_sft |" not in text  # no eval of rs_sft yet
    assert "- sft - base: +0.250 accuracy" in text and "- grpo1 - sft: +0.250 accuracy" in text
    assert "on the same 4 items; exact McNemar: 0 items only sft got right, 1 only grpo1" in text
    assert (tmp_path / "cd.png").is_file()


def test_mlqa_rl_pairs_each_grpo_arm_with_sft_and_with_each_other(tmp_path):
    import json

    (tmp_path / "mlqa-sft" / "eval").mkdir(parents=True)
    for name, f1 in (("mlqa-grpo", [1, 0, 0, 0.5]), ("mlqa-grpo-ds", [1, 1, 0, 0.5])):
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        (run / "config.yaml").write_text("train: {phases: [{kind: grpo, steps: 2, prompts_per_step: 4}]}\n")
        recs = [{"kind": "step", "step": i, "phase": "grpo", "time": 60.0 * i, "timing/step": 30.0,
                 "sampling/prompts_drawn": 4, "sampling/signal_frac": 0.5, "sampling/groups_kept": 4,
                 "sampling/samples_per_update": 16} for i in (1, 2)]
        recs += [{"kind": "eval", "step": 0, "eval/f1": 0.5}, {"kind": "eval", "step": 2, "eval/f1": 0.6}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (run / "eval" / f"test-{name[5:]}-best.json").write_text(json.dumps(_qa(f1)))
        (run / "summary.json").write_text(json.dumps({"finished": True}))
    (tmp_path / "mlqa-sft" / "eval" / "test-sft.json").write_text(json.dumps(_qa([0, 0, 0, 0.5])))
    (tmp_path / "mlqa-dpo").mkdir()  # a run still going: named, not reported
    (tmp_path / "mlqa-dpo" / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 0, "eval/f1": 0.5}) + "\n")
    text = "\n".join(recipes_report.mlqa_rl(tmp_path, {}))
    assert "| SFT -> GRPO, best | 0.375 [0.000, 1.000] |" in text and "| 1.0 (1.0) | 4 |" in text
    assert "- grpo-best - sft: +0.250 f1 [95% CI " in text and "(issue 18's target for SFT -> GRPO: >= +0.05, CI above 0)" in text
    assert "- grpo-ds-best - grpo-best: +0.250 f1" in text
    assert "(not reported: mlqa-dpo, started and not finished)" in text and "| mlqa-dpo |" not in text
    assert "| mlqa-grpo | 0.500 | 0.600 (2) | 0.600 | - |" in text  # validation: start, best, last; no KL logged
    assert "| mlqa-grpo-ds | 50% -> 50% | 4.00 | 4.00 | 16.0 | 30.0 | 2 |" in text
    assert "mlqa-grpo-rppb" not in text and "REINFORCE++" not in text  # the estimator arm has its own section
    assert recipes_report.mlqa_estimator(tmp_path, {}) == ["(the MLQA GRPO runs are not there yet)"]
    (tmp_path / "mlqa-grpo").rename(tmp_path / "mlqa-grpo-rppb")
    (tmp_path / "mlqa-grpo-rppb" / "eval" / "test-grpo-best.json").rename(
        tmp_path / "mlqa-grpo-rppb" / "eval" / "test-grpo-rppb-best.json")
    text = "\n".join(recipes_report.mlqa_estimator(tmp_path, {}))
    assert "| SFT -> GRPO, REINFORCE++-baseline advantages, best | 0.375 [0.000, 1.000] |" in text
    assert "- grpo-rppb-best - sft: +0.250 f1 [95% CI " in text and "issue 18's target" in text
    assert "mlqa-grpo-ds" not in text and "| mlqa-grpo-rppb | 0.500 | 0.600 (2) |" in text
    assert "grpo-z" not in text  # today's GRPO from this SFT model: not run yet, so no pair
    (tmp_path / "mlqa-grpo-ds").rename(tmp_path / "mlqa-grpo-z")
    (tmp_path / "mlqa-grpo-z" / "eval" / "test-grpo-ds-best.json").rename(
        tmp_path / "mlqa-grpo-z" / "eval" / "test-grpo-z-best.json")
    text = "\n".join(recipes_report.mlqa_estimator(tmp_path, {}))
    assert "| SFT -> GRPO, today's z-score advantages, best | 0.625 [0.000, 1.000] |" in text
    assert "- grpo-rppb-best - grpo-z-best: -0.250 f1" in text and "final" not in text  # no final evals yet
    (tmp_path / "mlqa-grpo-z" / "eval" / "test-grpo-z-final.json").write_text(json.dumps(_qa([1, 1, 1, 0.5])))
    text = "\n".join(recipes_report.mlqa_estimator(tmp_path, {}))
    assert "| SFT -> GRPO, today's z-score advantages, final | 0.875 [0.000, 1.000] |" in text
    assert "- grpo-z-final - sft: +0.750 f1" in text and "grpo-rppb-final" not in text


def _qa(f1):
    items = [{"id": f"q{i}", "f1": float(x), "em": float(x == 1)} for i, x in enumerate(f1)]
    em = [q["em"] for q in items]
    return {"per_question": items, "f1": sum(f1) / len(f1), "f1_ci": [0.0, 1.0], "em": sum(em) / len(em),
            "em_ci": [0.0, 1.0], "len": 5.0, "n": len(f1)}


def test_qnli_rl_pairs_the_dynamic_sampling_run_with_sft(tmp_path):
    import json

    (tmp_path / "qnli-sft" / "eval").mkdir(parents=True)
    run = tmp_path / "qnli-grpo-ds"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text("train: {phases: [{kind: grpo, steps: 1, prompts_per_step: 2}]}\n")
    (run / "metrics.jsonl").write_text(json.dumps(
        {"kind": "step", "step": 1, "phase": "grpo", "sampling/prompts_drawn": 4, "sampling/signal_frac": 0.5,
         "sampling/groups_kept": 2, "sampling/samples_per_update": 16, "timing/step": 8.0}) + "\n")
    (run / "summary.json").write_text(json.dumps({"best_step": 0, "best_phase": "base"}))
    say = ["<Judgement> entailment", "<Judgement> not_entailment"]
    for path, scores in ((tmp_path / "qnli-sft" / "eval" / "test-sft.json", [1, 0, 0, 1]),
                         (run / "eval" / "test-grpo-ds-best.json", [1, 1, 0, 1])):
        path.write_text(json.dumps({**_items(scores, [say[i % 2] for i in range(4)]), "accuracy_ci": [0.0, 1.0],
                                    "wrong_format": 0.0, "n": 4}))
    text = "\n".join(recipes_report.qnli_rl(tmp_path, {}))
    assert "| SFT | 0.500 [0.000, 1.000] | 0.000 | 0.50 | 4 |" in text
    assert "- grpo-ds-best - sft: +0.250 accuracy" in text and "step 0 (base; step 0 is the SFT start)" in text
    assert "| qnli-grpo-ds | 50% -> 50% | 2.00 | 4.00 | 16.0 | 8.0 | 1 |" in text


def test_recipes_report_names_each_sections_machine_and_keeps_an_earlier_ones(tmp_path, monkeypatch):
    """A section kept from an earlier report (its runs not here) keeps the machine that report named; a section
    built now names this machine; a "not there yet" line names none."""
    monkeypatch.setattr(recipes_report, "machine", lambda: "New CPU (AVX-512, AMX), 2 cores, no GPU")
    out = tmp_path / "recipes.md"
    heading = "MLQA: SFT -> GRPO, today's GRPO and dynamic sampling"
    out.write_text("# Recipes\n\nGenerated ... Machine: Old CPU (AVX2), 2 cores, no GPU. Policy: x.\n\n"
                   f"## {heading}\n\n| model | F1 |\n|---|---|\n| SFT | 0.5 |\n\n## Provenance\n\n```\nold cmd\n```\n")
    recipes_report.write_report(tmp_path, out)
    text = out.read_text()
    kept = text.split(f"## {heading}\n\n")[1].split("\n## ")[0]
    assert kept.startswith("Measured on: Old CPU (AVX2), 2 cores, no GPU.\n\n| model | F1 |")
    assert "Machine: New CPU (AVX-512, AMX), 2 cores, no GPU; each section names" in text
    assert text.split("## QNLI: SFT -> GRPO with dynamic sampling\n\n")[1].startswith("(the QNLI dynamic-sampling")
    assert "old cmd" in text
    recipes_report.write_report(tmp_path, out)  # written again: the label is not doubled, nor replaced
    again = out.read_text().split(f"## {heading}\n\n")[1].split("\n## ")[0]
    assert again == kept


def test_recipes_report_gathers_every_sections_samples_table_with_its_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes_report, "machine", lambda: "New CPU")
    out = tmp_path / "recipes.md"
    table = (f"{recipes_report.GRADIENT_HEAD} groups kept per update | prompts drawn per update | samples per update "
             "| s per update | steps |\n|---|---|---|---|---|---|---|\n| mlqa-grpo | 44% -> 34% | 16.00 | 16.00 | 64.0 "
             "| 39.7 | 60 |\n| mlqa-dpo | 42% -> 39% | 16.00 | 16.00 | 64.0 | 24.8 | 60 |\n\nNotes.")
    out.write_text("Generated ... Machine: Old CPU. Policy: x.\n\n## MLQA: SFT -> GRPO, today's GRPO and dynamic "
                   f"sampling\n\n{table}\n\n## Arithmetic: GRPO with dynamic sampling, from the base and from SFT\n\n"
                   "Measured on: Third CPU.\n\n" + table.replace("mlqa-grpo", "arith-ds").split("| mlqa-dpo")[0])
    recipes_report.write_report(tmp_path, out)
    summary = out.read_text().split(f"## {recipes_report.SAMPLES_SUMMARY}\n\n")[1].split("\n## ")[0]
    rows = [line for line in summary.split("\n") if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["| arith-ds | 44% -> 34% | 16.00 | 16.00 | 64.0 | 39.7 | 60 | Third CPU |",
                    "| mlqa-grpo | 44% -> 34% | 16.00 | 16.00 | 64.0 | 39.7 | 60 | Old CPU |",
                    "| mlqa-dpo | 42% -> 39% | 16.00 | 16.00 | 64.0 | 24.8 | 60 | Old CPU |"]
    recipes_report.write_report(tmp_path, out)  # again: one summary, not two
    assert out.read_text().count(f"## {recipes_report.SAMPLES_SUMMARY}") == 1


def test_a_recipe_that_shares_a_run_does_not_rebuild_an_older_section_from_part_of_its_runs(tmp_path, monkeypatch):
    """qnli_rl writes qnli-sft and arithmetic_rl arithmetic-sft: the NLU paper's and the arithmetic paper's sections,
    measured before from all their runs, stay as they were (seen: the arithmetic section became "not there yet")."""
    monkeypatch.setattr(recipes_report, "machine", lambda: "New CPU")
    for run in ("qnli-sft", "arithmetic-sft"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.jsonl").write_text('{"kind": "eval", "step": 0}\n')
    nlu = "Label tasks: zero-shot, few-shot, SFT, GRPO, PPO on QNLI (the NLU paper)"
    arith = "Arithmetic: SFT vs GRPO (the SFT-vs-GRPO arithmetic paper)"
    out = tmp_path / "recipes.md"
    out.write_text(f"Machine: Old CPU. Policy: x.\n\n## {arith}\n\n| SFT | 0.465 |\n\n## {nlu}\n\n| SFT | 0.520 |\n")
    recipes_report.write_report(tmp_path, out)
    text = out.read_text()
    assert f"## {arith}\n\nMeasured on: Old CPU.\n\n| SFT | 0.465 |" in text
    assert f"## {nlu}\n\nMeasured on: Old CPU.\n\n| SFT | 0.520 |" in text


def test_search_compares_the_three_arms_paired_and_reads_the_tool_figures(tmp_path):
    import json

    f1 = {"search-none": [0, 0, 0, 0.5], "search-rag": [1, 0, 0, 0.5], "search-tool": [1, 1, 0, 0.5]}
    for name, scores in f1.items():
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        (run / "config.yaml").write_text("train: {phases: [{kind: sft, steps: 2, batch_size: 8}, {kind: grpo, steps: "
                                         "2, prompts_per_step: 4}]}\n")
        tool = name == "search-tool"
        recs = [*[{"kind": "step", "step": i, "phase": "sft", "timing/step": 1.0} for i in (1, 2)],
                {"kind": "eval", "step": 2, "phase": "sft", "eval/f1": 0.4},
                *[{"kind": "step", "step": 2 + i, "phase": "grpo", "timing/step": 10.0 * i, "timing/generate": 2.0,
                   "timing/learn": 6.0, "sampling/prompts_drawn": 4, "sampling/signal_frac": 0.5,
                   "sampling/groups_kept": 4, "sampling/samples_per_update": 16, "learner/tokens_forward": 1600.0,
                   **({"tools/calls_per_sample": 1.0, "rollout/observation_tokens": 90.0} if tool else {})}
                  for i in (1, 2)],
                {"kind": "eval", "step": 4, "phase": "grpo", "eval/f1": 0.5}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (run / "summary.json").write_text(json.dumps({"finished": True}))
        extra = {"tool_calls": 1.0, "gold_retrieved": 0.75, "turns": 2.0, "completion_tokens": 120.0,
                 "policy_tokens": 30.0} if tool else {"gold_retrieved": 0.9} if name == "search-rag" else {}
        (run / "eval" / "test-best.json").write_text(json.dumps({**_qa(scores), **extra}))
        (run / "eval" / "test-sft.json").write_text(json.dumps(_qa([0, 0, 0, 0.5])))
    text = "\n".join(recipes_report.search(tmp_path, {}))
    assert "sft: 2 steps x 8 = 16 examples; grpo: 2 steps x 4 prompts x 4 samples = 32 samples" in text
    assert ("| the policy searches the index itself (multi-turn, Search-R1) | SFT -> GRPO, best | 0.625 [0.000, 1.000] | "
            "0.500 | 1.00 | 0.750 | 2.00 | 120 (30) | 4 |") in text
    assert "| top-3 passages of the dense index in the prompt (RAG) | SFT -> GRPO, best | 0.375 [0.000, 1.000] | 0.250 " \
           "| - | 0.900 | - | 5 | 4 |" in text
    assert "- search-tool - search-rag: +0.250 f1" in text and "- search-rag - search-none: +0.250 f1" in text
    assert "- search-tool - search-none: +0.500 f1" in text and "- search-tool best - search-tool SFT: +0.500" in text
    assert "| the policy searches the index itself (multi-turn, Search-R1) | not measured apart | - | 1.00 | 90 | 100 | " \
           "0.400 -> 0.500 (4) |" in text
    timed = tmp_path / "search-tool-time"
    timed.mkdir()
    (timed / "metrics.jsonl").write_text("".join(json.dumps({"kind": "step", "step": i, "timing/step": s,
                                                             "timing/generate": 1.0, "timing/learn": s - 2.0}) + "\n"
                                                 for i, s in ((1, 8.0), (2, 9.0), (3, 12.0))))
    text = "\n".join(recipes_report.search(tmp_path, {}))
    assert "| the policy searches the index itself (multi-turn, Search-R1) | 9.0 [8.0, 12.0] | 1.0 / 7.0 | 1.00 |" in text
    assert recipes_report.search(tmp_path / "nothing", {}) == ["(the search runs are not there yet)"]
