"""Tests for learner.advantages.estimate_advantages: hand-computed values, equivalence with verl's token-level
definitions (restated below), invariances."""

import math
import random
from collections import defaultdict

import pytest
import torch

from learner.advantages import ESTIMATORS, estimate_advantages, group_advantages
from tests.learner.test_advantages import random_group_rewards

F64 = torch.float64
R1 = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)  # one group of 4: mean 0.25, std_ddof1 sqrt(0.75/3) = 0.5
L1 = torch.tensor([1, 1, 1, 1])
R2 = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=F64)  # two groups of 2: [1, 0] (mean 0.5, std1 0.7071) and [1, 1]
L2 = torch.tensor([1, 3, 2, 2])  # 8 tokens


# --- hand-computed ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, rewards, group_size, lengths, expected",
    [
        # 0.75 / (0.5 + 1e-4) = 1.49970006, -0.25 / 0.5001 = -0.49990002
        ("grpo", R1, 4, None, [1.49970006, -0.49990002, -0.49990002, -0.49990002]),
        # r - 0.25
        ("mean_only", R1, 4, None, [0.75, -0.25, -0.25, -0.25]),
        # Dr.GRPO advantages are mean_only's
        ("dr_grpo", R1, 4, None, [0.75, -0.25, -0.25, -0.25]),
        # 1 - mean(0, 0, 0) = 1; 0 - mean(1, 0, 0) = -1/3  (= 4/3 * (r - 0.25))
        ("rloo", R1, 4, None, [1.0, -1 / 3, -1 / 3, -1 / 3]),
        # tokens [1 | 0 | 0 | 0]: mu 0.25, var (0.5625 + 3 * 0.0625) / 3 = 0.25 -> 0.75 / 0.5, -0.25 / 0.5
        ("reinforce_pp", R1, 4, L1, [1.5, -0.5, -0.5, -0.5]),
        # one group: subtracting its mean 0.25 is a constant shift, which the whitening removes
        ("reinforce_pp_baseline", R1, 4, L1, [1.5, -0.5, -0.5, -0.5]),
        # group [1, 0]: 0.5 / (0.70710678 + 1e-4) = 0.70700680; group [1, 1]: exactly 0
        ("grpo", R2, 2, None, [0.70700680, -0.70700680, 0.0, 0.0]),
        # 2/1 * (r - 0.5) = [1, -1]; equal group 0
        ("rloo", R2, 2, None, [1.0, -1.0, 0.0, 0.0]),
        # tokens [1 | 0 0 0 | 1 1 | 1 1]: mu 5/8, sum sq 5 * 0.375^2 + 3 * 0.625^2 = 1.875, var 1.875/7 = 0.26785714,
        # sd 0.51754917: 0.375 / sd = 0.72456882, -0.625 / sd = -1.20761471
        ("reinforce_pp", R2, 2, L2, [0.72456882, -1.20761471, 0.72456882, 0.72456882]),
        # centred [0.5, -0.5, 0, 0], tokens [.5 | -.5 -.5 -.5 | 0 0 | 0 0]: mu -1/8, sum sq 0.625^2 + 3 * 0.375^2 +
        # 4 * 0.125^2 = 0.875, var 0.125, sd 0.35355339: 0.625/sd = 1.76776695, -0.375/sd, 0.125/sd (not 0!)
        ("reinforce_pp_baseline", R2, 2, L2, [1.76776688, -1.06066013, 0.35355338, 0.35355338]),
    ],
    ids=["grpo", "mean_only", "dr_grpo", "rloo", "rfpp", "rfpp_baseline", "grpo_2g", "rloo_2g", "rfpp_2g",
         "rfpp_baseline_2g"],
)
def test_hand_computed(name, rewards, group_size, lengths, expected):
    adv, _ = estimate_advantages(name, rewards, group_size, lengths)
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=F64), atol=1e-7, rtol=0)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_metrics_and_dtype(name):
    # groups [1, 0, 0, 0] and [2, 2, 2, 2]: half the groups have equal rewards
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    adv, metrics = estimate_advantages(name, rewards, 4, torch.arange(1, 9))
    assert adv.dtype == torch.float32 and adv.shape == (8,)
    assert set(metrics) >= {"zero_std_group_frac", "adv_abs_mean"}
    assert metrics["zero_std_group_frac"] == 0.5
    assert metrics["adv_abs_mean"] == pytest.approx(adv.abs().mean().item())
    assert all(isinstance(v, float) for v in metrics.values())


