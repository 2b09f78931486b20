"""The optimizer, its learning-rate schedule and one optimizer step over micro-batches, written once for every
trainable model: the policy's GRPO/PPO and SFT steps (learner/policy.py), the PPO critic (learner/critic.py) and
the reward model (jobs/reward_model.py). Each caller keeps only its loss: a function from one micro-batch to
(loss, metrics, weight).

One module, not an optimizer module and a loop module: the step is the only code that steps an optimizer and its
schedule, and the two are built and stepped together, so what a step does (zero, accumulate, clip, step, schedule)
reads in one place.

Conventions of `accumulate`:
- It adds gradients and never scales a loss. Each micro-batch's loss is already its term of the batch's loss, its
  denominator the whole batch's (the policy: losses.batch_denominator passed as global_denominator; SFT the same
  with the batch's target count; the critic: each chunk's token mean times its share of the batch's tokens), so
  the accumulated gradient is the full batch's whatever the cut (tests/learner/test_policy.py).
- Metrics are sum(weight x value) / total_weight over the micro-batches, total_weight the batch's, known before
  the first micro-batch like the loss's denominator (tokens for the policy; 1 where the weights are shares or
  the metric is the batch's sum); keys ending in `_max` take the maximum over the micro-batches instead.
- The gradient norm is clipped over the optimizer's parameters, the ones the step moves (grad_clip None: measured,
  not clipped). The model trains during the step and is left in eval mode (dropout off).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

OPTIMIZERS = ("adamw", "adamw_foreach", "adafactor")  # LearnerConfig.optimizer
MicroBatch = TypeVar("MicroBatch")


def adamw(params, lr: float, weight_decay: float = 0.0, fused: bool = True) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel (CPU and CUDA): one pass over each tensor instead of the foreach
    path's dozen, and without its full-size temporaries. Same update up to rounding (tests/learner/test_policy.py),
    not bit for bit: `fused=False` is torch's multi-tensor (foreach) AdamW, which the pinned regression run uses."""
    params = list(params)
    if fused and all(p.device.type in ("cpu", "cuda") for p in params):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int):
    """The lr multiplier at each step: linear warmup to 1, then constant, cosine or linear decay to 0."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return f


def make_optimizer(params, kind: str, lr: float, total_steps: int, warmup_ratio: float = 0.0,
                   schedule: str = "constant", weight_decay: float = 0.0):
    """(optimizer, LambdaLR schedule) over `params`: kind 'adamw' (fused), 'adamw_foreach' or 'adafactor', warmup
    over round(warmup_ratio x total_steps) steps."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; allowed values: {', '.join(OPTIMIZERS)}")
    if kind == "adafactor":  # the NLU paper's PPO optimizer: factored second moments, less memory
        opt = torch.optim.Adafactor(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = adamw(params, lr=lr, weight_decay=weight_decay, fused=kind == "adamw")
    warmup = int(round(warmup_ratio * total_steps))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(schedule, warmup, total_steps))


def accumulate(model: torch.nn.Module, opt: torch.optim.Optimizer, sched, micro_batches: Iterable[MicroBatch],
               loss_fn: Callable[[MicroBatch], tuple[torch.Tensor, dict[str, float], float]],
               grad_clip: float | None = None, total_weight: float = 1.0, dp=None,
               dummy: Callable[[], torch.Tensor] | None = None) -> dict[str, float]:
    """One optimizer step over `micro_batches` (see the module docstring): `loss_fn(micro_batch)` gives (loss, its
    term of the batch's loss; metrics; weight, its weight in the metrics' means). Returns the metrics and
    "grad_norm" (before clipping), "lr" (after the schedule's step). With `dp` (learner workers,
    learner/distributed.py) the micro-batches are this worker's share of the batch: gradients and metric sums are
    summed over the workers before the clip and the step, and `total_weight` is the whole batch's. Sharded workers
    (FSDP, learner/fsdp.py) reduce gradients in the backward passes themselves, and must run as many passes as each
    other: a worker with fewer micro-batches runs `dummy()` passes (a loss of 0 whose backward runs) to match."""
    model.train()
    opt.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    sharded = dp is not None and dp.sharded
    items = list(micro_batches) if sharded else micro_batches
    # agreed before any pass: a worker waiting in this all-reduce while another is in a pass would hang both
    lockstep = dp.max_count(len(items)) - len(items) if sharded else 0
    for micro_batch in items:
        loss, metrics, weight = loss_fn(micro_batch)
        loss.backward()
        for k, v in metrics.items():
            sums[k] = max(sums.get(k, v), v) if k.endswith("_max") else sums.get(k, 0.0) + v * weight
    for _ in range(lockstep):
        dummy().backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    if dp is not None:  # learner workers (learner/distributed.py): the batch's gradient and metric sums
        if not sharded:
            dp.reduce_grads(params)
        sums = dp.reduce_metrics(sums)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, math.inf if grad_clip is None else grad_clip)
    if hasattr(grad_norm, "full_tensor"):  # sharded gradients: the norm over the whole model
        grad_norm = grad_norm.full_tensor()
    opt.step()
    sched.step()
    model.eval()
    out = {k: v if k.endswith("_max") else v / total_weight for k, v in sums.items()}
    return {**out, "grad_norm": float(grad_norm), "lr": sched.get_last_lr()[0]}
