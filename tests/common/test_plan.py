"""The run plan (common/plan.py): every preset's decisions in one table, and the rules behind them.

The table is written by hand from the presets and the rules (a sampled KL needs the reference's logprobs of the
sampled tokens: a reference actor with full fine-tuning, the adapters-disabled learner with LoRA; full KL keeps a
frozen copy in the learner; PPO folds k1 into the token rewards; 'auto' old logprobs are the learner's where bf16
runs on either side or samples can be stale (train.max_staleness), the engine's in fp32).
"""
from pathlib import Path

import pytest

from common.config import load_config
from common.plan import make_plan

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"
QA_GRPO = "grpo (grpo); K=4 T=0.8 top-p 0.9 max {n} tokens; KL k3 x 0.04 in the loss vs phase_start (reference_actor)"
WITH_REF = "actors: rollout reward learner reference"
PPO_LORA = "ppo (ppo); K=4 T=0.8 top-p 0.9 max 16 tokens; KL k1 x 0.05 in the reward vs phase_start (adapters_off)"

# preset -> (one row per phase, without old logprobs; the actors line without precisions)
TABLE = {
    "arithmetic_grpo": (["grpo (grpo); K=4 T=0.7 top-p 0.9 max 48 tokens; advantage mean_only; KL k2 x 0.05 in the "
                         "loss vs phase_start (reference_actor)"], WITH_REF),
    "arithmetic_easy_grpo": (["grpo (grpo); K=4 T=0.7 top-p 0.9 max 48 tokens; advantage mean_only; KL k2 x 0.05 in "
                              "the loss vs phase_start (reference_actor)"], WITH_REF),
    "arithmetic_sft": (["sft (sft)"], "actors: rollout reward learner"),
    "countdown_grpo_rs_grpo": (["grpo1 (grpo); K=4 T=1 top-p 0.9 max 128 tokens; KL k3 x 0.04 in the loss vs "
                                "phase_start (reference_actor)", "rs_sft (rs_sft); K=8 T=1 top-p 0.9 max 128 tokens",
                                "grpo2 (grpo); K=4 T=1 top-p 0.9 max 128 tokens; KL k3 x 0.04 in the loss vs "
                                "phase_start (reference_actor)"], WITH_REF),
    "countdown_easy_grpo_rs_grpo": (["sft (sft)", "grpo1 (grpo); K=4 T=1 top-p 0.9 max 128 tokens; KL k3 x 0.04 in the loss vs "
                                     "phase_start (reference_actor)", "rs_sft (rs_sft); K=8 T=1 top-p 0.9 max 128 "
                                     "tokens", "grpo2 (grpo); K=4 T=1 top-p 0.9 max 128 tokens; KL k3 x 0.04 in the "
                                     "loss vs phase_start (reference_actor)"], WITH_REF),
    "domain_qa_sft_grpo": (["sft (sft)", QA_GRPO.format(n=96)], WITH_REF),
    "glue_multitask_ppo_lora": ([PPO_LORA], "actors: rollout reward learner critic"),
    "mixed_rewards": ([QA_GRPO.format(n=32)], WITH_REF),
    "qnli_grpo_lora": (["grpo (grpo); K=4 T=0.8 top-p 0.9 max 16 tokens; KL k3 x 0.04 in the loss vs phase_start "
                        "(adapters_off)"], "actors: rollout reward learner"),
    "qnli_ppo_lora": ([PPO_LORA], "actors: rollout reward learner critic"),
    "qnli_sft": (["sft (sft)"], "actors: rollout reward learner"),
    "report_xquad_en": (["sft (sft)", QA_GRPO.format(n=64)], WITH_REF),
    "report_xquad_en_4x": (["sft (sft)", QA_GRPO.format(n=64)], WITH_REF),
    "smoke": ([QA_GRPO.format(n=32)], WITH_REF),
    "xquad_en_grpo": ([QA_GRPO.format(n=64)], WITH_REF),
    "xquad_en_sft_grpo": (["sft (sft)", QA_GRPO.format(n=64)], WITH_REF),
    # multi-turn: every sampled phase's samples are turns with the tools, which get actors of their own
    "xquad_en_search_grpo": (["grpo (grpo); K=4 T=0.8 top-p 0.9 max 64 tokens a turn, <= 3 turns with search, <= 768 "
                              "tokens; KL k3 x 0.04 in the loss vs phase_start (reference_actor)"], WITH_REF + " tools"),
    "reasoning_gym_grpo": (["sft (sft)", "grpo (grpo); K=4 T=1 top-p 0.9 max 48 tokens; KL k3 x 0.04 in the loss vs "
                            "phase_start (reference_actor)"], WITH_REF),
    "mlqa_sft_dpo": (["sft (sft)", "dpo (dpo); K=4 T=0.8 top-p 0.9 max 64 tokens; sigmoid loss; KL k1 x 0.1 in the "
                                   "preference vs phase_start (reference_actor)"], WITH_REF),
}


