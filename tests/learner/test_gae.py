"""PPO's math: token rewards, GAE, whitening and the clipped value loss.

Three kinds of test: hand-computed cases (arithmetic in the comments), equivalence with a plain per-sequence
Python loop over random shapes and masks, and invariances (masked positions change nothing)."""
import random

import pytest
import torch

from learner.advantages import gae, masked_whiten, token_rewards
from learner.losses import value_loss


def plain_gae(rewards, values, mask, gamma, lam):
    """One sequence at a time, over the list of valid positions only: the textbook recursion."""
    adv = [[0.0] * len(r) for r in rewards]
    for b, (r, v, m) in enumerate(zip(rewards, values, mask)):
        valid = [t for t, keep in enumerate(m) if keep]
        nxt_v, nxt_a = 0.0, 0.0
        for t in reversed(valid):
            delta = r[t] + gamma * nxt_v - v[t]
            nxt_a = delta + gamma * lam * nxt_a
            nxt_v = v[t]
            adv[b][t] = nxt_a
    return adv


# ---- hand-computed ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma,lam,want", [
    # rewards [0, 0, 1], values [0.5, 0.6, 0.7]: deltas d2 = 1 - 0.7 = 0.3, d1 = 0.7 - 0.6 = 0.1, d0 = 0.6 - 0.5 = 0.1
    (1.0, 1.0, [0.5, 0.4, 0.3]),     # A_t = sum of deltas from t: 0.1+0.1+0.3, 0.1+0.3, 0.3 (= R - V_t)
    (1.0, 0.0, [0.1, 0.1, 0.3]),     # lam 0: A_t = delta_t (one-step TD)
    (1.0, 0.5, [0.225, 0.25, 0.3]),  # A2 = 0.3, A1 = 0.1 + 0.5*0.3 = 0.25, A0 = 0.1 + 0.5*0.25 = 0.225
    # gamma 0.5, lam 1: d2 = 0.3, d1 = 0 + 0.5*0.7 - 0.6 = -0.25, d0 = 0.5*0.6 - 0.5 = -0.2;
    # A1 = -0.25 + 0.5*0.3 = -0.1, A0 = -0.2 + 0.5*(-0.1) = -0.25
    (0.5, 1.0, [-0.25, -0.1, 0.3]),
])
def test_gae_hand_computed(gamma, lam, want):
    a, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]]), torch.ones(1, 3), gamma, lam)
    assert a[0].tolist() == pytest.approx(want, abs=1e-6)
    assert ret[0].tolist() == pytest.approx([x + v for x, v in zip(want, [0.5, 0.6, 0.7])], abs=1e-6)


def test_gae_skips_a_masked_hole_as_if_it_were_absent():
    # [r=0 v=0.5] [hole: r=9 v=9] [r=1 v=0.25]; gamma=lam=1: as the 2-token case 0.5, 0.75 with the hole at 0.
    a, ret = gae(torch.tensor([[0.0, 9.0, 1.0]]), torch.tensor([[0.5, 9.0, 0.25]]), torch.tensor([[1, 0, 1]]), 1, 1)
    assert a[0].tolist() == pytest.approx([0.5, 0.0, 0.75])
    assert ret[0].tolist() == pytest.approx([1.0, 0.0, 1.0])


def test_token_rewards_put_the_reward_on_the_last_valid_token_and_k1_everywhere():
    # kl_coef 0.1; log-ratios 1, 2, 3 on 3 valid tokens (4th padded): -0.1, -0.2, -0.3 + 2 = 1.7
    lp, ref = torch.tensor([[1.0, 2.0, 3.0, 50.0]]), torch.zeros(1, 4)
    r, m = token_rewards(torch.tensor([2.0]), torch.tensor([[1, 1, 1, 0]]), lp, ref, kl_coef=0.1)
    assert r[0].tolist() == pytest.approx([-0.1, -0.2, 1.7, 0.0])
    assert m["kl_reward_mean"] == pytest.approx(-0.2)


def test_value_loss_hand_computed_clipping():
    # V 1.5, V_old 1.0, R 2.0, eps 0.2: unclipped 0.5*0.25 = 0.125; clipped V 1.2 -> 0.5*0.64 = 0.32 (larger, counts)
    loss, m = value_loss(torch.tensor([[1.5]]), torch.tensor([[1.0]]), torch.tensor([[2.0]]), torch.ones(1, 1), 0.2)
    assert loss.item() == pytest.approx(0.32) and m["vf_clip_frac"] == 1.0
    loss, m = value_loss(torch.tensor([[1.5]]), torch.tensor([[1.0]]), torch.tensor([[2.0]]), torch.ones(1, 1), None)
    assert loss.item() == pytest.approx(0.125) and m["vf_clip_frac"] == 0.0


