"""docs/recipes.md: the recipes of the method trained on this machine, evaluated on held-out data, reported.

    python bench/recipes.py [--runs runs/recipes] [--only arithmetic,countdown,domain_qa] [--short] [--report-only]

--short keeps arithmetic SFT whole, cuts arithmetic GRPO to 40 of its 100 steps, shrinks Countdown and domain
QA (fewer steps a stage, smaller eval and test sets) and QNLI (512 SFT examples, 20 of 60 GRPO/PPO steps and 10
PPO-RM steps, PPO with 2 epochs, 200 test questions; transfer evals of the SFT and PPO models on 100 questions a
language), and evaluates on the test split only the checkpoints the
comparisons need (no GSM8K), so that everything fits in under two hours on a 2-core CPU; the commands in the
report show exactly what ran.

Steps, each skipped when its output exists (so a stopped run continues where it stopped):
  1. train each preset with jobs/train.py --local (resuming a partial run);
  2. evaluate the checkpoints that matter on the preset's held-out test split with jobs/eval.py (greedy,
     95% bootstrap CIs; domain QA also 3 sampled answers per question for consistency);
  3. write docs/recipes.md and docs/recipes-*.png from the run dirs alone (bench/recipes_report.py).
Every command is appended to <runs>/commands.log.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = "embedded:smollm2-135m-instruct"
XQUAD_LANGS = ("de", "es", "zh", "hi", "ar", "vi")
RM = "rm-qnli"  # the reward model folder under <runs>, written by jobs/reward_model.py before PPO-RM trains
FROM_SFT = "model.policy={runs}/qnli-sft/checkpoints/best"
DS_ARITH = ["train.phases.0.steps=160", "train.prompts_per_step=4", "train.phases.0.lr=2.0e-5",
            "algo.dynamic_sampling=true", "algo.max_rounds=3", "train.eval_every=20", "train.save_every=20"]
# MLQA's 4x budget (report_xquad_en_4x.yaml: SFT one epoch, then 60 GRPO steps x 16 questions) as three runs, so
# that today's GRPO and dynamic sampling start from the same SFT model and are tested on the same 500 questions
MLQA_4X = "report_xquad_en_4x.yaml"
MLQA_GRPO = ["train.phases=[{kind: grpo, steps: 60, prompts_per_step: 16}]",
             "model.policy={runs}/mlqa-sft/checkpoints/sft"]
# Issue 28: three ways to answer XQuAD-en questions at the same training budget and seeds, from the embedded model:
# no context, the top-3 passages of the dense index in the prompt (today's RAG), and the policy searching the index
# itself (Search-R1: SFT on gold search traces first, since the 135M model never calls the tool on its own)
SEARCH_BUDGET = ["data.test_size=500", "data.eval_size=200", "train.eval_every=10", "train.save_every=10",
                 "train.phases=[{kind: sft, epochs: 1, limit: 256, lr: 1.0e-4, batch_size: 8}, "
                 "{kind: grpo, steps: 30, prompts_per_step: 8}]"]
CLOSED_BOOK = 'task.params.template="Answer the question with a short span.\\nQuestion: {question}"'
SEARCH_RAG = ["retrieval.enabled=true", "retrieval.use_in=train_and_eval"]
SEARCH_TIMING = ("data.test_size=500;data.eval_size=200;train.phases=[{{kind: grpo, steps: 3, prompts_per_step: 8}}];"
                 "train.eval_at_start=false;train.eval_every=100;model.policy={runs}/search-{arm}/checkpoints/sft")
# recipe -> runs (name -> preset, or (preset, overrides with {runs} for the runs folder)) and evals (file stem,
# run, checkpoint or None for the base model, eval.py args)
RECIPES = {
    # Issue 35: reasoning-gym's generators and verifiers (task.name: reasoning_gym), GRPO from the embedded model
    "reasoning_gym": {
        "runs": {"rg-grpo": "reasoning_gym_grpo.yaml"},
        "evals": [("test-base", "rg-grpo", None, []), ("test-sft", "rg-grpo", "sft", []),
                  ("test-grpo-best", "rg-grpo", "best", []), ("test-grpo-final", "rg-grpo", "last", [])],
    },
    "arithmetic": {
        "runs": {"arithmetic-sft": "arithmetic_sft.yaml", "arithmetic-grpo": "arithmetic_grpo.yaml"},
        "evals": [("test-base", "arithmetic-sft", None, []),
                  ("test-sft-best", "arithmetic-sft", "best", []), ("test-sft-final", "arithmetic-sft", "last", []),
                  ("test-grpo-best", "arithmetic-grpo", "best", []), ("test-grpo-final", "arithmetic-grpo", "last", []),
                  *[(f"gsm8k-{k}", "arithmetic-sft" if "sft" in k or k == "base" else "arithmetic-grpo",
                     None if k == "base" else "best", ["--split", "gsm8k", "--max-new-tokens", "256", "--limit", "100"])
                    for k in ("base", "sft-best", "grpo-best")]],
    },
    "countdown": {
        "runs": {"countdown-grpo-rs-grpo": "countdown_grpo_rs_grpo.yaml"},
        "evals": [(f"test-{k}", "countdown-grpo-rs-grpo", None if k == "base" else k, [])
                  for k in ("base", "grpo1", "rs_sft", "grpo2", "best")],
    },
    # Issue 18: MLQA SFT -> GRPO, today's GRPO against dynamic sampling (the same SFT start, steps and questions a
    # step), each against SFT on the held-out English test split
    "mlqa_rl": {
        # in order of what the issues ask first: the candidate for the target, DPO (issue 19), then today's GRPO
        "runs": {"mlqa-sft": (MLQA_4X, ["train.phases=[{kind: sft, epochs: 1}]"]),
                 "mlqa-grpo-ds": (MLQA_4X, [*MLQA_GRPO, "algo.dynamic_sampling=true", "algo.max_rounds=3"]),
                 # issue 19: online DPO from the same SFT model, the same sampled answers (60 x 16 questions x K=4)
                 "mlqa-dpo": (MLQA_4X, ["train.phases=[{kind: dpo, steps: 60, prompts_per_step: 16, beta: 0.1, "
                                        "lr: 5.0e-6}]", MLQA_GRPO[1]]),
                 "mlqa-grpo": (MLQA_4X, MLQA_GRPO)},
        "evals": [("test-sft", "mlqa-sft", "sft", []), ("test-grpo-best", "mlqa-grpo", "best", []),
                  ("test-grpo-ds-best", "mlqa-grpo-ds", "best", []), ("test-dpo-best", "mlqa-dpo", "best", [])],
    },
    # Issue 18's "best estimator" arm: today's GRPO with REINFORCE++-baseline advantages (group mean removed, then
    # whitened over the batch's tokens: a group whose answers differ a little gets a small advantage, where GRPO's
    # z-score gives it a full-size one), beside today's z-score GRPO (mlqa-grpo-z: mlqa-grpo would stand for
    # mlqa_rl's arms) from an SFT model of their own, so mlqa_rl's runs need not be there
    "mlqa_estimator": {
        "runs": {"mlqa-sft": (MLQA_4X, ["train.phases=[{kind: sft, epochs: 1}]"]),
                 "mlqa-grpo-rppb": (MLQA_4X, [*MLQA_GRPO, "algo.advantage=reinforce_pp_baseline"]),
                 "mlqa-grpo-z": (MLQA_4X, MLQA_GRPO),
                 # mlqa_rl's notes: the K=4 answers at T 0.8 agree more and more. More exploration at the same
                 # samples: K=8 at T 1.0 on 8 questions a step (60 x 8 x 8 = 3840, as the other arms)
                 "mlqa-grpo-t1k8": (MLQA_4X, ["train.phases=[{kind: grpo, steps: 60, prompts_per_step: 8}]",
                                              MLQA_GRPO[1], "rollout.temperature=1.0", "rollout.group_size=8"])},
        "evals": [("test-sft", "mlqa-sft", "sft", []), ("test-grpo-rppb-best", "mlqa-grpo-rppb", "best", []),
                  ("test-grpo-z-best", "mlqa-grpo-z", "best", []),
                  ("test-grpo-t1k8-best", "mlqa-grpo-t1k8", "best", []),
                  # where each arm ended, whatever validation chose (today's GRPO's best here is its start)
                  *[(f"test-grpo-{a}-final", f"mlqa-grpo-{a}", "last", []) for a in ("rppb", "z", "t1k8")]],
    },
    # Issue 18: QNLI SFT -> GRPO (LoRA) with dynamic sampling, from the nlu recipe's SFT model (trained here if absent)
    "qnli_rl": {
        "runs": {"qnli-sft": "qnli_sft.yaml",
                 "qnli-grpo-ds": ("qnli_grpo_lora.yaml", [FROM_SFT, "algo.dynamic_sampling=true", "algo.max_rounds=3"])},
        "evals": [("test-sft", "qnli-sft", "best", []), ("test-grpo-ds-best", "qnli-grpo-ds", "best", []),
                  ("test-grpo-ds-final", "qnli-grpo-ds", "last", [])],
    },
    # Issue 18: the easy level (3 numbers up to 10, targets up to 30) after a format cold start; every stage's
    # checkpoint on the test split, paired stage against stage
    "countdown_easy": {
        "runs": {"countdown-easy": "countdown_easy_grpo_rs_grpo.yaml"},
        "evals": [(f"test-{k}", "countdown-easy", None if k == "base" else k, [])
                  for k in ("base", "sft", "grpo1", "rs_sft", "grpo2", "best")],
    },
    "domain_qa": {
        "runs": {"domain-qa-sft-grpo": "domain_qa_sft_grpo.yaml"},
        "evals": [(f"test-{k}", "domain-qa-sft-grpo", {"base": None, "grpo-final": "last"}.get(k, k),
                   ["--samples", "3", "--limit", "200"]) for k in ("base", "sft", "best", "grpo-final")],
    },
    # The NLU paper on QNLI built from XQuAD-en: zero-/few-shot, SFT, GRPO, PPO, PPO with a trained reward model
    # (all LoRA rank 16, same splits), then zero-shot transfer of the English-trained models to other languages.
    # Base-model evals use the base model; "best" checkpoints are each run's own.
    "nlu": {
        # The RL runs start from the SFT model: zero-shot, the embedded 135M model never answers in the
        # <Judgement> format, so every reward is -1 and a group has nothing to compare (seen: R -1.000 at every
        # GRPO step from the base model). SFT -> RL with fresh LoRA adapters, the reference the SFT model.
        "runs": {"qnli-sft": "qnli_sft.yaml", "qnli-grpo-lora": ("qnli_grpo_lora.yaml", [FROM_SFT]),
                 "qnli-ppo-lora": ("qnli_ppo_lora.yaml", [FROM_SFT]),
                 # full fine-tuning beside LoRA, for the memory comparison (a reference copy, full optimizer state)
                 "qnli-grpo-full": ("qnli_grpo_lora.yaml", [FROM_SFT, "learner.lora=null", "learner.lr=1.0e-5"]),
                 "qnli-ppo-rm": ("qnli_ppo_lora.yaml", [FROM_SFT, "rewards.components=[{name: reward_model, params: "
                                                        "{path: '{runs}/" + RM + "'}}]"])},
        "evals": [("test-zero-shot", "qnli-sft", None, []),
                  ("test-few-shot-4", "qnli-sft", None, ["task.params.few_shot=4", "rollout.max_prompt_tokens=1024"]),
                  *[(f"test-{m}", f"qnli-{m}", "best", [])
                    for m in ("sft", "grpo-lora", "grpo-full", "ppo-lora", "ppo-rm")],
                  # where RL ended, whatever validation chose (best may be the starting SFT model)
                  *[(f"test-{m}-final", f"qnli-{m}", "last", []) for m in ("grpo-lora", "ppo-lora", "ppo-rm")],
                  *[(f"{lang}-{m}", "qnli-sft" if m in ("base", "sft") else f"qnli-{m}",
                     None if m == "base" else "best", ["--data", f"qnli:xquad:{lang}", "rollout.max_prompt_tokens=1024"])
                    for lang in XQUAD_LANGS for m in ("base", "sft", "grpo-lora", "ppo-lora")]],
    },
    # Issue 18: GRPO that spends its samples where there is a gradient. Arithmetic from the base model and from the
    # SFT model with dynamic sampling, 160 steps (4x the --short GRPO run's 40) of 4 prompts, lr 2e-5; same test split.
    "arithmetic_rl": {
        "runs": {"arithmetic-sft": "arithmetic_sft.yaml",
                 "arithmetic-grpo-ds": ("arithmetic_grpo.yaml", DS_ARITH),
                 "arithmetic-sft-grpo-ds": ("arithmetic_grpo.yaml",
                                            [*DS_ARITH, "train.phases.0.steps=60",
                                             "model.policy={runs}/arithmetic-sft/checkpoints/best"])},
        "evals": [("test-base", "arithmetic-grpo-ds", None, []),
                  ("test-sft-best", "arithmetic-sft", "best", []),
                  ("test-grpo-ds-best", "arithmetic-grpo-ds", "best", []),
                  ("test-sft-grpo-ds-best", "arithmetic-sft-grpo-ds", "best", []),
                  *[(f"gsm8k-{k}", run, ck, ["--split", "gsm8k", "--max-new-tokens", "256", "--limit", "100"])
                    for k, run, ck in (("grpo-ds-best", "arithmetic-grpo-ds", "best"),
                                       ("sft-grpo-ds-best", "arithmetic-sft-grpo-ds", "best"))]],
    },
    "search": {
        "runs": {"search-tool": ("xquad_en_search_grpo.yaml", SEARCH_BUDGET),
                 "search-rag": ("xquad_en_sft_grpo.yaml", [*SEARCH_BUDGET, *SEARCH_RAG]),
                 "search-none": ("xquad_en_sft_grpo.yaml", [*SEARCH_BUDGET, "task.params.context=none", CLOSED_BOOK]),
                 # seconds per GRPO step, measured apart on a quiet machine: 3 steps of each arm from its SFT model
                 **{f"search-{arm}-time": (preset, [*own, *SEARCH_TIMING.format(runs="{runs}", arm=arm).split(";")])
                    for arm, preset, own in (("tool", "xquad_en_search_grpo.yaml", []),
                                             ("rag", "xquad_en_sft_grpo.yaml", SEARCH_RAG),
                                             ("none", "xquad_en_sft_grpo.yaml", ["task.params.context=none",
                                                                                CLOSED_BOOK]))}},
        "evals": [*[(f"test-{k}", f"search-{arm}", {"base": None}.get(k, k), []) for arm in ("tool", "rag", "none")
                    for k in ("sft", "best", "last")],
                  ("test-base", "search-none", None, []), ("test-base", "search-rag", None, [])],
    },
}


# --short: overrides per run, and eval.py --limit per recipe
SHORT = {
    "arithmetic-grpo": ["train.phases.0.steps=40"],
    "countdown-grpo-rs-grpo": ["train.phases.0.steps=10", "train.phases.1.prompts=64", "train.phases.2.steps=10",
                               "train.eval_every=5", "train.save_every=5", "data.eval_size=60"],
    "domain-qa-sft-grpo": ["train.phases.0.limit=128", "train.phases.1.steps=12", "train.eval_every=6",
                           "train.save_every=6", "data.eval_size=40"],
    # QNLI on 2 AVX2 cores: an SFT step is ~5 s, a GRPO step ~20 s, a PPO step (epochs x minibatches of policy and
    # critic updates) ~4x that; --short trains on 512 SFT examples, 20 RL steps, PPO with 2 epochs instead of 4.
    "qnli-sft": ["train.phases.0.limit=512"],
    "qnli-grpo-lora": ["train.phases.0.steps=20"],
    "qnli-ppo-lora": ["train.phases.0.steps=20", "train.phases.0.epochs=2"],
    "qnli-ppo-rm": ["train.phases.0.steps=10", "train.phases.0.epochs=2", "train.eval_every=5"],  # ~100 s a step
    "qnli-grpo-full": ["train.phases.0.steps=3", "train.eval_every=3"],  # memory and s/step only
}
SHORT_EVAL_LIMIT = {"countdown": 100, "domain_qa": 60, "gsm8k": 30, "nlu": 200, "nlu-transfer": 100}
# --short evaluates the checkpoints that carry the comparison only
SHORT_SKIP = {"arithmetic": {"test-sft-final", "test-grpo-final", "gsm8k-base", "gsm8k-sft-best", "gsm8k-grpo-best"},
              "countdown": {"test-grpo1", "test-rs_sft"}, "domain_qa": {"test-sft"},
              # the base model is 0.0 in English (it never answers in the format): its transfer evals are skipped
              # every RL run's best checkpoint was its start, the SFT model: the SFT transfer evals stand for them
              "nlu": {"test-grpo-full", *(f"{lang}-{m}" for lang in XQUAD_LANGS for m in ("grpo-lora", "base",
                                                                                          "ppo-lora"))}}


def sh(cmd: list[str], log: Path) -> None:
    from jobs.experiment import sh as run_logged

    run_logged(cmd, log, tag="recipes")


def train_reward_model(runs: Path, log: Path) -> None:
    """The reward model PPO-RM trains against: pairs of the base policy's own QNLI samples (2-shot prompts), by the
    label reward."""
    if (runs / RM / "rm_report.json").is_file():
        return
    sh([sys.executable, "jobs/reward_model.py", "--config", "jobs/configs/qnli_grpo_lora.yaml", "--out",
        str(runs / RM), "--prompts", "512", "--samples", "4", "rollout.temperature=1.0", "rollout.max_new_tokens=24",
        "task.params.few_shot=2"], log)  # zero-shot, the base model's answers are all cut or unformatted: no pairs


def train(runs: Path, name: str, preset: str, log: Path, overrides: list[str]) -> None:
    run = runs / name
    last = run / "checkpoints" / "last" / "driver_state.json"
    summary = run / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("finished"):
        return
    cmd = [sys.executable, "jobs/train.py", "--config", f"jobs/configs/{preset}", "--local",
           f"train.output_dir={runs}", f"train.run_name={name}", *overrides]
    sh(cmd + (["--resume"] if last.is_file() else []), log)


def evaluate(runs: Path, stem: str, run_name: str, checkpoint: str | None, extra: list[str], log: Path) -> None:
    run = runs / run_name
    out = run / "eval" / f"{stem}.json"
    if out.is_file():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    model = BASE if checkpoint is None else str(run / "checkpoints" / checkpoint)
    split = [] if "--split" in extra else ["--split", "test"]
    sh([sys.executable, "jobs/eval.py", "--model", model, "--run", str(run), *split, *extra, "--out", str(out)], log)


def shorten(extra: list[str], limit: int | None) -> list[str]:
    if limit is None:
        return extra
    if "--limit" in extra:
        i = extra.index("--limit")
        return [*extra[:i], "--limit", str(limit), *extra[i + 2:]]
    return [*extra, "--limit", str(limit)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="runs/recipes", help="where the recipe runs live")
    p.add_argument("--only", default="arithmetic,countdown,domain_qa",
                   help="comma-separated recipes (also: nlu, arithmetic_rl, countdown_easy, mlqa_rl, mlqa_estimator, "
                        "qnli_rl, search)")
    p.add_argument("--short", action="store_true", help="shrink Countdown and domain QA to fit ~2 h (see above)")
    p.add_argument("--report-only", action="store_true", help="write the report from what exists")
    p.add_argument("--out", default=str(ROOT / "docs" / "recipes.md"))
    args = p.parse_args(argv)
    runs = Path(args.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / "commands.log"
    for recipe in args.only.split(","):
        spec = RECIPES[recipe]
        if args.report_only:
            continue
        if recipe == "nlu":
            train_reward_model(runs, log)
        # each run's evals right after it trains, so a long recipe stopped part-way has its finished runs tested
        for name, preset in spec["runs"].items():
            preset, own = preset if isinstance(preset, tuple) else (preset, [])
            own = [o.replace("{runs}", str(runs)) for o in own]
            train(runs, name, preset, log, own + (SHORT.get(name, []) if args.short else []))
            for stem, run_name, checkpoint, extra in spec["evals"]:
                if run_name != name or (args.short and stem in SHORT_SKIP.get(recipe, ())):
                    continue
                if args.short:
                    kind = "gsm8k" if "gsm8k" in extra else "nlu-transfer" if "--data" in extra else recipe
                    extra = shorten(extra, SHORT_EVAL_LIMIT.get(kind))
                evaluate(runs, stem, run_name, checkpoint, extra, log)
    from bench.recipes_report import write_report

    write_report(runs, Path(args.out), "python bench/recipes.py --runs " + runs.name + " --short" * args.short)
    return 0


if __name__ == "__main__":
    sys.exit(main())
