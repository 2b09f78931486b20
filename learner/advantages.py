"""Advantages: group-relative for GRPO, GAE with a critic for PPO.

Glossary: B sequences, G group size (completions per prompt), T completion tokens, V vocab.
Rewards arrive group-contiguous: B = num_prompts * G, and rewards[k*G:(k+1)*G] are the G completions of prompt k.

Conventions (see docs and reference/grpo-test-vectors.md):
- scale="std" is the GRPO z-score (r - mean) / (std + eps). The defaults, std_ddof=1 and eps=1e-4, are TRL's;
  verl uses eps=1e-6, some reference repos use std_ddof=0 with eps=1e-8.
- scale="none" is Dr.GRPO (arXiv 2503.20783): mean-centring only, because dividing by the group std up-weights
  prompts that are nearly always solved or nearly always failed.
- A group whose rewards are all equal carries no learning signal; its advantages are set to exactly 0 instead
  of (r - mean(r)) / eps, which float rounding of the mean would make ~1e-4 rather than 0.
- PPO (token_rewards, gae, masked_whiten) follows OpenRLHF/verl: the sequence reward sits on the last valid
  token, -kl_coef * (logprobs - ref_logprobs) (k1) on every token, and GAE runs backwards over valid tokens only,
  so masked positions neither receive nor pass on value (verl's compute_gae_advantage_return).
- estimate_advantages names the outcome-reward estimators (ESTIMATORS), each checked against a restatement of
  verl's core_algos in tests/learner/test_estimators.py. Two deliberate differences from verl: a group of one
  completion is an error (grpo, rloo) or gets 0 (mean-centring), where verl passes the raw reward through; and
  equal-reward groups are exactly 0 where verl's float32 mean/std leave up to ~0.06 (eps 1e-6, rewards 0.7).
"""

from __future__ import annotations

import torch
from torch import Tensor