def test_whitening_gives_zero_mean_unit_std_on_valid_tokens_only():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    w = masked_whiten(x, mask)
    valid = w[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6) and valid.std(correction=0).item() == pytest.approx(1.0)
    assert w[:, 2].tolist() == [0.0, 0.0]


# ---- equivalence with the plain loop ------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_gae_equals_the_plain_loop(seed):
    rng = random.Random(seed)
    b, t = rng.randint(1, 5), rng.randint(1, 9)
    gamma, lam = rng.choice([1.0, 0.99, 0.5]), rng.choice([1.0, 0.95, 0.0, 0.3])
    g = torch.Generator().manual_seed(seed)
    r, v = torch.randn(b, t, generator=g, dtype=torch.float64), torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, t, generator=g) > 0.3).long()
    a, ret = gae(r, v, mask, gamma, lam)
    want = plain_gae(r.tolist(), v.tolist(), mask.tolist(), gamma, lam)
    assert torch.allclose(a, torch.tensor(want, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(ret, (a + v) * mask, atol=1e-12)


# ---- invariances --------------------------------------------------------------------------------------------

def test_values_and_rewards_at_masked_positions_change_nothing():
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 0]])
    a1, ret1 = gae(r, v, mask, 0.99, 0.95)
    junk = torch.where(mask.bool(), torch.zeros_like(r), torch.full_like(r, 1e6))
    a2, ret2 = gae(r + junk, v - junk, mask, 0.99, 0.95)
    assert torch.equal(a1, a2) and torch.equal(ret1, ret2)


def test_a_perfect_critic_gives_zero_advantage_with_lambda_one():
    # gamma = lam = 1 and V_t = the sequence reward: every delta after the first is 0, the last is R - V = 0.
    r, _ = token_rewards(torch.tensor([0.7, -1.0]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    v = torch.tensor([[0.7, 0.7, 0.7], [-1.0, -1.0, 0.0]])
    a, ret = gae(r, v, torch.tensor([[1, 1, 1], [1, 1, 0]]), 1.0, 1.0)
    assert a.abs().max().item() == pytest.approx(0.0, abs=1e-7)
    assert torch.allclose(ret, v * torch.tensor([[1, 1, 1], [1, 1, 0]]))


@pytest.mark.parametrize("bad", [
    dict(values=torch.zeros(2, 4)),                 # shape mismatch
    dict(gamma=1.5),                                # gamma outside [0, 1]
    dict(lam=-0.1),                                 # lam outside [0, 1]
])
def test_gae_refuses_bad_arguments(bad):
    args = dict(token_rewards=torch.zeros(2, 3), values=torch.zeros(2, 3), mask=torch.ones(2, 3), gamma=1.0, lam=0.9)
    with pytest.raises(ValueError):
        gae(**{**args, **bad})


def test_token_rewards_refuse_an_empty_completion():
    with pytest.raises(ValueError, match="at least one valid token"):
        token_rewards(torch.tensor([1.0, 1.0]), torch.tensor([[1, 0], [0, 0]]))


def test_ppo_advantages_over_interior_holes_equal_those_of_the_policy_tokens_alone():
    """A multi-turn sample [A obs B]: GAE, the k1 rewards and whitening over A and B are those of the row [A B]
    (the observation's values, logprobs and position in between change nothing); 0 at the observation."""
    from learner.advantages import ppo_advantages

    gen = torch.Generator().manual_seed(0)
    holes = torch.tensor([[1, 1, 0, 0, 0, 1, 1], [1, 0, 1, 1, 1, 1, 0]])  # [B, T]; row 1 ends one token early
    v, lp, ref = (torch.randn(2, 7, generator=gen) for _ in range(3))
    rewards = torch.tensor([1.0, -0.5])
    adv, ret, m = ppo_advantages(rewards, holes, lp, ref, v, 0.1, 0.99, 0.95, whiten=True)
    keep = holes.bool()
    pack = lambda x: torch.stack([torch.cat([x[0][keep[0]], x[0].new_zeros(1)]), x[1][keep[1]]])  # noqa: E731
    dense = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])  # the same tokens, side by side
    adv2, ret2, m2 = ppo_advantages(rewards, dense, pack(lp), pack(ref), pack(v), 0.1, 0.99, 0.95, whiten=True)
    assert adv[keep].tolist() == pytest.approx(adv2[dense.bool()].tolist(), abs=1e-6)
    assert ret[keep].tolist() == pytest.approx(ret2[dense.bool()].tolist(), abs=1e-6)
    assert (adv[~keep] == 0).all() and m == pytest.approx(m2)
