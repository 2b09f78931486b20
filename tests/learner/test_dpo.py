"""learner.losses.dpo_loss: hand-computed values, equality with TRL's (1.16) and OpenRLHF's formulas restated,
invariances."""
import math

import pytest
import torch
import torch.nn.functional as F

from learner.losses import dpo_loss

D = torch.float64


def _t(*xs):
    return torch.tensor(xs, dtype=D)


def test_sigmoid_by_hand():
    """d = (pi_c - ref_c) - (pi_r - ref_r) = (-3 + 4) - (-5 + 4.5) = 1.5; beta 0.1: -log sigmoid(0.15)."""
    losses, rc, rr = dpo_loss(_t(-3.0), _t(-5.0), _t(-4.0), _t(-4.5), beta=0.1)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-0.15)), abs=1e-12)
    assert rc.item() == pytest.approx(0.1) and rr.item() == pytest.approx(-0.05)


def test_label_smoothing_by_hand():
    """eps 0.25, beta d = 0.15: 0.75 * log(1 + e^-0.15) + 0.25 * log(1 + e^0.15)."""
    losses, _, _ = dpo_loss(_t(-3.0), _t(-5.0), _t(-4.0), _t(-4.5), beta=0.1, label_smoothing=0.25)
    want = 0.75 * math.log(1 + math.exp(-0.15)) + 0.25 * math.log(1 + math.exp(0.15))
    assert losses.item() == pytest.approx(want, abs=1e-12)


def test_ipo_by_hand():
    """Chosen log-ratio +1 over 4 tokens, rejected -0.5 over 2: d = 0.25 + 0.25 = 0.5; beta 0.5: (0.5 - 1)^2."""
    losses, _, _ = dpo_loss(_t(-3.0), _t(-5.0), _t(-4.0), _t(-4.5), beta=0.5, loss_type="ipo",
                            chosen_tokens=_t(4.0), rejected_tokens=_t(2.0))
    assert losses.item() == pytest.approx(0.25, abs=1e-12)


def _trl_1_16(pc, pr, rc, rr, beta, loss_type, mc=None, mr=None):
    """TRL 1.16 DPOTrainer._compute_loss, reverse-KL scores (its default), restated."""
    chosen_scores, rejected_scores = pc - rc, pr - rr
    delta = chosen_scores - rejected_scores
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta)
    return (chosen_scores / mc.clamp(min=1.0) - rejected_scores / mr.clamp(min=1.0) - 1 / (2 * beta)) ** 2


def _openrlhf(pc, pr, rc, rr, beta, label_smoothing):
    """OpenRLHF's DPOLoss (cDPO form), restated."""
    logits = (pc - pr) - (rc - rr)
    return -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing


@pytest.mark.parametrize("seed", range(20))
def test_equals_trl_and_openrlhf_on_random_pairs(seed):
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-30 * torch.rand(16, generator=g, dtype=D) for _ in range(4))
    mc, mr = (torch.randint(1, 40, (16,), generator=g).to(D) for _ in range(2))
    beta = float(torch.empty(1).uniform_(0.01, 1.0, generator=g))
    eps = float(torch.empty(1).uniform_(0.0, 0.45, generator=g))
    ours, _, _ = dpo_loss(pc, pr, rc, rr, beta)
    torch.testing.assert_close(ours, _trl_1_16(pc, pr, rc, rr, beta, "sigmoid"), rtol=0, atol=1e-12)
    ours, _, _ = dpo_loss(pc, pr, rc, rr, beta, "ipo", chosen_tokens=mc, rejected_tokens=mr)
    torch.testing.assert_close(ours, _trl_1_16(pc, pr, rc, rr, beta, "ipo", mc, mr), rtol=0, atol=1e-12)
    ours, _, _ = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=eps)
    torch.testing.assert_close(ours, _openrlhf(pc, pr, rc, rr, beta, eps), rtol=0, atol=1e-12)


def test_invariances():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-20 * torch.rand(8, generator=g, dtype=D) for _ in range(4))
    base, _, _ = dpo_loss(pc, pr, rc, rr, 0.2, label_smoothing=0.1)
    shift = 3.7 * torch.rand(8, generator=g, dtype=D)  # the same constant on both sides of one completion
    moved, _, _ = dpo_loss(pc + shift, pr, rc + shift, rr, 0.2, label_smoothing=0.1)
    torch.testing.assert_close(moved, base)
    scaled, _, _ = dpo_loss(pc / 2, pr / 2, rc / 2, rr / 2, 0.4, label_smoothing=0.1)  # only beta * d matters
    torch.testing.assert_close(scaled, base)
    # swapping chosen and rejected at eps is the same loss as keeping them at 1 - eps (written out: eps < 0.5)
    d = (pc - rc) - (pr - rr)
    swapped, _, _ = dpo_loss(pr, pc, rr, rc, 0.2, label_smoothing=0.1)
    torch.testing.assert_close(swapped, -0.1 * F.logsigmoid(0.2 * d) - 0.9 * F.logsigmoid(-0.2 * d))


def test_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = _t(-3.0, -2.0).requires_grad_(), _t(-3.0, -9.0).requires_grad_()
    losses, _, _ = dpo_loss(pc, pr, _t(-3.0, -2.0), _t(-3.0, -9.0), beta=0.1)
    losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # descending the loss raises pi_c, lowers pi_r
    assert pc.grad[0].item() == pytest.approx(-0.05)  # d = 0: -beta * sigmoid(0)


def test_bad_arguments_name_the_fix():
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="allowed values: sigmoid, ipo"):
        dpo_loss(z, z, z, z, 0.1, "hinge")
    with pytest.raises(ValueError, match="chosen_tokens and rejected_tokens"):
        dpo_loss(z, z, z, z, 0.1, "ipo")
    with pytest.raises(ValueError, match=r"\[P\]"):
        dpo_loss(z, torch.zeros(3), z, z, 0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(z, z, z, z, 0.1, label_smoothing=0.5)