SCALES = ("std", "none")
ESTIMATORS: tuple[str, ...] = ("grpo", "mean_only", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")


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


def estimate_advantages(name: str, rewards: Tensor, group_size: int, lengths: Tensor | None = None,
                        eps: float = 1e-4, std_ddof: int = 1,
                        scored: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Per-sequence advantages from outcome rewards by one of the named ESTIMATORS.

    - grpo: z-score within the group, group_advantages(scale="std", eps, std_ddof).
    - mean_only: r - mean of the group, group_advantages(scale="none").
    - dr_grpo: the same advantages as mean_only (Dr.GRPO, arXiv 2503.20783, drops the std division). Its other
      half, the constant loss normaliser (loss_agg "seq-mean-token-sum-norm"), is chosen by the run plan.
    - rloo: leave-one-out baseline, r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean of the group); G >= 2.
    - reinforce_pp: REINFORCE++ (arXiv 2501.03262) with gamma 1 and one outcome reward: every token of sequence i
      has return r_i, whitened over all valid tokens of the batch, (r_i - mu) / sqrt(var + 1e-8), mu and var
      token-weighted (sequence i counts lengths[i] times), var unbiased (n/(n-1)): verl's masked_whiten. No group
      baseline: an advantage depends on the whole batch, and longer completions pull mu towards their reward.
    - reinforce_pp_baseline: verl's reinforce_plus_plus_baseline: r - mean of the group, then the same
      token-weighted whitening. The shift by the token-weighted batch mean makes equal-reward groups nonzero.
    Equal-reward groups are exactly 0 under grpo, mean_only, dr_grpo and rloo. eps and std_ddof apply to grpo.

    Args:
        name: one of ESTIMATORS.
        rewards: [B] scalar reward per completion, group-contiguous (B = num_prompts * group_size).
        group_size: G, completions per prompt.
        lengths: [B] completion token counts (>= 1); needed by reinforce_pp and reinforce_pp_baseline only.
        eps, std_ddof: as in group_advantages (grpo only).
        scored: [B] bool, False where a sample has no reward (a user's reward returned None for it): it leaves its
            group's statistics (mean, std, leave-one-out baseline, the batch whitening) and gets advantage 0; a group
            with fewer than two scored samples has no signal (0). None or all True: the unmasked estimators, bit for
            bit. The rewards at unscored positions are ignored.

    Returns:
        advantages: [B], the value every token of the sequence gets; float32 (float64 if rewards are float64).
        metrics: "zero_std_group_frac" and "adv_abs_mean" (mean |advantage| per sequence), as group_advantages.

    Example (one group, reward only on the first of four answers; rloo's baseline is the mean of the others):
        >>> adv, _ = estimate_advantages("rloo", torch.tensor([1.0, 0.0, 0.0, 0.0]), group_size=4)
        >>> [round(a, 4) for a in adv.tolist()]
        [1.0, -0.3333, -0.3333, -0.3333]

    REINFORCE++ on tokens [1 | 0 0 0]: mu = 1/4, var = (0.75^2 + 3 * 0.25^2) / 3 = 0.25, so 0.75/0.5, -0.25/0.5:
        >>> adv, _ = estimate_advantages("reinforce_pp", torch.tensor([1.0, 0.0]), 2, lengths=torch.tensor([1, 3]))
        >>> [round(a, 4) for a in adv.tolist()]
        [1.5, -0.5]
    """
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; allowed values: {', '.join(ESTIMATORS)}")
    if scored is not None and not bool(scored.all()):
        return _scored_only(name, rewards, group_size, scored, lengths, eps, std_ddof)
    if name == "grpo":
        return group_advantages(rewards, group_size, "std", eps, std_ddof)
    _check_args(rewards, group_size, "none", eps, std_ddof)
    if name == "rloo" and group_size < 2:
        raise ValueError(f"rloo needs group_size >= 2 (the baseline is the other completions), got {group_size}")
    if name.startswith("reinforce_pp"):
        _check_lengths(name, rewards, lengths)
    centred, metrics = group_advantages(rewards, group_size, scale="none")  # [B], equal-reward groups exactly 0
    if name in ("mean_only", "dr_grpo"):
        return centred, metrics
    if name == "rloo":
        advantages = centred * (group_size / (group_size - 1))  # [B]
    else:
        returns = centred if name == "reinforce_pp_baseline" else rewards.to(centred.dtype)  # [B]
        advantages = _token_whiten(returns, lengths)  # [B]
    metrics["adv_abs_mean"] = advantages.abs().mean().item()
    return advantages, metrics


def _scored_only(name: str, rewards: Tensor, group_size: int, scored: Tensor, lengths: Tensor | None, eps: float,
                 std_ddof: int) -> tuple[Tensor, dict[str, float]]:
    """estimate_advantages over the scored samples only (see its `scored`); unscored ones get 0.

    One group of four, the third unscored: mean and std of [1, 0, 1] are 2/3 and 0.5774 (ddof 1), so
    (1 - 2/3) / (0.5774 + 1e-4) and (0 - 2/3) / (0.5774 + 1e-4):
        >>> adv, _ = _scored_only("grpo", torch.tensor([1.0, 0.0, 9.0, 1.0]), 4,
        ...                       torch.tensor([True, True, False, True]), None, 1e-4, 1)
        >>> [round(a, 4) for a in adv.tolist()]
        [0.5773, -1.1545, 0.0, 0.5773]
    """
    _check_args(rewards, group_size, "std" if name == "grpo" else "none", eps, std_ddof)
    if scored.shape != rewards.shape or scored.dtype != torch.bool:
        raise ValueError(f"scored must be a [B] bool tensor like rewards; got {tuple(scored.shape)} {scored.dtype}")
    if name.startswith("reinforce_pp"):
        _check_lengths(name, rewards, lengths)
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    m = scored.view(-1, group_size)  # [B/G, G]
    r = torch.where(m, rewards.to(dtype).view(-1, group_size), torch.zeros((), dtype=dtype))  # [B/G, G]
    n = m.sum(dim=1, keepdim=True).to(dtype)  # [B/G, 1] scored samples per group
    mean = r.sum(dim=1, keepdim=True) / n.clamp(min=1)  # [B/G, 1]
    centred = torch.where(m, r - mean, torch.zeros_like(r))  # [B/G, G]
    hi = torch.where(m, r, torch.full_like(r, -torch.inf)).max(dim=1, keepdim=True).values  # [B/G, 1]
    lo = torch.where(m, r, torch.full_like(r, torch.inf)).min(dim=1, keepdim=True).values  # [B/G, 1]
    flat = (n < 2) | (hi == lo)  # [B/G, 1] no signal: fewer than two scored, or all equal
    if name == "grpo":
        std = ((centred ** 2).sum(dim=1, keepdim=True) / (n - std_ddof).clamp(min=1)).sqrt()  # [B/G, 1]
        adv = centred / (std + eps)  # [B/G, G]
    elif name == "rloo":
        adv = centred * n / (n - 1).clamp(min=1)  # [B/G, G] G/(G-1) with G the scored count
    else:
        adv = centred
    adv = torch.where(flat | ~m, torch.zeros_like(adv), adv).reshape(-1)  # [B]
    if name.startswith("reinforce_pp"):
        keep = scored
        returns = adv if name == "reinforce_pp_baseline" else rewards.to(dtype)  # [B]
        adv = torch.zeros_like(returns)
        if int(lengths[keep].sum()) >= 2:
            adv[keep] = _token_whiten(returns[keep], lengths[keep])
    metrics = {"zero_std_group_frac": flat.to(dtype).mean().item(),
               "adv_abs_mean": adv[scored].abs().mean().item() if scored.any() else 0.0}
    return adv, metrics


def token_rewards(rewards: Tensor, completion_mask: Tensor, logprobs: Tensor | None = None,
                  ref_logprobs: Tensor | None = None, kl_coef: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """Per-token rewards for PPO: the sequence reward on its last valid token, minus kl_coef * k1 KL per token.

    Args:
        rewards: [B] scalar reward per completion.
        completion_mask: [B, T], nonzero = valid completion token; every row needs at least one.
        logprobs, ref_logprobs: [B, T] of the sampling policy and the frozen reference (needed when kl_coef > 0).
        kl_coef: weight of the per-token KL folded into the rewards (0 = no KL in the rewards).

    Returns:
        token_rewards: [B, T] (0 at masked positions); metrics "kl_reward_mean" (mean -kl_coef*k1 per valid token).

    Example: reward 1 on a 2-token answer, KL coefficient 0.5, log-ratios 0.2 and -0.4:
        >>> r, _ = token_rewards(torch.tensor([1.0]), torch.tensor([[1, 1, 0]]), torch.tensor([[0.2, -0.4, 9.0]]),
        ...                      torch.zeros(1, 3), kl_coef=0.5)
        >>> [round(x, 4) for x in r[0].tolist()]
        [-0.1, 1.2, 0.0]
    """
    if rewards.dim() != 1 or completion_mask.dim() != 2 or completion_mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"rewards must be [B] and completion_mask [B, T]; got {tuple(rewards.shape)} and "
                         f"{tuple(completion_mask.shape)}")
    keep = completion_mask.bool()  # [B, T]
    if not keep.any(dim=1).all():
        raise ValueError("every completion needs at least one valid token to carry its reward")
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    out = torch.zeros(keep.shape, dtype=dtype)  # [B, T]
    kl_mean = 0.0
    if kl_coef:
        if logprobs is None or ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs logprobs and ref_logprobs")
        kl = torch.where(keep, logprobs - ref_logprobs, torch.zeros_like(logprobs)).to(dtype)  # [B, T] k1
        out = out - kl_coef * kl
        kl_mean = (-kl_coef * kl[keep]).mean().item()
    positions = torch.arange(keep.shape[1]).expand_as(keep)  # [B, T]
    last = torch.where(keep, positions, torch.full_like(positions, -1)).max(dim=1).values  # [B]
    out[torch.arange(keep.shape[0]), last] += rewards.to(dtype)
    return out, {"kl_reward_mean": kl_mean}


def gae(token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the valid tokens of each completion.

    delta_t = r_t + gamma * V(next valid t') - V(t), A_t = delta_t + gamma * lam * A_(next valid t'), where the
    value after the last valid token is 0 (the episode ends there). Masked positions are skipped: they get
    advantage 0, and the recursion passes over them as if they were not there.

    Args:
        token_rewards: [B, T] per-token rewards (see token_rewards).
        values: [B, T] the critic's V at each completion token (no gradient is taken here).
        mask: [B, T], nonzero = valid completion token.
        gamma, lam: discount and GAE lambda in [0, 1].

    Returns:
        advantages: [B, T] (0 at masked positions), returns: [B, T] = advantages + values (the critic's target;
        0 at masked positions).

    Example (hand-computed: gamma 1, lam 1, reward 1 on the last of 2 tokens, values 0.5 and 0.25):
        delta_1 = 1 + 0 - 0.25 = 0.75, delta_0 = 0 + 0.25 - 0.5 = -0.25, A_0 = -0.25 + 0.75 = 0.5.
        >>> a, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2), 1.0, 1.0)
        >>> a.tolist(), ret.tolist()
        ([[0.5, 0.75]], [[1.0, 1.0]])
    """
    if not (token_rewards.shape == values.shape == mask.shape) or token_rewards.dim() != 2:
        raise ValueError(f"token_rewards, values and mask must share one [B, T] shape; got "
                         f"{tuple(token_rewards.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1]; got gamma={gamma}, lam={lam}")
    dtype = torch.promote_types(token_rewards.dtype, torch.float32)
    r, v = token_rewards.detach().to(dtype), values.detach().to(dtype)  # [B, T]
    m = mask.bool().to(dtype)  # [B, T]
    next_value = torch.zeros(r.shape[0], dtype=dtype)  # [B] V of the next valid token (0 after the last)
    next_adv = torch.zeros(r.shape[0], dtype=dtype)  # [B]
    adv = torch.zeros_like(r)  # [B, T]
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]  # [B]
        a_t = delta + gamma * lam * next_adv  # [B]
        adv[:, t] = a_t * m[:, t]
        # A masked position passes its successor's value and advantage through unchanged.
        next_value = torch.where(m[:, t].bool(), v[:, t], next_value)
        next_adv = torch.where(m[:, t].bool(), a_t, next_adv)
    returns = (adv + v) * m  # [B, T]
    return adv, returns


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the valid positions of the whole batch (PPO advantage whitening); masked -> 0.

    Args:
        x, mask: [B, T]. shift_mean=False keeps the mean (scales only), as OpenRLHF offers.

    Returns: [B, T] with mean 0 (if shifted) and unit population std over the valid positions.
    """
    keep = mask.bool()  # [B, T]
    n = keep.sum()
    if n < 2:
        raise ValueError("whitening needs at least 2 valid tokens in the batch")
    vals = x[keep]  # [N]
    mean = vals.mean()
    std = vals.std(correction=0)
    out = (x - mean) / (std + eps) if shift_mean else (x - mean) / (std + eps) + mean
    return torch.where(keep, out, torch.zeros_like(out))


def ppo_advantages(rewards: Tensor, completion_mask: Tensor, logprobs: Tensor, ref_logprobs: Tensor | None,
                   values: Tensor, kl_coef: float, gamma: float, lam: float,
                   whiten: bool = True) -> tuple[Tensor, Tensor, dict[str, float]]:
    """PPO's per-token advantages and value targets from one rollout batch.

    Args:
        rewards: [B]; completion_mask, logprobs (of the sampling policy), ref_logprobs, values: [B, T].
        kl_coef, gamma, lam, whiten: see token_rewards, gae, masked_whiten.

    Returns: advantages [B, T] (whitened if asked), returns [B, T], metrics (kl_reward_mean, adv_abs_mean,
        return_mean, value_mean, explained_var of the values against the returns).
    """
    ref = ref_logprobs if kl_coef else None
    r_tok, m = token_rewards(rewards, completion_mask, logprobs if kl_coef else None, ref, kl_coef)
    adv, ret = gae(r_tok, values, completion_mask, gamma, lam)
    keep = completion_mask.bool()  # [B, T]
    if whiten and keep.sum() >= 2:
        adv = masked_whiten(adv, completion_mask)
    v, target = values[keep].float(), ret[keep].float()  # [N]
    var = target.var(correction=0)
    m.update(adv_abs_mean=adv[keep].abs().mean().item(), return_mean=target.mean().item(),
             value_mean=v.mean().item(),
             explained_var=(1 - (target - v).var(correction=0) / var).item() if var > 0 else float("nan"))
    return adv, ret, m


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


def _token_whiten(values: Tensor, lengths: Tensor) -> Tensor:
    """verl's masked_whiten of [B, T] tokens that are constant along each row, computed on the [B] row values."""
    w = lengths.to(values.dtype)  # [B] tokens per sequence
    n = w.sum()
    mean = (w * values).sum() / n
    var = (w * (values - mean) ** 2).sum() / (n - 1)  # unbiased over the n valid tokens, as verl's masked_var
    return (values - mean) * torch.rsqrt(var + 1e-8)  # [B]


def _check_lengths(name: str, rewards: Tensor, lengths: Tensor | None) -> None:
    if lengths is None:
        raise ValueError(f"estimator {name!r} whitens over tokens and needs lengths [B], the completion token "
                         "counts: pass lengths=torch.tensor([len(c) for c in completion_ids])")
    if lengths.shape != rewards.shape:
        raise ValueError(f"lengths must be [B] like rewards; got {tuple(lengths.shape)} and {tuple(rewards.shape)}")
    if not (lengths >= 1).all():
        raise ValueError("every completion needs lengths >= 1 (its reward sits on its last token)")
    if lengths.sum() < 2:
        raise ValueError(f"estimator {name!r} whitens over tokens and needs at least 2 valid tokens in the batch")
