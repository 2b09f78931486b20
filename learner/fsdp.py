"""FSDP2 sharding of a training worker's model (`learner.sharding: fsdp`): each of N workers holds 1/N of the
parameters, gradients and optimizer state; a decoder layer's full weights exist only while it runs.

Units: `fully_shard` on every decoder layer, then on a root module `Call` that owns the rest (embedding, final
norm, the LM head: a tied head is the embedding's own Parameter, one unit holding both, checked after sharding:
verl#7834 is a head silently untied by sharding, which leaves the embedding half its gradient).

Why a root of our own: FSDP2's all-gathers and reduce-scatters fire in module forward hooks, and this learner never
calls the model's forward. It runs the body on every position, the head only at the completion positions in chunks
(learner/logprobs.py) and shares a group's prompt through a KV cache. So each micro-batch is one call of `Call`,
whose forward is whatever the learner does with the model (`fn(model)`): the root's hooks unshard the embedding and
head around it, the layers' hooks fire as the body calls them, and the root's gradient is reduced after backward.

Lockstep: every worker must issue the same collectives in the same order, so
  - every micro-batch calls the body the same number of times: the shared-prompt path with exactly two passes
    (prompt, then completions against its cache; a row of its own is a group of one; a one-token completion still
    runs a masked second pass): `uniform=True` in learner/logprobs.py;
  - every worker runs as many micro-batches as the busiest one: the others run `dummy` ones, a one-row pass whose
    loss is multiplied by 0 (its backward still runs every unit's hooks).
Gradients are summed, not averaged, over the workers (the losses carry the whole batch's denominators, as with
replicated workers: learner/distributed.py): divide factor 1, and plain sums on the wire (gloo has no PREMUL_SUM).

The default process group of a worker process is the workers' own (a learner worker is a process of its own;
DeviceMesh needs the default group), built on the TCPStore of the workers' DataParallel group.
"""
from __future__ import annotations

import torch

DUMMY = "dummy"  # a micro-batch that only keeps a worker in step with the others


class Call(torch.nn.Module):
    """The FSDP root: `root(fn, *args)` runs `fn(model, *args)` inside one root forward."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args):
        return _own(fn(self.model, *args))


def _own(out):
    """A view returned from the root loses FSDP's pre-backward hook to any later in-place op on it (torch warns so):
    the root hands back views as their own tensors (a copy of what is usually a few logprobs a position)."""
    if isinstance(out, torch.Tensor):
        return out.clone() if out._base is not None else out
    if isinstance(out, (tuple, list)):
        return type(out)(_own(o) for o in out)
    return out


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The repeated blocks of a causal LM (or of a ValueModel's / a peft model's LM): the FSDP units."""
    from learner.logprobs import body_and_head

    lm = getattr(model, "lm", model)  # the critic's ValueModel
    body, _ = body_and_head(lm)
    n = lm.config.num_hidden_layers
    for module in body.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"found no list of {n} decoder layers in {type(lm).__name__}; learner.sharding=fsdp needs a "
                     "decoder-only model with its layers in a ModuleList (Llama, Qwen, Mistral, Gemma, ...)")


def tied(model: torch.nn.Module) -> bool:
    lm = getattr(model, "lm", model)
    head, emb = lm.get_output_embeddings(), lm.get_input_embeddings()
    return head is not None and head.weight is emb.weight


