"""The trainer reads each phase's decisions from the run plan (common/plan.py), so a phase's own override is what
the run does and what its log says (issue 30)."""
from common.config import load_config
from common.plan import make_plan
from trainer.run import ratio_denominator


def plan_of(*overrides, precision="bf16"):
    plan = make_plan(load_config(overrides=list(overrides)))
    return plan.with_precisions({"learner": precision, "engines": [precision], "reference": precision})


def test_the_precision_line_shows_a_phases_own_tis_cap():
    # the top-level algo.tis_cap is 2.0; the phase's 5.0 is what its learner uses, and what the line says
    assert ratio_denominator(plan_of("train.phases.0.algo.tis_cap=5.0")) == \
        "the learner's own (TIS against the engine's, cap 5)"
    two = plan_of("train.phases=[{kind: grpo, steps: 1}, {kind: grpo, steps: 1, algo: {tis_cap: 3.0}}]")
    assert ratio_denominator(two) == ("grpo1: the learner's own (TIS against the engine's, cap 2); "
                                      "grpo2: the learner's own (TIS against the engine's, cap 3)")
    assert ratio_denominator(plan_of(precision="fp32")) == "the engine's"
    assert ratio_denominator(plan_of("train.phases=[{kind: sft, steps: 1}]")) == "none (no RL phase)"


def test_each_phase_carries_its_resolved_schedule():
    plan = make_plan(load_config(overrides=[
        "learner.lr=2e-5", "learner.inner_steps=2", "train.prompts_per_step=6", "train.eval_every=7",
        "train.phases=[{kind: sft, steps: 3, lr: 1e-4}, {kind: grpo, steps: 5}, "
        "{kind: grpo, steps: 4, lr: 3e-6, prompts_per_step: 2, eval_every: 2, patience: 1}, {kind: dpo}]"]))
    sft, g1, g2, dpo = plan.phases
    assert (sft.lr, sft.steps, sft.eval_every, sft.prompts_per_step) == (1e-4, 3, None, None)
    assert (g1.lr, g1.steps, g1.inner_steps, g1.prompts_per_step, g1.eval_every) == (2e-5, 5, 2, 6, 7)
    assert (g2.lr, g2.steps, g2.prompts_per_step, g2.eval_every, g2.patience) == (3e-6, 4, 2, 2, 1)
    assert (dpo.lr, dpo.steps, dpo.prompts_per_step) == (2e-5, 100, 6)  # online DPO: 100 steps unless told
    assert dpo.dpo.beta == dpo.kl.coef  # one beta: the preference's KL coefficient
