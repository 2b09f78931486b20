"""Tests for learner.advantages: hand-computed vectors, loop equivalence, invariances."""

import math
import random

import pytest
import torch

from learner.advantages import group_advantages

R4 = torch.tensor([1.0, 0.0, 0.5, 0.5], dtype=torch.float64)  # mean 0.5, std_ddof1 0.40824829, ddof0 0.35355339


# --- hand-computed (reference/grpo-test-vectors.md) ---------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, expected",
    [
        # TRL: 0.5 / (0.40824829 + 1e-4) = 1.22444494
        (dict(scale="std", eps=1e-4, std_ddof=1), [1.22444494, -1.22444494, 0.0, 0.0]),
        # verl: 0.5 / (0.40824829 + 1e-6) = 1.22474187
        (dict(scale="std", eps=1e-6, std_ddof=1), [1.22474187, -1.22474187, 0.0, 0.0]),
        # Dr.GRPO: r - 0.5
        (dict(scale="none"), [0.5, -0.5, 0.0, 0.0]),
        # source repo: 0.5 / (0.35355339 + 1e-8) = 1.41421352
        (dict(scale="std", eps=1e-8, std_ddof=0), [1.41421352, -1.41421352, 0.0, 0.0]),
    ],
    ids=["trl", "verl", "dr_grpo", "source_repo"],
)
def test_reference_rows(kwargs, expected):
    adv, _ = group_advantages(R4, group_size=4, **kwargs)
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64), atol=1e-7, rtol=0)


def test_defaults_are_trl():
    adv, _ = group_advantages(R4.float(), group_size=4)
    torch.testing.assert_close(adv, torch.tensor([1.22444494, -1.22444494, 0.0, 0.0]), atol=1e-6, rtol=0)
    assert adv.dtype == torch.float32


def test_trl_group_of_eight():
    r = torch.tensor([0.7, 0.3, 0, 1, 0, 0, 0.466667, 1], dtype=torch.float64)
    expected = [0.61971031, -0.3098553, -1.00702951, 1.31688452, -1.00702951, -1.00702951, 0.07746448, 1.31688452]
    adv, _ = group_advantages(r, group_size=8)
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64), atol=1e-7, rtol=0)


@pytest.mark.parametrize("scale", ["std", "none"])
def test_all_equal_group_is_exactly_zero(scale):
    # In float32 mean([0.7] * 7) != 0.7, so without explicit zeroing this group would get |adv| ~ 6e-4.
    r = torch.tensor([0.7] * 7 + [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    adv, metrics = group_advantages(r, group_size=7, scale=scale)
    assert adv[:7].tolist() == [0.0] * 7
    assert adv[7:].abs().sum() > 0
    assert metrics["zero_std_group_frac"] == 0.5


def test_metrics():
    # groups: [1, 0, 0.5, 0.5] -> |adv| sum 2 * 0.5 = 1 (scale none); [2, 2, 2, 2] -> zeros
    r = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0])
    _, metrics = group_advantages(r, group_size=4, scale="none")
    assert metrics == {"zero_std_group_frac": 0.5, "adv_abs_mean": pytest.approx(1.0 / 8)}
    assert all(isinstance(v, float) for v in metrics.values())


def test_integer_rewards_accepted():
    adv, _ = group_advantages(torch.tensor([1, 0, 1, 0]), group_size=2, scale="none")
    assert adv.tolist() == [0.5, -0.5, 0.5, -0.5]


# --- argument errors ----------------------------------------------------------------------------------------

def test_group_size_not_dividing_batch():
    with pytest.raises(ValueError, match="not a positive multiple of group_size=4"):
        group_advantages(torch.zeros(6), group_size=4)


@pytest.mark.parametrize("group_size", [0, -2, 2.0, True])
def test_bad_group_size_type_or_value(group_size):
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(4), group_size=group_size)


def test_unknown_scale_names_allowed_values():
    with pytest.raises(ValueError, match="std, none"):
        group_advantages(torch.zeros(4), group_size=2, scale="batch")


def test_std_needs_more_than_ddof_samples():
    with pytest.raises(ValueError, match="group_size > 1"):
        group_advantages(torch.zeros(4), group_size=1)
    adv, _ = group_advantages(torch.tensor([3.0, 5.0]), group_size=1, scale="none")  # no baseline: all zero
    assert adv.tolist() == [0.0, 0.0]


