"""The dpo phase on the recipe engine (tiny random Llama, HF engine, in-process): online pairs from the policy's own
groups, file pairs with bad rows skipped and counted, resume equal to an uninterrupted run. The real path (vLLM,
Ray, the embedded model) runs the mlqa_sft_dpo preset in tests/jobs/test_recipes.py."""
import json

import pytest

from tests.jobs.test_engine import _args, _records, llama  # noqa: F401  (the module fixture)
from trainer.run import main


def test_online_dpo_pairs_each_groups_best_with_its_worst(llama, tmp_path, monkeypatch):  # noqa: F811
    # the tiny random policy never answers an arithmetic problem right; a reward read off the text's length gives its
    # groups rewards that differ (the scorer runs in this process)
    from rewards.registry import ArithmeticReward

    monkeypatch.setattr(ArithmeticReward, "_one", lambda self, text, n, ex: (len(text) % 3 / 2, {"unparsed": 0.0}))
    phases = "[{kind: sft, steps: 1, batch_size: 2}, {kind: dpo, steps: 3, beta: 0.2, sampling: {temperature: 1.0}}]"
    assert main(_args(llama, tmp_path, "arithmetic", phases, "task.params.gsm8k=false", "learner.lr=1e-3",
                      "train.prompts_per_step=3", "algo.dynamic_sampling=true", "algo.max_rounds=2")) == 0
    run = tmp_path / "r"
    steps = [r for r in _records(run) if r["kind"] == "step" and r["phase"] == "dpo"]
    assert len(steps) == 3
    for r in steps:
        assert r["dpo/pairs"] <= 3 and r["sampling/groups_kept"] == r["dpo/pairs"]  # one pair per group with a signal
        if r["dpo/pairs"]:
            assert {"dpo/loss", "dpo/margin", "dpo/accuracy", "dpo/rewards_chosen", "timing/reference"} <= r.keys()
            assert r["dpo/logprob_diff_max"] < 1e-3  # fp32: the engine sampled the learner's weights
    first = next(r for r in steps if r["dpo/pairs"])
    assert first["dpo/loss"] == pytest.approx(0.6931, abs=2e-3)  # the first step starts at its reference: margin 0
    from common import rollout_records

    recs = rollout_records.read(run)
    for (_, _), g in recs.groupby(["step", "prompt"]):  # +1 on a best sample, -1 on a worst, where rewards differ
        if g["reward"].nunique() > 1:
            assert sorted(g["advantage"])[0] == -1 and sorted(g["advantage"])[-1] == 1
            assert g.loc[g["advantage"] == 1, "reward"].item() == g["reward"].max()
            assert g.loc[g["advantage"] == -1, "reward"].item() == g["reward"].min()
        else:
            assert (g["advantage"] == 0).all()
    assert (run / "checkpoints" / "dpo" / "model.safetensors").is_file()


def test_file_pairs_skip_and_count_bad_rows(llama, tmp_path):  # noqa: F811
    pairs = tmp_path / "pairs.jsonl"
    good = [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 2)} for i in range(5)]
    bad = ["not json", json.dumps({"prompt": "x", "chosen": "1"}), json.dumps({"prompt": "y", "chosen": "2",
                                                                              "rejected": " 2 "}),
           json.dumps({"prompt": "z" * 2000, "chosen": "1", "rejected": "2"})]
    pairs.write_text("\n".join([json.dumps(g) for g in good[:3]] + bad + [json.dumps(g) for g in good[3:]]) + "\n")
    phases = f"[{{kind: dpo, pairs: '{pairs}', batch_size: 2, epochs: 2, loss: ipo}}]"
    assert main(_args(llama, tmp_path, "arithmetic", phases, "task.params.gsm8k=false")) == 0
    recs = _records(tmp_path / "r")
    skipped = next(r["data"] for r in recs if "dpo/pairs_file" in r.get("data", {}))
    assert skipped == {"phase": "dpo", "dpo/pairs_file": 5, "dpo/skipped_malformed": 2, "dpo/skipped_identical": 1,
                       "dpo/skipped_prompt_too_long": 1}
    steps = [r for r in recs if r["kind"] == "step"]
    assert len(steps) == 5 and all(r["dpo/pairs"] == 2 for r in steps)  # ceil(2 epochs x 5 pairs / 2)


def test_file_pairs_with_no_usable_row_name_the_file_and_the_counts(tmp_path):
    from common.data import preference_pairs
    from tests.tiny_models import char_tokenizer

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"no usable row of 1 \(skipped: \{'malformed': 0, 'identical': 1"):
        preference_pairs(str(pairs), char_tokenizer(), 100)


def test_a_resumed_dpo_run_equals_an_uninterrupted_one(llama, tmp_path):  # noqa: F811
    phases = "[{kind: dpo, steps: 3}]"
    base = _args(llama, tmp_path, "arithmetic", phases, "task.params.gsm8k=false", "train.save_every=100",
                 "learner.lr=1e-3")
    assert main([*base, "train.run_name=whole"]) == 0
    assert main([*base, "train.run_name=split", "--max-steps", "1"]) == 0
    assert main([*base, "train.run_name=split", "--resume"]) == 0

    def numbers(run: str) -> dict:
        return {(r["kind"], r["step"]): {k: v for k, v in r.items() if isinstance(v, float) and not k.startswith(
            ("timing/", "perf/", "eval/seconds", "sync/", "stream/", "memory/")) and k != "time"}
            for r in _records(tmp_path / run) if r["kind"] in ("step", "eval")}

    whole, split = numbers("whole"), numbers("split")
    assert whole.keys() == split.keys() and len(whole) >= 4
    for key in whole:
        assert split[key] == pytest.approx(whole[key], rel=1e-6, abs=1e-9), key