# --- argument errors ----------------------------------------------------------------------------------------

def test_unknown_name_lists_the_estimators():
    with pytest.raises(ValueError, match="grpo, mean_only, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline"):
        estimate_advantages("ppo", R1, 4)


@pytest.mark.parametrize("name", ["reinforce_pp", "reinforce_pp_baseline"])
def test_reinforce_pp_without_lengths_names_the_fix(name):
    with pytest.raises(ValueError, match=r"needs lengths \[B\].*lengths=torch.tensor"):
        estimate_advantages(name, R1, 4)


@pytest.mark.parametrize(
    "lengths, match",
    [
        (torch.tensor([1, 1, 1]), "lengths must be"),  # [3] for B = 4
        (torch.tensor([[1, 1, 1, 1]]), "lengths must be"),  # [1, 4]
        (torch.tensor([1, 0, 1, 1]), ">= 1"),  # an empty completion
    ],
)
def test_bad_lengths(lengths, match):
    with pytest.raises(ValueError, match=match):
        estimate_advantages("reinforce_pp", R1, 4, lengths)


def test_whitening_needs_two_tokens():
    with pytest.raises(ValueError, match="at least 2 valid tokens"):
        estimate_advantages("reinforce_pp", torch.tensor([1.0]), 1, torch.tensor([1]))


def test_rloo_needs_two_per_group():
    with pytest.raises(ValueError, match="rloo needs group_size >= 2"):
        estimate_advantages("rloo", R1, 1)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_group_size_checked_like_group_advantages(name):
    with pytest.raises(ValueError, match="not a positive multiple of group_size=3"):
        estimate_advantages(name, R1, 3, L1)
    with pytest.raises(ValueError, match="1-D"):
        estimate_advantages(name, R1.view(2, 2), 2, L1.view(2, 2))


# --- equivalence: a plain restatement of verl's token-level estimators ----------------------------------------
# verl (volcengine/verl, verl/trainer/ppo/core_algos.py) works on token_level_rewards [B, T] (the outcome score on
# the last valid token), a response_mask [B, T] and an index of prompt uids; grouping is by dict, not position.

def _verl_tokens(rewards, lengths, pad):
    """[B, T] token rewards with each score on its sequence's last valid token, and the [B, T] response mask."""
    width = max(lengths) + pad
    tok = torch.zeros(len(rewards), width, dtype=F64)
    mask = torch.zeros(len(rewards), width, dtype=F64)
    for row, (score, n) in enumerate(zip(rewards, lengths)):
        mask[row, :n] = 1.0
        tok[row, n - 1] = score
    return tok, mask


def _verl_whiten(x, mask):
    """verl_F.masked_whiten: centre on the masked mean, scale by rsqrt(masked variance * n/(n-1) + 1e-8)."""
    n = mask.sum()
    mu = (x * mask).sum() / n
    var = (((x - mu) ** 2) * mask).sum() / n * (n / (n - 1))
    return (x - mu) * torch.rsqrt(var + 1e-8)


def _by_uid(scores, index):
    groups = defaultdict(list)
    for row, uid in enumerate(index):
        groups[uid].append(scores[row])
    return {uid: torch.stack(vals) for uid, vals in groups.items()}


