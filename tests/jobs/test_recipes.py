"""Every recipe preset runs on the real path: local Ray, vLLM engines, the embedded model, real data.

Each preset runs as written except for its size: 2 steps per phase, small held-out splits, short answers.
The checks are behaviour, never wall-clock: the phases run in order, the engines sample from the learner's
weights after every sync (logprob gap), each phase ends with an eval and a checkpoint, the task's primary
metric picks the best checkpoint.
"""
import json
import threading
from pathlib import Path

import pytest
import yaml

from tests.real_path import assert_engine_held_learner_weights, other_precision_overrides, run_precision, train

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "jobs" / "configs"
pytestmark = [pytest.mark.slow, pytest.mark.ray]

# Every recipe runs the tiny policy with the embedded tokenizer (conftest.py tiny_policy_dir): what they test is the
# recipe's plumbing (phases, task, rewards, LoRA, PPO, critic), not the weights. The MLQA recipe on the embedded
# 135M model is the pinned regression run (tests/jobs/test_regression.py).
# Not here: arithmetic_easy_grpo and countdown_easy_grpo_rs_grpo are the recipes of arithmetic_grpo and
# countdown_grpo_rs_grpo with another task.params.difficulty (tests/tasks/test_difficulty.py), the same plumbing.
RECIPES = {
    # preset: (task, primary metric)
    "xquad_en_sft_grpo.yaml": ("mlqa", "f1"),
    "arithmetic_sft.yaml": ("arithmetic", "accuracy"),
    "arithmetic_grpo.yaml": ("arithmetic", "accuracy"),
    "countdown_grpo_rs_grpo.yaml": ("countdown", "accuracy"),
    "domain_qa_sft_grpo.yaml": ("domain_qa", "accuracy"),
    "qnli_grpo_lora.yaml": ("labels", "accuracy"),  # LoRA: the gap check below proves merged-weight syncs
    "qnli_ppo_lora.yaml": ("labels", "accuracy"),   # PPO + critic + LoRA + Adafactor
    "qnli_sft.yaml": ("labels", "accuracy"),
    "mlqa_sft_dpo.yaml": ("mlqa", "f1"),            # online DPO: pairs from the engines' samples, the reference actor
}


def shrink(preset: str) -> list[str]:
    """Overrides that keep the preset's recipe and make it small: 2 steps a phase; RS-SFT samples 4 prompts and
    keeps anything that finished (reward >= -10), so it has something to train on with the base model."""
    phases = yaml.safe_load((CONFIGS / preset).read_text())["train"]["phases"]
    out = ["data.eval_size=6", "data.test_size=null", "rollout.max_new_tokens=24", "rollout.kv_cache_gib=1",
           "train.eval_at_start=false"]
    for i, p in enumerate(phases):
        out.append(f"train.phases.{i}.steps=2")
        if p["kind"] == "rs_sft":  # room for the base model to finish some answers (only finished ones are kept)
            out += [f"train.phases.{i}.prompts=4", f"train.phases.{i}.threshold=-10",
                    f"train.phases.{i}.sampling.max_new_tokens=96"]
        if p["kind"] == "ppo":  # one critic warm-up step, then one with policy updates
            out += [f"train.phases.{i}.critic_warmup=1", f"train.phases.{i}.epochs=2"]
    if RECIPES[preset][0] in ("arithmetic", "countdown"):
        out.append("task.params.num_problems=300")
    else:
        out.append("data.limit=150")
    return out