def init_default_group(store, rank: int, world_size: int, backend: str, timeout_s: float):
    """This worker process's default process group (FSDP's), on a prefix of the workers' store; the 1-D mesh."""
    import datetime

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        dist.init_process_group(backend, store=dist.PrefixStore("fsdp", store), rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return init_device_mesh("cuda" if backend == "nccl" else "cpu", (world_size,))


def shard(model: torch.nn.Module, mesh, bf16: bool, offload: bool) -> Call:
    """`model` sharded in place (layers, then the root around it); the root to call it through. bf16: FSDP's
    mixed precision, bf16 compute and all-gathers, fp32 master weights and gradient reduction. offload: parameters,
    gradients and optimizer state live on the CPU between uses (CPUOffloadPolicy)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    was_tied = tied(model)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    kw = dict(mesh=mesh, mp_policy=mp, offload_policy=CPUOffloadPolicy() if offload else OffloadPolicy())
    layers = list(decoder_layers(model))
    for layer in layers:
        fully_shard(layer, **kw)
    root = Call(model)
    # resharded after every forward, the root too (FSDP2 keeps a root whole by default): a pass without backward
    # (logprobs, the probe) would leave its whole parameters registered, and the optimizer's shards out of the model
    fully_shard(root, reshard_after_forward=True, **kw)
    for unit in (root, *layers):
        unit.set_gradient_divide_factor(1.0)  # a sum over the workers: the losses hold the batch's denominators
        unit.set_force_sum_reduction_for_comms(True)
    if was_tied and not tied(model):  # verl#7834: a head untied by sharding trains apart from the embedding
        raise RuntimeError("sharding untied the LM head from the embedding; this torch's fully_shard does not keep "
                           "shared parameters shared: use learner.sharding=replicate")
    return root


def shard_over(dp, model: torch.nn.Module, bf16: bool, offload: bool) -> Call:
    """`model` sharded over the workers of `dp` (learner/distributed.py DataParallel): their default process group
    on its store, the mesh, the units; `dp` then runs its steps in lockstep. The root to call the model through."""
    mesh = init_default_group(dp.group.store, dp.rank, dp.world_size, dp.group.backend, dp.timeout_s)
    root = shard(model, mesh, bf16, offload)
    dp.sharded = True
    return root


@torch.no_grad()
def assign(param: torch.Tensor, full: torch.Tensor) -> None:
    """`param` (a shard or a whole tensor) takes its part of the whole value `full` (no communication)."""
    if hasattr(param, "to_local"):
        from torch.distributed.tensor import distribute_tensor

        part = distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None)
        param.to_local().copy_(part.to_local())
    else:
        param.copy_(full)


def load_full(model: torch.nn.Module, named_arrays) -> None:
    """Whole weights (name, array or tensor) into a sharded model: each worker copies its own part (no
    communication). Names the model does not have, or weights it lacks (a tied head apart), raise."""
    import numpy as np

    params = dict(model.named_parameters())
    seen = set()
    for name, value in named_arrays:
        if name not in params:
            if name.endswith("lm_head.weight") and tied(model):
                continue
            raise ValueError(f"weights do not fit the model: unexpected {name}")
        assign(params[name], torch.from_numpy(np.array(value)) if isinstance(value, np.ndarray) else value)
        seen.add(name)
    missing = [n for n in params if n not in seen]
    if missing:
        raise ValueError(f"weights do not fit the model: missing {missing[:5]}")


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A parameter's whole value (a collective over the workers when it is a shard)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def local_bytes(tensors) -> int:
    """Bytes this worker holds of `tensors` (its shards only, for sharded ones)."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, int]:
    """What this worker keeps between steps, by kind: parameters, gradients, optimizer state (its shards)."""
    params = list(model.parameters())
    states = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {"params": local_bytes(params), "grads": local_bytes(p.grad for p in params), "optimizer": local_bytes(states)}


# ---- whole weights out of the shards: one bucket (an FSDP unit's parameters) at a time -----------------------------

def buckets(model: torch.nn.Module) -> list[list[str]]:
    """The model's state-dict names by FSDP unit: the root's (embedding, norm, head) first, then each decoder
    layer's; a weight sync or a checkpoint gathers one bucket at a time, so no worker holds the whole model twice.
    A bucket is a whole layer, as vLLM reloads it (its fused q/k/v and gate/up projections are never split)."""
    prefixes = {id(m): name for name, m in model.named_modules()}
    layers = [prefixes[id(layer)] + "." for layer in decoder_layers(model)]  # e.g. "model.layers.3." ("lm." critic)
    out: list[list[str]] = [[] for _ in range(1 + len(layers))]
    for name in model.state_dict():
        i = next((k + 1 for k, p in enumerate(layers) if name.startswith(p)), 0)
        out[i].append(name)
    return out


def gather(model: torch.nn.Module, names: list[str]) -> list[tuple[str, torch.Tensor]]:
    """The whole tensors of `names` (every worker calls it: an all-gather per sharded tensor; a tied head is
    gathered once and named twice)."""
    state = model.state_dict()
    done: dict[int, torch.Tensor] = {}
    out = []
    for name in names:
        t = state[name]
        if id(t) not in done:
            done[id(t)] = full_tensor(t).detach()
        out.append((name, done[id(t)]))
    return out


def save_hf(model: torch.nn.Module, path, rank: int, max_shard_bytes: int = 2**30) -> None:
    """An ordinary HF folder (config, safetensors weights; transformers and vLLM load it) written by rank 0 from
    gathered buckets, in files of at most ~`max_shard_bytes` with an index beside them when there are several;
    a tied head is left out, as save_pretrained does. Every worker calls it."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    path = Path(path)
    drop_head = tied(model)
    files: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for names in buckets(model):
        part = gather(model, names)
        if rank != 0:
            continue
        for name, t in part:
            if drop_head and name.endswith("lm_head.weight"):
                continue
            nbytes = t.numel() * t.element_size()
            if files[-1] and size + nbytes > max_shard_bytes:
                files.append({})
                size = 0
            files[-1][name] = t.cpu().contiguous()
            size += nbytes
    if rank != 0:
        return
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)
    if len(files) == 1:
        save_file(files[0], str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    index = {}
    for k, tensors in enumerate(files, start=1):
        fname = f"model-{k:05d}-of-{len(files):05d}.safetensors"
        save_file(tensors, str(path / fname), metadata={"format": "pt"})
        index.update({name: fname for name in tensors})
    total = sum(t.numel() * t.element_size() for f in files for t in f.values())
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": index}, indent=1))


def save_state(model: torch.nn.Module, opt: torch.optim.Optimizer, folder) -> None:
    """The sharded parameters and optimizer state, each worker its own part (torch.distributed.checkpoint);
    `load_state` reads them back on any number of workers."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder))


def load_state(model: torch.nn.Module, opt: torch.optim.Optimizer, folder) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
