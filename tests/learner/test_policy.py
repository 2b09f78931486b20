"""Tests for learner.policy on a tiny random Llama saved to a folder: accumulation == full batch, the
first-step ratio, dropout off, resume determinism, SFT, the lr schedule, Reference == Learner."""

import numpy as np
import pytest
import torch

from common.types import TrainBatch
from learner.optim import adamw, lr_lambda
from learner.policy import AlgoParams, Learner, Reference
from tests.tiny_models import random_ids, save_model, tiny_llama


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_model(tiny_llama(seed=0), tmp_path_factory.mktemp("tiny_llama"))


def make_learner(path, micro_batch_size=4, lr=1e-3, **kw):
    kw = {"total_steps": 10, "warmup_ratio": 0.0, "schedule": "constant", "threads": 1, **kw}
    return Learner(path, lr=lr, micro_batch_size=micro_batch_size, **kw)


def make_batch(learner: Learner, seed: int = 0, old_noise: float = 0.3) -> TrainBatch:
    """2 groups of 4 (different prompts and prompt lengths), completion lengths 1..6; old_logprobs are the
    learner's own plus noise (so some ratios leave the clip interval), ref_logprobs likewise."""
    gen = torch.Generator().manual_seed(seed)
    prompt_ids, completion_ids = [], []
    for plen in (5, 8):
        prompt = random_ids(gen, plen)
        for _ in range(4):
            prompt_ids.append(prompt)
            completion_ids.append(random_ids(gen, int(torch.randint(1, 7, (1,), generator=gen))))
    true = learner.logprobs(prompt_ids, completion_ids)

    def noisy(rows, scale):
        return [(torch.tensor(r) + scale * torch.randn(len(r), generator=gen)).tolist() for r in rows]

    return TrainBatch(prompt_ids, completion_ids, old_logprobs=noisy(true, old_noise),
                      ref_logprobs=noisy(true, 0.1), advantages=torch.randn(8, generator=gen).tolist())


def params(learner: Learner) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in learner.model.named_parameters()}


