"""Train a pairwise reward model from the policy's own samples, ordered by the task's rule reward.

    python jobs/reward_model.py --config jobs/configs/qnli_grpo_lora.yaml --out runs/rm-qnli [--prompts 256]

1. sample K completions per training prompt (and per held-out eval prompt) from the policy with the rollout
   engine of the config;
2. score them with the task's rule reward; within a prompt, every completion with a higher reward is "chosen"
   over every lower one (at most --pairs-per-prompt pairs a prompt; equal rewards make no pair);
3. fine-tune an HF sequence-classification model (default: the packaged all-MiniLM-L6-v2, a BERT, with a new
   scalar head) with the Bradley-Terry loss; report pair accuracy on the held-out prompts' pairs;
4. save the model folder (use it as `{name: reward_model, params: {path: <out>}}`) and rm_report.json.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="a preset whose task, policy and rule reward are used")
    p.add_argument("--out", required=True, help="folder for the reward model")
    p.add_argument("--backbone", help="HF sequence-classification base (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--prompts", type=int, default=256, help="training prompts to sample for")
    p.add_argument("--eval-prompts", type=int, default=64, help="held-out (eval split) prompts for pair accuracy")
    p.add_argument("--samples", type=int, default=4, help="completions per prompt")
    p.add_argument("--pairs-per-prompt", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inprocess", action="store_true", help="no Ray: the engine in this process")
    p.add_argument("--verbose", action="store_true", help="engine and library logs on the console (else <out>/logs/)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    return p.parse_args(argv)


def make_pairs(prompts: list[str], texts: list[str], rewards: list[float], k: int, per_prompt: int,
               rng: random.Random) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) from k samples per prompt (group-contiguous): chosen has the higher rule
    reward; identical texts and equal rewards make no pair.

    >>> make_pairs(["p"], ["a", "b", "c"], [1.0, 0.0, 0.0], 3, 4, random.Random(0))
    [('p', 'a', 'b'), ('p', 'a', 'c')]
    """
    out = []
    for q, prompt in enumerate(prompts):
        group = list(zip(texts[q * k:(q + 1) * k], rewards[q * k:(q + 1) * k]))
        pairs = [(prompt, a, b) for a, ra in group for b, rb in group if ra > rb and a != b]
        out += rng.sample(pairs, per_prompt) if len(pairs) > per_prompt else pairs
    return out


