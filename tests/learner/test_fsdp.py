"""Sharded workers (learner/fsdp.py) beyond one step (tests/learner/test_distributed.py has the step itself): the
frozen reference sharded over workers answering their own rows; whole weights out of the shards one bucket at a
time; a checkpoint written from shards that plain transformers loads (tied head included); and resuming from the
sharded optimizer state equals the uninterrupted run, on the same worker count and on another one."""
import multiprocessing as mp

import numpy as np
import pytest
import torch

from common.collective import free_port
from learner.policy import AlgoParams, Reference
from tests.learner.test_policy import make_batch, make_learner
from tests.tiny_models import save_model, tiny_llama

ALGO = AlgoParams(loss_agg="token-mean")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_model(tiny_llama(seed=0, tie_word_embeddings=True), tmp_path_factory.mktemp("tiny_tied"))


def _spawn(target, world: int, *args) -> list:
    """`target(rank, world, port, *args)` in `world` fresh processes; their results by rank."""
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_child, args=(target, r, world, port, queue, args)) for r in range(world)]
    for p in procs:
        p.start()
    out = dict(queue.get(timeout=240) for _ in range(world))
    for p in procs:
        p.join(timeout=60)
    assert all(not isinstance(v, BaseException) for v in out.values()), out
    return [out[r] for r in range(world)]


def _child(target, rank, world, port, queue, args):
    import faulthandler

    faulthandler.dump_traceback_later(200, exit=True)  # a hang shows where each worker waits
    torch.set_num_threads(1)
    try:
        queue.put((rank, target(rank, world, port, *args)))
    except BaseException as err:  # noqa: BLE001 -- the parent reports it
        queue.put((rank, RuntimeError(f"rank {rank}: {type(err).__name__}: {err}")))


def _learner(folder, rank, world, port, **kw):
    learner = make_learner(folder, micro_batch_size=2, lr=1e-4, sharding="fsdp", **kw)
    learner.init_data_parallel("127.0.0.1", port, world, rank, "gloo")
    return learner


def _half(batch, rank, world):
    """Each worker's whole groups (4 rows each) in turn."""
    groups = [list(range(g, g + 4)) for g in range(0, len(batch.completion_ids), 4)]
    return [i for k, g in enumerate(groups) if k % world == rank for i in g]


def _totals(batch):
    return len(batch.completion_ids), sum(len(c) for c in batch.completion_ids)


# ---- the reference ---------------------------------------------------------------------------------------------

def _reference(rank, world, port, folder, rows):
    ref = Reference(folder, micro_batch_size=1, threads=1, sharding="fsdp")
    ref.init_data_parallel("127.0.0.1", port, world, rank, "gloo")
    batch = make_batch(make_learner(folder))
    mine = rows[rank]
    return mine, ref.logprobs([batch.prompt_ids[i] for i in mine], [batch.completion_ids[i] for i in mine])


def test_a_sharded_reference_answers_each_workers_own_rows(folder):
    """Rank 0 has 5 rows, rank 1 has 3 (micro-batches of one: rank 1 runs two empty passes to keep in step)."""
    batch = make_batch(make_learner(folder))
    want = Reference(folder, micro_batch_size=1, threads=1).logprobs(batch.prompt_ids, batch.completion_ids)
    for mine, got in _spawn(_reference, 2, folder, [[0, 1, 2, 4, 6], [3, 5, 7]]):
        for i, row in zip(mine, got, strict=True):
            assert row == pytest.approx(want[i], abs=1e-5)


# ---- weights and checkpoints -----------------------------------------------------------------------------------

def _train_save_resume(rank, world, port, folder, out, steps_before, steps_after, load_from):
    """`steps_before` GRPO steps, save to `out` (when given), or load `load_from` first; then `steps_after` more.
    Returns the whole weights (rank 0), the buckets' names, and the last step's metrics."""
    learner = _learner(folder, rank, world, port)
    batch = make_batch(learner)
    mine = batch.rows(_half(batch, rank, world))
    if load_from:
        learner.load_trainer_state(load_from)
    for _ in range(steps_before):
        learner.train_step(mine, ALGO, totals=_totals(batch))
    if out:
        learner.logprobs(batch.prompt_ids[:2], batch.completion_ids[:2])  # a pass without backward, as the sync check's
        learner.save(out)
    m = None
    for _ in range(steps_after):
        m = learner.train_step(mine, ALGO, totals=_totals(batch))
    arrays = [x for i in range(len(learner.weight_buckets())) for x in (learner.bucket_arrays(i) or [])]
    return {k: np.array(v) for k, v in arrays}, learner.weight_buckets(), m


