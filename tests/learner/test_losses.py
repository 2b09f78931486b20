"""Tests for learner.losses: hand-computed vectors, loop equivalence, invariances."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from learner.losses import (
    AGG_MODES,
    agg_loss,
    batch_denominator,
    full_kl,
    kl_penalty,
    masked_mean,
    policy_loss,
)

D = torch.float64
GARBAGE = 1e4  # huge but finite values planted at masked positions


def _vector_batch():
    """The two-sequence example of reference/grpo-test-vectors.md (eps 0.2, T=4), as logprobs with old = 0.

    seq1: A=+1, mask [1,1,0,0], ratio [1.0, 1.5, ., .]; seq2: A=-1, mask [1,1,1,1], ratio [1.0, 0.5, 0.9, 1.3].
    """
    ratio = torch.tensor([[1.0, 1.5, 1.0, 1.0], [1.0, 0.5, 0.9, 1.3]], dtype=D)
    logprobs = ratio.log()  # [B, T]
    logprobs[0, 2:] = GARBAGE
    old_logprobs = torch.zeros(2, 4, dtype=D)
    old_logprobs[0, 2:] = -GARBAGE
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    advantages = torch.tensor([1.0, -1.0], dtype=D)
    return logprobs, old_logprobs, advantages, mask


# --- clipped surrogate: hand-computed ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "ratio, adv, expected",
    [
        (1.0, 1.0, -1.0),  # seq1 t0: -min(1, 1)
        (1.5, 1.0, -1.2),  # seq1 t1: -min(1.5, 1.2), clipped
        (1.0, -1.0, 1.0),  # seq2 t0
        (0.5, -1.0, 0.8),  # seq2 t1: -min(-0.5, -0.8), clipped
        (0.9, -1.0, 0.9),  # seq2 t2: inside the interval
        (1.3, -1.0, 1.3),  # seq2 t3: -min(-1.3, -1.2), pessimistic branch is the unclipped one
        # Vanilla clip, no dual clip: -min(-5, -1.2) = 5.0 = TRL's per-token loss (verl's dual clip gives 3.0).
        (5.0, -1.0, 5.0),
    ],
)
def test_per_token_loss(ratio, adv, expected):
    logprobs = torch.tensor([[math.log(ratio)]], dtype=D)  # [1, 1]: token-mean of one token = its loss
    loss, _ = policy_loss(logprobs, torch.zeros(1, 1, dtype=D), torch.tensor([adv], dtype=D), torch.ones(1, 1))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "mode, norm_len, expected",
    [
        ("token-mean", None, 0.3),  # (-1 - 1.2 + 1 + 0.8 + 0.9 + 1.3) / 6 = 1.8 / 6
        ("seq-mean-token-mean", None, -0.05),  # (-2.2/2 + 4.0/4) / 2
        ("seq-mean-token-sum", None, 0.9),  # (-2.2 + 4.0) / 2
        ("seq-mean-token-sum-norm", 4, 0.45),  # verl: 1.8 / T
        ("seq-mean-token-sum-norm", 2 * 4, 0.225),  # TRL dr_grpo = 1.8 / (B * max_completion_length)
    ],
)
def test_aggregation_table(mode, norm_len, expected):
    loss, _ = policy_loss(*_vector_batch(), agg_mode=mode, norm_len=norm_len)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    per_token = torch.tensor([[-1.0, -1.2, float("nan"), float("inf")], [1.0, 0.8, 0.9, 1.3]], dtype=D)
    assert agg_loss(per_token, _vector_batch()[3], mode, norm_len=norm_len).item() == pytest.approx(expected)


def test_vector_metrics():
    _, metrics = policy_loss(*_vector_batch())
    assert metrics["clip_frac"] == pytest.approx(2 / 6)  # seq1 t1 and seq2 t1
    assert metrics["ratio_mean"] == pytest.approx((1 + 1.5 + 1 + 0.5 + 0.9 + 1.3) / 6)
    assert metrics["ratio_max"] == pytest.approx(1.5)
    assert metrics["pg_loss"] == pytest.approx(0.3)
    assert "kl" not in metrics
    assert all(isinstance(v, float) for v in metrics.values())


def test_clip_higher():
    # A=+1, ratio 1.25: clipped at 1.2 by default, inside [0.8, 1.28] with clip_eps_high=0.28 (DAPO)
    args = (torch.tensor([[math.log(1.25)]], dtype=D), torch.zeros(1, 1, dtype=D), torch.ones(1, dtype=D))
    loss, m = policy_loss(*args, torch.ones(1, 1))
    assert (loss.item(), m["clip_frac"]) == (pytest.approx(-1.2), 1.0)
    loss, m = policy_loss(*args, torch.ones(1, 1), clip_eps_high=0.28)
    assert (loss.item(), m["clip_frac"]) == (pytest.approx(-1.25), 0.0)


# --- KL estimators -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kind, expected",
    [
        ("k3", [0.10653066, 0.71828183]),  # exp(-0.5) + 0.5 - 1, exp(1) - 1 - 1
        ("k1", [0.5, -1.0]),  # logp - ref
        ("k2", [0.125, 0.5]),  # 0.5 * (logp - ref)^2
        ("abs", [0.5, 1.0]),
    ],
)
def test_kl_table(kind, expected):
    logp, ref = torch.tensor([-1.0, -2.0], dtype=D), torch.tensor([-1.5, -1.0], dtype=D)
    torch.testing.assert_close(kl_penalty(logp, ref, kind), torch.tensor(expected, dtype=D), atol=1e-8, rtol=0)


def test_k3_clamps_log_ratio():
    kl = kl_penalty(torch.tensor([0.0, -500.0]), torch.tensor([-500.0, 0.0]), "k3")
    assert torch.isfinite(kl).all()
    assert kl[1].item() == pytest.approx(math.exp(20) - 20 - 1, rel=1e-6)  # ref - logp = 500 clamped to 20


def test_unknown_kl_kind():
    with pytest.raises(ValueError, match="k1, k2, k3, abs"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")


def _random_logits(seed, n=5, v=11, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, v, generator=gen, dtype=D) * scale, torch.randn(n, v, generator=gen, dtype=D) * scale


@pytest.mark.parametrize("seed", range(4))
def test_full_kl_matches_loop_and_expectations(seed):
    logits, ref_logits = _random_logits(seed)
    kl = full_kl(logits, ref_logits)  # [N]
    assert (kl > 0).all()
    for n in range(logits.shape[0]):
        z = sum(math.exp(x) for x in logits[n].tolist())
        z_ref = sum(math.exp(x) for x in ref_logits[n].tolist())
        expected = sum(
            math.exp(a) / z * ((a - math.log(z)) - (b - math.log(z_ref)))
            for a, b in zip(logits[n].tolist(), ref_logits[n].tolist())
        )
        assert kl[n].item() == pytest.approx(expected, rel=1e-9)
    logp, ref_logp = logits.log_softmax(-1), ref_logits.log_softmax(-1)  # [N, V]
    for kind in ("k1", "k3"):  # both estimators are unbiased: E_pi[k] = KL(pi || pi_ref)
        expectation = (logp.exp() * kl_penalty(logp, ref_logp, kind)).sum(-1)  # [N]
        torch.testing.assert_close(kl, expectation)
    torch.testing.assert_close(kl, F.kl_div(ref_logp, logp, log_target=True, reduction="none").sum(-1))


def test_full_kl_zero_for_equal_and_shifted_logits():
    logits, _ = _random_logits(0)
    assert torch.equal(full_kl(logits, logits), torch.zeros(5, dtype=D))
    # a per-row constant does not change the distribution
    torch.testing.assert_close(full_kl(logits, logits + 7.5), torch.zeros(5, dtype=D), atol=1e-12, rtol=0)


def test_full_kl_handles_masked_vocab_and_low_precision():
    logits, ref_logits = _random_logits(1)
    logits[:, :3] = float("-inf")  # pi puts no mass there: those entries contribute 0, not NaN
    kl = full_kl(logits, ref_logits)
    assert torch.isfinite(kl).all() and (kl > 0).all()
    kl_bf16 = full_kl(logits.bfloat16(), ref_logits.bfloat16())
    assert kl_bf16.dtype == torch.float32 and kl_bf16.shape == (5,)


# --- masked_mean / agg_loss ----------------------------------------------------------------------------------

def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_mean(x, mask).item() == pytest.approx(13 / 4)
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([1.5, 5.0]))
    torch.testing.assert_close(masked_mean(x, mask, dim=0), torch.tensor([2.5, 2.0, 6.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_agg_loss_errors():
    loss, mask = torch.zeros(2, 3), torch.ones(2, 3)
    allowed = "token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm"
    with pytest.raises(ValueError, match=allowed):
        agg_loss(loss, mask, "sequence-mean")
    with pytest.raises(ValueError, match="needs norm_len"):
        agg_loss(loss, mask, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="global_denominator=None"):
        agg_loss(loss, mask, "seq-mean-token-sum-norm", norm_len=3, global_denominator=2.0)
    with pytest.raises(ValueError, match="global_denominator must be > 0"):
        agg_loss(loss, mask, "token-mean", global_denominator=0.0)
    with pytest.raises(ValueError, match="same"):
        agg_loss(loss, mask[:, :2], "token-mean")


@pytest.mark.parametrize("mode", AGG_MODES)
def test_agg_loss_empty_micro_batch_is_zero(mode):
    loss = agg_loss(torch.ones(2, 3), torch.zeros(2, 3), mode, norm_len=3)
    assert loss.item() == 0.0


def test_batch_denominator():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    assert batch_denominator(mask, "token-mean") == 6.0
    assert batch_denominator(mask, "seq-mean-token-mean") == 3.0
    assert batch_denominator(mask, "seq-mean-token-sum") == 3.0
    assert batch_denominator(mask, "seq-mean-token-sum-norm") is None


# --- policy_loss: argument errors and KL placement ------------------------------------------------------------

def test_policy_loss_errors():
    lp, mask = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        policy_loss(lp, lp, torch.zeros(2), mask, beta=0.1)
    with pytest.raises(ValueError, match="old_logprobs has shape"):
        policy_loss(lp, lp[:, :2], torch.zeros(2), mask)
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss(lp, lp, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="kl_kind"):
        policy_loss(lp, lp, torch.zeros(2), mask, ref_logprobs=lp, kl_kind="k5")
    with pytest.raises(ValueError, match="allowed modes"):
        policy_loss(lp, lp, torch.zeros(2), mask, agg_mode="mean")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_beta_is_added_per_token_before_aggregation(mode):
    logprobs, old, adv, mask = _vector_batch()
    ref = torch.tensor([[-0.3, 0.2, 5.0, 5.0], [0.1, -0.4, -0.2, 0.3]], dtype=D)
    beta = 0.5
    loss, metrics = policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, beta=beta, agg_mode=mode)
    pg, _ = policy_loss(logprobs, old, adv, mask, agg_mode=mode)
    kl_mat = torch.where(mask.bool(), kl_penalty(logprobs, ref, "k3"), 0.0)  # [B, T]
    assert loss.item() == pytest.approx(pg.item() + beta * agg_loss(kl_mat, mask, mode).item())  # TRL
    verl_style = pg.item() + beta * masked_mean(kl_mat, mask).item()  # verl: beta * token-mean(kl) after agg
    assert (loss.item() == pytest.approx(verl_style)) == (mode == "token-mean")  # lengths 2 and 4 differ
    assert metrics["kl"] == pytest.approx(masked_mean(kl_mat, mask).item())


def test_kl_metrics_report_k3_and_chosen_kind():
    logprobs, old, adv, mask = _vector_batch()
    ref = torch.zeros(2, 4, dtype=D)
    _, metrics = policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, kl_kind="k1")  # beta 0: metrics only
    k1 = masked_mean(torch.where(mask.bool(), logprobs, 0.0), mask).item()
    assert metrics["kl_k1"] == pytest.approx(k1)
    k3 = kl_penalty(torch.where(mask.bool(), logprobs, 0.0), ref, "k3")  # [B, T]
    assert metrics["kl"] == pytest.approx(masked_mean(k3, mask).item())


def test_advantages_per_token_equal_broadcast():
    logprobs, old, adv, mask = _vector_batch()
    loss_b, _ = policy_loss(logprobs, old, adv, mask)
    loss_bt, _ = policy_loss(logprobs, old, adv[:, None].expand(2, 4), mask)
    assert loss_b.item() == loss_bt.item()


# --- random batches shared by the equivalence and invariance tests --------------------------------------------

def _random_batch(seed, per_token_adv=False, min_b=1):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    b, t = rng.randint(min_b, 7), rng.randint(1, 9)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()  # [B, T] right-padded
    old = -torch.rand(b, t, generator=gen, dtype=D) * 3
    logprobs = old + torch.randn(b, t, generator=gen, dtype=D) * 0.3  # off-policy enough to clip
    ref = old + torch.randn(b, t, generator=gen, dtype=D) * 0.5
    adv = torch.randn(*((b, t) if per_token_adv else (b,)), generator=gen, dtype=D)
    kwargs = dict(
        clip_eps=rng.choice([0.1, 0.2]),
        clip_eps_high=rng.choice([None, 0.28]),
        kl_kind=rng.choice(["k1", "k2", "k3", "abs"]),
    )
    return logprobs, old, adv, mask, ref, kwargs


def _loop_policy_loss(logprobs, old, adv, mask, ref, beta, clip_eps, clip_eps_high, kl_kind, mode, norm_len):
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    b, t = len(mask), len(mask[0])
    seq_sums, seq_counts, clipped = [], [], 0
    for i in range(b):
        total, count = 0.0, 0
        for j in range(t):
            if not mask[i][j]:
                continue
            a = adv[i][j] if isinstance(adv[i], list) else adv[i]
            ratio = math.exp(logprobs[i][j] - old[i][j])
            unclipped, clipped_branch = ratio * a, min(max(ratio, 1 - clip_eps), 1 + eps_high) * a
            clipped += clipped_branch < unclipped
            diff = logprobs[i][j] - ref[i][j]
            kl = {"k1": diff, "k2": 0.5 * diff**2, "k3": math.exp(-diff) + diff - 1, "abs": abs(diff)}[kl_kind]
            total += -min(unclipped, clipped_branch) + beta * kl
            count += 1
        seq_sums.append(total)
        seq_counts.append(count)
    if mode == "token-mean":
        loss = sum(seq_sums) / max(sum(seq_counts), 1)
    elif mode == "seq-mean-token-mean":
        loss = sum(s / max(c, 1) for s, c in zip(seq_sums, seq_counts)) / b
    elif mode == "seq-mean-token-sum":
        loss = sum(seq_sums) / b
    else:
        loss = sum(seq_sums) / norm_len
    return loss, clipped / max(sum(seq_counts), 1)


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("seed", range(6))
def test_matches_python_loop(mode, seed):
    logprobs, old, adv, mask, ref, kwargs = _random_batch(seed, per_token_adv=seed % 2 == 1)
    beta = 0.0 if seed % 3 == 0 else 0.1
    norm_len = mask.shape[1] + 3
    loss, metrics = policy_loss(
        logprobs, old, adv, mask, ref_logprobs=ref, beta=beta, agg_mode=mode, norm_len=norm_len, **kwargs
    )
    expected, clip_frac = _loop_policy_loss(
        logprobs.tolist(), old.tolist(), adv.tolist(), mask.tolist(), ref.tolist(), beta,
        kwargs["clip_eps"], kwargs["clip_eps_high"], kwargs["kl_kind"], mode, norm_len,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert metrics["clip_frac"] == pytest.approx(clip_frac)


# --- invariances ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("seed", range(3))
def test_masked_positions_change_nothing(mode, seed):
    logprobs, old, adv, mask, ref, kwargs = _random_batch(seed + 10)
    pad = ~mask.bool()
    results = []
    for fill in (0.0, GARBAGE):
        lp = torch.where(pad, fill, logprobs).requires_grad_(True)
        old_f, ref_f = torch.where(pad, -fill, old), torch.where(pad, 3 * fill, ref)
        loss, metrics = policy_loss(
            lp, old_f, adv, mask, ref_logprobs=ref_f, beta=0.1, agg_mode=mode, norm_len=9, **kwargs
        )
        loss.backward()
        results.append((loss.detach(), lp.grad, metrics))
    (loss0, grad0, m0), (loss1, grad1, m1) = results
    assert torch.isfinite(grad1).all() and torch.equal(grad1[pad], torch.zeros_like(grad1[pad]))
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    torch.testing.assert_close(grad1, grad0, rtol=0, atol=0)
    assert m1 == m0


def _aggregation_weights(mask, mode, norm_len):
    m = mask.to(D)
    b = m.shape[0]
    if mode == "token-mean":
        return m / m.sum()
    if mode == "seq-mean-token-mean":
        return m / (b * m.sum(-1, keepdim=True))
    if mode == "seq-mean-token-sum":
        return m / b
    return m / norm_len


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("seed", range(3))
def test_on_policy_ratio_is_one_and_gradient_is_weighted_advantage(mode, seed):
    _, old, adv, mask, _, kwargs = _random_batch(seed + 20, per_token_adv=seed == 1)
    lp = old.clone().requires_grad_(True)
    loss, metrics = policy_loss(lp, old, adv, mask, agg_mode=mode, norm_len=11, **kwargs)
    loss.backward()
    assert (metrics["clip_frac"], metrics["ratio_mean"], metrics["ratio_max"]) == (0.0, 1.0, 1.0)
    adv_bt = adv if adv.dim() == 2 else adv[:, None].expand_as(old)  # [B, T]
    torch.testing.assert_close(lp.grad, -adv_bt * _aggregation_weights(mask, mode, 11), rtol=1e-12, atol=1e-14)


def test_gradient_flows_only_through_logprobs():
    logprobs, old, adv, mask, ref, _ = _random_batch(3)
    tensors = [t.clone().requires_grad_(True) for t in (logprobs, old, adv, ref)]
    loss, _ = policy_loss(tensors[0], tensors[1], tensors[2], mask, ref_logprobs=tensors[3], beta=0.1)
    loss.backward()
    assert tensors[0].grad is not None and all(t.grad is None for t in tensors[1:])


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("seed", range(5))
def test_micro_batch_accumulation_equals_full_batch(mode, seed):
    logprobs, old, adv, mask, ref, kwargs = _random_batch(seed + 30, per_token_adv=seed % 2 == 0, min_b=3)
    if seed == 4:
        mask[1] = 0  # a fully masked sequence contributes 0 but still counts as a sequence
    common = dict(beta=0.1, agg_mode=mode, norm_len=7, **kwargs)
    full_lp = logprobs.clone().requires_grad_(True)
    full, _ = policy_loss(full_lp, old, adv, mask, ref_logprobs=ref, **common)
    full.backward()

    denominator = batch_denominator(mask, mode)
    micro_lp = logprobs.clone().requires_grad_(True)
    total = torch.zeros((), dtype=D)
    bounds = sorted(random.Random(seed).sample(range(1, mask.shape[0]), k=2))  # three micro-batches
    for start, end in zip([0, *bounds], [*bounds, mask.shape[0]]):
        part, _ = policy_loss(
            micro_lp[start:end], old[start:end], adv[start:end], mask[start:end],
            ref_logprobs=ref[start:end], global_denominator=denominator, **common,
        )
        part.backward()  # gradients accumulate into micro_lp.grad, as in a training loop
        total = total + part.detach()
    torch.testing.assert_close(total, full.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(micro_lp.grad, full_lp.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_the_off_policy_correction_is_the_synchronous_loss_when_every_token_is_the_learners(agg):
    """train.max_staleness > 0 trains with the learner's old logprobs and truncated importance weights against the
    version that sampled each token. Where every token was sampled by the learner's current weights (the engine's
    logprobs are the learner's), the weights are 1 and the loss and its gradient are the synchronous step's exactly;
    where a token is stale, they differ (the correction does something)."""
    from learner.losses import truncated_is_weights

    torch.manual_seed(0)
    B, T = 4, 7
    logp = (-torch.rand(B, T, dtype=D) * 3).requires_grad_()
    mask = (torch.rand(B, T) > 0.2).to(D)
    adv = torch.randn(B, dtype=D)
    ref = -torch.rand(B, T, dtype=D) * 3
    kw = dict(clip_eps=0.2, ref_logprobs=ref, beta=0.04, kl_kind="k3", agg_mode=agg)

    def loss_and_grad(behaviour, corrected):
        old = logp.detach()  # the learner's own old logprobs at the batch's first update
        w = truncated_is_weights(old, behaviour, mask, 2.0)[0] if corrected else None
        loss, _ = policy_loss(logp, old, adv, mask, is_weights=w, **kw)
        (grad,) = torch.autograd.grad(loss, logp)
        return loss.item(), grad

    sync_loss, sync_grad = loss_and_grad(logp.detach(), corrected=False)
    fresh_loss, fresh_grad = loss_and_grad(logp.detach().clone(), corrected=True)
    assert fresh_loss == sync_loss and torch.equal(fresh_grad, sync_grad)
    stale = logp.detach() - 0.5 * torch.rand(B, T, dtype=D)  # an older version sampled these tokens
    stale_loss, stale_grad = loss_and_grad(stale, corrected=True)
    assert stale_loss != sync_loss and not torch.equal(stale_grad, sync_grad)