def assert_same_params(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


# --- invariance: gradient accumulation == full batch ----------------------------------------------------------

@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean"])
def test_accumulation_equals_full_batch(folder, loss_agg):
    # Adam's first update is g / (|g| + 1e-8): components with |g| ~ 1e-8 turn float noise in g into update
    # noise ~ lr, so the parameters are compared at the paper's lr 1e-5, and the gradients themselves (and the
    # pre-clip norm, which Adam's scale invariance would hide) are compared directly.
    algo = AlgoParams(loss_agg=loss_agg)
    full = make_learner(folder, micro_batch_size=8, lr=1e-5)
    batch = make_batch(full)
    before = params(full)
    m_full = full.train_step(batch, algo)
    assert m_full["clip_frac_first"] > 0  # the noise puts some tokens outside [0.8, 1.2]: both branches run
    after = params(full)
    grads = {n: p.grad.clone() for n, p in full.model.named_parameters()}
    # sequence counts, and token budgets: micro-batches of unequal sizes over the length-sorted rows
    for mbs, budget in ((1, None), (3, None), (None, 12), (None, 30)):
        acc = make_learner(folder, micro_batch_size=mbs, lr=1e-5, max_tokens_per_micro_batch=budget)
        assert_same_params(params(acc), before, atol=0)
        m_acc = acc.train_step(batch, algo)
        for n, p in acc.model.named_parameters():
            torch.testing.assert_close(p.grad, grads[n], atol=1e-7, rtol=1e-4, msg=f"mbs={mbs}/{budget} grad {n}")
        assert_same_params(params(acc), after, atol=1e-6)
        assert m_acc["grad_norm"] == pytest.approx(m_full["grad_norm"], rel=1e-5)
        assert m_acc["clip_frac_first"] == pytest.approx(m_full["clip_frac_first"], abs=1e-6)  # float32 means
        assert m_acc["micro_batches"] > m_full["micro_batches"] == 1  # full: both groups in one pass (mbs 8)
    assert max((after[n] - before[n]).abs().max().item() for n in after) > 5e-6  # the step did move weights


# --- the first inner step's ratio ------------------------------------------------------------------------------

def test_own_logprobs_give_ratio_one(folder):
    learner = make_learner(folder)
    b = make_batch(learner)
    batch = TrainBatch(b.prompt_ids, b.completion_ids, learner.logprobs(b.prompt_ids, b.completion_ids),
                       b.ref_logprobs, b.advantages)
    m = learner.train_step(batch, AlgoParams())
    assert m["clip_frac_first"] == 0.0
    assert m["logprob_diff_max"] < 1e-5
    assert m["ratio_mean"] == pytest.approx(1.0, abs=1e-5)


def test_stale_old_logprobs_show_in_the_gap(folder):
    learner = make_learner(folder)
    b = make_batch(learner)
    own = learner.logprobs(b.prompt_ids, b.completion_ids)
    stale = [[x + 0.5 for x in row] for row in own]
    m = learner.train_step(TrainBatch(b.prompt_ids, b.completion_ids, stale, b.ref_logprobs, b.advantages),
                           AlgoParams())
    assert m["logprob_diff_mean"] == pytest.approx(0.5, abs=1e-4)
    assert m["logprob_diff_max"] == pytest.approx(0.5, abs=1e-4)
    assert m["clip_frac_first"] > 0  # ratio exp(-0.5) = 0.61 < 0.8: clipped wherever the advantage is < 0


def test_learner_old_logprobs_equal_handing_it_its_own(folder):
    """Equivalence: old_logprobs='learner' (the denominator taken from the first update's own forward, no extra
    pass) trains exactly as old_logprobs='engine' with the learner's logprobs computed beforehand, over two inner
    updates; the gap metric still measures the engine's logprobs (here stale by 0.5)."""
    a, b_ = make_learner(folder, lr=1e-3), make_learner(folder, lr=1e-3)
    b = make_batch(a)
    own = a.logprobs(b.prompt_ids, b.completion_ids)
    stale = [[x + 0.5 for x in row] for row in own]
    m_own = a.train_step(TrainBatch(b.prompt_ids, b.completion_ids, stale, b.ref_logprobs, b.advantages),
                         AlgoParams(old_logprobs="learner", tis_cap=None), inner_steps=2)
    m_given = b_.train_step(TrainBatch(b.prompt_ids, b.completion_ids, own, b.ref_logprobs, b.advantages),
                            AlgoParams(old_logprobs="engine"), inner_steps=2)
    assert_same_params(params(a), params(b_), atol=1e-7)
    assert m_own["clip_frac_first"] == 0.0 and m_own["clip_frac_last"] == pytest.approx(m_given["clip_frac_last"])
    assert m_own["logprob_diff_mean"] == pytest.approx(0.5, abs=1e-4)  # the engine-vs-learner gap, not hidden


def _shifted(learner, b, shift: float = 0.0, noise: float = 0.0, seed: int = 0) -> TrainBatch:
    """The batch with engine logprobs = the learner's own + shift (+ Gaussian noise)."""
    gen = torch.Generator().manual_seed(seed)
    own = learner.logprobs(b.prompt_ids, b.completion_ids)
    eng = [(torch.tensor(r) + shift + noise * torch.randn(len(r), generator=gen)).tolist() for r in own]
    return TrainBatch(b.prompt_ids, b.completion_ids, eng, b.ref_logprobs, b.advantages)


def test_tis_weighs_the_surrogate_by_the_learner_over_engine_ratio(folder):
    """Hand-computed: the engine's logprobs sit 0.5 above the learner's on every token, so each weight is
    min(e^-0.5, 2) = 0.6065 and the surrogate (beta 0) is 0.6065 x the unweighted one; the mismatch metrics see
    |dlogp| 0.5 and KL k3 e^-0.5 - 1 + 0.5 = 0.1065. With the engine 1.0 below instead, e^1 = 2.72 is capped at 2."""
    a, b_ = make_learner(folder), make_learner(folder)
    batch = _shifted(a, make_batch(a), shift=0.5)
    m_tis = a.train_step(batch, AlgoParams(old_logprobs="learner", beta=0.0, tis_cap=2.0))
    m_off = b_.train_step(batch, AlgoParams(old_logprobs="learner", beta=0.0, tis_cap=None))
    assert m_tis["pg_loss"] == pytest.approx(np.exp(-0.5) * m_off["pg_loss"], rel=1e-5)
    assert m_tis["tis_mean"] == pytest.approx(np.exp(-0.5), rel=1e-4) and m_tis["tis_clipped_frac"] == 0.0
    assert m_tis["mismatch_abs_mean"] == pytest.approx(0.5, abs=1e-4) and m_tis["mismatch_frac_big"] == 1.0
    assert m_tis["mismatch_kl"] == pytest.approx(np.exp(-0.5) - 0.5, abs=1e-4)
    assert "tis_mean" not in m_off
    low = make_learner(folder).train_step(_shifted(a, make_batch(a), shift=-1.0),
                                          AlgoParams(old_logprobs="learner", beta=0.0, tis_cap=2.0))
    assert low["tis_mean"] == pytest.approx(2.0) and low["tis_max"] == pytest.approx(2.0)
    assert low["tis_clipped_frac"] == 1.0


def test_tis_with_an_fp32_sized_mismatch_is_todays_update(folder):
    """Equivalence: where engine and learner differ by ~1e-5 (fp32), the bf16 path (the learner's own old logprobs
    + TIS) gives the loss and gradients of today's fp32 path (the engine's logprobs as old, no weights)."""
    a, b_ = make_learner(folder, lr=1e-5), make_learner(folder, lr=1e-5)
    batch = _shifted(a, make_batch(a), noise=1e-5)
    m_new = a.train_step(batch, AlgoParams(old_logprobs="learner", tis_cap=2.0))
    m_old = b_.train_step(batch, AlgoParams(old_logprobs="engine"))
    assert m_new["pg_loss"] == pytest.approx(m_old["pg_loss"], abs=1e-6)
    assert m_new["kl"] == pytest.approx(m_old["kl"], abs=1e-6)
    assert m_new["grad_norm"] == pytest.approx(m_old["grad_norm"], rel=1e-4)
    assert m_new["tis_max"] < 1 + 1e-4 and m_new["mismatch_abs_mean"] < 2e-5
    for (n, p), q in zip(a.model.named_parameters(), b_.model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-3, msg=n)


def test_the_learner_takes_the_plans_old_logprobs_only(folder):
    """'auto' is resolved by the run plan (common/plan.py, tests/common/test_plan.py), never by the learner."""
    learner = make_learner(folder)
    with pytest.raises(ValueError, match="old_logprobs must be 'engine' or 'learner'"):
        learner.train_step(make_batch(learner), AlgoParams(old_logprobs="auto"))


def test_inner_steps_count_updates(folder):
    learner = make_learner(folder, lr=1e-2, schedule="linear")
    b = make_batch(learner)
    m = learner.train_step(b, AlgoParams(), inner_steps=2)
    assert learner.updates == 2
    assert learner.sched.last_epoch == 2
    # lr schedule linear over 10 steps, no warmup: after 2 steps the factor is 1 - 2/10
    assert learner.sched.get_last_lr()[0] == pytest.approx(1e-2 * 0.8)
    assert {"clip_frac_first", "clip_frac_last", "logprob_diff_mean"} <= m.keys()
    learner.train_step(b, AlgoParams(), inner_steps=1)
    assert learner.updates == 3


# --- dropout off ----------------------------------------------------------------------------------------------

def test_dropout_is_off_in_train_mode(tmp_path):
    model = tiny_llama(seed=1, dropout_off=False, attention_dropout=0.1)
    model.train()
    x = torch.arange(2, 14)[None]  # [1, 12]
    assert not torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)  # the config's dropout is live
    path = save_model(model, tmp_path)
    learner = make_learner(path)
    b = make_batch(learner, old_noise=0.0)
    learner.model.train()  # train_step's mode
    a = learner.logprobs(b.prompt_ids, b.completion_ids)
    c = learner.logprobs(b.prompt_ids, b.completion_ids)
    learner.model.eval()
    e = learner.logprobs(b.prompt_ids, b.completion_ids)
    assert a == c
    for x, y in zip(a, e):
        assert x == pytest.approx(y, abs=1e-6)


