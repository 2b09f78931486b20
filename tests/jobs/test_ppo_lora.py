"""PPO with a critic and LoRA through the recipe engine on tiny random models (HF engine, in-process, seconds):
the PPO phase's stages and metrics, critic warm-up, the logprob gap after every sync (LoRA: merged weights),
and resumed runs equal to uninterrupted ones (critic, adapters and their optimizers saved and loaded).

The real path (vLLM, Ray, the embedded model) for LoRA is tests/jobs/test_recipes.py (qnli_grpo_lora.yaml)."""
import json

import pytest

from trainer.run import main
from tests.jobs.test_engine import _args, _records, _save
from tests.tiny_models import tiny_llama

LORA = "learner.lora={rank: 4, alpha: 8, target_modules: [q_proj, v_proj]}"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return _save(tiny_llama(seed=0), tmp_path_factory.mktemp("llama_ppo"))


def _steps(run, phase):
    return [r for r in _records(run) if r["kind"] == "step" and r["phase"] == phase]


def test_ppo_phase_trains_policy_and_critic(llama, tmp_path):
    phases = "[{kind: sft, steps: 2, batch_size: 2}, {kind: ppo, steps: 3, epochs: 2, minibatches: 2, critic_warmup: 1}]"
    assert main(_args(llama, tmp_path, "arithmetic", phases, "task.params.gsm8k=false", "learner.lr=1e-3")) == 0
    run = tmp_path / "r"
    ppo = _steps(run, "ppo")
    assert len(ppo) == 3
    assert ppo[0]["ppo/policy_updates"] == 0 and "learner/pg_loss" not in ppo[0]   # warm-up: critic only
    assert all(r["ppo/policy_updates"] == 4 for r in ppo[1:])                       # 2 epochs x 2 minibatches
    for r in ppo:
        assert r["critic/vf_loss"] >= 0 and 0 <= r["critic/vf_clip_frac"] <= 1 and "ppo/explained_var" in r
    assert ppo[0]["ppo/kl_reward_mean"] == pytest.approx(0.0, abs=1e-6)  # the policy is its reference at first
    for r in ppo[1:]:
        assert r["learner/logprob_diff_max"] < 1e-4 and r["learner/clip_frac_first"] == 0.0  # engine synced
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["phases"] == ["sft", "ppo"]
    assert summary["peak_rss_gib"]["critic"][0] > 0.05  # in-process: this process's peak, once per group
    assert (run / "checkpoints" / "last" / "trainer" / "critic.safetensors").is_file()
    assert sorted(p.name for p in (run / "checkpoints" / "last").glob("*.safetensors")) == ["model.safetensors"]
    assert (run / "checkpoints" / "ppo" / "model.safetensors").is_file()


def _numbers(run) -> dict:
    out = {}
    for r in _records(run):
        if r["kind"] in ("step", "eval"):
            # sync/: the probe check starts again with each process (its probe is the policy's greedy text then)
            out[(r["kind"], r["step"])] = {k: v for k, v in r.items() if isinstance(v, float) and not
                                           k.startswith(("timing/", "perf/", "eval/seconds", "sync/", "stream/", "memory/")) and k != "time"}
    return out


@pytest.mark.parametrize("phases, extra", [
    ("[{kind: sft, steps: 2, batch_size: 2}, {kind: ppo, steps: 3, epochs: 2, minibatches: 2}]", []),
    ("[{kind: sft, steps: 2, batch_size: 2}, {kind: grpo, steps: 3}]", [LORA]),
], ids=["ppo", "grpo-lora"])
def test_a_resumed_run_equals_an_uninterrupted_one(llama, tmp_path, phases, extra):
    base = _args(llama, tmp_path, "arithmetic", phases, "task.params.gsm8k=false", "train.save_every=100",
                 "learner.lr=1e-3", *extra)
    assert main([*base, "train.run_name=whole"]) == 0
    assert main([*base, "train.run_name=split", "--max-steps", "3"]) == 0  # stops inside the second phase
    assert main([*base, "train.run_name=split", "--resume"]) == 0
    whole, split = _numbers(tmp_path / "whole"), _numbers(tmp_path / "split")
    assert whole.keys() == split.keys() and len(whole) >= 5
    for key in whole:
        assert split[key] == pytest.approx(whole[key], rel=1e-6, abs=1e-9), key


def test_lora_grpo_and_ppo_keep_the_engine_on_the_adapted_policy(llama, tmp_path):
    phases = ("[{kind: sft, steps: 2, batch_size: 2}, {kind: grpo, steps: 2},"
              " {kind: ppo, steps: 2, epochs: 1, minibatches: 1}]")
    assert main(_args(llama, tmp_path, "arithmetic", phases, "task.params.gsm8k=false", "learner.lr=1e-2", LORA)) == 0
    run = tmp_path / "r"
    for r in _steps(run, "grpo") + _steps(run, "ppo"):
        assert r["learner/logprob_diff_max"] < 1e-4, r  # merged LoRA weights reached the engine
    grpo = _steps(run, "grpo")
    assert grpo[0]["learner/kl"] < 1e-9  # the reference (adapters disabled) is the SFT model the phase began from
    assert not (run / "checkpoints" / "grpo" / "adapter_config.json").exists()  # a plain model folder


def test_ppo_with_a_seq2seq_policy_is_refused_before_anything_starts(tmp_path, capsys):
    from tests.jobs.test_engine import _save
    from tests.tiny_models import tiny_t5

    t5 = _save(tiny_t5(seed=0), tmp_path / "t5")
    args = _args(t5, tmp_path, "arithmetic", "[{kind: ppo, steps: 1}]", "task.params.gsm8k=false")
    assert main(args) == 2
    err = capsys.readouterr()
    assert "the critic needs a causal LM" in err.out + err.err
    assert not (tmp_path / "r").exists()  # no run dir, no actor
