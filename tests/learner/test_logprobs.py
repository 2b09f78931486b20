"""Tests for learner.logprobs on a tiny random Llama: hand-computed padding, shared-prompt vs padded
equivalence (values and gradients), chunking, micro-batch invariance, ragged round trips."""

import itertools

import pytest
import torch

from learner.logprobs import (body_and_head, chunk_cost, chunks, completion_hidden, from_ragged, grouped_prompt_hidden,
                              head_logprobs, length_order, pad_batch, sequence_logprobs, to_ragged, token_logprobs)
from tests.tiny_models import PAD, V, random_ids, tiny_llama


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=0)


def full_forward_logprobs(model, prompt: list[int], completion: list[int]) -> list[float]:
    """The plain way: one unpadded sequence, full logits, log_softmax, gather."""
    seq = torch.tensor([prompt + completion])  # [1, L]
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0, len(prompt) - 1: len(seq[0]) - 1]  # [n, V]
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()


# --- pad_batch: hand-computed ---------------------------------------------------------------------------------

def test_pad_batch_two_rows():
    ids, attn, pos, tgt, mask = pad_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0)
    # lengths 3+2=5 and 1+3=4 -> L=5; longest completion 3 -> T=3
    assert ids.tolist() == [[5, 6, 7, 9, 10], [8, 11, 12, 13, 0]]
    assert attn.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # row 0: output at position 2 (token 7) predicts 9, position 3 predicts 10; slot 2 is padding (0)
    # row 1: output at position 0 (token 8) predicts 11, then 1 -> 12, 2 -> 13
    assert pos.tolist() == [[2, 3, 0], [0, 1, 2]]
    assert tgt.tolist() == [[9, 10, 0], [11, 12, 13]]
    assert mask.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]


def test_pad_batch_empty_completion_is_fully_masked():
    ids, attn, pos, tgt, mask = pad_batch([[5, 6], [7]], [[], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6], [7, 8]]
    assert mask.tolist() == [[0.0], [1.0]]  # T = 1: row 0 contributes nothing
    assert pos.tolist() == [[0], [0]] and tgt.tolist() == [[0], [8]]


# --- shared prompt == padded batch: equivalence --------------------------------------------------------------