# --- checkpoints: resume determinism --------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_save_load_resume_is_deterministic(folder, tmp_path, optimizer):
    algo = AlgoParams()
    first = make_learner(folder, schedule="cosine", warmup_ratio=0.2, optimizer=optimizer)
    batch1, batch2 = make_batch(first, seed=1), make_batch(first, seed=2)
    first.train_step(batch1, algo)
    np.random.seed(7)
    first.save(str(tmp_path / "ckpt"), with_optimizer=True)
    # trainer state is plain tensors and numbers: it loads without unpickling arbitrary objects
    torch.load(tmp_path / "ckpt" / "trainer_state.pt", weights_only=True)
    want = np.random.random(3)

    resumed = make_learner(str(tmp_path / "ckpt"), schedule="cosine", warmup_ratio=0.2, optimizer=optimizer)
    resumed.load_trainer_state(str(tmp_path / "ckpt"))
    assert np.random.random(3).tolist() == want.tolist()
    assert_same_params(params(resumed), params(first), atol=0)
    assert resumed.updates == first.updates == 1
    assert resumed.sched.state_dict()["last_epoch"] == first.sched.state_dict()["last_epoch"]
    s_a, s_b = first.opt.state_dict(), resumed.opt.state_dict()
    assert s_a["param_groups"] == s_b["param_groups"]
    assert s_a["state"].keys() == s_b["state"].keys() and len(s_a["state"]) > 0
    for k in s_a["state"]:
        for name, v in s_a["state"][k].items():
            assert torch.equal(v, s_b["state"][k][name]), (k, name)

    first.train_step(batch2, algo)
    resumed.train_step(batch2, algo)
    assert_same_params(params(resumed), params(first), atol=0)


