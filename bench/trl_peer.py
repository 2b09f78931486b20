"""The peer: TRL's GRPOTrainer (CPU, no vLLM) on our benchmark's exact workload, timed per step.

Same model (the embedded policy's HF folder), same prompts (our task's first training prompts, in order, as the
chat-templated text our engines see), same reward (our RewardScorer with the config's components), same K, prompts
per step, max new tokens, temperature, top-p, lr, beta and clip. Prints `RESULT {json}` with each step's seconds.
Needs the `bench` extra (a pinned TRL): pip install -e ".[bench]".

    python bench/trl_peer.py --steps 4 [--config jobs/configs/smoke.yaml] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--config", default=str(ROOT / "jobs" / "configs" / "smoke.yaml"))
    p.add_argument("--out-dir", default="/tmp/raygrpo-trl-peer")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)

    from common import console

    console.quiet()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from trainer.run import load_job, load_task
    from rewards.registry import RewardScorer
    from tasks.registry import reward_components

    cfg = load_job(args.config, args.overrides)
    policy_path, task = load_task(cfg)
    r, per_step = cfg.rollout, cfg.train.prompts_per_step
    batch = task.train_batch(0, per_step * args.steps)
    tok = task.tokenizer
    texts = [tok.decode(ids, skip_special_tokens=False) for ids in batch.prompt_ids]
    data = Dataset.from_dict({"prompt": texts, "example": [json.dumps(x) for x in batch.reward_inputs]})
    scorer = RewardScorer(reward_components(cfg))

    def reward(prompts, completions, completion_ids=None, example=None, **_):
        n = [len(c) for c in completion_ids] if completion_ids is not None else [len(tok(c).input_ids) for c in completions]
        return scorer.score(list(completions), n, [json.loads(e) for e in example])[0]

    torch.set_num_threads(int(os.environ.get("RAYGRPO_THREADS", os.cpu_count() or 1)))
    model = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32)
    a = cfg.algo
    conf = GRPOConfig(
        output_dir=args.out_dir, use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no",
        logging_steps=1, max_steps=args.steps, learning_rate=cfg.learner.lr, lr_scheduler_type="constant",
        warmup_steps=0, per_device_train_batch_size=per_step * r.group_size, gradient_accumulation_steps=1,
        num_generations=r.group_size, max_completion_length=r.max_new_tokens, temperature=r.temperature,
        top_p=r.top_p, beta=a.beta, epsilon=a.clip_eps, shuffle_dataset=False, seed=cfg.rollout.seed,
        dataloader_num_workers=0, disable_dropout=True, num_iterations=1)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.t)
            print(f"[trl] step {len(times)}/{args.steps}: {times[-1]:.1f} s", flush=True)

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=conf, train_dataset=data, processing_class=tok,
                          callbacks=[Timer()])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    lens = [h.get("completions/mean_length") for h in logs]
    print("RESULT " + json.dumps({"step_s": times, "samples_per_step": per_step * r.group_size,
                                  "reward": [h["reward"] for h in logs], "completion_len": lens,
                                  "trl": __import__("trl").__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
