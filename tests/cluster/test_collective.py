"""The collective weight-sync path (cluster.weight_sync=collective): a gloo group of its own between the learner and
every engine, torch.distributed's global group untouched; the engines end up with the learner's weights (the sync
check's probe on each), on the HF engine here; on real vLLM in the jobs: two engines and one learner
(tests/jobs/test_grpo_job.py test_two_grpo_steps_on_local_ray_with_vllm), two sharded learner workers resumed over it
(tests/jobs/test_learner_workers.py)."""
import multiprocessing as mp

import pytest


def _rank(rank: int, port: int, out) -> None:
    import torch
    import torch.distributed as dist

    from common.collective import SyncGroup, receive

    group = SyncGroup("127.0.0.1", port, 3, rank, "gloo", timeout_s=60)
    meta = [("a", (2, 3), "float32"), ("b", (4,), "int64")]
    if rank == 0:
        group.broadcast(torch.arange(6, dtype=torch.float32).reshape(2, 3))
        group.broadcast(torch.tensor([7, 8, 9, 10]))
        out.put((rank, None, dist.is_initialized()))
    else:
        got = {k: v.tolist() for k, v in receive(group, meta)}
        out.put((rank, got, dist.is_initialized()))


def test_a_sync_group_broadcasts_to_every_rank_without_the_global_group():
    from common.collective import free_port

    ctx, port = mp.get_context("spawn"), free_port()
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, out)) for r in range(3)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [r[2] for r in results] == [False, False, False]  # torch.distributed's global group never made
    for rank, got, _ in results[1:]:
        assert got == {"a": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], "b": [7, 8, 9, 10]}


@pytest.mark.ray
def test_collective_sync_reaches_every_hf_engine(tmp_path, ray_session):
    from cluster.groups import get
    from cluster.system import open_system
    from common.config import load_config
    from tests.tiny_models import char_tokenizer, tiny_llama

    tiny_llama(seed=0).save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    cfg = load_config(None, [f"model.policy={tmp_path}", "rollout.engine=hf", "cluster.weight_sync=collective",
                             "cluster.num_rollout_actors=2", "cluster.threads=1", "cluster.num_cpus=2",
                             "task.name=arithmetic"])
    system = open_system(cfg, str(tmp_path), [{"name": "arithmetic", "weight": 1.0, "params": {}}])
    try:
        def noise(learner):
            import torch

            with torch.no_grad():
                for p in learner.model.parameters():
                    p.add_(0.05 * torch.randn_like(p))

        get(system.learner.members[0].__ray_call__.remote(noise))
        with pytest.raises(RuntimeError, match="weight sync failed"):
            system.weights.verify()
        system.sync_weights()  # broadcast over gloo into both engines, then checked on each
        system.weights.verify()
        get(system.learner.members[0].__ray_call__.remote(noise))
        system.sync_weights()  # the group is reused for the next sync
    finally:
        system.shutdown()
