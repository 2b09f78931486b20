"""The memory plan of a run, before any actor starts: each actor's expected peak from the model's config and the run
plan, against the memory of the node it is placed on. A run that would not fit stops here with the actor, its
figures and the setting that makes it fit, instead of an actor killed by Ray's memory monitor (or a CUDA
out-of-memory) minutes in; `learner.max_tokens_per_micro_batch: auto` takes the largest budget that fits.

Each figure is a sum of parts (GiB), every part a count times bytes:
  - process: what a worker process holds before any model (python, torch, transformers; vLLM's for an engine),
    measured on this project's machines (PROCESS_GIB);
  - weights, gradients, optimizer: parameters x 4 bytes (fp32 master weights, fp32 gradients; AdamW two moments,
    8 bytes; Adafactor's factored ones about none), 1/N each on N sharded workers, gradients and optimizer of the
    trainable parameters only (LoRA: the adapters);
  - bf16 copies: under autocast each weight's bf16 copy, 2 bytes a parameter (whole models only; sharded, FSDP
    gathers one layer at a time);
  - activations: what a backward keeps of one micro-batch, tokens x layers x ACT_VALUES_PER_TOKEN_LAYER(hidden,
    intermediate) x bytes (one layer's with gradient checkpointing, plus each layer's input); on a CPU also the
    attention weights, [rows, heads, L, L] a layer (GPU kernels do not keep them);
  - head: the LM head's logits over the vocabulary for a chunk of completion positions (learner/logprobs.py
    HEAD_CHUNK_ELEMENTS at most), with log-softmax and gradients: HEAD_COPIES tensors of positions x vocab x 4 bytes;
  - weights in transit: the whole weights as fp32 arrays once (a learner's handoff at a phase start or its object
    store sync, a reference's or critic's arrival; an engine's in the sync's precision);
  - engine: weights in rollout.dtype, the KV cache (rollout.kv_cache_gib on CPU; on a GPU,
    rollout.gpu_memory_utilization of its memory holds weights and cache).
The constants were fitted to measured peaks (bench/memory_plan.py writes predicted vs measured per actor to
docs/memory_plan.md); MARGIN is the stated tolerance.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

GIB = 2**30
TRANSIT = "weights in transit"
HOST_PARTS = ("process", TRANSIT)  # in host memory wherever the actor computes
# measured resident memory of an idle process of each kind (AMD EPYC Zen 4, torch 2.13, transformers 5.19, vLLM 0.32)
PROCESS_GIB = {"train": 0.55, "engine": 1.35, "reward": 0.15, "tools": 0.35, "retrieval": 0.6, "driver": 0.8}
# the LM head's chunk of [positions, vocab] fp32 tensors alive at once: logits, log-softmax, and in the backward the
# recomputed logits and both gradients (learner); logits and log-softmax (a pass without gradient)
HEAD_COPIES, HEAD_COPIES_NO_GRAD = 5, 2
MARGIN = 0.30            # predicted within +-30% of the measured peak (docs/memory_plan.md)
FIT_SHARE = 0.9          # of a node's memory the actors may plan to use (Ray's memory monitor kills at 0.95)


def act_values_per_token_layer(hidden: int, inter: int) -> int:
    """Values a decoder layer keeps for backward per token: attention's inputs and outputs (q, k, v, o, two norms,
    the residuals: ~10 x hidden) and the MLP's (gate, up, their product: 3 x intermediate)."""
    return 10 * hidden + 3 * inter


