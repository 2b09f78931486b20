"""Learner workers (learner/distributed.py): two worker processes, each with its share of a batch, take the same
update as one learner with the whole batch (fp32, to 1e-6) for the GRPO, SFT and DPO steps, and stay identical."""
import multiprocessing as mp

import pytest
import torch

from common.collective import free_port
from common.types import DPOParams
from learner.distributed import balanced_shards, prompt_units
from learner.fsdp import state_bytes
from learner.policy import AlgoParams
from tests.learner.test_policy import assert_same_params, make_batch, make_learner, make_pairs
from tests.tiny_models import save_model, tiny_llama


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Head tied to the embedding, as SmolLM2's: a sharded model must keep them one parameter."""
    return save_model(tiny_llama(seed=0, tie_word_embeddings=True), tmp_path_factory.mktemp("tiny_llama"))


ALGO = AlgoParams(loss_agg="token-mean")
HEAD_CHUNK = 97 * 5  # logits of 5 positions at a time: the LM head runs in chunks here, as on a large batch


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


KINDS = ("grpo", "sft", "dpo", "critic")


def _critic_steps(critic, shard):
    """One clipped value-loss step on make_batch's rows with made-up old values and returns."""
    gen = torch.Generator().manual_seed(3)
    from tests.tiny_models import random_ids

    prompts = [random_ids(gen, n) for n in (5, 5, 8, 8, 6, 6)]
    comps = [random_ids(gen, int(torch.randint(1, 7, (1,), generator=gen))) for _ in prompts]
    old = [torch.randn(len(c), generator=gen).tolist() for c in comps]
    ret = [torch.randn(len(c), generator=gen).tolist() for c in comps]
    rows = shard if shard is not None else list(range(len(prompts)))
    pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
    total = sum(len(c) for c in comps)
    return [critic.train_values(pick(prompts), pick(comps), pick(old), pick(ret), None, 0.2, total)], prompts, comps


def _make(folder, kind, sharding="replicate"):
    if kind == "critic":
        from learner.critic import Critic

        return Critic(folder, lr=1e-5, micro_batch_size=2, threads=1, sharding=sharding)
    return make_learner(folder, micro_batch_size=2, lr=1e-5, sharding=sharding)


def _run(model, kind, shard):
    return _critic_steps(model, shard)[0] if kind == "critic" else _steps(model, kind, shard, 2)


def _weights(model):
    """Every parameter's whole value (sharded: gathered from the workers, every worker calling)."""
    from learner.fsdp import full_tensor

    return {n: full_tensor(p).detach().clone() for n, p in model.model.named_parameters()}


def _worker(folder, ports, world, rank, shards, queue, sharding="replicate"):
    """Every kind in turn, in one process pair (spawning costs seconds of imports)."""
    from learner import logprobs

    logprobs.HEAD_CHUNK_ELEMENTS = HEAD_CHUNK
    torch.set_num_threads(1)
    for kind in KINDS:
        model = _make(folder, kind, sharding)
        model.init_data_parallel("127.0.0.1", ports[kind], world, rank, "gloo")
        metrics = _run(model, kind, shards[kind][rank])
        held = sum(state_bytes(model.model, model.opt).values())  # this worker's parameters, gradients, AdamW state
        queue.put((kind, rank, metrics, {k: v.numpy() for k, v in _weights(model).items()}, held))  # not shared


def _shards(folder, kind, world):
    if kind == "critic":
        return [[0, 1, 4, 5], [2, 3]]  # whole prompt runs (5, 5 / 8, 8 / 6, 6 tokens of prompt)
    learner = make_learner(folder)
    if kind == "dpo":
        pairs = make_pairs(learner)
        lengths = [len(a) + len(b) for a, b in zip(pairs.chosen_ids, pairs.rejected_ids)]
        return balanced_shards(lengths, [[i] for i in range(len(lengths))], world)
    batch = make_batch(learner)
    units = prompt_units(batch.prompt_ids) if kind == "grpo" else [[i] for i in range(len(batch.prompt_ids))]
    return balanced_shards([len(c) for c in batch.completion_ids], units, world)


@pytest.mark.parametrize("sharding", ["replicate", "fsdp"])
def test_two_workers_take_the_single_learners_update(folder, sharding, monkeypatch):
    """GRPO (2 inner steps, token-mean then seq-mean with the learner's own old logprobs), SFT, DPO and the PPO
    critic's value step: each worker has its balanced share, and both end where one learner with the whole batch
    does, whether each holds the whole model (replicate) or half of it (fsdp: shared prompts, the LM head in chunks
    of 5 positions and the tied embedding included; the workers' micro-batch counts differ, so one runs lockstep
    passes)."""
    from learner import logprobs

    monkeypatch.setattr(logprobs, "HEAD_CHUNK_ELEMENTS", HEAD_CHUNK)
    want, shards, held = {}, {}, {}
    for kind in KINDS:
        single = _make(folder, kind)
        before = _weights(single)
        want[kind] = (_run(single, kind, None), _weights(single))
        held[kind] = sum(state_bytes(single.model, single.opt).values())
        assert max((want[kind][1][n] - before[n]).abs().max().item() for n in before) > 5e-6, kind  # it moved
        shards[kind] = _shards(folder, kind, 2)
        assert all(shards[kind]) and sorted(sum(shards[kind], [])) == sorted(set(sum(shards[kind], [])))
    ctx = mp.get_context("spawn")
    queue, ports = ctx.Queue(), {kind: free_port() for kind in KINDS}
    procs = [ctx.Process(target=_worker, args=(folder, ports, 2, r, shards, queue, sharding)) for r in range(2)]
    for p in procs:
        p.start()
    got = {}
    for _ in range(2 * len(KINDS)):
        kind, rank, metrics, ps, worker_held = queue.get(timeout=600)
        got[(kind, rank)] = (metrics, {k: torch.from_numpy(v) for k, v in ps.items()})
        # replicated workers hold what one learner does; sharded ones about half (a shard is rounded up a row)
        assert worker_held / held[kind] == (pytest.approx(1.0) if sharding == "replicate" else pytest.approx(
            0.5, abs=0.05)), (kind, rank)
    for p in procs:
        p.join(timeout=60)
    for kind in KINDS:
        want_metrics, want_params = want[kind]
        for rank in (0, 1):
            metrics, ps = got[(kind, rank)]
            assert_same_params(ps, want_params, atol=1e-6)
            for m, w in zip(metrics, want_metrics, strict=True):
                for key in ("loss", "pg_loss", "entropy", "grad_norm", "clip_frac", "kl", "sft/loss", "sft/grad_norm", "dpo/loss",
                            "dpo/margin", "dpo/accuracy", "dpo/grad_norm", "vf_loss", "vf_clip_frac",
                            "head_positions"):  # the batch's completion tokens, summed over the workers
                    if key in w:
                        assert m[key] == pytest.approx(w[key], rel=1e-5, abs=1e-7), (kind, rank, key)
        assert_same_params(got[(kind, 0)][1], got[(kind, 1)][1], atol=0)  # the workers stay identical
