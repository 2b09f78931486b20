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

import contextlib

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


# ---- a worker's shards from the checkpoint, never the whole model -------------------------------------------------

def meta_lm(model_path: str) -> torch.nn.Module:
    """The causal LM of `model_path` built from its config with its parameters on the meta device (no memory; fp32
    like common/models.py load_lm, dropout off), its buffers real; tied weights tied. `materialize` and `load_shards`
    give a sharded worker its part."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from common.models import disable_dropout, is_seq2seq, trust_remote_code

    if is_seq2seq(model_path):
        raise ValueError(f"{model_path} is an encoder-decoder model: learner.sharding=fsdp needs a decoder-only one; "
                         "use learner.sharding=replicate")
    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code())
    with no_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code())
    disable_dropout(model)
    return model.eval()


@contextlib.contextmanager
def no_weights():
    """Parameters made on the meta device (no memory), buffers as usual: rotary tables are computed at construction
    and are in no checkpoint (accelerate's init_empty_weights(include_buffers=False))."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None and not param.is_meta:  # a parameter set again (a head tied to the embedding) as is
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def materialize(model: torch.nn.Module, device) -> None:
    """A model sharded while on the meta device gets memory for its shards only (values unset: `load_shards`); its
    buffers (computed at construction) kept."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.to_empty(device=device)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])


def checkpoint_files(model_path: str) -> dict[str, str]:
    """Each weight's name -> the safetensors file holding it, for a model folder (one file, or several with an
    index: a sharded HF folder, and ours, learner/fsdp.py save_hf) or a hub id. A folder without safetensors is
    refused."""
    import json
    from pathlib import Path

    folder = Path(model_path)
    if not folder.is_dir():  # a hub id: its files (in the local hub cache when they were fetched before)
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model_path, allow_patterns=["*.safetensors", "*.json"]))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return {k: str(folder / f) for k, f in json.loads(index.read_text())["weight_map"].items()}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{model_path}: no *.safetensors weights to read a worker's shard from (learner.sharding=fsdp"
                         " reads each worker's rows from them); save the model with transformers' save_pretrained "
                         "(safetensors), or use learner.sharding=replicate")
    return {k: str(f) for f in files for k in _safetensors_header(str(f))[0] if k != "__metadata__"}


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool}


def _safetensors_header(path: str) -> tuple[dict, int]:
    """A safetensors file's header (name -> dtype, shape, data_offsets) and where its data starts."""
    import json

    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)), 8 + n


def _read_rows(path: str, entry: dict, start: int, base: int, into: torch.Tensor) -> None:
    """Rows [start, start + len(into)) of a tensor stored row-major in a safetensors file, read into `into` (its
    bytes only: no other worker's rows pass through this process's memory; converted to `into`'s dtype)."""
    dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
    row_bytes = int(torch.tensor([], dtype=dtype).element_size() * torch.Size(entry["shape"][1:]).numel())
    rows = into.shape[0] if into.dim() else 1
    target = into if into.dtype == dtype and into.is_contiguous() and into.device.type == "cpu" else \
        torch.empty(into.shape, dtype=dtype)
    with open(path, "rb") as f:
        f.seek(base + entry["data_offsets"][0] + start * row_bytes)
        got = f.readinto(memoryview(target.view(torch.uint8).numpy()).cast("B"))
    if got != rows * row_bytes:
        raise ValueError(f"{path}: its data ends inside a tensor (a truncated file?)")
    if target is not into:
        into.copy_(target)


@torch.no_grad()
def load_shards(lm: torch.nn.Module, model_path: str) -> None:
    """Each of `lm`'s parameters (shards, or whole tensors) takes its rows from the folder's safetensors, read alone
    (the bytes of this worker's rows: it never holds another worker's part, nor the file mapped). A tied head is
    the embedding's parameter and is read once. A weight the folder lacks, or of another shape, is refused naming
    it."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    where = checkpoint_files(model_path)
    headers: dict[str, tuple[dict, int]] = {}
    for name, param in lm.named_parameters():  # shared parameters (a tied head) once
        if name not in where:
            raise ValueError(f"{model_path} has no weight {name!r} for this {type(lm).__name__} (it holds e.g. "
                             f"{sorted(where)[:3]}); use learner.sharding=replicate, or save the model again "
                             "with transformers' save_pretrained")
        if where[name] not in headers:
            headers[where[name]] = _safetensors_header(where[name])
        header, base = headers[where[name]]
        entry = header[name]
        if tuple(entry["shape"]) != tuple(param.shape):
            raise ValueError(f"{model_path}: {name} is {tuple(entry['shape'])}, this model's {tuple(param.shape)}: "
                             "another architecture")
        if hasattr(param, "to_local"):  # Shard(0): this worker's rows
            shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
            local, start = param.to_local(), offset[0] if offset else 0
        else:
            local, start = param.data, 0
        if local.numel():
            _read_rows(where[name], entry, start, base, local)


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