# --- SFT ------------------------------------------------------------------------------------------------------

def test_sft_step_lowers_loss(folder):
    learner = make_learner(folder, micro_batch_size=2, lr=1e-2)
    gen = torch.Generator().manual_seed(3)
    prompts = [random_ids(gen, n) for n in (4, 6, 3)]
    targets = [random_ids(gen, n) for n in (3, 2, 5)]
    losses = [learner.sft_step(prompts, targets)["sft/loss"] for _ in range(20)]
    # a random model starts near log V = log 97 = 4.57 per token
    assert losses[0] == pytest.approx(4.57, abs=0.5)
    assert losses[-1] < 0.5 * losses[0]


# --- lr schedule: hand-computed -------------------------------------------------------------------------------

def test_fused_adamw_equals_the_foreach_one():
    """The learner's fused AdamW makes the same updates as torch's default (foreach) AdamW, weight decay included."""
    a, b, start = tiny_llama(seed=0), tiny_llama(seed=0), tiny_llama(seed=0)
    opt_a = adamw(a.parameters(), lr=1e-2, weight_decay=0.1)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1, foreach=True)
    assert opt_a.defaults["fused"] is True
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for pa, pb in zip(a.parameters(), b.parameters()):
            g = torch.randn(pa.shape, generator=gen)
            pa.grad, pb.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert not torch.equal(pa, start.get_parameter(name)), name  # it moved
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("schedule, expected", [
    # warmup 2: (step+1)/2 -> 0.5, 1.0; then progress = (step-2)/8: 0 at step 2, 0.5 at 6, 1 at 10
    ("cosine", [0.5, 1.0, 1.0, 0.5, 0.0]),    # 0.5 * (1 + cos(pi * progress))
    ("linear", [0.5, 1.0, 1.0, 0.5, 0.0]),    # 1 - progress
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0]),
])
def test_lr_lambda_values(schedule, expected):
    f = lr_lambda(schedule, warmup_steps=2, total_steps=10)
    assert [f(s) for s in (0, 1, 2, 6, 10)] == pytest.approx(expected, abs=1e-12)


def test_lr_lambda_cosine_and_linear_differ_between_ends():
    cos, lin = lr_lambda("cosine", 2, 10), lr_lambda("linear", 2, 10)
    assert cos(4) == pytest.approx(0.5 * (1 + 0.7071067811865476))  # progress 2/8 = 1/4: cos(pi/4)
    assert lin(4) == pytest.approx(0.75)
    assert cos(20) == 0.0 and lin(20) == 0.0  # past the end: clamped, never negative
    assert lr_lambda("cosine", 0, 10)(0) == 1.0  # no warmup: full lr at once


# --- reference ------------------------------------------------------------------------------------------------