def test_buckets_checkpoint_and_resume_on_the_same_and_another_worker_count(folder, tmp_path):
    whole, buckets, last = _spawn(_train_save_resume, 2, folder, None, 3, 0, None)[0]
    # the buckets: the root's (embedding, norm, the tied head under both names) first, then one per layer
    assert len(buckets) == 3 and "model.embed_tokens.weight" in buckets[0] and "lm_head.weight" in buckets[0]
    assert all(n.startswith(f"model.layers.{k}.") for k, b in enumerate(buckets[1:]) for n in b)
    np.testing.assert_array_equal(whole["lm_head.weight"], whole["model.embed_tokens.weight"])
    # 2 steps, checkpoint, 1 more: the same weights as 3 steps in a row
    ckpt = tmp_path / "ckpt"
    _spawn(_train_save_resume, 2, folder, str(ckpt), 2, 0, None)
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(ckpt)  # an ordinary HF folder, the head tied again
    assert plain.lm_head.weight is plain.model.embed_tokens.weight
    resumed = _spawn(_train_save_resume, 2, folder, None, 0, 1, str(ckpt))[0][0]
    for name, value in whole.items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-6, err_msg=name)
    # the HF folder holds the weights after 2 steps: one step short of `whole`, and it moved
    two = dict(plain.state_dict())
    assert max(np.abs(two[n].numpy() - whole[n]).max() for n in whole) > 1e-6
    # the sharded optimizer state resumes on one worker too (torch.distributed.checkpoint reshards it)
    one = _spawn(_train_save_resume, 1, folder, None, 0, 1, str(ckpt))[0][0]
    for name, value in whole.items():
        np.testing.assert_allclose(one[name], value, atol=1e-6, err_msg=name)


def test_a_replicated_checkpoint_does_not_resume_sharded_workers(folder, tmp_path):
    make_learner(folder).save(str(tmp_path / "plain"))
    err = _spawn(_load_only, 1, folder, str(tmp_path / "plain"))[0]
    assert "was saved by replicated learner workers" in err and "learner.sharding" in err


def _load_only(rank, world, port, folder, path):
    learner = _learner(folder, rank, world, port)
    try:
        learner.load_trainer_state(path)
    except ValueError as err:
        return str(err)
    return "loaded"


def _gpu_step(rank, world, port, folder, precision):
    learner = make_learner(folder, micro_batch_size=2, lr=1e-4, sharding="fsdp", precision=precision)
    learner.init_data_parallel("127.0.0.1", port, world, rank, "nccl")
    batch = make_batch(learner)
    m = learner.train_step(batch, ALGO)
    arrays = [x for i in range(len(learner.weight_buckets())) for x in (learner.bucket_arrays(i) or [])]
    return {k: np.array(v) for k, v in arrays}, m


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_on_a_gpu_a_sharded_learner_takes_the_whole_learners_update(folder):
    """NCCL, the model's shards on the GPU; fp32 equals the replicated learner, bf16 (FSDP's mixed precision)
    trains too (a finite loss; its update is not fp32's)."""
    single = make_learner(folder, micro_batch_size=2, lr=1e-4, precision="fp32")
    single.train_step(make_batch(single), ALGO)
    want = {k: v.detach().cpu().numpy() for k, v in single.model.state_dict().items()}
    got, _ = _spawn(_gpu_step, 1, folder, "fp32")[0]
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name], atol=1e-5, err_msg=name)
    _, m = _spawn(_gpu_step, 1, folder, "bf16")[0]
    assert np.isfinite(m["pg_loss"]) and m["grad_norm"] > 0


# ---- the collective weight sync from shards: worker 0 sends, the others only gather ---------------------------------

class _Collect:
    """A stand-in for worker 0's weight-sync group (common/collective.py SyncGroup): keeps what it is sent."""
    device = torch.device("cpu")

    def __init__(self):
        self.sent = []

    def broadcast(self, tensor, src):
        self.sent.append(tensor.clone().numpy())


def _send(rank, world, port, folder):
    learner = _learner(folder, rank, world, port)
    if rank == 0:  # only worker 0 joins the group with the engines (cluster/weight_sync.py)
        learner.sync_group = _Collect()
    learner.broadcast_weights()
    names = [name for name, _, _ in learner.weights_meta()]
    return names, learner.sync_group.sent if rank == 0 else None


def test_sharded_workers_send_whole_weights_from_worker_0_alone(folder):
    from common.models import load_lm

    (names, sent), (names1, none) = _spawn(_send, 2, folder)
    whole = load_lm(folder).state_dict()
    assert none is None and names1 == names and len(sent) == len(names)  # in weights_meta's order, the head too
    for name, value in zip(names, sent):
        np.testing.assert_array_equal(value, whole[name].numpy(), err_msg=name)
