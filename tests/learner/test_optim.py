"""learner/optim.py: the one accumulated step (metric means and maxima, gradients that add up to the full batch's,
clipping over the optimizer's parameters) and the optimizer kinds; the critic's step over any cut of its batch."""
import math

import pytest
import torch

from learner.optim import accumulate, make_optimizer


def linear(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 1, bias=False)


def test_metrics_are_weighted_means_and_max_keys_take_the_maximum():
    model = linear()
    opt, sched = make_optimizer(model.parameters(), "adamw_foreach", 0.1, total_steps=4)
    parts = [({"a": 1.0, "d_max": 5.0}, 1.0), ({"a": 4.0, "d_max": 2.0}, 3.0)]  # (metrics, weight)
    out = accumulate(model, opt, sched, parts, lambda p: (model.weight.sum() * 0.0, *p), total_weight=4.0)
    assert out["a"] == (1.0 * 1 + 4.0 * 3) / 4  # 3.25: token-weighted mean
    assert out["d_max"] == 5.0  # the largest, not a mean
    assert out["grad_norm"] == 0.0 and out["lr"] == 0.1  # constant schedule, no warmup
    assert not model.training  # eval mode after the step


def test_accumulated_gradient_equals_the_full_batch_and_clipping_scales_it():
    x, y = torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), torch.arange(6.0)

    def grads(cut, grad_clip):
        model = linear()
        opt, sched = make_optimizer(model.parameters(), "adamw", 1e-3, total_steps=1)
        loss_of = lambda sl: (((model(x[sl]).squeeze(-1) - y[sl]) ** 2).sum() / 6, {}, 1.0)  # noqa: E731
        out = accumulate(model, opt, sched, [slice(a, b) for a, b in cut], loss_of, grad_clip)
        return model.weight.grad.clone(), out["grad_norm"]

    g_full, norm = grads([(0, 6)], None)
    g_cut, norm_cut = grads([(0, 1), (1, 4), (4, 6)], None)
    torch.testing.assert_close(g_cut, g_full, rtol=1e-6, atol=0)
    assert norm == pytest.approx(g_full.norm().item()) and norm_cut == pytest.approx(norm)
    g_clipped, norm_clipped = grads([(0, 6)], grad_clip=norm / 2)
    assert norm_clipped == pytest.approx(norm)  # reported before clipping
    torch.testing.assert_close(g_clipped, g_full / 2, rtol=1e-5, atol=0)


@pytest.mark.parametrize("kind", ["adamw", "adamw_foreach", "adafactor"])
def test_optimizer_kinds_and_the_warmup(kind):
    model = linear()
    opt, sched = make_optimizer(model.parameters(), kind, 1.0, total_steps=10, warmup_ratio=0.2, schedule="cosine",
                                weight_decay=0.1)
    assert opt.param_groups[0]["weight_decay"] == 0.1
    lrs = [sched.get_last_lr()[0]]
    for _ in range(3):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[:3] == [0.5, 1.0, 1.0]  # warmup round(0.2 x 10) = 2 steps, then cosine from its top
    assert lrs[3] == pytest.approx(0.5 * (1 + math.cos(math.pi / 8)))
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(model.parameters(), "sgd", 1.0, total_steps=1)


def test_critic_step_is_the_same_for_any_cut_of_the_batch(tmp_path):
    """Each chunk's token mean weighs by its token share: one update, whatever the micro-batches."""
    from learner.critic import Critic
    from tests.tiny_models import random_ids, save_model, tiny_llama

    folder = save_model(tiny_llama(seed=0), tmp_path)
    gen = torch.Generator().manual_seed(0)
    prompts = [random_ids(gen, 4 + i % 3) for i in range(5)]
    completions = [random_ids(gen, 1 + 2 * i) for i in range(5)]
    returns = [torch.randn(len(c), generator=gen).tolist() for c in completions]
    out = {}
    for mbs in (5, 2):
        critic = Critic(folder, lr=1e-5, micro_batch_size=mbs, threads=1)
        old = critic.values(prompts, completions)
        m = critic.train_values(prompts, completions, old, returns, None, clip_eps=0.2)
        out[mbs] = m, {n: p.grad for n, p in critic.model.named_parameters()}  # lm_head: None, never runs
    (m5, g5), (m2, g2) = out[5], out[2]
    assert m2["vf_loss"] == pytest.approx(m5["vf_loss"], rel=1e-5) and "explained_var" not in m2
    assert m2["grad_norm"] == pytest.approx(m5["grad_norm"], rel=1e-5)
    assert [n for n in g5 if g5[n] is None] == [n for n in g2 if g2[n] is None] == ["lm.lm_head.weight"]
    for n in g5:
        if g5[n] is not None:
            torch.testing.assert_close(g2[n], g5[n], rtol=1e-4, atol=1e-7, msg=n)