class Scraper(threading.Thread):
    """Polls a Prometheus endpoint while a job runs; keeps every raygrpo_* line it saw (an export holds the gauges
    recorded since the one before, so a fast job's last answer may show only its last eval)."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.url, self.lines, self.done = f"http://127.0.0.1:{port}/metrics", [], threading.Event()

    def run(self):
        import urllib.request

        while not self.done.wait(0.25):  # a tiny-policy job ends seconds after its first step
            try:
                body = urllib.request.urlopen(self.url, timeout=5).read().decode()
            except OSError:
                continue
            mine = [line for line in body.splitlines() if line.startswith("ray_raygrpo_")]
            self.lines += [line for line in mine if line not in self.lines]


# PPO with a critic and LoRA once more in the precision `auto` does not pick here (bf16 on AVX2, fp32 where auto is
# bf16): both paths of the merged-weight sync, the critic and the learner's own old logprobs run on every CPU kind.
CASES = [pytest.param(preset, False, marks=pytest.mark.fleet("tiny"), id=preset) for preset in RECIPES] + [
    pytest.param("qnli_ppo_lora.yaml", True, marks=pytest.mark.fleet("tiny-other"), id="qnli_ppo_lora.yaml-other-precision")]


@pytest.mark.parametrize("preset,other", CASES)
def test_recipe_runs_two_steps_a_phase_on_local_ray(preset, other, shared_data, tmp_path, tiny_policy_dir, fleets,
                                                    ray_session, capsys):
    task, primary = RECIPES[preset]
    name = preset.removesuffix(".yaml") + ("-other" if other else "")  # the gauges' run tag: this test's own
    extra = [*other_precision_overrides(), "train.prompts_per_step=2"] if other else []
    extra.append(f"model.policy={tiny_policy_dir}")
    # the session's cluster exports metrics every 0.5 s (tests/conftest.py): a tiny-policy job ends seconds after
    scraper = Scraper(ray_session.metrics_port)  # its first step
    scraper.start()
    try:
        train(fleets, str(CONFIGS / preset), f"train.output_dir={tmp_path}", f"train.run_name={name}", *shrink(preset),
              *extra)
    finally:
        scraper.done.set()
    out = capsys.readouterr().out
    # The training metrics reached the cluster's Prometheus endpoint while the job ran (tagged with the run).
    assert any(line.startswith("ray_raygrpo_step{") and f'run="{name}"' in line for line in scraper.lines), scraper.lines
    if any(p["kind"] != "sft" for p in yaml.safe_load((CONFIGS / preset).read_text())["train"]["phases"]):
        assert any(line.startswith("ray_raygrpo_reward_mean{") for line in scraper.lines), scraper.lines
    run = tmp_path / name
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == task and summary["primary_metric"] == f"eval/{primary}" and summary["finished"]
    names = summary["phases"]
    steps = [r for r in recs if r["kind"] == "step"]
    assert [r["phase"] for r in steps] == [n for n in names for _ in range(2)]
    assert [r["step"] for r in steps] == list(range(1, 2 * len(names) + 1))
    precision = run_precision(run)
    assert not other or [f"learner.precision={precision}"] == other_precision_overrides()[:1]
    for r in steps:
        if "reward/mean" in r and "learner/logprob_diff_max" in r:  # the engine samples the learner's weights
            assert_engine_held_learner_weights(r, precision)
        elif "dpo/pairs" in r:  # a DPO step: where it found pairs, they came from the learner's weights
            assert r["dpo/pairs"] == 0 or r["dpo/logprob_diff_mean"] < (1e-4 if precision == "fp32" else 0.1), r
        elif "reward/mean" in r:  # a PPO critic warm-up step: the policy did not move
            assert r["ppo/policy_updates"] == 0 and r["critic/vf_loss"] >= 0
        else:
            assert r["sft/loss"] > 0
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [r["phase"] for r in evals] == names  # one eval at the end of every phase
    assert all(isinstance(r[f"eval/{primary}"], float) for r in evals)
    for name in [*names, "best", "last"]:
        assert (run / "checkpoints" / name / "model.safetensors").is_file(), name
    if task == "domain_qa":  # three sampled answers per question: their consistency
        assert all(0.0 <= r["eval/consistency"] <= 1.0 for r in evals)
    for p in yaml.safe_load((CONFIGS / preset).read_text())["train"]["phases"]:
        if p["kind"] == "rs_sft":
            kept = next(r["data"] for r in recs if "rs_sft/kept" in r.get("data", {}))
            assert kept["rs_sft/sampled"] == 4 * p.get("sampling", {}).get("group_size", 4) and kept["rs_sft/kept"] > 0
    assert (run / "curves.png").stat().st_size > 10_000
    rss = summary["peak_rss_gib"]  # every actor's peak memory, read through Ray's state API
    assert 0.3 < rss["learner"][0] < 16 and 0.3 < rss["rollout"][0] < 16 and rss["driver"][0] > 0.05
    # Rollout records of every RL step; the console holds the job's lines, the engines' logs are in logs/.
    from common import rollout_records

    rl = sorted({r["step"] for r in steps if "reward/mean" in r})
    if rl:
        assert sorted(set(rollout_records.read(run)["step"])) == rl
    assert "INFO" not in out and "pid=" not in out, out[-2000:]
    assert (run / "logs" / "rollout-0.log").stat().st_size > 0 and (run / "logs" / "learner-0.log").is_file()