@dataclass(frozen=True)
class ModelShape:
    params: int            # parameters, a tied head once
    hidden: int
    inter: int
    layers: int
    vocab: int
    kv_bytes_per_token: int  # the KV cache of one token over every layer, at 2 bytes a value
    heads: int = 1

    @classmethod
    @functools.lru_cache(maxsize=8)  # a run plans at its check and again when it logs the plan
    def of(cls, model_path: str) -> "ModelShape":
        """The shape of the model at `model_path` from its config (a meta-device build counts its parameters: no
        weights are read)."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        from common.models import trust_remote_code

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code())
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(config, trust_remote_code=trust_remote_code())
        params = sum(p.numel() for p in model.parameters())  # shared parameters once
        hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", 0)
        inter = getattr(config, "intermediate_size", None) or getattr(config, "d_ff", None) or 4 * hidden
        layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", 0)
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "num_heads", 1)
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // max(1, heads)
        return cls(int(params), int(hidden), int(inter), int(layers), int(config.vocab_size),
                   int(2 * layers * kv_heads * head_dim * 2), int(heads))


@dataclass(frozen=True)
class ActorMemory:
    role: str                        # learner, reference, critic, engine, reward, tools, retrieval, driver
    count: int                       # processes of the role
    parts: dict[str, float]          # GiB each, one process's
    device: str = "cpu"              # where the parts other than `process` live (cpu | gpu)
    fixes: tuple[str, ...] = ()      # settings that shrink it, most effective first

    @property
    def peak_gib(self) -> float:
        return sum(self.parts.values())

    def host_gib(self) -> float:
        """What one process holds in the node's memory (on a GPU: the process and the weights in transit)."""
        return self.peak_gib if self.device == "cpu" else sum(self.parts.get(k, 0.0) for k in HOST_PARTS)

    def device_gib(self) -> float:
        return 0.0 if self.device == "cpu" else self.peak_gib - sum(self.parts.get(k, 0.0) for k in HOST_PARTS)

    def node_gib(self) -> float:
        """What the role's processes hold of the node together: the weights in transit are one object-store copy
        that each process maps (and worker 0 of sharded ones gathers), counted once."""
        return self.host_gib() * self.count - self.parts.get(TRANSIT, 0.0) * (self.count - 1)

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.parts.items() if v >= 0.005)
        n = f" x{self.count}" if self.count > 1 else ""
        return f"{self.role}{n} {self.peak_gib:.2f} GiB ({parts}){' on its GPU' if self.device == 'gpu' else ''}"


@dataclass(frozen=True)
class MemoryPlan:
    actors: tuple[ActorMemory, ...]
    node_gib: float | None           # the node's memory (None: unknown, a remote cluster: not checked)
    gpu_gib: float | None = None     # one GPU's memory where actors are placed on GPUs
    budget: int | None = None        # the learner's token budget the plan holds (auto: the one it chose)
    notes: tuple[str, ...] = field(default_factory=tuple)
    shared_gpu: bool = False         # cluster.placement=colocated on GPUs: a learner worker and an engine share one
    engines_sleep: bool = False      # ... and the engines give their memory back while the learner trains

    def host_gib(self) -> float:
        return sum(a.node_gib() for a in self.actors)

    def describe(self) -> list[str]:
        """The run log's lines: each actor's expected peak, then the node's total against its memory."""
        lines = [a.describe() for a in self.actors]
        total = f"node: {self.host_gib():.1f} GiB expected"
        if self.node_gib is not None:
            total += f" of {self.node_gib:.1f} GiB ({self.host_gib() / self.node_gib:.0%})"
        return lines + [total + (f"; learner token budget {self.budget}" if self.budget else ""), *self.notes]

    def problems(self) -> list[str]:
        """Why the run would not fit, one sentence each naming the actor, the figures and the fix ([] = it fits)."""
        out = []
        if self.node_gib is not None and self.host_gib() > FIT_SHARE * self.node_gib:
            big = sorted(self.actors, key=lambda a: -a.node_gib())
            top = "; ".join(f"{a.role}{f' x{a.count}' if a.count > 1 else ''} {a.node_gib():.1f}" for a in big[:3])
            fixes = [f for a in big[:2] for f in a.fixes]
            out.append(f"the actors would need {self.host_gib():.1f} GiB of this node's {self.node_gib:.1f} GiB "
                       f"(at most {FIT_SHARE:.0%} is planned: Ray's memory monitor kills actors at 95%); largest: "
                       f"{top}. To fit: {'; or '.join(dict.fromkeys(fixes)) or 'a node with more memory'}")
        if self.gpu_gib is not None:
            for a in self.actors:
                if a.device_gib() > FIT_SHARE * self.gpu_gib:
                    out.append(f"{a.role} would need {a.device_gib():.1f} GiB of its GPU's {self.gpu_gib:.1f} GiB; "
                               f"to fit: {'; or '.join(a.fixes) or 'a larger GPU'}")
            on_gpu = {a.role: a for a in self.actors if a.device == "gpu"}
            if self.shared_gpu and not out and "engine" in on_gpu and len(on_gpu) > 1:
                engine = on_gpu["engine"].device_gib()
                train = sum(a.device_gib() for r, a in on_gpu.items() if r != "engine")
                need = max(engine, train) if self.engines_sleep else engine + train
                if need > FIT_SHARE * self.gpu_gib:
                    out.append(f"colocated on one GPU ({self.gpu_gib:.1f} GiB), the engine's {engine:.1f} GiB and "
                               f"the training workers' {train:.1f} GiB would need {need:.1f} GiB; to fit: "
                               f"rollout.gpu_memory_utilization={max(0.05, round(0.9 - train / self.gpu_gib, 2))}"
                               + ("" if self.engines_sleep else "; or rollout.sleep=auto (the engine gives its memory "
                                  "back while the learner trains)") + "; or cluster.placement=disaggregated")
        return out


