"""GRPO (optionally after SFT) for extractive QA on MLQA/XQuAD, on Ray with vLLM rollouts: the MLQA recipe.

Algorithm, per GRPO step (Shao et al. 2024; the MLQA paper's seed hyperparameters are the defaults):
  1. take `prompts_per_step` training questions; each vLLM engine samples K completions per prompt
     (T=0.8, top-p 0.9) and returns the sampled tokens' logprobs (temperature 1, before top-p);
  2. reward actors score each completion with the configured components (default: 0.7 F1 + 0.3 EM under
     the official MLQA rules - 0.001 per token above 64); each component is logged on its own;
  3. the frozen reference returns its logprobs of the same tokens;
  4. advantages = z-score of rewards within each group of K;
  5. the learner minimises the token-level clipped surrogate (ratio against the sampling engine's
     logprobs, eps 0.2) + beta * KL(k3) to the reference, over `inner_steps` updates;
  6. the new weights are broadcast to every engine; the next step's first-update logprob gap between
     learner and engine shows that the sync took effect.
With an `sft` phase first (jobs/configs/xquad_en_sft_grpo.yaml: the paper's SFT then GRPO), GRPO's KL reference
is the SFT model. With retrieval.enabled, the top-k passages of a dense index over all contexts replace the
gold context of the eval questions (and with use_in=train_and_eval, of the training ones).
The phases, eval, best checkpoint and resume are the recipe engine's (trainer/run.py, trainer/phases.py);
every other recipe runs through jobs/train.py.

Run:  python jobs/grpo_mlqa.py --config jobs/configs/smoke.yaml [--local | --inprocess] [key=value ...]
      ray job submit --address http://127.0.0.1:8265 -- python jobs/grpo_mlqa.py --config ...
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from trainer.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(description=__doc__.split("\n")[0], only_task="mlqa"))
