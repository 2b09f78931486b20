"""A process group of its own between the learner (rank 0) and every engine's worker (ranks 1..n), for
broadcasting weights: gloo on CPU, NCCL on GPU, the same code. It is built from a TCPStore and the backend's
ProcessGroup class directly, so torch.distributed's global group (vLLM's, a user's) is never touched.

    group = SyncGroup(host, port, world_size, rank, backend)   # every rank at once (a rendezvous)
    group.broadcast(tensor, src=0)                               # rank 0 sends, the others receive in place
"""
from __future__ import annotations

import datetime


class SyncGroup:
    def __init__(self, host: str, port: int, world_size: int, rank: int, backend: str = "gloo",
                 timeout_s: float = 600.0):
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        if backend == "gloo":
            self.pg = dist.ProcessGroupGloo(self.store, rank, world_size, timeout)
        elif backend == "nccl":
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.pg = dist.ProcessGroupNCCL(self.store, rank, world_size, opts)
        else:
            raise ValueError(f"unknown sync backend {backend!r}: gloo (CPU) or nccl (GPU)")
        self.device = "cuda" if backend == "nccl" else "cpu"

    def all_reduce(self, tensor, op: str = "sum") -> None:
        """`tensor` replaced in place by its sum (op 'sum') or maximum ('max') over the group's ranks."""
        import torch.distributed as dist

        opts = dist.AllreduceOptions()
        opts.reduceOp = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
        self.pg.allreduce([tensor], opts).wait()

    def broadcast(self, tensor, src: int = 0) -> None:
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank = src
        self.pg.broadcast([tensor], opts).wait()


def receive(group: SyncGroup, meta):
    """(name, tensor) for each (name, shape, dtype) of `meta`, received from rank 0 in that order (lazily: a
    consumer that loads each tensor as it comes holds one at a time)."""
    import torch

    for name, shape, dtype in meta:
        t = torch.empty(tuple(shape), dtype=getattr(torch, dtype), device=group.device)
        group.broadcast(t, src=0)
        yield name, t


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