def meminfo_gib(field: str) -> float | None:
    """A field of this node's /proc/meminfo (MemTotal, MemAvailable, ...) in GiB; None where it is not readable."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def node_memory_gib() -> float | None:
    """This node's memory (MemTotal), GiB; None where /proc/meminfo is not readable."""
    return meminfo_gib("MemTotal")


def _head_gib(shape: ModelShape, positions: int, copies: int) -> float:
    from_chunk = min(positions, max(1, 2**27 // max(1, shape.vocab)))  # learner/logprobs.py HEAD_CHUNK_ELEMENTS
    return copies * from_chunk * shape.vocab * 4 / GIB


def training_worker(role: str, shape: ModelShape, *, workers: int, sharded: bool, budget: int, bf16: bool,
                    optimizer: str = "adamw", lora_params: int | None = None, checkpointing: bool = False,
                    frozen: bool = False, on_gpu: bool = False, offload: bool = False, head: bool = True,
                    count: int | None = None, seq_len: int | None = None) -> ActorMemory:
    """One learner, reference or critic process's expected peak (`budget`: the tokens of one micro-batch)."""
    share = 1.0 / workers if sharded else 1.0
    P = shape.params
    trainable = 0 if frozen else (lora_params if lora_params is not None else P)
    parts = {"process": PROCESS_GIB["train"], "weights": 4 * P * share / GIB}
    if not frozen:
        parts["gradients"] = 4 * trainable * share / GIB
        parts["optimizer"] = {"adafactor": 0.05}.get(optimizer, 8.0) * trainable * share / GIB
    if bf16:  # autocast's bf16 copies of the weights (whole); sharded: one layer gathered at a time
        parts["bf16 copies"] = 2 * (P if not sharded else P / max(1, shape.layers)) / GIB
    act_bytes = 2 if bf16 else 4
    per_layer = budget * act_values_per_token_layer(shape.hidden, shape.inter) * act_bytes
    if frozen:  # no backward: one layer's intermediates at a time
        parts["activations"] = per_layer / GIB
    elif checkpointing:  # each layer's input kept, one layer's intermediates recomputed at a time
        parts["activations"] = (budget * shape.hidden * act_bytes * shape.layers + per_layer) / GIB
    else:
        parts["activations"] = per_layer * shape.layers / GIB
    if seq_len and not frozen and not on_gpu:  # CPU attention keeps its [rows, heads, L, L] weights for backward
        scores = budget * shape.heads * min(seq_len, budget) * act_bytes  # rows x L = the budget's tokens
        parts["attention scores"] = scores * (1 if checkpointing else shape.layers) / GIB
    if head:
        parts["head"] = _head_gib(shape, budget, HEAD_COPIES_NO_GRAD if frozen else HEAD_COPIES)
    parts[TRANSIT] = 4 * P / GIB  # the whole weights as arrays once (worker 0 of sharded ones)
    if sharded and not frozen:  # a layer's whole weights and gradient while it runs
        parts["gathered layer"] = 8 * P / max(1, shape.layers) / GIB
    if offload and on_gpu:  # FSDP's CPUOffloadPolicy: the state lives in host memory between uses
        parts = {"process": parts["process"] + sum(parts.get(k, 0.0) for k in ("weights", "gradients", "optimizer")),
                 **{k: v for k, v in parts.items() if k not in ("process", "weights", "gradients", "optimizer")}}
    fixes = []
    if not sharded or workers < 8:
        fixes.append(f"learner.workers={max(2, workers * 2)} (sharded: each holds 1/N of weights, gradients and "
                     "optimizer state)")
    if budget > 256 and not frozen:
        fixes.append(f"learner.max_tokens_per_micro_batch={max(128, budget // 2)} (activations and the head chunk "
                     "shrink with it)")
    if not frozen and lora_params is None:
        fixes.append("learner.lora={rank: 16} (gradients and optimizer state of the adapters only)")
    if not frozen and not checkpointing:
        fixes.append("learner.gradient_checkpointing=true")
    if on_gpu and sharded and not offload:
        fixes.append("learner.offload=true")
    return ActorMemory(role, count or workers, parts, "gpu" if on_gpu else "cpu", tuple(fixes))


def engine(shape: ModelShape, *, dtype_bytes: int, kv_cache_gib: float, count: int, on_gpu: bool,
           gpu_share: float | None = None, gpu_gib: float | None = None, sync_bytes: int = 4) -> ActorMemory:
    """One vLLM engine's expected peak: weights in its dtype and the KV cache (on a GPU, vLLM takes
    gpu_memory_utilization of the GPU for both), and a weight sync's arrays in host memory."""
    weights = dtype_bytes * shape.params / GIB
    if on_gpu and gpu_share is not None and gpu_gib is not None:
        parts = {"process": PROCESS_GIB["engine"], "weights + KV cache": gpu_share * gpu_gib}
        fixes = ("rollout.gpu_memory_utilization lower (KV cache space)",)
    else:
        parts = {"process": PROCESS_GIB["engine"], "weights": weights, "KV cache": kv_cache_gib,
                 TRANSIT: sync_bytes * shape.params / GIB}
        fixes = (f"rollout.kv_cache_gib={max(1, int(kv_cache_gib // 2))} (the engine's KV cache)",
                 "cluster.num_rollout_actors lower")
    return ActorMemory("engine", count, parts, "gpu" if on_gpu else "cpu", fixes)


def plan_memory(cfg, plan, shape: ModelShape, node_gib: float | None = None, gpu_gib: float | None = None,
                bf16: bool | None = None) -> MemoryPlan:
    """The memory plan of `cfg` (common/config.py JobConfig) under its run plan (common/plan.py RunPlan) for a model
    of `shape`. `bf16`: the learner's precision where it is known (auto: assumed bf16, the larger)."""
    L, c, r = cfg.learner, cfg.cluster, cfg.rollout
    on_gpu = c.gpus_per_learner > 0
    asked = L.max_tokens_per_micro_batch
    budget_auto = asked == "auto"
    budget = _budget(asked, L.micro_batch_size, r, on_gpu)
    bf16 = (L.precision != "fp32") if bf16 is None else bf16
    lora = _lora_params(shape, L.lora) if L.lora is not None else None
    sharded = plan.sharding == "fsdp"
    seq_len = r.max_prompt_tokens + (r.total_tokens() if r.max_turns > 1 else r.max_new_tokens)

    def actors(budget: int) -> tuple[ActorMemory, ...]:
        out = [training_worker("learner", shape, workers=L.workers, sharded=sharded, budget=budget, bf16=bf16,
                               optimizer=L.optimizer, lora_params=lora, checkpointing=L.gradient_checkpointing,
                               on_gpu=on_gpu, offload=L.offload, seq_len=seq_len)]
        if plan.has("reference"):
            out.append(training_worker("reference", shape, workers=L.workers_of("reference"), sharded=sharded,
                                       budget=budget, bf16=bf16, frozen=True, on_gpu=on_gpu,
                                       count=L.workers_of("reference")))
        if plan.has("critic"):
            out.append(training_worker("critic", shape, workers=L.workers_of("critic"), sharded=sharded,
                                       budget=budget, bf16=bf16, optimizer="adamw",  # learner/critic.py: always
                                       checkpointing=L.gradient_checkpointing, on_gpu=on_gpu, head=False,
                                       count=L.workers_of("critic"), seq_len=seq_len))
        out.append(engine(shape, dtype_bytes=4 if r.dtype == "fp32" else 2, kv_cache_gib=r.kv_cache_gib,
                          count=c.num_rollout_actors, on_gpu=c.gpus_per_rollout_actor > 0,
                          gpu_share=r.gpu_memory_utilization, gpu_gib=gpu_gib,
                          sync_bytes=2 if bf16 or r.dtype == "bf16" else 4))
        out.append(ActorMemory("reward", c.num_reward_actors, {"process": PROCESS_GIB["reward"]}))
        if plan.has("tools"):
            out.append(ActorMemory("tools", 1, {"process": PROCESS_GIB["tools"]}))
        if plan.has("retrieval"):
            out.append(ActorMemory("retrieval", 1, {"process": PROCESS_GIB["retrieval"]}))
        out.append(ActorMemory("driver", 1, {"process": PROCESS_GIB["driver"]}))
        return tuple(out)

    notes = []
    shared = dict(shared_gpu=c.placement == "colocated" and on_gpu, engines_sleep=plan.sleep != "off")
    if budget_auto:  # the largest budget up to the device's default that fits
        for b in _halvings(budget):
            if not MemoryPlan(actors(b), node_gib, gpu_gib if on_gpu else None, **shared).problems():
                if b < budget:
                    notes.append(f"learner.max_tokens_per_micro_batch=auto: {b} (the device's {budget} would not fit)")
                budget = b
                break
    return MemoryPlan(actors(budget), node_gib, gpu_gib if (on_gpu or c.gpus_per_rollout_actor > 0) else None,
                      budget, tuple(notes), shared_gpu=c.placement == "colocated" and on_gpu,
                      engines_sleep=plan.sleep != "off")


def _halvings(start: int):
    b = start
    while b >= 128:
        yield b
        b //= 2


def _budget(asked, micro_batch_size, r, on_gpu: bool) -> int:
    """The tokens of the largest micro-batch the learner forms."""
    longest = r.max_prompt_tokens + (r.total_tokens() if r.max_turns > 1 else r.max_new_tokens)
    if asked == "auto":
        return 16384 if on_gpu else 1024  # learner/policy.py TOKEN_BUDGET
    if asked is not None:
        return max(int(asked), longest) if micro_batch_size is None else int(asked)
    return (micro_batch_size or 1) * longest


def _lora_params(shape: ModelShape, spec) -> int:
    """Adapter parameters: rank x (in + out) of each adapted projection in every layer."""
    h, i = shape.hidden, shape.inter
    sizes = {"gate_proj": h + i, "up_proj": h + i, "down_proj": h + i}
    per_layer = sum(sizes.get(name, 2 * h) for name in spec.target_modules)  # attention projections: ~2h
    return int(spec.rank * per_layer * shape.layers)


SKIP_ENV = "RAYGRPO_SKIP_MEMORY_CHECK"


class WouldNotFit(ValueError):
    """The run's memory plan exceeds its node (or a GPU): raised before any actor starts (exit 2)."""


def check_memory(mplan: MemoryPlan) -> None:
    """Stop before any actor starts when the run would not fit, naming the actor, its figures and the fix
    ($RAYGRPO_SKIP_MEMORY_CHECK=1: the plan is shown, not enforced)."""
    problems = mplan.problems()
    if problems and os.environ.get(SKIP_ENV) != "1":
        raise WouldNotFit("this run would not fit in memory: " + " | ".join(problems) + ". The plan: " +
                          "; ".join(mplan.describe()) + f". (Set {SKIP_ENV}=1 to start it anyway where the figures "
                          "are wrong, and say so: docs/memory_plan.md)")


def memory_plan(cfg, model_path: str, node_gib: float | None = None, gpu_gib: float | None = None) -> MemoryPlan:
    """The plan of a job config (common/config.py) for the model at `model_path`, on this node (a local cluster or
    in-process; a remote cluster's nodes are not known here: not checked); precision auto: the larger of the two."""
    from common.plan import make_plan

    shape = ModelShape.of(model_path)
    if node_gib is None and (cfg.cluster.backend != "ray" or cfg.cluster.address is None):
        node_gib = node_memory_gib()
    if gpu_gib is None and (cfg.cluster.gpus_per_learner > 0 or cfg.cluster.gpus_per_rollout_actor > 0):
        gpu_gib = gpu_memory_gib()
    plan = make_plan(cfg)
    options = [cfg.learner.precision == "bf16"] if cfg.learner.precision != "auto" else [False, True]
    plans = [plan_memory(cfg, plan, shape, node_gib, gpu_gib, bf16=b) for b in options]
    return max(plans, key=lambda m: m.host_gib())


def gpu_memory_gib() -> float | None:
    """One GPU's memory where this process sees one (the driver of a one-node run); None otherwise."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / GIB
    except Exception:  # noqa: BLE001 -- no usable CUDA here: not checked
        return None
    return None