def test_rewards_must_be_1d():
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 4), group_size=4)


# --- equivalence: python loop vs vectorised -----------------------------------------------------------------

def _loop_advantages(rewards, group_size, scale, eps, ddof):
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        mean = sum(group) / len(group)
        if all(r == group[0] for r in group):
            out += [0.0] * len(group)
            continue
        if scale == "none":
            out += [r - mean for r in group]
            continue
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (len(group) - ddof))
        out += [(r - mean) / (std + eps) for r in group]
    return out


def random_group_rewards(rng: random.Random, group_size: int, num_prompts: int) -> list[float]:
    """[B] group-contiguous rewards, each group binary, graded or constant (also tests/learner/test_estimators.py)."""
    rewards = []
    for _ in range(num_prompts):
        kind = rng.choice(["binary", "float", "const"])
        if kind == "binary":
            rewards += [float(rng.random() < 0.5) for _ in range(group_size)]
        elif kind == "float":
            rewards += [rng.uniform(-2, 2) for _ in range(group_size)]
        else:
            rewards += [rng.uniform(-2, 2)] * group_size
    return rewards


@pytest.mark.parametrize("seed", range(8))
def test_matches_python_loop(seed):
    rng = random.Random(seed)
    group_size = rng.choice([2, 3, 4, 8, 16])
    num_prompts = rng.randint(1, 6)
    rewards = random_group_rewards(rng, group_size, num_prompts)
    for scale, eps, ddof in [("std", 1e-4, 1), ("std", 1e-8, 0), ("none", 0.0, 1)]:
        adv, _ = group_advantages(torch.tensor(rewards, dtype=torch.float64), group_size, scale, eps, ddof)
        expected = torch.tensor(_loop_advantages(rewards, group_size, scale, eps, ddof), dtype=torch.float64)
        torch.testing.assert_close(adv, expected, atol=1e-10, rtol=1e-10)


# --- invariances --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", ["std", "none"])
@pytest.mark.parametrize("seed", range(4))
def test_shift_within_group_does_not_change_advantages(scale, seed):
    gen = torch.Generator().manual_seed(seed)
    group_size, num_prompts = 4, 5
    rewards = torch.rand(num_prompts * group_size, generator=gen, dtype=torch.float64)
    shifts = torch.randn(num_prompts, generator=gen, dtype=torch.float64) * 10
    shifted = rewards + shifts.repeat_interleave(group_size)  # [B]
    adv, _ = group_advantages(rewards, group_size, scale)
    adv_shifted, _ = group_advantages(shifted, group_size, scale)
    torch.testing.assert_close(adv_shifted, adv, atol=1e-9, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_permuting_within_group_permutes_advantages(seed):
    gen = torch.Generator().manual_seed(seed)
    group_size, num_prompts = 6, 3
    rewards = torch.rand(num_prompts * group_size, generator=gen, dtype=torch.float64)
    perm = torch.cat([torch.randperm(group_size, generator=gen) + k * group_size for k in range(num_prompts)])
    adv, _ = group_advantages(rewards, group_size)
    adv_perm, _ = group_advantages(rewards[perm], group_size)
    torch.testing.assert_close(adv_perm, adv[perm], atol=1e-12, rtol=0)


def test_groups_are_independent():
    # changing one group's rewards leaves the other groups' advantages untouched
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.9, 0.4, 0.1])
    changed = rewards.clone()
    changed[4:] = torch.tensor([5.0, -3.0, 0.0, 0.0])
    adv, _ = group_advantages(rewards, group_size=4)
    adv_changed, _ = group_advantages(changed, group_size=4)
    assert torch.equal(adv[:4], adv_changed[:4])


def test_std_scaled_groups_have_zero_mean_and_unit_std():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(40, generator=gen, dtype=torch.float64)
    adv, _ = group_advantages(rewards, group_size=8, eps=0.0)
    grouped = adv.view(-1, 8)  # [B/G, G]
    torch.testing.assert_close(grouped.mean(dim=1), torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(grouped.std(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-12, rtol=0)
