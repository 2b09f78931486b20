"""GRPO (optionally after SFT) for extractive QA on MLQA/XQuAD, on Ray with vLLM rollouts.

Algorithm, per step (Shao et al. 2024, GRPO; the MLQA paper's seed hyperparameters are the defaults):
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
With retrieval.enabled, the top-k passages of a dense index over all contexts replace the gold context of
the eval questions (and with use_in=train_and_eval, of the training ones), retrieved once at the start.
Deliberate simplifications: the policy optimised is the temperature-1 model (the sampling temperature
only shapes exploration, as in OpenRLHF); top-p truncation is not corrected for in the ratio.

Run:  python jobs/grpo_mlqa.py --config jobs/configs/smoke.yaml [--local | --inprocess] [key=value ...]
      ray job submit --address http://127.0.0.1:8265 -- python jobs/grpo_mlqa.py --config ...
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from common.config import ConfigError, JobConfig, config_to_dict, load_config  # noqa: E402
from jobs.qa_task import QATask, attach_retrieval, evaluate  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML preset (jobs/configs/*.yaml); defaults are the paper's")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="start a single-node Ray cluster in this process")
    where.add_argument("--inprocess", action="store_true", help="no Ray: plain objects in this process (debug)")
    p.add_argument("--resume", nargs="?", const="auto", help="resume a run dir (default: output_dir/run_name)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.steps=2")
    return p.parse_args(argv)


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        yield
        self.seconds[f"timing/{name}"] = time.perf_counter() - t


def grpo_step(system, task: QATask, step: int, cfg: JobConfig) -> dict:
    import torch

    from common.types import TrainBatch
    from learner.advantages import group_advantages
    from rewards.registry import component_metrics

    timer, G = Timer(), cfg.rollout.group_size
    batch = task.train_batch(step, cfg.train.prompts_per_step)
    with timer("generate"):
        rollout = system.generate(batch.prompt_ids, seed=cfg.rollout.seed + 1000 * step)
    with timer("reward"):
        scored = system.score(rollout, batch.examples)
    with timer("reference"):
        ref = system.ref_logprobs(rollout)
    adv, adv_m = group_advantages(torch.tensor(scored.rewards), G, cfg.algo.adv_scale, cfg.algo.adv_eps)
    with timer("learn"):
        learn_m = system.train(TrainBatch(rollout.prompt_ids, rollout.completion_ids, rollout.old_logprobs,
                                          ref, adv.tolist()))
    with timer("sync"):
        system.sync_weights()
    seconds = sum(timer.seconds.values())
    lens = [len(c) for c in rollout.completion_ids]
    rewards = torch.tensor(scored.rewards)
    return {
        "reward/mean": rewards.mean().item(), "reward/std": rewards.std().item(),
        **{f"reward/{k}": v for k, v in component_metrics(scored.components, G).items()},
        **{f"reward/{k}": v for k, v in adv_m.items()},
        "rollout/len_mean": sum(lens) / len(lens), "rollout/len_max": max(lens),
        "rollout/hit_max_tokens_frac": sum(f == "length" for f in rollout.finish_reasons) / len(lens),
        **{f"learner/{k}": v for k, v in learn_m.items()},
        **timer.seconds, "timing/step": seconds, "perf/samples_per_s": len(lens) / seconds,
        "perf/tokens_per_s_generate": sum(lens) / timer.seconds["timing/generate"],
        "sample/completion": rollout.texts[0][:200], "sample/gold": batch.golds[0][0],
    }


def run(cfg: JobConfig, resume: str | None = None) -> dict:
    from common import checkpoint as ck
    from common.metrics_log import MetricsLog, plot_curves
    from cluster.system import GRPOSystem

    run_name = cfg.train.run_name or time.strftime("grpo-%Y%m%d-%H%M%S")
    run = Path(resume) if resume not in (None, "auto") else Path(cfg.train.output_dir) / run_name
    if not resume and (run / "metrics.jsonl").exists():
        # A fresh run never appends to an old one: the old run dir is kept beside it, renamed.
        run.rename(run.with_name(f"{run.name}.{time.strftime('%Y%m%d-%H%M%S')}"))
    run.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run / "metrics.jsonl", cfg.train.steps)
    task = QATask.from_config(cfg)
    log.info(f"run dir {run.resolve()}", data=task.stats)
    state = {"step": 0, "best_f1": -1.0, "evals_since_best": 0, "phase": "start"}
    ckpt = ck.find_resumable(run) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {run}/checkpoints; start without --resume")
    if ckpt is not None:
        state = ck.load_driver_state(ckpt)
        log.info(f"resuming from {ckpt} after step {state['step']}")
    (run / "config.yaml").write_text(__import__("yaml").safe_dump(config_to_dict(cfg), sort_keys=False))

    total_updates = cfg.train.steps * cfg.learner.inner_steps
    reference = task.reference_path
    if ckpt is not None and (run / "checkpoints" / "sft" / "config.json").is_file():
        reference = str(run / "checkpoints" / "sft")  # after SFT the reference is the SFT model
    system = GRPOSystem(cfg, task.policy_path, reference, total_updates,
                        learner_init_path=str(ckpt) if ckpt else None)
    if ckpt is not None:
        system.learner_call("load_trainer_state", str(ckpt))
    try:
        if cfg.retrieval.enabled:
            log.info("retrieval: contexts replaced by top-k passages",
                     data=attach_retrieval(system, task, cfg, Path(cfg.train.output_dir)))
        sft = ckpt is None and cfg.train.sft_epochs > 0
        if sft:
            run_sft(system, task, cfg, run, log)
        if ckpt is None and (cfg.train.eval_at_start or sft):
            maybe_best(system, task, cfg, run, log, state, 0, phase="sft" if sft else "base")
        for step in range(state["step"] + 1, cfg.train.steps + 1):
            metrics = grpo_step(system, task, step, cfg)
            log.step(step, metrics)
            state.update(step=step, phase="grpo", data_position=step * cfg.train.prompts_per_step)
            stop = False
            if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
                stop = maybe_best(system, task, cfg, run, log, state, step)
            if step % cfg.train.save_every == 0 or step == cfg.train.steps or stop:
                ck.atomic_checkpoint(run / "checkpoints" / "last",
                                     lambda p: system.learner_call("save", str(p), True), state)
            if stop:
                log.info(f"early stop: {cfg.train.patience} evals without a better F1")
                break
    except BaseException as err:
        last = ck.find_resumable(run)
        where = f"the last checkpoint ({last}, after step {ck.load_driver_state(last)['step']})" if last else \
            "no checkpoint yet"
        log.info(f"stopped by {type(err).__name__}: {err}; {where} is intact: rerun the same command with "
                 f"train.run_name={run.name} --resume")
        raise
    finally:
        system.shutdown()
    png = plot_curves(run / "metrics.jsonl", run / "curves.png", title=run.name)
    summary = {"run_dir": str(run.resolve()), "best_f1": state["best_f1"], "steps": state["step"],
               "curves": str(png.resolve()), "metrics": str((run / "metrics.jsonl").resolve()),
               "best_checkpoint": str((run / "checkpoints" / "best").resolve()),
               "last_checkpoint": str((run / "checkpoints" / "last").resolve())}
    (run / "summary.json").write_text(__import__("json").dumps(summary, indent=1))
    for k, v in summary.items():
        print(f"{k}: {v}")
    return summary


def maybe_best(system, task, cfg, run, log, state, step, phase="grpo") -> bool:
    """Evaluate; keep the best checkpoint by F1; return True when patience is exhausted."""
    from common import checkpoint as ck

    m = evaluate(system, task, cfg)
    log.eval(step, {**m, "phase": phase})
    if m["eval/f1"] > state["best_f1"]:
        state["best_f1"], state["evals_since_best"] = m["eval/f1"], 0
        ck.atomic_checkpoint(run / "checkpoints" / "best",
                             lambda p: system.learner_call("save", str(p), False), {**state, "eval": m})
    else:
        state["evals_since_best"] += 1
    return cfg.train.patience is not None and state["evals_since_best"] >= cfg.train.patience


def run_sft(system, task: QATask, cfg: JobConfig, run: Path, log) -> None:
    """Supervised fine-tuning on gold answers (the paper: 3 epochs, lr 5e-5, batch 8), then a fresh
    optimizer for GRPO, a weight sync, and the reference reset to the SFT model."""
    from common import checkpoint as ck

    t, L = cfg.train, cfg.learner
    n = len(task.train) if t.sft_limit is None else min(t.sft_limit, len(task.train))
    steps = max(1, math.ceil(t.sft_epochs * n / t.sft_batch_size))
    system.learner_call("reset_optimizer", t.sft_lr, steps, L.warmup_ratio, L.schedule, L.weight_decay)
    log.info(f"SFT: {steps} steps of {t.sft_batch_size} on {n} questions")
    for s in range(steps):
        prompts, targets = task.sft_batch(s, t.sft_batch_size, n)
        m = system.learner_call("sft_step", prompts, targets)
        log.write({"kind": "sft", "step": s, **m})
        print(f"[sft {s + 1}/{steps}] loss {m['sft/loss']:.4f}", flush=True)
    system.learner_call("reset_optimizer", L.lr, t.steps * L.inner_steps, L.warmup_ratio, L.schedule,
                        L.weight_decay)
    system.sync_weights()
    sft_dir = ck.atomic_checkpoint(run / "checkpoints" / "sft", lambda p: system.learner_call("save", str(p), False))
    if system.reference is not None:
        from cluster.groups import get

        get(system.reference.call("reload", str(sft_dir)))


def check_rewards(cfg: JobConfig) -> None:
    """Every configured reward must find its inputs among the fields this QA job provides."""
    from jobs.qa_task import REWARD_FIELDS
    from rewards.registry import missing_fields

    for comp in cfg.rewards.components:
        missing = missing_fields(comp.name, REWARD_FIELDS)
        if missing:
            raise ConfigError(f"reward '{comp.name}' reads example fields {missing}, which this extractive-QA job "
                              f"does not provide (it provides {sorted(REWARD_FIELDS)}); use qa, similarity or "
                              "repetition here, or a job whose task provides those fields")


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.local:
        overrides.append("cluster.backend=ray")
    if args.inprocess:
        overrides.append("cluster.backend=inprocess")
    try:
        cfg = load_config(args.config, overrides)
        check_rewards(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