def test_reference_equals_learner(folder):
    learner = make_learner(folder, micro_batch_size=3)
    ref = Reference(folder, micro_batch_size=8, threads=1)
    b = make_batch(learner)
    got, want = ref.logprobs(b.prompt_ids, b.completion_ids), learner.logprobs(b.prompt_ids, b.completion_ids)
    for x, y in zip(got, want):
        assert x == pytest.approx(y, abs=1e-5)
    assert not any(p.requires_grad for p in ref.model.parameters())


def test_full_vocabulary_kl_is_zero_at_the_reference_and_grows_after_updates(folder):
    """kl_kind=full: the learner holds the frozen reference and adds beta * exact KL per token."""
    learner = make_learner(folder, lr=1e-2)
    learner.set_full_reference(str(folder))
    b = make_batch(learner)
    batch = TrainBatch(b.prompt_ids, b.completion_ids, learner.logprobs(b.prompt_ids, b.completion_ids),
                       [], b.advantages)
    algo = AlgoParams(beta=0.04, kl_kind="full")
    first = learner.train_step(batch, algo)
    assert first["kl_full"] == pytest.approx(0.0, abs=1e-6)   # policy == reference before any update
    second = learner.train_step(batch, algo)
    assert second["kl_full"] > 1e-6                           # the update moved the policy away
    assert "kl" not in second                                 # no sampled-token estimator in this mode
    learner.set_full_reference("current")                     # a new phase: the reference is the policy now
    assert learner.train_step(batch, algo)["kl_full"] == pytest.approx(0.0, abs=1e-6)
    learner.set_full_reference(None)                          # a phase without it: the plan says kl_kind none
    assert "kl_full" not in learner.train_step(batch, AlgoParams(beta=0.0, kl_kind="none"))
    with pytest.raises(RuntimeError, match="needs the learner's frozen copy"):  # never a silent KL of 0
        learner.train_step(batch, algo)


# --- encoder-decoder policies (flan-t5's shape) ------------------------------------------------------------

@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    from tests.tiny_models import tiny_t5

    return save_model(tiny_t5(seed=0), tmp_path_factory.mktemp("tiny_t5"))


def test_seq2seq_learner_logprobs_equal_the_hf_engine_that_sampled(t5_folder):
    """The learner's teacher-forced encoder-decoder pass gives the sampling engine's logprobs, so the GRPO ratio
    starts at 1 and the logprob gap is the sync check for seq2seq too."""
    from rollout.engine import HFEngine

    engine = HFEngine(t5_folder)
    r = engine.generate([[5, 6, 7, 8, 9], [10, 11]], n=3, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=3)
    for mbs in (1, 4):
        got = make_learner(t5_folder, micro_batch_size=mbs).logprobs(r.prompt_ids, r.completion_ids)
        for a, b in zip(got, r.old_logprobs):
            assert a == pytest.approx(b, abs=1e-5)
    ref = Reference(t5_folder, threads=1)
    assert ref.logprobs(r.prompt_ids, r.completion_ids)[0] == pytest.approx(r.old_logprobs[0], abs=1e-5)


def test_seq2seq_sft_and_grpo_steps_move_the_model(t5_folder):
    learner = make_learner(t5_folder, lr=1e-2)
    prompts, targets = [[5, 6, 7], [8, 9]], [[20, 21, 1], [22, 1]]
    before = learner.logprobs(prompts, targets)
    for _ in range(5):
        learner.sft_step(prompts, targets)
    after = learner.logprobs(prompts, targets)
    assert sum(map(sum, after)) > sum(map(sum, before)) + 1.0  # the targets became far more likely
    batch = TrainBatch([[5, 6, 7]] * 2, [[20, 21], [22, 1]], learner.logprobs([[5, 6, 7]] * 2, [[20, 21], [22, 1]]),
                       [], [1.0, -1.0])
    m = learner.train_step(batch, AlgoParams(beta=0.0))
    assert m["clip_frac_first"] == 0.0 and m["logprob_diff_max"] < 1e-5 and m["grad_norm"] > 0


# --- DPO -------------------------------------------------------------------------------------------------------