def _verl_grpo(tok, mask, index, epsilon=1e-6, norm_adv_by_std_in_grpo=True):
    scores = tok.sum(dim=-1)  # [B]
    stats = {}
    for uid, vals in _by_uid(scores, index).items():  # a lone response: mean 0, std 1
        stats[uid] = (vals.mean(), vals.std()) if len(vals) > 1 else (torch.tensor(0.0), torch.tensor(1.0))
    out = scores.clone()
    for row, uid in enumerate(index):
        mean, std = stats[uid]
        out[row] = (scores[row] - mean) / (std + epsilon) if norm_adv_by_std_in_grpo else scores[row] - mean
    return out[:, None] * mask


def _verl_rloo(tok, mask, index):
    scores = tok.sum(dim=-1)  # [B]
    groups = _by_uid(scores, index)
    out = scores.clone()
    for row, uid in enumerate(index):
        k = len(groups[uid])
        if k > 1:  # a lone response keeps its raw score
            out[row] = scores[row] * k / (k - 1) - groups[uid].mean() * k / (k - 1)
    return out[:, None] * mask


def _verl_reinforce_pp(tok, mask, gamma=1.0):
    returns = torch.zeros_like(tok)
    running = torch.zeros(tok.shape[0], dtype=tok.dtype)
    for t in reversed(range(tok.shape[1])):
        running = tok[:, t] + gamma * running
        returns[:, t] = running
        running = running * mask[:, t]  # nothing flows back past the end of a response
    return _verl_whiten(returns, mask) * mask


def _verl_reinforce_pp_baseline(tok, mask, index):
    scores = tok.sum(dim=-1)  # [B]
    groups = _by_uid(scores, index)
    centred = torch.stack([scores[row] - (groups[uid].mean() if len(groups[uid]) > 1 else 0.0)
                           for row, uid in enumerate(index)])
    tiled = centred[:, None].expand_as(tok) * mask  # [B, T]
    return _verl_whiten(tiled, mask) * mask


