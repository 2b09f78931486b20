"""Multi-turn samples through the learner (issue 28): a completion of policy spans with tool observations between them
(`policy_mask` 0 there). Equivalence: a sample [prompt | A obs B] trains exactly like the two single-turn rows
[prompt | A] and [prompt A obs | B] (causal attention: B's logprobs see the same context either way), under token-mean
aggregation, in loss, KL, entropy, token counts and the update; so does the PPO critic's value loss. DPO sums a
completion's log-probability over the policy's tokens only. Invariance: what old/ref logprobs or advantages say at
observation positions changes nothing."""
import copy

import pytest
import torch

from common.types import DPOParams, PreferenceBatch, TrainBatch
from learner.policy import AlgoParams
from tests.learner.test_policy import assert_same_params, folder, make_learner, params  # noqa: F401
from tests.tiny_models import random_ids


def two_turn(learner, seed=0, noise=0.3):
    """Three samples: two with an observation span inside, one single-turn; (multi-turn batch, the same as
    single-turn rows, per-row advantages)."""
    gen = torch.Generator().manual_seed(seed)
    prompt = random_ids(gen, 6)
    multi, single = [], []
    for k in range(3):
        a, obs, b = random_ids(gen, 3 + k), random_ids(gen, 4) if k < 2 else [], random_ids(gen, 2 + k) if k < 2 else []
        multi.append((prompt, a + obs + b, [1] * len(a) + [0] * len(obs) + [1] * len(b)))
        single.append([(prompt, a)] + ([(prompt + a + obs, b)] if b else []))
    comp = [c for _, c, _ in multi]
    true = learner.logprobs([p for p, _, _ in multi], comp)

    def noisy(rows, scale):
        return [(torch.tensor(r) + scale * torch.randn(len(r), generator=gen)).tolist() for r in rows]

    old, ref = noisy(true, noise), noisy(true, 0.1)
    adv = torch.randn(3, generator=gen).tolist()
    batch = TrainBatch([p for p, _, _ in multi], comp, old, ref, adv, policy_mask=[m for _, _, m in multi])
    rows = {"prompt_ids": [], "completion_ids": [], "old_logprobs": [], "ref_logprobs": [], "advantages": []}
    for i, ((_, _, mask), parts) in enumerate(zip(multi, single)):
        spans, start = [], 0
        for p, c in parts:  # the policy spans of row i, where they sit in its completion
            while mask[start] == 0:
                start += 1
            spans.append((p, c, start))
            start += len(c)
        for p, c, s in spans:
            rows["prompt_ids"].append(p)
            rows["completion_ids"].append(c)
            rows["old_logprobs"].append(old[i][s:s + len(c)])
            rows["ref_logprobs"].append(ref[i][s:s + len(c)])
            rows["advantages"].append(adv[i])
    return batch, TrainBatch(**rows)


@pytest.mark.parametrize("kl_kind", ["k3", "full"])
def test_a_two_turn_sample_trains_like_its_policy_spans_alone(folder, kl_kind):  # noqa: F811
    algo = AlgoParams(kl_kind=kl_kind, beta=0.04, old_logprobs="engine", tis_cap=None)
    a = make_learner(folder, micro_batch_size=1, lr=1e-4)
    multi, single = two_turn(a)
    b = make_learner(folder, micro_batch_size=1, lr=1e-4)
    if kl_kind == "full":
        a.set_full_reference(folder)
        b.set_full_reference(folder)
    ma, mb = a.train_step(multi, algo), b.train_step(single, algo)
    assert sum(multi.policy_tokens()) == sum(len(c) for c in single.completion_ids) == ma["head_positions"] \
        == mb["head_positions"]
    assert ma.keys() == mb.keys()
    for key in set(ma) - {"tokens_forward", "micro_batches"}:  # the layout's own work differs, nothing else
        assert ma[key] == pytest.approx(mb[key], rel=1e-4, abs=1e-6), key
    assert_same_params(params(a), params(b), atol=1e-6)


def test_what_observation_positions_hold_changes_nothing(folder):  # noqa: F811
    algo = AlgoParams(old_logprobs="engine", tis_cap=None)
    a = make_learner(folder, micro_batch_size=2)
    batch, _ = two_turn(a)
    garbage = copy.deepcopy(batch)
    for row, mask in zip(garbage.old_logprobs, garbage.policy_mask):
        for t, m in enumerate(mask):
            if not m:
                row[t] = -50.0  # a ratio of e^50 there, were it counted
    for row, mask in zip(garbage.ref_logprobs, garbage.policy_mask):
        for t, m in enumerate(mask):
            if not m:
                row[t] = 9.0
    b = make_learner(folder, micro_batch_size=2)
    ma, mb = a.train_step(batch, algo), b.train_step(garbage, algo)
    assert ma["pg_loss"] == mb["pg_loss"] and ma["ratio_max"] == mb["ratio_max"]
    assert_same_params(params(a), params(b), atol=0.0)