@pytest.mark.parametrize("seed, groups", [
    (10, [(5, [3, 3, 3, 3])]),                            # one group, equal lengths
    (11, [(7, [1, 4, 2, 6])]),                            # one group, unequal lengths including 1
    (12, [(3, [1, 1, 1])]),                               # one group, all length 1: the T == 1 branch
    (13, [(9, [5, 1])]),                                  # G = 2
    (14, [(1, [2, 3, 1, 4])]),                            # one-token prompt
    (0, [(5, [3, 3, 3, 3]), (9, [2, 6, 1, 4])]),        # two groups of 4, prompts of different lengths
    (1, [(3, [1, 1]), (7, [1, 1, 1]), (4, [1])]),        # all completions of length 1: the T == 1 branch
    (2, [(8, [4, 2]), (2, [5, 1, 3]), (6, [2, 2, 2, 2])]),  # unequal group sizes, the longest prompt first
    (3, [(1, [2, 3]), (10, [1, 4])]),                     # a one-token prompt beside a long one
])
def test_packed_groups_equal_padded(model, seed, groups):
    """One group, or n groups in one padded shared-prompt pass == every sequence in its own padded pass: values and
    gradients (the prompt's cache is shared, and gradients flow back through it)."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [random_ids(gen, plen) for plen, _ in groups]
    sizes = [len(lengths) for _, lengths in groups]
    comps = [random_ids(gen, n) for _, lengths in groups for n in lengths]
    rows = [p for p, g in zip(prompts, sizes) for _ in range(g)]
    T = max(len(c) for c in comps)
    weights = torch.randn(len(comps), T, generator=gen)  # [B, T] random cotangent

    def run(packed: bool):
        model.zero_grad(set_to_none=True)
        if packed:
            hidden, tgt, mask = grouped_prompt_hidden(model, prompts, sizes, comps, PAD)
        else:
            ids, attn, pos, tgt, mask = pad_batch(rows, comps, PAD)
            hidden = completion_hidden(model, ids, attn, pos)
        logp = token_logprobs(body_and_head(model)[1](hidden), tgt)  # [B, T]
        (logp * mask * weights).sum().backward()
        return logp.detach(), mask, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    lp_k, mask_k, g_k = run(packed=True)
    lp_p, mask_p, g_p = run(packed=False)
    model.zero_grad(set_to_none=True)
    assert torch.equal(mask_k, mask_p)
    keep = mask_p.bool()
    torch.testing.assert_close(lp_k[keep], lp_p[keep], atol=1e-5, rtol=0)
    assert g_k.keys() == g_p.keys() and len(g_p) > 0
    for name in g_p:
        torch.testing.assert_close(g_k[name], g_p[name], atol=1e-5, rtol=1e-4, msg=name)


def test_grouped_prompt_hidden_refuses_sizes_that_do_not_add_up(model):
    with pytest.raises(ValueError, match="do not add up"):
        grouped_prompt_hidden(model, [[2, 3], [4]], [2, 2], [[5], [6], [7]], PAD)


def test_padded_path_equals_plain_forward(model):
    gen = torch.Generator().manual_seed(5)
    prompts = [random_ids(gen, n) for n in (4, 9, 2)]
    comps = [random_ids(gen, n) for n in (6, 1, 3)]
    ids, attn, pos, tgt, mask = pad_batch(prompts, comps, PAD)
    with torch.no_grad():
        got = to_ragged(head_logprobs(body_and_head(model)[1], completion_hidden(model, ids, attn, pos), tgt, mask)[0],
                        mask)
    for p, c, row in zip(prompts, comps, got):
        assert row == pytest.approx(full_forward_logprobs(model, p, c), abs=1e-5)


# --- chunks -------------------------------------------------------------------------------------------------

def test_chunks_hand_computed():
    A, B, C = [1], [2], [3]
    # A,A fill a shared chunk of 2; the third A starts a padded run that takes B (A != B) and stops at 2 rows;
    # C,C are a shared chunk.
    assert chunks([A, A, A, B, C, C], 2) == [(slice(0, 2), True), (slice(2, 4), False), (slice(4, 6), True)]
    # micro_batch_size 1: every row alone, nothing shared
    assert chunks([A, A, B], 1) == [(slice(0, 1), False), (slice(1, 2), False), (slice(2, 3), False)]
    assert chunks([A, B, C], 8) == [(slice(0, 3), False)]
    assert chunks([A, A, A, A], 8) == [(slice(0, 4), True)]
    # a padded run stops before a row that starts a group, so the group B,B stays shared
    assert chunks([A, B, B], 8) == [(slice(0, 1), False), (slice(1, 3), True)]
    # whole groups are packed into one shared chunk while they fit; a split group is not packed with the next
    assert chunks([A, A, B, B, C, C], 4) == [(slice(0, 4), True), (slice(4, 6), True)]
    assert chunks([A, A, B, B, C, C], 6) == [(slice(0, 6), True)]
    assert chunks([A, A, A, B, B], 2) == [(slice(0, 2), True), (slice(2, 3), False), (slice(3, 5), True)]
    assert chunks([A, A, A, B, B], 5) == [(slice(0, 5), True)]
    assert chunks([A, A, B, C, C], 8) == [(slice(0, 2), True), (slice(2, 3), False), (slice(3, 5), True)]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("mbs", [1, 2, 3, 4, 8])
def test_chunks_partition_rows(seed, mbs):
    gen = torch.Generator().manual_seed(seed)
    prompts = []
    for _ in range(int(torch.randint(1, 7, (1,), generator=gen))):
        group = int(torch.randint(1, 6, (1,), generator=gen))  # groups of 1..5 identical prompts
        prompts += [[int(torch.randint(0, 4, (1,), generator=gen))]] * group  # few distinct values: repeats
    out = chunks(prompts, mbs)
    covered = [i for sl, _ in out for i in range(sl.start, sl.stop)]
    assert covered == list(range(len(prompts)))  # every row exactly once, in order
    for sl, shared in out:
        assert 1 <= sl.stop - sl.start <= mbs
        if shared:  # whole runs of >= 2 identical prompts, or one piece of a run larger than mbs
            runs = [len(list(g)) for _, g in itertools.groupby(tuple(p) for p in prompts[sl])]
            assert all(r >= 2 for r in runs), (prompts[sl], runs)
            if len(runs) > 1:  # packed: every group whole (its run does not continue outside the chunk)
                assert sl.start == 0 or prompts[sl.start - 1] != prompts[sl.start]
                assert sl.stop == len(prompts) or prompts[sl.stop] != prompts[sl.stop - 1]


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("mbs,budget", [(None, 12), (None, 30), (3, 40), (None, 200), (2, None)])
def test_token_budget_chunks_partition_rows_within_the_budget(seed, mbs, budget):
    gen = torch.Generator().manual_seed(seed)
    prompts, comps = [], []
    for _ in range(int(torch.randint(1, 6, (1,), generator=gen))):
        prompt = random_ids(gen, int(torch.randint(1, 9, (1,), generator=gen)))
        for _ in range(int(torch.randint(1, 5, (1,), generator=gen))):
            prompts.append(prompt)
            comps.append(random_ids(gen, int(torch.randint(1, 7, (1,), generator=gen))))
    order = length_order(prompts, comps)
    assert sorted(order) == list(range(len(prompts)))
    p, c = [prompts[i] for i in order], [comps[i] for i in order]
    out = chunks(p, mbs, c, budget)
    assert [i for sl, _ in out for i in range(sl.start, sl.stop)] == list(range(len(p)))
    for sl, shared in out:
        n = sl.stop - sl.start
        assert n <= (mbs or n)
        assert n == 1 or budget is None or chunk_cost(p[sl], c[sl], shared) <= budget  # a lone row may exceed it
    if budget is None:
        assert out == chunks(p, mbs)  # no budget: the sequence-count cut alone


def test_length_order_keeps_groups_whole_and_puts_the_longest_first():
    A, B, C = [1, 2], [3, 4, 5, 6], [7]
    prompts = [A, A, B, B, C]
    comps = [[1], [1, 2, 3], [1], [1], [1, 2, 3, 4, 5, 6, 7]]
    # group A: 2 + 3 = 5, group B: 4 + 1 = 5, C: 1 + 7 = 8 -> C, then A and B in their order (stable)
    assert length_order(prompts, comps) == [4, 0, 1, 2, 3]


def test_chunk_cost_counts_the_padding_each_pass_computes():
    A, B = [1, 2, 3], [4]
    # shared: 2 prompts padded to 3 + 4 completions' first T-1 = 2 tokens -> 2 * 3 + 4 * 2 = 14
    assert chunk_cost([A, A, B, B], [[1], [1, 2, 3], [1, 2], [1]], shared=True) == 14
    # padded: 2 rows of the longest sequence (3 + 3) -> 12
    assert chunk_cost([A, B], [[1, 2, 3], [1]], shared=False) == 12


@pytest.mark.parametrize("max_elements", [10**9, V * 5, V])  # one chunk, chunks of 5 positions, of 1 position
def test_head_logprobs_in_chunks_equal_full_logits(model, max_elements):
    """Values and gradients (through the checkpointed chunks) equal the full [B, T, V] logits, entropy and full KL."""
    gen = torch.Generator().manual_seed(4)
    _, head = body_and_head(model)
    ref_head = torch.nn.Linear(head.in_features, V, bias=False)
    hidden = torch.randn(3, 6, head.in_features, generator=gen, requires_grad=True)  # [B, T, H]
    ref_hidden = torch.randn(3, 6, head.in_features, generator=gen)
    tgt = torch.randint(0, V, (3, 6), generator=gen)
    mask = torch.tensor([[1.0] * 6, [1.0] * 2 + [0.0] * 4, [1.0] * 5 + [0.0]])
    weights = torch.randn(3, 6, generator=gen)

    def run(fn):
        hidden.grad = None
        head.zero_grad(set_to_none=True)
        logp, ent, kl = fn()
        ((logp + 0.3 * kl) * mask * weights).sum().backward()
        return logp.detach(), ent, kl.detach(), hidden.grad.clone(), head.weight.grad.clone()

    def full():
        from learner.losses import full_kl

        logits = head(hidden)  # [B, T, V]
        logp = token_logprobs(logits, tgt) * mask
        lsm = torch.log_softmax(logits.detach(), -1)
        ent = -(lsm.exp() * lsm).sum(-1) * mask
        return logp, ent, full_kl(logits, ref_head(ref_hidden)) * mask

    want = run(full)
    got = run(lambda: head_logprobs(head, hidden, tgt, mask, entropy=True, ref=(ref_head, ref_hidden),
                                    max_elements=max_elements))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (got[0][mask == 0] == 0).all()


# --- sequence_logprobs: micro-batch invariance ---------------------------------------------------------------

def test_sequence_logprobs_micro_batch_invariance(model):
    gen = torch.Generator().manual_seed(7)
    prompt_ids, completion_ids = [], []
    # a group of 4, a singleton, a group of 3, two singletons, a group of 2; prompt lengths differ
    for group, plen in [(4, 6), (1, 3), (3, 8), (1, 5), (1, 2), (2, 4)]:
        prompt = random_ids(gen, plen)
        for _ in range(group):
            prompt_ids.append(prompt)
            completion_ids.append(random_ids(gen, int(torch.randint(1, 7, (1,), generator=gen))))
    completion_ids[1] = [5]  # a length-1 completion inside a group
    runs = {m: sequence_logprobs(model, prompt_ids, completion_ids, PAD, m) for m in (1, 3, 8)}
    runs.update({f"{t} tokens": sequence_logprobs(model, prompt_ids, completion_ids, PAD, None, max_tokens=t)
                 for t in (10, 25, 60)})  # token budgets: unequal micro-batches
    for m, rows in runs.items():
        assert [len(r) for r in rows] == [len(c) for c in completion_ids], m
        for got, want in zip(rows, runs[1]):
            assert got == pytest.approx(want, abs=1e-5), m
    # and micro_batch_size 1 (all padded singles) is the plain forward pass
    for p, c, row in zip(prompt_ids, completion_ids, runs[1]):
        assert row == pytest.approx(full_forward_logprobs(model, p, c), abs=1e-5)


# --- token_logprobs, ragged ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_token_logprobs_equals_log_softmax_gather(scale):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, V, generator=gen) * scale  # [B, T, V]
    targets = torch.randint(0, V, (3, 5), generator=gen)  # [B, T]
    want = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(token_logprobs(logits, targets), want, atol=1e-5, rtol=1e-6)
    assert token_logprobs(logits.bfloat16(), targets).dtype == torch.float32


def test_ragged_roundtrip():
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randn(n, generator=gen).tolist() for n in (3, 0, 5, 1)]  # float32-exact values
    T = 5
    values = from_ragged(rows, T)  # [B, T]
    mask = from_ragged([[1.0] * len(r) for r in rows], T)  # [B, T]
    assert values.shape == (4, T)
    assert (values[mask == 0] == 0).all()  # padding is zero
    assert to_ragged(values, mask) == rows
