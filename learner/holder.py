"""How a training worker holds its model: replicated (the whole model here; with several workers, DDP-style copies
kept identical by learner/distributed.py) or sharded (FSDP2, learner/fsdp.py: 1/N of every unit here). What is
computed with the model (a policy loss, a value loss, logprobs) is learner/policy.py's and learner/critic.py's, over a
holder, with no replicated-vs-sharded branch of their own.

A holder owns:
  - the model's construction: replicated, loaded whole (`load_lm`); sharded, built on the meta device (no weights
    in memory) until the workers meet (`join`), then each worker materializes only its shards and reads only its rows
    from the checkpoint's safetensors (learner/fsdp.py `load_shards`), so a worker's peak at start is its part;
  - its precision (the measured choice, common/precision.py) and how it is applied (autocast whole, FSDP's mixed
    precision sharded), offload, LoRA adapters (replicated only: the config refuses LoRA with sharding);
  - how a pass reaches the model (`run`: a sharded model is called through its FSDP root, every worker in step);
  - whole weights in (`load`, `load_folder`) and out, one bucket at a time (`buckets`, `gather`, `send`: a sharded
    worker never holds the whole model twice), the HF folder a checkpoint is (`save_model`) and the optimizer's
    state in the checkpoint (`save_training`, `load_training`: replicated in the objective's state file, sharded
    each worker's part in torch.distributed.checkpoint, resumable on any worker count).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from common.device import pick_device
from common.models import load_lm, load_tokenizer
from common.precision import decide, model_dims


def hold(model_path: str, *, sharding: str = "replicate", offload: bool = False, precision: str = "fp32",
         wrap: Callable | None = None, fresh: Callable | None = None, lora=None,
         gradient_checkpointing: bool = False, frozen: bool = False) -> "Holder":
    """The holder of the model at `model_path` for `learner.sharding` ('replicate' or 'fsdp'). `wrap(lm)`: the module
    trained around the LM (the critic's ValueModel), `fresh(model)`: its parameters that are not in the checkpoint
    set again (the value head) after a sharded model's weights arrive; `frozen`: no gradients (the reference)."""
    cls = {"replicate": Replicated, "fsdp": Sharded}.get(sharding)
    if cls is None:
        raise ValueError(f"learner.sharding must be 'replicate' or 'fsdp', not {sharding!r}")
    return cls(model_path, offload=offload, precision=precision, wrap=wrap, fresh=fresh, lora=lora,
               gradient_checkpointing=gradient_checkpointing, frozen=frozen)


def tokenizer_pad_id(model_path: str) -> int:
    return load_tokenizer(model_path).pad_token_id


class Holder:
    sharded = False

    def __init__(self, model_path: str, *, offload: bool, precision: str, wrap, fresh, lora,
                 gradient_checkpointing: bool, frozen: bool):
        self.path, self.offload, self.lora = model_path, offload, lora
        self.wrap, self.fresh, self.frozen = wrap or (lambda lm: lm), fresh, frozen
        self.gradient_checkpointing = gradient_checkpointing
        self.device = pick_device()
        self.model = self._build(model_path)
        self.choice = decide(precision, self.device.type, model_dims(self.lm.config))  # 'auto': measured here
        self.bf16 = self.choice.precision == "bf16"
        self.autocast = self.bf16  # sharded: FSDP's mixed precision instead, from `join` on
        self.dp = None  # learner/distributed.py DataParallel, with several workers

    def _build(self, model_path: str) -> torch.nn.Module:
        raise NotImplementedError

    def _prepared(self, lm: torch.nn.Module) -> torch.nn.Module:
        if self.gradient_checkpointing:
            lm.gradient_checkpointing_enable()
        model = self.wrap(lm)
        if self.frozen:
            model.requires_grad_(False)
        return model

    @property
    def lm(self) -> torch.nn.Module:
        """The causal LM inside the trained module (the critic's ValueModel holds one; a LoRA model is its own)."""
        return getattr(self.model, "lm", self.model)

    @property
    def uniform(self) -> bool:
        """Whether every pass must run the body the same way on every worker (sharded: FSDP's collectives fire in
        lockstep, learner/fsdp.py)."""
        return self.sharded

    @property
    def writer(self) -> bool:
        """Whether this worker writes what the workers hold together (worker 0, or a lone holder)."""
        return self.dp is None or self.dp.rank == 0

    @property
    def lockstep(self):
        """For passes over each worker's own rows: `n -> the most passes of any worker` (sharded), else None."""
        return None

    def join(self, host: str, port: int, world_size: int, rank: int, backend: str) -> bool:
        """Meet the other workers of this role (every worker at once: a rendezvous). True when the model's parameters
        were replaced (sharded: the optimizer must be made again over this worker's shards)."""
        from learner.distributed import DataParallel

        self.dp = DataParallel(host, port, world_size, rank, backend)
        return False

    def run(self, fn, *args):
        """`fn(model, *args)`: one pass of the model (sharded: one forward of its FSDP root, every unit gathered as
        it runs)."""
        return fn(self.model, *args)

    # ---- whole weights in -----------------------------------------------------------------------------------------
    def load(self, named_arrays) -> None:
        """Whole weights (name, array or tensor) into the LM, each worker its part."""
        raise NotImplementedError

    def load_folder(self, model_path: str) -> None:
        """The LM becomes the model of this folder (a phase's `reference: <folder>`, a critic started from a model)."""
        raise NotImplementedError

    def frozen_copy(self, source: str) -> torch.nn.Module:
        """A frozen copy of the LM ('current': its weights now; else a model folder): the full KL's other side."""
        raise ValueError("kl_kind=full keeps a frozen copy in the learner, which is not sharded: use "
                         "learner.sharding=replicate or a sampled KL (k1/k2/k3)")

    # ---- whole weights out, a bucket at a time ----------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """The plain model's weights under the plain model's names (LoRA merged in); whole models only."""
        raise NotImplementedError

    def buckets(self) -> list[list[str]]:
        """The weights' names in the buckets sent or written one at a time."""
        raise NotImplementedError

    def gather(self, names: list[str]) -> list[tuple[str, torch.Tensor]]:
        """Whole tensors of `names` (sharded: every worker calls it, all-gathers)."""
        raise NotImplementedError

    def send(self, put: Callable[[torch.Tensor], None]) -> None:
        """Every whole tensor, in bucket order, to `put` on the writer (sharded: every worker calls it; a bucket is
        gathered by all, then sent by worker 0 while the others wait, so no all-gather overlaps a send: trl#7103)."""
        for names in self.buckets():
            for _, v in self.gather(names):
                put(v)

    def bucket_arrays(self, i: int) -> list[tuple[str, np.ndarray]] | None:
        """Bucket `i`'s whole weights as numpy arrays on the writer (None on the other workers)."""
        part = self.gather(self.buckets()[i])
        return [(k, v.detach().cpu().numpy()) for k, v in part] if self.writer else None

    def weights_meta(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, dtype) of what `send` sends, in order (a shard's whole shape)."""
        raise NotImplementedError

    # ---- checkpoints ------------------------------------------------------------------------------------------------
    def save_model(self, path: Path) -> None:
        """The HF folder of the model (transformers and vLLM load it), written by the writer."""
        raise NotImplementedError

    def whole_state(self) -> dict[str, torch.Tensor] | None:
        """Every weight of the trained module, whole, on the writer (None elsewhere), the LM's tied head left out."""
        out = {k: v.detach().contiguous() for names in self.buckets() for k, v in self.gather(names)}
        return {k: v for k, v in out.items() if not k.endswith("lm_head.weight")} if self.writer else None

    def save_training(self, opt: torch.optim.Optimizer, folder: Path) -> dict:
        """The optimizer's state: what goes into the objective's state file (replicated: the state itself; sharded:
        each worker's part of the parameters and optimizer state written to `folder`)."""
        raise NotImplementedError

    def load_training(self, opt: torch.optim.Optimizer, st: dict, folder: Path, weights: Path, where: str) -> None:
        """The weights and optimizer state `save_training` kept (`st`: the objective's state file, `weights`: the
        replicated weights file, `folder`: the sharded state; `where` names the checkpoint in errors)."""
        if st.get("sharded", False) != self.sharded:
            was, now = ("sharded (fsdp)", "replicated") if st.get("sharded") else ("replicated", "sharded (fsdp)")
            raise ValueError(f"{where} was saved by {was} learner workers and this run's are {now}: resume with the "
                             "learner.sharding it was saved with (the worker count may change under fsdp)")
        self._load_training(opt, st, folder, weights)

    def _load_training(self, opt, st, folder, weights) -> None:
        raise NotImplementedError

    def state_bytes(self, opt: torch.optim.Optimizer) -> dict[str, int]:
        """What this worker keeps between steps, by kind (its shards only when sharded)."""
        from learner.fsdp import state_bytes

        return state_bytes(self.model, opt)

    def free_cache(self) -> None:
        """Give the allocator's cached GPU memory back (engines waking on the same GPU: cluster/sleep.py)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class Replicated(Holder):
    """The whole model on this worker's device."""

    def _build(self, model_path: str) -> torch.nn.Module:
        from learner import lora as lora_lib

        model = self._prepared(load_lm(model_path)).to(self.device)
        return lora_lib.wrap(model, self.lora) if self.lora is not None else model

    def load(self, named_arrays) -> None:
        load_named_arrays(self.lm, named_arrays)

    def load_folder(self, model_path: str) -> None:
        self.model = self._build(model_path)  # any architecture: the module is built anew

    def frozen_copy(self, source: str) -> torch.nn.Module:
        import copy

        copy_ = copy.deepcopy(self.model) if source == "current" else load_lm(source).to(self.device)
        copy_.zero_grad(set_to_none=True)
        return copy_.eval().requires_grad_(False)

    def state(self) -> dict[str, torch.Tensor]:
        from learner import lora as lora_lib

        return lora_lib.merged_state(self.model) if self.lora is not None else self.model.state_dict()

    def buckets(self) -> list[list[str]]:
        return [list(self.state())]

    def gather(self, names: list[str]) -> list[tuple[str, torch.Tensor]]:
        state = self.state()
        return [(k, state[k]) for k in names]

    def weights_meta(self) -> list[tuple[str, tuple[int, ...], str]]:
        return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in self.state().items()]

    def save_model(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.lora is None:
            self.model.save_pretrained(path)
        else:  # an ordinary model folder (merged) for engines and eval
            self.model.get_base_model().save_pretrained(path, state_dict=self.state())

    def save_training(self, opt, folder) -> dict:
        return {"optimizer": opt.state_dict()}

    def _load_training(self, opt, st, folder, weights) -> None:
        from safetensors.torch import load_file

        missing, unexpected = self.model.load_state_dict(load_file(str(weights)), strict=False)
        if unexpected or any(not k.endswith("lm_head.weight") for k in missing):  # tied: saved once
            raise ValueError(f"{weights} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        opt.load_state_dict(st["optimizer"])


class Sharded(Holder):
    """FSDP2 over the role's workers. Until `join` the model is on the meta device (its structure, no weights); at the
    join each worker shards it, materializes its shards only and reads their rows from the checkpoint."""
    sharded = True

    def _build(self, model_path: str) -> torch.nn.Module:
        from learner.fsdp import meta_lm

        self.root = None
        return self._prepared(meta_lm(model_path))

    @property
    def lockstep(self):
        return self.dp.max_count

    def join(self, host, port, world_size, rank, backend) -> bool:
        from learner.fsdp import load_shards, materialize, shard_over

        super().join(host, port, world_size, rank, backend)
        self.root, self.autocast = shard_over(self.dp, self.model, self.bf16, self.offload), False
        materialize(self.model, self.device)
        load_shards(self.lm, self.path)
        if self.fresh is not None:
            self.fresh(self.model)
        return True

    def run(self, fn, *args):
        return self.root(fn, *args)

    def load(self, named_arrays) -> None:
        from learner.fsdp import load_full

        load_full(self.lm, named_arrays)

    def load_folder(self, model_path: str) -> None:
        from learner.fsdp import load_shards

        load_shards(self.lm, model_path)  # the same architecture: the shards stay where they are

    def buckets(self) -> list[list[str]]:
        from learner import fsdp

        return fsdp.buckets(self.model)

    def gather(self, names):
        from learner import fsdp

        return fsdp.gather(self.model, names)

    def send(self, put) -> None:
        import torch.distributed as dist

        for names in self.buckets():
            part = self.gather(names)
            dist.barrier()  # every worker's all-gathers done
            if self.writer:
                for _, v in part:
                    put(v)
            del part
            dist.barrier()  # the send done before the next all-gather

    def weights_meta(self):
        state = self.model.state_dict()
        return [(k, tuple(state[k].shape), str(state[k].dtype).removeprefix("torch.")) for b in self.buckets()
                for k in b]

    def save_model(self, path: Path) -> None:
        from learner import fsdp

        fsdp.save_hf(self.model, path, self.dp.rank)

    def save_training(self, opt, folder) -> dict:
        from learner import fsdp

        fsdp.save_state(self.model, opt, folder)
        return {"sharded": True}

    def _load_training(self, opt, st, folder, weights) -> None:
        from learner import fsdp

        fsdp.load_state(self.model, opt, folder)


def load_named_arrays(model, named_arrays) -> None:
    """Copy (name, array) pairs (numpy from the object store, or tensors) into a whole model's parameters."""
    import warnings

    with warnings.catch_warnings():  # object-store arrays are read-only views; load_state_dict copies them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        state = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in named_arrays}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings legitimately miss lm_head.weight; anything else means another architecture.
    missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