def test_an_all_ones_mask_is_the_single_turn_batch(folder):  # noqa: F811
    algo = AlgoParams(old_logprobs="learner")
    a, b = make_learner(folder), make_learner(folder)
    batch, _ = two_turn(a)
    plain = TrainBatch(batch.prompt_ids, batch.completion_ids, batch.old_logprobs, batch.ref_logprobs,
                       batch.advantages)
    ones = TrainBatch(*[getattr(plain, f) for f in ("prompt_ids", "completion_ids", "old_logprobs", "ref_logprobs",
                                                   "advantages")], policy_mask=[[1] * len(c) for c in
                                                                                plain.completion_ids])
    assert a.train_step(plain, algo) == b.train_step(ones, algo)
    assert_same_params(params(a), params(b), atol=0.0)


def test_sft_on_a_gold_trace_trains_like_its_policy_spans_alone(folder):  # noqa: F811
    """A gold multi-turn trace's observation tokens are context, not targets (tools: trainer/phases.py gold_traces)."""
    a, b = make_learner(folder, micro_batch_size=1, lr=1e-3), make_learner(folder, micro_batch_size=1, lr=1e-3)
    multi, single = two_turn(a)
    ma = a.sft_step(multi.prompt_ids, multi.completion_ids, target_masks=multi.policy_mask)
    mb = b.sft_step(single.prompt_ids, single.completion_ids)
    assert ma["sft/loss"] == pytest.approx(mb["sft/loss"], rel=1e-5)
    assert_same_params(params(a), params(b), atol=1e-6)


def spans_of(masks: list[list[int]]) -> list[tuple[int, int, int]]:
    """(row, start, length) of every run of policy tokens, row by row: the order two_turn's single rows take."""
    out = []
    for i, mask in enumerate(masks):
        t = 0
        while t < len(mask):
            start = t
            while t < len(mask) and mask[t] == mask[start]:
                t += 1
            if mask[start]:
                out.append((i, start, t - start))
    return out


def test_the_critic_on_a_two_turn_sample_trains_like_its_policy_spans_alone(folder):  # noqa: F811
    """The value loss counts the policy's states only; the values there see the same context either way."""
    from learner.critic import Critic

    multi, single = two_turn(make_learner(folder))
    a, b = (Critic(folder, lr=1e-4, micro_batch_size=1, threads=1) for _ in range(2))
    gen = torch.Generator().manual_seed(5)
    returns = [torch.randn(len(c), generator=gen).tolist() for c in multi.completion_ids]
    old = a.values(multi.prompt_ids, multi.completion_ids)
    spans = spans_of(multi.policy_mask)
    cut = lambda rows: [rows[i][s:s + n] for i, s, n in spans]  # noqa: E731
    flat = lambda rows: [x for row in rows for x in row]  # noqa: E731
    assert flat(cut(old)) == pytest.approx(flat(b.values(single.prompt_ids, single.completion_ids)), abs=1e-5)
    ma = a.train_values(multi.prompt_ids, multi.completion_ids, old, returns, multi.policy_mask, 0.2)
    mb = b.train_values(single.prompt_ids, single.completion_ids, cut(old), cut(returns), None, 0.2)
    assert ma["vf_loss"] == pytest.approx(mb["vf_loss"], rel=1e-5) and ma["vf_clip_frac"] == mb["vf_clip_frac"]
    # the gradients agree; Adam's first update g / (|g| + eps) turns float noise in a near-zero gradient into a step of
    # up to lr (seen on an AMD Zen 4: 1e-4 on one element of o_proj), so the weights agree to the lr
    ga, gb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    for n in ga:
        if ga[n].grad is not None:
            torch.testing.assert_close(ga[n].grad, gb[n].grad, atol=1e-7, rtol=1e-4, msg=n)
    assert_same_params(params(a), params(b), atol=2e-4)


def test_dpo_sums_a_completions_logprobs_over_the_policys_tokens(folder):  # noqa: F811
    a = make_learner(folder, lr=1e-4)
    multi, _ = two_turn(a)
    logp = a.logprobs(multi.prompt_ids, multi.completion_ids)
    want = [sum(x for x, m in zip(row, mask) if m) for row, mask in zip(logp, multi.policy_mask)]
    assert want[0] != pytest.approx(sum(logp[0]))  # the observations would count otherwise
    pair = PreferenceBatch([multi.prompt_ids[0]], [multi.completion_ids[0]], [multi.completion_ids[1]], [0.0], [0.0],
                           policy_masks=multi.policy_mask[:2])
    assert pair.tokens() == sum(multi.policy_tokens()[:2])
    m = a.dpo_step(pair, DPOParams(beta=0.1))
    assert m["dpo/logps_chosen"] == pytest.approx(want[0], rel=1e-5)
    assert m["dpo/logps_rejected"] == pytest.approx(want[1], rel=1e-5)
    assert pair.rows([0]).policy_masks == multi.policy_mask[:2]  # a learner worker's share keeps its masks