def _random_batch(seed):
    rng = random.Random(seed)
    group_size, num_prompts = rng.randint(2, 8), rng.randint(1, 6)
    rewards = random_group_rewards(rng, group_size, num_prompts)  # binary, graded and equal-reward groups
    lengths = [rng.randint(1, 12) for _ in rewards]
    uids = [f"uid-{rng.randrange(10**9)}" for _ in range(num_prompts)]  # verl groups by uid, not position
    index = [uids[k // group_size] for k in range(len(rewards))]
    return rewards, lengths, group_size, index, rng.randint(0, 3)


@pytest.mark.parametrize("seed", range(20))
def test_matches_verl_token_level(seed):
    rewards, lengths, group_size, index, pad = _random_batch(seed)
    tok, mask = _verl_tokens(rewards, lengths, pad)
    verl = {
        "grpo": _verl_grpo(tok, mask, index),
        "mean_only": _verl_grpo(tok, mask, index, norm_adv_by_std_in_grpo=False),
        "dr_grpo": _verl_grpo(tok, mask, index, norm_adv_by_std_in_grpo=False),
        "rloo": _verl_rloo(tok, mask, index),
        "reinforce_pp": _verl_reinforce_pp(tok, mask),
        "reinforce_pp_baseline": _verl_reinforce_pp_baseline(tok, mask, index),
    }
    r, n = torch.tensor(rewards, dtype=F64), torch.tensor(lengths)
    for name in ESTIMATORS:
        ours, _ = estimate_advantages(name, r, group_size, n, eps=1e-6, std_ddof=1)  # [B]
        ours_tok = ours[:, None].expand_as(mask)  # [B, T]
        valid = mask.bool()
        torch.testing.assert_close(ours_tok[valid], verl[name][valid], atol=1e-6, rtol=0, msg=name)


def test_verl_equal_reward_group_is_not_exactly_zero_in_float32():
    # verl does not zero equal-reward groups. In float64 the centred values are ~1e-16 and its advantages ~1e-10;
    # in float32 mean([0.7] * 7) misses 0.7 by 6e-8, torch.std sees the same 6e-8 offsets, and with epsilon 1e-6
    # the "zero" advantage is 6e-8 / (6.4e-8 + 1e-6) = 0.056. We return exactly 0.
    rewards = [0.7] * 7
    tok, mask = _verl_tokens(rewards, [3] * 7, 0)
    verl = _verl_grpo(tok.float(), mask.float(), ["a"] * 7)
    assert verl[:, -1].abs().max() > 0.01
    ours, _ = estimate_advantages("grpo", torch.tensor(rewards), 7, eps=1e-6)
    assert ours.tolist() == [0.0] * 7


# --- invariances --------------------------------------------------------------------------------------------

def _rand(seed, num_prompts=4, group_size=5):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.rand(num_prompts * group_size, generator=gen, dtype=F64)  # [B]
    lengths = torch.randint(1, 20, (num_prompts * group_size,), generator=gen)  # [B]
    return rewards, lengths, group_size, gen


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("seed", range(3))
def test_permuting_whole_groups_permutes_advantages(name, seed):
    rewards, lengths, g, gen = _rand(seed)
    order = torch.randperm(rewards.numel() // g, generator=gen)  # [B/G]
    perm = (order[:, None] * g + torch.arange(g)).reshape(-1)  # [B]
    adv, _ = estimate_advantages(name, rewards, g, lengths)
    adv_perm, _ = estimate_advantages(name, rewards[perm], g, lengths[perm])
    torch.testing.assert_close(adv_perm, adv[perm], atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("shift", [-3.5, 0.25, 40.0])
def test_adding_a_constant_changes_nothing(name, shift):
    rewards, lengths, g, _ = _rand(0)
    adv, _ = estimate_advantages(name, rewards, g, lengths)
    adv_shifted, _ = estimate_advantages(name, rewards + shift, g, lengths)
    torch.testing.assert_close(adv_shifted, adv, atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "name, power",
    [("grpo", 0), ("mean_only", 1), ("dr_grpo", 1), ("rloo", 1),  # A(c r) = c^power A(r)
     ("reinforce_pp", 0), ("reinforce_pp_baseline", 0)],  # up to the 1e-8 inside rsqrt
)
@pytest.mark.parametrize("c", [0.5, 3.0, 20.0])
def test_scaling_rewards(name, power, c):
    rewards, lengths, g, _ = _rand(1)
    adv, _ = estimate_advantages(name, rewards, g, lengths, eps=1e-12)
    adv_scaled, _ = estimate_advantages(name, rewards * c, g, lengths, eps=1e-12)
    torch.testing.assert_close(adv_scaled, adv * c**power, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["grpo", "mean_only", "dr_grpo", "rloo"])
def test_group_estimators_ignore_lengths_and_zero_equal_groups(name):
    rewards = torch.tensor([0.7] * 7 + [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # float32: mean(0.7s) != 0.7
    adv, _ = estimate_advantages(name, rewards, 7)
    adv_len, _ = estimate_advantages(name, rewards, 7, torch.arange(1, 15))
    assert torch.equal(adv, adv_len)
    assert adv[:7].tolist() == [0.0] * 7


@pytest.mark.parametrize("name", ["reinforce_pp", "reinforce_pp_baseline"])
@pytest.mark.parametrize("seed", range(3))
def test_token_whitened_have_token_mean_zero_and_unbiased_var_one(name, seed):
    rewards, lengths, g, _ = _rand(seed)
    adv, _ = estimate_advantages(name, rewards, g, lengths)
    tokens = adv.repeat_interleave(lengths)  # [N] every valid token of the batch
    assert abs(tokens.mean().item()) < 1e-12
    assert tokens.var(correction=1).item() == pytest.approx(1.0, abs=1e-6)


def test_named_estimators_reuse_group_advantages():
    rewards, _, g, _ = _rand(2)
    assert torch.equal(estimate_advantages("grpo", rewards, g)[0], group_advantages(rewards, g)[0])
    mean_only, _ = group_advantages(rewards, g, scale="none")
    assert torch.equal(estimate_advantages("mean_only", rewards, g)[0], mean_only)
    assert torch.equal(estimate_advantages("dr_grpo", rewards, g)[0], mean_only)
    torch.testing.assert_close(estimate_advantages("rloo", rewards, g)[0], mean_only * g / (g - 1))


# --- samples without a reward (`scored`): a user's reward returned None ------------------------------------------

def _subset_reference(name, rewards, G, scored, lengths):
    """A plain loop: each group's estimator on its scored samples only, the batch whitening over scored tokens."""
    out = [0.0] * len(rewards)
    centred = {}
    for g in range(0, len(rewards), G):
        idx = [i for i in range(g, g + G) if scored[i]]
        rs = [rewards[i] for i in idx]
        if len(rs) < 2 or max(rs) == min(rs):
            continue
        mean = sum(rs) / len(rs)
        std = math.sqrt(sum((x - mean) ** 2 for x in rs) / (len(rs) - 1))
        for i in idx:
            c = rewards[i] - mean
            centred[i] = c
            out[i] = {"grpo": c / (std + 1e-4), "mean_only": c, "dr_grpo": c, "rloo": c * len(rs) / (len(rs) - 1),
                      }.get(name, 0.0)
    if name.startswith("reinforce_pp"):
        keep = [i for i in range(len(rewards)) if scored[i]]
        vals = [centred.get(i, 0.0) if name == "reinforce_pp_baseline" else rewards[i] for i in keep]
        w = [lengths[i] for i in keep]
        n = sum(w)
        mu = sum(a * b for a, b in zip(w, vals)) / n
        var = sum(a * (b - mu) ** 2 for a, b in zip(w, vals)) / (n - 1)
        for i, v in zip(keep, vals):
            out[i] = (v - mu) / math.sqrt(var + 1e-8)
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", ESTIMATORS)
def test_unscored_samples_leave_their_groups_statistics(name, seed):
    from learner.advantages import estimate_advantages

    gen = random.Random(seed)
    G, P = gen.choice([2, 4, 5]), gen.randint(2, 6)
    rewards = [float(gen.choice([0, 0.5, 1, gen.random()])) for _ in range(G * P)]
    scored = [gen.random() > 0.3 for _ in rewards]
    scored[0] = scored[1] = True  # whitening needs two scored tokens
    lengths = [gen.randint(1, 9) for _ in rewards]
    adv, m = estimate_advantages(name, torch.tensor(rewards, dtype=torch.float64), G,
                                 torch.tensor(lengths), scored=torch.tensor(scored))
    assert adv.tolist() == pytest.approx(_subset_reference(name, rewards, G, scored, lengths), abs=1e-9)
    assert all(a == 0.0 for a, s in zip(adv.tolist(), scored) if not s)
    # invariance: what an unscored sample's placeholder reward is changes nothing
    moved = [r if s else r + 7.0 for r, s in zip(rewards, scored)]
    again, _ = estimate_advantages(name, torch.tensor(moved, dtype=torch.float64), G, torch.tensor(lengths),
                                   scored=torch.tensor(scored))
    assert torch.equal(adv, again)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_all_scored_is_the_unmasked_estimator_bit_for_bit(name):
    from learner.advantages import estimate_advantages

    r, lengths = torch.tensor([1.0, 0.0, 0.3, 0.3, 0.9, 0.1]), torch.tensor([3, 1, 2, 5, 4, 2])
    plain, _ = estimate_advantages(name, r, 3, lengths)
    masked, _ = estimate_advantages(name, r, 3, lengths, scored=torch.ones(6, dtype=torch.bool))
    assert torch.equal(plain, masked)


def test_a_group_with_one_scored_sample_has_no_signal():
    from learner.advantages import estimate_advantages

    adv, m = estimate_advantages("grpo", torch.tensor([1.0, 0.0, 1.0, 0.0]), 2,
                                 scored=torch.tensor([True, False, True, True]))
    assert adv.tolist()[:2] == [0.0, 0.0] and m["zero_std_group_frac"] == 0.5 and adv[2] > 0 > adv[3]
