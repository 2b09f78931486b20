"""Data parallelism for the learner (`learner.workers: N`): N learner processes, each given its share of a step's
sequences. Replicated (learner.sharding=replicate), each holds the whole model and optimizer state; after the local
backward passes one all-reduce sums the gradients, and every worker takes the same optimizer step, so the workers
stay identical (DDP's semantics). Sharded (fsdp), each holds 1/N of them (learner/fsdp.py).

The losses are written with the whole batch's denominators (learner/losses.py `global_denominator`; SFT's target
count; DPO's pair count), passed in as the step's `totals`, so the gradients summed over the workers are the
single-worker batch's gradient whatever the split (tests/learner/test_distributed.py: 2 workers equal 1 to 1e-6 in
fp32). Metrics are summed (keys ending `_max`: maximised) over the workers with the same all-reduce.

The group is a torch.distributed process group of the workers' own (common/collective.py: gloo on CPU, NCCL on GPU,
built from a TCPStore), never the global default group, as the collective weight sync's.

Sharded workers (learner.sharding=fsdp, the default for several workers) use this group too, for the metric sums and
the micro-batch counts they agree on; FSDP2 itself runs on the workers' default process group (learner/fsdp.py).
"""
from __future__ import annotations

import json

import torch


class DataParallel:
    """This worker's place among the learner workers and the collectives of a step."""

    def __init__(self, host: str, port: int, world_size: int, rank: int, backend: str = "gloo",
                 timeout_s: float = 600.0):
        from common.collective import SyncGroup

        self.group = SyncGroup(host, port, world_size, rank, backend, timeout_s)
        self.rank, self.world_size, self.timeout_s = rank, world_size, timeout_s
        self.calls = 0
        self.sharded = False  # FSDP workers (learner/fsdp.py): set when the model is sharded

    def max_count(self, n: int) -> int:
        """The largest `n` over the workers (the micro-batches every sharded worker runs)."""
        return int(self._all_reduce(torch.tensor([n], dtype=torch.int64), "max").item())

    def _all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        self.group.all_reduce(tensor, op)
        return tensor

    def reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the workers, in place (one flat buffer per dtype); a worker without a
        gradient for a parameter (it had no sequence that reached it) adds zeros."""
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in params:
            by_dtype.setdefault(p.dtype, []).append(p)
        for dtype, ps in by_dtype.items():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
            flat = torch.cat([g.reshape(-1) for g in grads]).to(self.group.device)
            self._all_reduce(flat)
            flat = flat.to(ps[0].device)
            offset = 0
            for p in ps:
                n = p.numel()
                p.grad = flat[offset:offset + n].view_as(p).to(dtype).clone()
                offset += n

    def reduce_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """`sums` added over the workers (keys ending `_max`: the largest); a key one worker lacks counts 0 there
        (or is ignored, for a maximum). The key union goes through the group's store."""
        self.calls += 1
        store = self.group.store
        store.set(f"metric-keys/{self.calls}/{self.rank}", json.dumps(sorted(sums)))
        keys = sorted({k for r in range(self.world_size)
                       for k in json.loads(store.get(f"metric-keys/{self.calls}/{r}").decode())})
        plain = [k for k in keys if not k.endswith("_max")]
        peak = [k for k in keys if k.endswith("_max")]
        total = self._all_reduce(torch.tensor([sums.get(k, 0.0) for k in plain], dtype=torch.float64))
        top = self._all_reduce(torch.tensor([sums.get(k, -float("inf")) for k in peak], dtype=torch.float64), "max")
        return {**dict(zip(plain, total.tolist())), **dict(zip(peak, top.tolist()))}


def prompt_units(prompt_ids: list[list[int]]) -> list[list[int]]:
    """Runs of consecutive rows that share a prompt (a GRPO group, a DPO pair): the learner runs such a prompt once,
    so a run stays on one worker.

        >>> prompt_units([[1], [1], [2], [1]])
        [[0, 1], [2], [3]]
    """
    out: list[list[int]] = []
    for i, p in enumerate(prompt_ids):
        if out and prompt_ids[out[-1][-1]] == p:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def balanced_shards(lengths: list[int], units: list[list[int]], n: int) -> list[list[int]]:
    """Row indices of each of `n` workers: whole `units` (lists of rows that stay together), dealt largest first
    (by the sum of their rows' `lengths`) to the worker with the fewest tokens so far; each worker's rows in their
    original order. Fewer units than workers leave some workers empty (they still join the step's all-reduce).

        >>> balanced_shards([5, 5, 1, 1, 3, 3, 2, 2], [[0, 1], [2, 3], [4, 5], [6, 7]], 2)
        [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    load, out = [0] * n, [[] for _ in range(n)]
    for rows in sorted(units, key=lambda rs: -sum(lengths[i] for i in rs)):
        w = min(range(n), key=lambda k: (load[k], k))
        out[w] += rows
        load[w] += sum(lengths[i] for i in rows)
    return [sorted(rows) for rows in out]
