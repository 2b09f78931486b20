"""Group-relative advantages for GRPO.

Glossary: B sequences, G group size (completions per prompt), T completion tokens, V vocab.
Rewards arrive group-contiguous: B = num_prompts * G, and rewards[k*G:(k+1)*G] are the G completions of prompt k.

Conventions (see docs and reference/grpo-test-vectors.md):
- scale="std" is the GRPO z-score (r - mean) / (std + eps). The defaults, std_ddof=1 and eps=1e-4, are TRL's;
  verl uses eps=1e-6, some reference repos use std_ddof=0 with eps=1e-8.
- scale="none" is Dr.GRPO (arXiv 2503.20783): mean-centring only, because dividing by the group std up-weights
  prompts that are nearly always solved or nearly always failed.
- A group whose rewards are all equal carries no learning signal; its advantages are set to exactly 0 instead
  of (r - mean(r)) / eps, which float rounding of the mean would make ~1e-4 rather than 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCALES = ("std", "none")


def group_advantages(
    rewards: Tensor,
    group_size: int,
    scale: str = "std",
    eps: float = 1e-4,
    std_ddof: int = 1,
) -> tuple[Tensor, dict[str, float]]:
    """Advantage of each completion relative to the other completions of its prompt.

    Args:
        rewards: [B] scalar reward per completion, group-contiguous (B = num_prompts * group_size).
        group_size: G, completions per prompt.
        scale: "std" (z-score within the group) or "none" (mean-centring only, Dr.GRPO).
        eps: added to the group std before dividing (scale="std" only).
        std_ddof: delta degrees of freedom of the group std: 1 = unbiased (TRL, verl), 0 = population.

    Returns:
        advantages: [B], float32 (float64 if rewards are float64). Rewards are data, so callers pass
            them without gradient.
        metrics: "zero_std_group_frac" (fraction of groups whose rewards are all equal) and
            "adv_abs_mean" (mean |advantage| over the batch), as python floats.

    Example (TRL row of the test vectors):
        >>> adv, _ = group_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), group_size=4)
        >>> [round(a, 4) for a in adv.tolist()]
        [1.2244, -1.2244, 0.0, 0.0]
    """
    _check_args(rewards, group_size, scale, eps, std_ddof)
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    grouped = r.view(-1, group_size)  # [B/G, G]
    mean = grouped.mean(dim=1, keepdim=True)  # [B/G, 1]
    centered = grouped - mean  # [B/G, G]
    if scale == "std":
        std = grouped.std(dim=1, correction=std_ddof, keepdim=True)  # [B/G, 1]
        scaled = centered / (std + eps)  # [B/G, G]
    else:
        scaled = centered
    all_equal = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # [B/G, 1]
    scaled = torch.where(all_equal, torch.zeros_like(scaled), scaled)  # [B/G, G]
    advantages = scaled.reshape(-1)  # [B]
    metrics = {
        "zero_std_group_frac": all_equal.float().mean().item(),
        "adv_abs_mean": advantages.abs().mean().item(),
    }
    return advantages, metrics


def _check_args(rewards: Tensor, group_size: int, scale: str, eps: float, std_ddof: int) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    n = rewards.numel()
    if n == 0 or n % group_size != 0:
        raise ValueError(
            f"rewards has B={n} entries, which is not a positive multiple of group_size={group_size}; "
            "rewards must be laid out as num_prompts * group_size, group-contiguous"
        )
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed values: {', '.join(SCALES)}")
    if scale == "std":
        if group_size <= std_ddof:
            raise ValueError(
                f"scale='std' with std_ddof={std_ddof} needs group_size > {std_ddof}, got {group_size}"
            )
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
