"""Learner workers (learner/distributed.py): two worker processes, each with its share of a batch, take the same
update as one learner with the whole batch (fp32, to 1e-6) for the GRPO, SFT and DPO steps, and stay identical."""
import multiprocessing as mp

import pytest
import torch

from common.collective import free_port
from common.types import DPOParams
from learner.distributed import balanced_shards, prompt_units
from learner.policy import AlgoParams
from tests.learner.test_policy import assert_same_params, make_batch, make_learner, make_pairs, params
from tests.tiny_models import save_model, tiny_llama


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_model(tiny_llama(seed=0), tmp_path_factory.mktemp("tiny_llama"))


ALGO = AlgoParams(loss_agg="token-mean")


def _shard_batch(batch, rows):
    from common.types import TrainBatch

    pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
    return TrainBatch(pick(batch.prompt_ids), pick(batch.completion_ids), pick(batch.old_logprobs),
                      pick(batch.ref_logprobs), pick(batch.advantages))


def _steps(learner, kind: str, shard: list[int] | None, world: int):
    """The steps every test case takes (shard None: the whole batch, one learner)."""
    from common.types import PreferenceBatch

    out = []
    if kind == "grpo":
        batch = make_batch(learner)
        rows = shard if shard is not None else list(range(len(batch.completion_ids)))
        totals = (len(batch.completion_ids), sum(len(c) for c in batch.completion_ids))
        for algo in (ALGO, AlgoParams(loss_agg="seq-mean-token-mean", old_logprobs="learner")):
            out.append(learner.train_step(_shard_batch(batch, rows), algo, inner_steps=2, totals=totals))
    elif kind == "sft":
        batch = make_batch(learner)
        rows = shard if shard is not None else list(range(len(batch.completion_ids)))
        total = sum(len(c) for c in batch.completion_ids)
        out.append(learner.sft_step([batch.prompt_ids[i] for i in rows], [batch.completion_ids[i] for i in rows],
                                    total))
    else:
        pairs = make_pairs(learner)
        rows = shard if shard is not None else list(range(len(pairs.prompt_ids)))
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        totals = (len(pairs.prompt_ids), sum(len(c) for c in pairs.chosen_ids + pairs.rejected_ids))
        out.append(learner.dpo_step(PreferenceBatch(*(pick(x) for x in (
            pairs.prompt_ids, pairs.chosen_ids, pairs.rejected_ids, pairs.ref_chosen, pairs.ref_rejected))),
            DPOParams(beta=0.3), totals))
    return out


def _worker(folder, kind, port, world, rank, shard, queue):
    torch.set_num_threads(1)
    learner = make_learner(folder, micro_batch_size=2, lr=1e-5)
    learner.init_data_parallel("127.0.0.1", port, world, rank, "gloo")
    metrics = _steps(learner, kind, shard, world)
    queue.put((rank, metrics, {k: v.numpy() for k, v in params(learner).items()}))  # no shared-memory tensors


def _shards(folder, kind, world):
    learner = make_learner(folder)
    if kind == "dpo":
        pairs = make_pairs(learner)
        lengths = [len(a) + len(b) for a, b in zip(pairs.chosen_ids, pairs.rejected_ids)]
        return balanced_shards(lengths, [[i] for i in range(len(lengths))], world)
    batch = make_batch(learner)
    units = prompt_units(batch.prompt_ids) if kind == "grpo" else [[i] for i in range(len(batch.prompt_ids))]
    return balanced_shards([len(c) for c in batch.completion_ids], units, world)


@pytest.mark.parametrize("kind", ["grpo", "sft", "dpo"])
def test_two_workers_take_the_single_learners_update(folder, kind):
    single = make_learner(folder, micro_batch_size=2, lr=1e-5)
    before = params(single)
    want_metrics = _steps(single, kind, None, 1)
    want = params(single)
    shards = _shards(folder, kind, 2)
    assert all(shards) and sorted(sum(shards, [])) == sorted(set(sum(shards, [])))
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_worker, args=(folder, kind, port, 2, r, shards[r], queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = {r: (m, {k: torch.from_numpy(v) for k, v in ps.items()}) for r, m, ps in (queue.get(timeout=300)
                                                                                   for _ in procs)}
    for p in procs:
        p.join(timeout=60)
    assert max((want[n] - before[n]).abs().max().item() for n in want) > 5e-6  # the step moved the weights
    for rank in (0, 1):
        metrics, ps = got[rank]
        assert_same_params(ps, want, atol=1e-6)
        for m, w in zip(metrics, want_metrics):
            for key in ("loss", "grad_norm", "clip_frac", "kl", "sft/loss", "sft/grad_norm", "dpo/loss", "dpo/margin",
                        "dpo/accuracy", "dpo/grad_norm"):
                if key in w:
                    assert m[key] == pytest.approx(w[key], rel=1e-5, abs=1e-7), (rank, key)
    assert_same_params(got[0][1], got[1][1], atol=0)  # the workers stay identical