def test_the_table_covers_every_preset():
    assert sorted(TABLE) == sorted(p.stem for p in CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("preset", sorted(TABLE))
@pytest.mark.parametrize("precision,old", [("fp32", "engine"), ("bf16", "learner")])
def test_every_preset_plan(preset, precision, old):
    rows, actors = TABLE[preset]
    plan = make_plan(load_config(str(CONFIGS / f"{preset}.yaml"), []))
    assert [p.old_logprobs for p in plan.phases] == [("auto" if p.algo else None) for p in plan.phases]
    measured = plan.with_precisions({"learner": precision, "engines": [precision],
                                     **{r: precision for r in ("reference", "critic") if plan.has(r)}})
    want = [row if row.startswith(("sft", "rs_sft", "dpo")) else
            f"{row}; old logprobs: {old}" + (", TIS cap 2" if old == "learner" else "") for row in rows]
    got = measured.describe()
    assert got[:-1] == want
    assert got[-1].startswith(actors + "; precision: ")
    assert measured.sync_precision == precision


def test_one_bf16_engine_makes_the_ratio_the_learners():
    plan = make_plan(load_config(str(CONFIGS / "smoke.yaml"), [])).with_precisions(
        {"learner": "fp32", "engines": ["fp32", "bf16"], "reference": "fp32"})
    assert plan.phases[0].old_logprobs == "learner" and plan.sync_precision == "bf16"
    assert plan.precision["engines"] == "bf16/fp32"


@pytest.mark.parametrize("overrides,old", [
    (["train.overlap=true"], "learner"),      # stale samples: the decoupled correction (proximal ratio + TIS), even fp32
    (["train.max_staleness=2"], "learner"),
    (["train.max_staleness=2", "algo.old_logprobs=engine"], "engine"),  # asked: the ratio against the sampler's
    (["algo.old_logprobs=engine"], "engine"),
    (["algo.old_logprobs=learner"], "learner"),
])
def test_old_logprobs_asked_or_forced_by_staleness(overrides, old):
    plan = make_plan(load_config(str(CONFIGS / "smoke.yaml"), overrides))
    assert plan.phases[0].old_logprobs == old  # decided before any actor: precision cannot change it
    assert plan.with_precisions({"learner": "bf16", "engines": ["bf16"]}).phases[0].old_logprobs == old
    assert plan.with_precisions({"learner": "fp32", "engines": ["fp32"]}).phases[0].old_logprobs == old


@pytest.mark.parametrize("overrides,kl,served,roles", [
    (["algo.kl_kind=full"], "full", "learner_copy", ("rollout", "reward", "learner")),
    (["algo.beta=0"], "none", "none", ("rollout", "reward", "learner")),
    (["algo.kl_kind=k1"], "k1", "reference_actor", ("rollout", "reward", "learner", "reference")),
    (["learner.lora={rank: 8}"], "k3", "adapters_off", ("rollout", "reward", "learner")),
    (["retrieval.enabled=true"], "k3", "reference_actor", ("rollout", "reward", "learner", "reference", "retrieval")),
])
def test_where_the_kl_is_computed_decides_the_actors(overrides, kl, served, roles):
    plan = make_plan(load_config(str(CONFIGS / "smoke.yaml"), overrides))
    p = plan.phases[0]
    assert (p.kl.kind, p.kl.served_by, plan.roles) == (kl, served, roles)
    assert p.algo.beta == (0.0 if kl == "none" else 0.04) and p.algo.kl_kind == kl


def test_ppo_kl_is_in_the_rewards_not_the_loss():
    plan = make_plan(load_config(str(CONFIGS / "qnli_ppo_lora.yaml"), []))
    p = plan.phases[0]
    assert (p.kl.where, p.kl.coef, p.algo.beta, p.algo.kl_kind) == ("reward", 0.05, 0.0, "none")
    off = make_plan(load_config(str(CONFIGS / "qnli_ppo_lora.yaml"), ["train.phases.0.kl_coef=0"]))
    assert off.phases[0].kl.kind == "none" and not off.phases[0].kl.sampled


def test_a_phase_reference_and_a_per_phase_algo():
    cfg = load_config(None, ["train.phases=[{kind: grpo, steps: 1, reference: initial}, "
                             "{kind: grpo, steps: 1, algo: {beta: 0.1, kl_kind: k2}}]"])
    a, b = make_plan(cfg).phases
    assert (a.kl.reference, a.kl.coef, a.kl.kind) == ("initial", 0.04, "k3")
    assert (b.kl.reference, b.kl.coef, b.kl.kind, b.name) == ("phase_start", 0.1, "k2", "grpo2")


@pytest.mark.parametrize("overrides, selection, agg, row", [
    ([], dict(advantage="grpo", dynamic_rounds=1, overlong="keep"), "token-mean", None),  # today's GRPO, no row
    (["algo.advantage=dr_grpo"], dict(advantage="dr_grpo"), "seq-mean-token-sum-norm", "advantage dr_grpo"),
    (["algo.advantage=dr_grpo", "algo.loss_agg=token-mean"], dict(advantage="dr_grpo"), "token-mean",
     "advantage dr_grpo"),                                                    # an explicit aggregation wins
    (["algo.advantage=rloo"], dict(advantage="rloo"), "token-mean", "advantage rloo"),
    (["algo.dynamic_sampling=true", "algo.max_rounds=3"], dict(dynamic_rounds=3), "token-mean",
     "dynamic sampling <= 3 rounds"),
    (["algo.overlong=soft"], dict(overlong="soft", overlong_buffer=16), "token-mean",
     "overlong soft (last 16 tokens, -1)"),                                   # a quarter of 64 new tokens
    (["algo.overlong=mask", "algo.skip_solved=2"], dict(overlong="mask", skip_solved=2), "token-mean",
     "overlong mask, pool skips solved x2, failed x0"),
])
def test_what_a_grpo_step_learns_from_is_planned_once(overrides, selection, agg, row):
    plan = make_plan(load_config(None, overrides))
    p = plan.phases[0]
    assert {k: getattr(p.selection, k) for k in selection} == selection and p.algo.loss_agg == agg
    assert (row in p.describe()) if row else p.describe().count(";") == 3


@pytest.mark.parametrize("overrides, message", [
    (["train.phases=[{kind: ppo, steps: 2}]", "algo.dynamic_sampling=true"], "GRPO's"),
    (["algo.overlong=soft", "algo.overlong_buffer=100", "rollout.max_new_tokens=64"], "exceeds max_new_tokens"),
    (["algo.solved_at=0", "algo.failed_at=0"], "must be below"),
    (["algo.adv_scale=none"], "algo.advantage"),
    (["train.phases=[{kind: grpo, steps: 2, algo: {adv_scale: none}}]"], "mean_only"),
])
def test_selection_settings_that_cannot_work_name_the_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)