def make_pairs(learner: Learner, seed: int = 0, ref_noise: float = 0.5):
    """5 pairs over 3 prompts (two prompts asked twice), completions of 1..6 tokens; the reference's sums are the
    learner's own plus noise (so the pairs' margins differ from 0)."""
    from common.types import PreferenceBatch

    gen = torch.Generator().manual_seed(seed)
    prompts = [random_ids(gen, n) for n in (4, 7, 5)]
    prompt_ids = [prompts[i] for i in (0, 0, 1, 2, 2)]
    comp = lambda: random_ids(gen, int(torch.randint(1, 7, (1,), generator=gen)))  # noqa: E731
    chosen, rejected = [comp() for _ in prompt_ids], [comp() for _ in prompt_ids]
    ref_c = [sum(r) + ref_noise * float(torch.randn(1, generator=gen)) for r in learner.logprobs(prompt_ids, chosen)]
    ref_r = [sum(r) + ref_noise * float(torch.randn(1, generator=gen)) for r in learner.logprobs(prompt_ids, rejected)]
    return PreferenceBatch(prompt_ids, chosen, rejected, ref_c, ref_r)


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_dpo_step_equals_the_loss_on_the_whole_batch_by_hand(folder, loss):
    """The learner's micro-batched DPO gradient equals autograd through learner/losses.py's dpo_loss on the
    whole batch at once, for any cut into micro-batches (sequence counts and token budgets)."""
    from common.types import DPOParams
    from learner.losses import dpo_loss

    p = DPOParams(beta=0.3, loss=loss, label_smoothing=0.1 if loss == "sigmoid" else 0.0)
    ref_l = make_learner(folder, micro_batch_size=None, lr=1e-5)
    batch = make_pairs(ref_l)
    # by hand: the sum of each completion's token logprobs, all 10 sequences in one padded forward
    model = ref_l.model
    model.train()
    rows_p = [x for x in batch.prompt_ids for _ in range(2)]
    rows_c = [c for i in range(5) for c in (batch.chosen_ids[i], batch.rejected_ids[i])]
    from learner.logprobs import chunk_hidden, head_logprobs

    hidden, head, tgt, mask = chunk_hidden(model, rows_p, rows_c, ref_l.pad_id, slice(0, 10), False)
    logp, _, _ = head_logprobs(head, hidden, tgt, mask)
    seq, n = (logp * mask).sum(-1), mask.sum(-1)
    losses, rc, rr = dpo_loss(seq[0::2], seq[1::2], torch.tensor(batch.ref_chosen), torch.tensor(batch.ref_rejected),
                              p.beta, p.loss, p.label_smoothing, n[0::2], n[1::2])
    losses.mean().backward()
    want = {k: v.grad.clone() for k, v in model.named_parameters()}
    for mbs, budget in ((None, None), (2, None), (3, None), (None, 20)):
        lrn = make_learner(folder, micro_batch_size=mbs, lr=1e-5, max_tokens_per_micro_batch=budget,
                           grad_clip=None)  # the gradients as computed (clipping would rescale them in place)
        cuts = lrn.pair_micro_batches(batch)
        assert sorted(i for c in cuts for i in c) == list(range(5))
        m = lrn.dpo_step(batch, p)
        for k, v in lrn.model.named_parameters():
            torch.testing.assert_close(v.grad, want[k], atol=1e-7, rtol=1e-4, msg=f"mbs={mbs}/{budget} {k}")
        assert m["dpo/loss"] == pytest.approx(losses.mean().item(), rel=1e-5)
        assert m["dpo/margin"] == pytest.approx((rc - rr).mean().item(), rel=1e-5, abs=1e-7)
        assert m["dpo/accuracy"] == pytest.approx((rc > rr).float().mean().item())
        if mbs == 2:
            assert len(cuts) == 5  # one pair (two sequences) a micro-batch


def test_dpo_steps_raise_the_chosen_over_the_rejected(folder):
    """At the reference (margins 0) a few DPO steps move the policy's margin up on the trained pairs."""
    from common.types import DPOParams

    lrn = make_learner(folder, lr=1e-3)
    batch = make_pairs(lrn, ref_noise=0.0)
    first = lrn.dpo_step(batch, DPOParams(beta=0.5))
    assert first["dpo/margin"] == pytest.approx(0.0, abs=1e-4) and first["dpo/loss"] == pytest.approx(0.6931, abs=1e-3)
    for _ in range(4):
        last = lrn.dpo_step(batch, DPOParams(beta=0.5))
    assert last["dpo/margin"] > 0.05 and last["dpo/accuracy"] == 1.0 and last["dpo/loss"] < first["dpo/loss"]
