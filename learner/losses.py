"""Policy loss (clipped surrogate, KL estimators, loss aggregation) for GRPO and PPO, and PPO's value loss.

Glossary: B sequences, G group size, T completion tokens, V vocab, N token positions (any flattening of B*T).
Masks are [B, T] with nonzero = valid completion token. Gradients flow only through `logprobs` (and `logits`
in full_kl); old_logprobs, ref_logprobs and advantages are treated as constants.

Conventions (the team's GRPO test vectors: shared/reference/grpo-test-vectors.md beside the checkout, pinned in
tests/learner/test_losses.py):
- Vanilla PPO clip, per token: -min(ratio*A, clip(ratio, 1-eps, 1+eps_high)*A). No dual clip: for A<0 and a
  large ratio the loss is ratio*|A| (A=-1, ratio=5 gives 5.0, as TRL; verl's default dual clip gives 3.0).
- beta*KL is added per token BEFORE aggregation (TRL). verl adds beta*agg(KL) after aggregation; the two are
  identical for token-mean and differ for seq-mean modes when sequence lengths differ.
- Log-ratios are clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] before exp so that a stale or garbage logprob
  cannot overflow to inf/NaN; e^20 ~ 5e8 is far outside any trust region, so values are unchanged in practice
  (the gradient is zero beyond the clamp).
- agg modes follow verl's agg_loss names and definitions. "seq-mean-token-sum-norm" is verl's Dr.GRPO form
  sum(all valid token losses) / norm_len: despite its name it does not divide by B. TRL's "dr_grpo" equals it
  with norm_len = B * max_completion_length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_RATIO_CLAMP = 20.0
KL_KINDS = ("k1", "k2", "k3", "abs")
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled-token logprobs (Schulman, "Approximating KL").

    Args:
        logprobs: [B, T] log pi(token) under the current policy (any shape, elementwise).
        ref_logprobs: [B, T] log pi_ref(token) under the frozen reference.
        kind: "k1" = logp - ref (unbiased, can be negative); "k2" = 0.5*(logp - ref)^2;
            "k3" = exp(ref - logp) - (ref - logp) - 1 (unbiased, >= 0); "abs" = |logp - ref|.

    Returns:
        [B, T] per-token estimate (masking is the caller's job). In k3 the log-ratio ref - logp is clamped to
        [-20, 20] so exp cannot overflow when the policy puts ~0 mass on a token the reference likes.
    """
    if kind not in KL_KINDS:
        raise ValueError(f"unknown kl kind {kind!r}; allowed values: {', '.join(KL_KINDS)}")
    log_ratio = logprobs - ref_logprobs  # [B, T] log pi / pi_ref
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    if kind == "abs":
        return log_ratio.abs()
    ref_log_ratio = (-log_ratio).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T] log pi_ref / pi
    return torch.exp(ref_log_ratio) - ref_log_ratio - 1.0


