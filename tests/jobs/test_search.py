"""The search recipe on the real path (jobs/configs/xquad_en_search_grpo.yaml): local Ray, vLLM, the dense index over
XQuAD-en's paragraphs, the embedded SmolLM2-135M (it never writes a tool call on its own: 0 of 32 samples seen, so the
run starts with SFT on gold search traces, the tools' real observations masked out), then GRPO, RS-SFT, PPO (with its
critic) and online DPO on multi-turn rollouts, each counting the policy's tokens only; and the run, taken back to its
checkpoint after PPO and resumed, samples what it sampled uninterrupted in DPO (fp32; the default bf16 path is the
recipe's own, docs/recipes.md)."""
import json
import shutil
from pathlib import Path

import pytest

from tests.real_path import train

ROOT = Path(__file__).resolve().parents[2]
SEARCH = str(ROOT / "jobs" / "configs" / "xquad_en_search_grpo.yaml")
# first in its group: its fleet (a tool actor beside the embedded model's engine, learner, reference and critic) then
# serves the pinned regression run, which checks the numbers on a fleet that served another run first. `alone`: its
# actors peak at ~17 GiB together (learner 5, critic 4, engine 3.7, reference 2.5; measured 2026-12-08), so the other
# groups' fleets are closed before it and its group runs last (CI's run of 2026-12-07 lost its engine to Ray's memory
# monitor with a tiny-policy fleet still warm beside it)
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.fleet("smollm", widest=True, alone=True)]


def args(out: Path) -> list[str]:
    return [f"train.output_dir={out}",
            "train.phases=[{kind: sft, steps: 6, lr: 0.0002, batch_size: 4}, {kind: grpo, steps: 2}, {kind: rs_sft, "
            "prompts: 4, threshold: 0.3, steps: 1, batch_size: 4}, {kind: ppo, steps: 1, epochs: 1}, {kind: dpo, "
            "steps: 1}]",
            "train.eval_at_start=false", "train.eval_every=100", "train.keep_checkpoints=3",
            "train.save_every=100",  # a phase's end saves its step (and keeps the one before): 5 saves, not 11
            "train.prompts_per_step=2",
            # the first 34 questions: paragraphs of 14, 16 and 4; split seed 4 holds out the 4 (every phase's end
            # evaluates: 4 questions, not 16), the 30 others train
            "data.limit=34", "data.eval_size=2", "data.split_seed=4", "data.test_size=null", "rollout.temperature=1.0",
            "tools.use=[{name: search, params: {k: 1}, max_output_tokens: 48}]", "rollout.max_new_tokens=40",
            "rollout.max_total_tokens=256",
            "train.max_staleness=1",  # GRPO's 2nd step's multi-turn samples are generated while its 1st learns
            # fp32: the same samples run to run. In bf16 (auto on an AMX CPU) a later turn's sampling differs between
            # two identical runs in 2 of 8 samples (seen 2026-12-04): vLLM's bf16 numerics, not the resume
            "learner.precision=fp32", "rollout.dtype=fp32"]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sft_on_gold_traces_then_grpo_with_search_and_resume(shared_data, tmp_path, fleets, capsys):
    from common import rollout_records

    train(fleets, SEARCH, *args(tmp_path / "whole"))
    run = tmp_path / "whole" / "xquad-en-search"
    recs = records(run)
    assert any("SFT on 38 gold multi-turn traces" in r.get("message", "") or "gold multi-turn traces" in
               r.get("message", "") for r in recs)
    grpo = [r for r in recs if r["kind"] == "step" and r["phase"] == "grpo"]
    df = rollout_records.read(run)
    assert len(grpo) == 2
    sampled = [r for r in recs if r["kind"] == "step" and r["phase"] in ("grpo", "ppo", "dpo")]
    assert [r["phase"] for r in sampled] == ["grpo", "grpo", "ppo", "dpo"]
    for r in sampled:
        assert r["tools/calls"] > 0 and r["rollout/turns_mean"] > 1 and r["rollout/observation_tokens"] > 0
        rows = df[df["step"] == r["step"]]
        # the learner counted the policy's tokens only, and the records say which tokens those were
        if r["phase"] == "grpo":
            assert r["learner/head_positions"] == rows["policy_tokens"].sum() < rows["completion_tokens"].sum()
            # every policy token carries the version that sampled it, no observation token one; at most 1 behind
            versions = [(v, m) for vs, ms in zip(rows["weights_versions"], rows["policy_mask"]) for v, m in zip(vs, ms)]
            assert all((v >= 0) == bool(m) for v, m in versions) and 0 <= r["rollout/staleness"] <= 1
        if r["phase"] == "ppo":  # epochs x minibatches of learner updates over the policy's tokens, and the critic's
            assert r["learner/head_positions"] == rows["policy_tokens"].sum() / 2 and r["critic/vf_loss"] >= 0
        turns = [json.loads(t) for t in rows["turns"]]
        calls = [t for ts in turns for t in ts if t["role"] == "tool"]
        assert len(calls) == r["tools/calls"] and all(t["tool"] == "search" and t["doc_ids"] for t in calls
                                                       if t["status"] == "ok")
        assert r["tools/errors"] == sum(t["status"] != "ok" for t in calls)
    traces = [json.loads(x) for x in (run / "rs_sft-rs_sft.jsonl").read_text().splitlines()]
    kept = next(x["data"] for x in recs if "rs_sft/kept" in x.get("data", {}))
    assert len(traces) == kept["rs_sft/kept"] > 0  # a trace of tool calls, kept with which tokens were the policy's
    assert all(len(t["policy_mask"]) == len(t["completion_ids"]) for t in traces)
    assert any(0 in t["policy_mask"] for t in traces)  # the SFT model searches: its kept traces hold observations
    # the run as if stopped after step 10 (PPO, the end of its phase): its last checkpoint gone, resumed from the kept
    # step-10 one; DPO samples again exactly what the uninterrupted run sampled (its turns, calls and observations)
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000009", "step-000010"]
    for name in ("last", "last.old"):
        shutil.rmtree(ckpts / name, ignore_errors=True)
    capsys.readouterr()
    train(fleets, SEARCH, *args(tmp_path / "whole"), resume=True)
    assert "after step 10" in capsys.readouterr().out
    split = rollout_records.read(run)
    assert sorted(set(split["step"])) == sorted(set(df["step"]))
    for step in (11,):  # dpo
        a = df[df["step"] == step].sort_values(["prompt", "sample"])
        b = split[split["step"] == step].sort_values(["prompt", "sample"])
        untimed = lambda col: [[{k: v for k, v in t.items() if k != "seconds"} for t in json.loads(x)]  # noqa: E731
                               for x in col]
        assert list(a["completion"]) == list(b["completion"]) and untimed(a["turns"]) == untimed(b["turns"])
        assert list(a["reward"]) == pytest.approx(list(b["reward"]))
