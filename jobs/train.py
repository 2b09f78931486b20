"""Run any recipe: a task and a list of phases (sft | grpo | rs_sft | ppo) from a preset, on Ray with vLLM rollouts.

The recipes of the method (docs/recipes.md) are presets in jobs/configs/, among them:
  xquad_en_sft_grpo.yaml     extractive QA, SFT -> GRPO (the MLQA paper; jobs/grpo_mlqa.py runs it too)
  arithmetic_sft.yaml        integer arithmetic, SFT (the SFT-vs-GRPO arithmetic paper)
  arithmetic_grpo.yaml       integer arithmetic, GRPO (same paper)
  countdown_grpo_rs_grpo.yaml  Countdown, GRPO -> rejection-sampled SFT -> GRPO (the multi-stage paper)
  domain_qa_sft_grpo.yaml    long-form domain QA, SFT -> GRPO with similarity and repetition rewards
  qnli_ppo_lora.yaml         QNLI labels, PPO with a critic and LoRA (the NLU paper); qnli_grpo_lora.yaml beside it

Run:  python jobs/train.py --config jobs/configs/arithmetic_grpo.yaml [--local | --inprocess] [key=value ...]
      ray job submit --address http://127.0.0.1:8265 -- python jobs/train.py --config ...
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from trainer.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(description=__doc__.split("\n")[0]))