def full_kl(logits: Tensor, ref_logits: Tensor) -> Tensor:
    """Exact KL(pi || pi_ref) over the whole vocabulary at each token position.

    Args:
        logits: [N, V] raw logits of the current policy (any leading dims [..., V]).
        ref_logits: [N, V] raw logits of the reference.

    Returns:
        [N] sum_v pi(v) * (log pi(v) - log pi_ref(v)), computed in at least fp32. Vocabulary entries with
        pi(v) = 0 (logit -inf) contribute 0 rather than NaN.
    """
    if logits.shape != ref_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)} differ in shape")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logp = F.log_softmax(logits.to(dtype), dim=-1)  # [N, V]
    ref_logp = F.log_softmax(ref_logits.to(dtype), dim=-1)  # [N, V]
    p = logp.exp()  # [N, V]
    terms = torch.where(p > 0, p * (logp - ref_logp), torch.zeros_like(p))  # [N, V]
    return terms.sum(dim=-1)  # [N]


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over positions where mask is nonzero; 0 where there are none.

    Masked positions are selected out (not multiplied by 0), so inf/NaN there cannot leak into the result.
    x: [B, T]; mask: [B, T] (or anything broadcastable). dim=None reduces everything to a scalar.
    """
    keep = mask.bool()
    total = torch.where(keep, x, torch.zeros_like(x))  # [B, T]
    count = keep.expand_as(x).to(x.dtype)  # [B, T]
    if dim is None:
        return total.sum() / count.sum().clamp_min(1.0)
    return total.sum(dim=dim) / count.sum(dim=dim).clamp_min(1.0)


def agg_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str,
    *,
    norm_len: float | None = None,
    global_denominator: float | None = None,
) -> Tensor:
    """Aggregate a per-token loss into a scalar (verl's agg_loss modes).

    Args:
        loss_mat: [B, T] per-token loss.
        mask: [B, T], nonzero = valid token. Masked entries of loss_mat are ignored even if inf/NaN.
        mode: "token-mean": sum / number of valid tokens (DAPO, TRL bnpo).
            "seq-mean-token-mean": mean over sequences of each sequence's token mean (GRPO paper, TRL grpo).
            "seq-mean-token-sum": mean over sequences of each sequence's token sum.
            "seq-mean-token-sum-norm": sum over all valid tokens / norm_len (verl's Dr.GRPO; see module doc).
        norm_len: divisor for "seq-mean-token-sum-norm" (e.g. max completion length); ignored by other modes.
        global_denominator: for gradient accumulation. token-mean divides by it instead of this micro-batch's
            valid-token count; seq-mean modes divide by it instead of this micro-batch's B. Pass the full-batch
            value (batch_denominator) to every micro-batch and the micro-batch losses sum exactly to the
            full-batch loss. Not accepted by "seq-mean-token-sum-norm", whose norm_len is already constant.
            Under DDP, whose all-reduce averages gradients, pass the all-rank value divided by world_size.

    Returns:
        scalar tensor. A micro-batch with no valid tokens gives 0.
    """
    _check_mode(mode)
    if loss_mat.shape != mask.shape or loss_mat.dim() != 2:
        raise ValueError(f"loss_mat {tuple(loss_mat.shape)} and mask {tuple(mask.shape)} must be the same [B, T]")
    if global_denominator is not None and global_denominator <= 0:
        raise ValueError(f"global_denominator must be > 0, got {global_denominator}")
    keep = mask.bool()
    token_losses = torch.where(keep, loss_mat, torch.zeros_like(loss_mat))  # [B, T]
    if mode == "token-mean":
        count = keep.sum().to(loss_mat.dtype).clamp_min(1.0)
        return token_losses.sum() / (global_denominator if global_denominator is not None else count)
    if mode == "seq-mean-token-sum-norm":
        if norm_len is None or norm_len <= 0:
            raise ValueError(f"mode 'seq-mean-token-sum-norm' needs norm_len > 0, got {norm_len}")
        if global_denominator is not None:
            raise ValueError(
                "mode 'seq-mean-token-sum-norm' divides by the constant norm_len, so micro-batch losses already "
                "sum to the full-batch loss; pass global_denominator=None"
            )
        return token_losses.sum() / norm_len
    seq_losses = token_losses.sum(dim=-1)  # [B]
    if mode == "seq-mean-token-mean":
        seq_losses = seq_losses / keep.sum(dim=-1).to(loss_mat.dtype).clamp_min(1.0)  # [B]
    num_seqs = global_denominator if global_denominator is not None else loss_mat.shape[0]
    return seq_losses.sum() / num_seqs


def batch_denominator(completion_mask: Tensor, mode: str) -> float | None:
    """The global_denominator for agg_loss/policy_loss, computed once on the FULL batch [B, T] before it is
    split into micro-batches: valid-token count for token-mean, B for seq-mean modes, None for the norm mode.
    """
    _check_mode(mode)
    if mode == "token-mean":
        return float(completion_mask.bool().sum().item())
    if mode == "seq-mean-token-sum-norm":
        return None
    return float(completion_mask.shape[0])


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    kl_kind: str = "k3",
    agg_mode: str = "token-mean",
    norm_len: float | None = None,
    global_denominator: float | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Token-level clipped surrogate (+ optional per-token KL penalty), aggregated to a scalar.

    Args:
        logprobs: [B, T] log pi(token) under the current policy (carries the gradient).
        old_logprobs: [B, T] log pi_old(token) under the policy that sampled.
        advantages: [B] (one per completion, broadcast over T) or [B, T].
        completion_mask: [B, T], nonzero = valid completion token.
        clip_eps / clip_eps_high: ratio interval [1 - clip_eps, 1 + clip_eps_high]; clip_eps_high defaults to
            clip_eps (set it higher for DAPO's clip-higher).
        ref_logprobs: [B, T] frozen reference logprobs; required when beta > 0, else used only for metrics.
        beta: KL coefficient; beta * kl_penalty(kind=kl_kind) is added per token before aggregation.
        agg_mode, norm_len, global_denominator: see agg_loss.
        is_weights: [B, T] constant per-token weights of the surrogate (not of the KL term), e.g. the truncated
            importance weights of `truncated_is_weights`; None = 1.

    Returns:
        loss: scalar tensor to minimise.
        metrics (python floats; masked means over this call's valid tokens): "clip_frac" (tokens where the
            clipped branch is active), "ratio_mean", "ratio_max", "pg_loss" (token mean of the surrogate loss,
            independent of agg_mode); with ref_logprobs also "kl" (k3 mean) and "kl_<kl_kind>".
    """
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    _check_policy_args(
        logprobs, old_logprobs, advantages, completion_mask, ref_logprobs, clip_eps, eps_high, beta, kl_kind
    )
    keep = completion_mask.bool()  # [B, T]
    zeros = torch.zeros_like(logprobs)
    # Selecting (not multiplying) keeps garbage at padded positions out of both the value and the gradient.
    log_ratio = torch.where(keep, logprobs - old_logprobs.detach(), zeros)  # [B, T]
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # [B, T]
    adv = advantages.detach()
    adv = (adv.unsqueeze(-1) if adv.dim() == 1 else adv).expand_as(ratio)  # [B, T]
    surr = ratio * adv  # [B, T]
    surr_clipped = ratio.clamp(1.0 - clip_eps, 1.0 + eps_high) * adv  # [B, T]
    pg_mat = -torch.minimum(surr, surr_clipped)  # [B, T]
    if is_weights is not None:
        if tuple(is_weights.shape) != tuple(pg_mat.shape):
            raise ValueError(f"is_weights has shape {tuple(is_weights.shape)}, expected {tuple(pg_mat.shape)}")
        pg_mat = pg_mat * torch.where(keep, is_weights.detach(), zeros)  # [B, T]
    loss_mat = pg_mat
    kl_metrics: dict[str, float] = {}
    if ref_logprobs is not None:
        logp_kl = torch.where(keep, logprobs, zeros)  # [B, T]
        ref_kl = torch.where(keep, ref_logprobs.detach(), zeros)  # [B, T]
        kl_mat = kl_penalty(logp_kl, ref_kl, kl_kind)  # [B, T]
        if beta > 0:
            loss_mat = pg_mat + beta * kl_mat
        with torch.no_grad():
            kl_metrics["kl"] = masked_mean(kl_penalty(logp_kl, ref_kl, "k3"), keep).item()
            kl_metrics[f"kl_{kl_kind}"] = masked_mean(kl_mat, keep).item()
    loss = agg_loss(loss_mat, keep, agg_mode, norm_len=norm_len, global_denominator=global_denominator)
    with torch.no_grad():
        clipped = surr_clipped < surr  # [B, T] min picked the clipped branch
        metrics = {
            "clip_frac": masked_mean(clipped.to(ratio.dtype), keep).item(),
            "ratio_mean": masked_mean(ratio, keep).item(),
            "ratio_max": torch.where(keep, ratio, zeros).max().item() if ratio.numel() else 0.0,
            "pg_loss": masked_mean(pg_mat, keep).item(),
            **kl_metrics,
        }
    return loss, metrics


def truncated_is_weights(old_logprobs: Tensor, sampling_logprobs: Tensor, completion_mask: Tensor,
                         cap: float) -> tuple[Tensor, dict[str, float]]:
    """Truncated importance sampling of the learner's old policy over the engine that sampled: per token
    w = min(pi_old / pi_sampling, cap) (Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training"; verl's token-level rollout IS). The surrogate's ratio is taken against the learner's
    own old logprobs, which is only right for tokens the learner would sample as often as the engine did; a bf16
    engine does not, and w corrects the gradient for that, capped so that one token cannot dominate.

    Args:
        old_logprobs: [B, T] log pi_old(token), the learner's before this batch's updates.
        sampling_logprobs: [B, T] log pi_sampling(token) from the engine that sampled.
        completion_mask: [B, T]; cap: C > 0.

    Returns: weights [B, T] (1 at masked positions, no gradient) and metrics over valid tokens: "tis_mean",
        "tis_max", "tis_clipped_frac" (share of tokens whose ratio exceeded the cap), and the untruncated ratio's
        quantiles "tis_ratio_p10", "tis_ratio_p50", "tis_ratio_p90" (per micro-batch; a step logs their
        token-weighted mean).

    Example: log-ratios 0.5, 1.5, -1.0 with cap 2: e^0.5 = 1.6487, e^1.5 = 4.48 -> 2 (clipped), e^-1 = 0.3679:
        >>> w, m = truncated_is_weights(torch.tensor([[-1.0, -0.5, -2.0]]), torch.tensor([[-1.5, -2.0, -1.0]]),
        ...                             torch.ones(1, 3), cap=2.0)
        >>> [round(x, 4) for x in w[0].tolist()], round(m["tis_clipped_frac"], 4)
        ([1.6487, 2.0, 0.3679], 0.3333)
    """
    if cap <= 0:
        raise ValueError(f"the truncated importance sampling cap must be > 0, got {cap}")
    keep = completion_mask.bool()  # [B, T]
    log_ratio = torch.where(keep, old_logprobs - sampling_logprobs, torch.zeros_like(old_logprobs))  # [B, T]
    raw = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)).detach()  # [B, T]
    weights = raw.clamp(max=cap)  # [B, T]
    metrics = {"tis_mean": masked_mean(weights, keep).item(),
               "tis_max": torch.where(keep, weights, torch.zeros_like(weights)).max().item() if keep.any() else 0.0,
               "tis_clipped_frac": masked_mean((raw > cap).to(weights.dtype), keep).item()}
    if keep.any():
        q = torch.quantile(raw[keep].double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        metrics.update({"tis_ratio_p10": q[0].item(), "tis_ratio_p50": q[1].item(), "tis_ratio_p90": q[2].item()})
    return weights, metrics


def mismatch(learner_logprobs: Tensor, sampling_logprobs: Tensor, completion_mask: Tensor,
             big: float = 0.1) -> dict[str, float]:
    """How far the learner's logprobs of the sampled tokens are from the engine's that sampled them, over valid
    tokens: "mismatch_abs_mean" (mean |dlogp|), "mismatch_kl" (k3 estimate of KL(engine || learner) from the
    engine's samples: mean of r - 1 - log r, r = pi_learner / pi_engine) and "mismatch_frac_big" (share of tokens
    with |dlogp| > `big`). fp32 on both sides gives ~1e-5; a bf16 side ~1e-2 (docs/benchmarks.md).

    Example: dlogp 0.1 and -0.3: |d| mean 0.2; k3 = (e^0.1 - 1.1 + e^-0.3 - 0.7) / 2 = (0.0052 + 0.0408) / 2 = 0.0230; none > 0.3:
        >>> m = mismatch(torch.tensor([[-1.0, -2.3]]), torch.tensor([[-1.1, -2.0]]), torch.ones(1, 2), big=0.3)
        >>> round(m["mismatch_abs_mean"], 4), round(m["mismatch_kl"], 4), m["mismatch_frac_big"]
        (0.2, 0.023, 0.0)
    """
    keep = completion_mask.bool()  # [B, T]
    d = torch.where(keep, learner_logprobs - sampling_logprobs, torch.zeros_like(learner_logprobs))  # [B, T]
    k3 = torch.exp(d.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)) - 1.0 - d  # [B, T]
    return {"mismatch_abs_mean": masked_mean(d.abs(), keep).item(), "mismatch_kl": masked_mean(k3, keep).item(),
            "mismatch_frac_big": masked_mean((d.abs() > big).to(d.dtype), keep).item()}


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, completion_mask: Tensor,
               clip_eps: float | None = 0.2) -> tuple[Tensor, dict[str, float]]:
    """PPO critic loss: 0.5 * max((V - R)^2, (V_clipped - R)^2), V_clipped = V_old + clip(V - V_old, -eps, eps),
    token-mean over valid tokens (OpenRLHF's ValueLoss, verl's compute_value_loss).

    Args:
        values: [B, T] the critic's current values (carries the gradient).
        old_values: [B, T] values when the batch was collected; returns: [B, T] GAE returns (targets).
        completion_mask: [B, T]; clip_eps: None = unclipped squared error.

    Returns: loss (scalar), metrics "vf_loss", "vf_clip_frac" (tokens where the clipped error is the larger),
        "value_mean", "explained_var" (1 - Var[R - V] / Var[R] over valid tokens).

    Example: V 1.5, V_old 1.0, R 1.0, eps 0.2: unclipped 0.5*0.25 = 0.125; clipped V 1.2 -> 0.5*0.04 = 0.02;
    the larger counts:
        >>> loss, m = value_loss(torch.tensor([[1.5]]), torch.tensor([[1.0]]), torch.tensor([[1.0]]), torch.ones(1, 1))
        >>> round(loss.item(), 4), m["vf_clip_frac"]
        (0.125, 0.0)
    """
    if not (values.shape == old_values.shape == returns.shape == completion_mask.shape) or values.dim() != 2:
        raise ValueError("values, old_values, returns and completion_mask must share one [B, T] shape")
    keep = completion_mask.bool()  # [B, T]
    zeros = torch.zeros_like(values)
    err = torch.where(keep, values - returns.detach(), zeros) ** 2  # [B, T]
    if clip_eps is None:
        loss_mat, clipped = err, torch.zeros_like(keep)
    else:
        v_clip = old_values.detach() + (values - old_values.detach()).clamp(-clip_eps, clip_eps)  # [B, T]
        err_clip = torch.where(keep, v_clip - returns.detach(), zeros) ** 2  # [B, T]
        loss_mat, clipped = torch.maximum(err, err_clip), err_clip > err
    loss = 0.5 * masked_mean(loss_mat, keep)
    with torch.no_grad():
        r, v = returns[keep], values[keep]  # [N]
        var_r = r.var(correction=0) if r.numel() > 1 else torch.tensor(0.0)
        explained = (1 - (r - v).var(correction=0) / var_r).item() if var_r > 0 else float("nan")
        metrics = {"vf_loss": loss.item(), "vf_clip_frac": masked_mean(clipped.to(values.dtype), keep).item(),
                   "value_mean": masked_mean(values, keep).item(), "explained_var": explained}
    return loss, metrics


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Pairwise reward-model loss -log sigmoid(r_chosen - r_rejected), mean over pairs (InstructGPT, OpenRLHF).

    Args: chosen, rejected: [B] scores of the preferred and the other completion of the same prompt.
    Returns: loss, metrics "rm_accuracy" (chosen scored higher), "rm_margin" (mean difference).

    Example: margins 0 and ln 3: -log(1/2) = 0.6931, -log(3/4) = 0.2877, mean 0.4904:
        >>> loss, m = bradley_terry_loss(torch.tensor([0.0, 1.0986123]), torch.tensor([0.0, 0.0]))
        >>> round(loss.item(), 4), m["rm_accuracy"]
        (0.4904, 0.5)
    """
    if chosen.shape != rejected.shape or chosen.dim() != 1:
        raise ValueError(f"chosen and rejected must both be [B]; got {tuple(chosen.shape)}, {tuple(rejected.shape)}")
    margin = chosen - rejected  # [B]
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        metrics = {"rm_accuracy": (margin > 0).float().mean().item(), "rm_margin": margin.mean().item()}
    return loss, metrics


DPO_LOSSES = ("sigmoid", "ipo")


def dpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor,
             beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             chosen_tokens: Tensor | None = None, rejected_tokens: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair direct preference losses (Rafailov et al. 2023) and the implicit rewards.

    Args:
        chosen_logps, rejected_logps: [P] log pi(completion | prompt), summed over the completion's tokens, of the
            preferred and the other completion of each pair (gradients flow through these two only).
        ref_chosen_logps, ref_rejected_logps: [P] the same under the frozen reference.
        beta: the KL strength (sigmoid: the logistic's scale; ipo: tau, the margin is 1 / (2 beta)).
        loss_type: "sigmoid" = -(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d), d = (pi_c - ref_c) -
            (pi_r - ref_r); eps = label_smoothing > 0 is conservative DPO (cDPO: labels flipped with prob eps), as
            OpenRLHF's and TRL's earlier "sigmoid" with label_smoothing; eps = 0 is TRL's "sigmoid".
            "ipo" = (d_c / n_c - d_r / n_r - 1 / (2 beta))^2 (Azar et al. 2023, Eq. 17) with each log-ratio
            averaged over its completion's tokens n (TRL's "ipo": the IPO authors' normalisation).
        chosen_tokens, rejected_tokens: [P] completion token counts (ipo only; clamped to >= 1).

    Returns:
        (losses [P], chosen_rewards [P], rejected_rewards [P]); rewards = beta * (pi - ref), detached.

    Example: d = 0 gives log 2 per pair; d = ln 3 at beta 1 gives -log(3/4):
        >>> z = torch.zeros(2)
        >>> losses, _, _ = dpo_loss(torch.tensor([0.0, 1.0986123]), z, z, z, beta=1.0)
        >>> [round(x, 4) for x in losses.tolist()]
        [0.6931, 0.2877]
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown DPO loss {loss_type!r}; allowed values: {', '.join(DPO_LOSSES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing {label_smoothing} must be in [0, 0.5)")
    shapes = {tuple(x.shape) for x in (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)}
    if len(shapes) != 1 or chosen_logps.dim() != 1:
        raise ValueError(f"the four logps must all be [P]; got shapes {sorted(shapes)}")
    chosen_ratio = chosen_logps - ref_chosen_logps  # [P] log pi_c / ref_c
    rejected_ratio = rejected_logps - ref_rejected_logps  # [P]
    if loss_type == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs chosen_tokens and rejected_tokens (completion lengths)")
        d = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)  # [P]
        losses = (d - 1.0 / (2.0 * beta)).square()
    else:
        d = chosen_ratio - rejected_ratio  # [P]
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * d) - label_smoothing * F.logsigmoid(-beta * d)
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def _check_mode(mode: str) -> None:
    if mode not in AGG_MODES:
        raise ValueError(f"unknown agg mode {mode!r}; allowed modes: {', '.join(AGG_MODES)}")


def _check_policy_args(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    ref_logprobs: Tensor | None,
    clip_eps: float,
    eps_high: float,
    beta: float,
    kl_kind: str,
) -> None:
    shape = tuple(logprobs.shape)
    if len(shape) != 2:
        raise ValueError(f"logprobs must be [B, T], got {shape}")
    named = {"old_logprobs": old_logprobs, "completion_mask": completion_mask, "ref_logprobs": ref_logprobs}
    for name, t in named.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected logprobs' shape {shape}")
    if tuple(advantages.shape) not in (shape[:1], shape):
        raise ValueError(f"advantages must be [B]={shape[:1]} or [B, T]={shape}, got {tuple(advantages.shape)}")
    if not 0 <= clip_eps < 1 or eps_high < 0:
        raise ValueError(f"need 0 <= clip_eps < 1 and clip_eps_high >= 0, got {clip_eps}, {eps_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if kl_kind not in KL_KINDS:
        raise ValueError(f"unknown kl_kind {kl_kind!r}; allowed values: {', '.join(KL_KINDS)}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs; pass them or set beta=0")