def sample(cfg, task, group, split: str, n: int, k: int) -> tuple[list[str], list[str], list[float]]:
    """(prompt texts [n], completions [n*k], rule rewards [n*k]) for the first n prompts of a split."""
    from cluster.groups import get
    from rewards.registry import RewardScorer
    from rollout.engine import Engine
    from tasks.registry import reward_components

    examples = task.splits[split][:n]
    if "prompt" not in task.reward_inputs(examples[0]):
        raise SystemExit(f"error: task {task.name!r} gives its rewards no 'prompt' field; a reward model needs it")
    inputs = [task.reward_inputs(ex) for ex in examples]
    r = cfg.rollout
    rollout = get(group.call(Engine.generate, task.prompts(split)[:n], k, r.temperature, r.top_p, r.max_new_tokens,
                             r.seed))
    scorer = RewardScorer(reward_components(cfg))
    rewards, _ = scorer.score(rollout.texts, [len(c) for c in rollout.completion_ids],
                              [inputs[i // k] for i in range(len(rollout.texts))])
    return [x["prompt"] for x in inputs], rollout.texts, rewards


def task_policy(cfg) -> str:
    from common.models import resolve_model

    return resolve_model(cfg.model.policy, cfg.model.cache_dir)


def train(pairs, held_out, args) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from learner.losses import bradley_terry_loss
    from learner.optim import accumulate, make_optimizer
    from rewards.reward_model import forward_scores

    if args.backbone:
        backbone = args.backbone
    else:
        from retrieval.encoder import packaged_encoder_dir

        backbone = packaged_encoder_dir()
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1)
    tok = AutoTokenizer.from_pretrained(backbone)
    steps = args.epochs * -(-len(pairs) // args.batch_size)
    # torch's AdamW defaults (weight decay 0.01), a constant lr and no clipping, as this job always trained
    opt, sched = make_optimizer(model.parameters(), "adamw_foreach", args.lr, steps, weight_decay=0.01)
    rng = random.Random(args.seed)

    def loss_of(rows) -> tuple:
        """(Bradley-Terry loss, metrics, weight) of (prompt, chosen, rejected) rows."""
        c = forward_scores(model, tok, [p for p, _, _ in rows], [a for _, a, _ in rows], args.max_length)
        r = forward_scores(model, tok, [p for p, _, _ in rows], [b for _, _, b in rows], args.max_length)
        return (*bradley_terry_loss(c, r), 1.0)

    def evaluate(rows) -> dict:
        if not rows:  # e.g. every held-out prompt's samples tied
            return {}
        model.eval()
        with torch.no_grad():
            return loss_of(rows)[1]

    history = []
    for epoch in range(args.epochs):
        order = list(pairs)
        rng.shuffle(order)
        for i in range(0, len(order), args.batch_size):  # one micro-batch a step
            accumulate(model, opt, sched, [order[i:i + args.batch_size]], loss_of)
        history.append({"epoch": epoch + 1, **{f"held_out_{k}": v for k, v in evaluate(held_out).items()}})
        print(f"[rm] epoch {epoch + 1}: {history[-1]}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    return {"backbone": backbone, "history": history, "train": evaluate(pairs[:512])}


def run(args, fleet=None) -> dict:
    """Sample, pair, train, report (rm_report.json in --out); the engines of `fleet` (a Fleet or a FleetPool:
    cluster/fleet.py) where given, else of a fleet of its own."""
    from cluster.fleet import Roles, acquire, engines_spec
    from common import console
    from trainer.run import load_job, load_task

    cfg = load_job(args.config, args.overrides)
    _, task = load_task(cfg)
    if logs := console.attach(Path(args.out) / "logs"):
        print(f"[rm] engine and library logs: {logs.parent}", flush=True)
    backend = "inprocess" if args.inprocess else "ray"
    c, policy = cfg.cluster, task_policy(cfg)
    spec = engines_spec(cfg.rollout, policy, c.num_rollout_actors, backend, c.address, c.num_cpus, c.threads)
    t = time.perf_counter()
    fleet, owned = acquire(fleet, spec, Roles(init_path=policy), logs.parent if logs else None)
    try:
        k, rng = args.samples, random.Random(args.seed)
        p_train, x_train, r_train = sample(cfg, task, fleet.rollout, "train", args.prompts, k)
        p_eval, x_eval, r_eval = sample(cfg, task, fleet.rollout, "eval", args.eval_prompts, k)
    finally:
        if owned:
            fleet.close()
    pairs = make_pairs(p_train, x_train, r_train, k, args.pairs_per_prompt, rng)
    held_out = make_pairs(p_eval, x_eval, r_eval, k, args.pairs_per_prompt, rng)
    print(f"[rm] {len(pairs)} training pairs from {len(p_train)} prompts x {k}; {len(held_out)} held-out pairs",
          flush=True)
    if not pairs:
        raise SystemExit("error: every prompt's samples had equal rule rewards, so there is no pair to learn from; "
                         "sample more (--samples) or at a higher temperature (rollout.temperature=...)")
    report = {"config": args.config, "pairs": len(pairs), "held_out_pairs": len(held_out), "samples": k,
              "prompts": len(p_train), **train(pairs, held_out, args), "seconds": time.perf_counter() - t}
    (Path(args.out) / "rm_report.json").write_text(json.dumps(report, indent=1))
    print(f"[rm] wrote {args.out} (held-out pair accuracy "
          f"{report['history'][-1].get('held_out_rm_accuracy', float('nan')):.3f})", flush=True)
    return report


def main(argv=None) -> int:
    from common import console

    args = parse_args(argv)
    console.quiet(args.verbose)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
