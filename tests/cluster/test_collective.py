"""The collective weight-sync path (cluster.weight_sync=collective): a gloo group of its own between the learner and
every engine, torch.distributed's global group untouched; the engines end up with the learner's weights (the sync
check's probe on each), on the HF engine (fast) and on real vLLM (slow, the smoke preset end to end)."""
import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pytest

from tests.real_path import assert_engine_held_learner_weights, run_precision

ROOT = Path(__file__).resolve().parents[2]


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
def test_collective_sync_reaches_every_hf_engine(tmp_path):
    import ray

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
    assert not ray.is_initialized()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("workers", [[], ["learner.workers=2"]], ids=["1-learner", "2-learners"])
def test_collective_sync_on_the_real_path(shared_data, tmp_path, tiny_policy_dir, workers):
    """The smoke preset with weight_sync=collective: local Ray, vLLM engine, the tiny policy (the transport is the
    point, not the weights); every step's samples come from the learner's weights (logprob gap), the probe check
    passes after every sync."""
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "grpo_mlqa.py"), "--config",
                           str(ROOT / "jobs" / "configs" / "smoke.yaml"), "--local", f"train.output_dir={tmp_path}",
                           "cluster.weight_sync=collective", "rollout.kv_cache_gib=1", "train.eval_at_start=false",
                           "data.eval_size=4", f"model.policy={tiny_policy_dir}", *workers], capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = [r for r in map(json.loads, (tmp_path / "smoke" / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "step"]
    assert len(steps) == 2
    for r in steps:
        assert_engine_held_learner_weights(r, run_precision(tmp_path / "smoke"))
    assert "[cluster]" not in proc.stdout  # no retry: every collective sync went through and passed its check
