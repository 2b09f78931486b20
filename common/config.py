"""The one job config: a frozen pydantic model, sections mirroring the folders.

Defaults are the MLQA paper's seed hyperparameters; a job's YAML holds only what it changes, and
`key=value` overrides on the command line go on top (`train.phases.0.steps=2` reaches into a list).
Validation runs once, before any actor starts: an unknown key or a bad value raises `ConfigError` naming
the field, the allowed values and a close match when there is one.

What a task is and which rewards exist is known above this layer: `task.name`, `task.params` and the
reward components are checked against their registries by `tasks.registry.check_job`, which every entry
point calls right after `load_config`, and the user's own reward functions and servers (`fn`, `url`) against
the loaded data by `tasks.registry.check_rewards`. This module imports nothing of the project.

A run is a list of phases (`train.phases`), each with its own hyperparameters: `sft` (gold targets), `grpo`,
`rs_sft` (rejection-sampled SFT on the policy's own passing samples), `ppo` (a critic and GAE) and `dpo`
(preference pairs). A phase's `algo` and `sampling` hold only the fields it changes; the top-level `algo` and
`rollout` sections are the defaults. `logging` names the trackers beside metrics.jsonl (TensorBoard, MLflow).
"""
from __future__ import annotations

import copy
import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _patch_of(section: type[BaseModel], fields: tuple[str, ...] | None = None) -> type[BaseModel]:
    """The same fields as `section` (or a subset), every one optional with default None: a partial override
    that keeps each field's type and bounds."""
    out = {}
    for name, info in section.model_fields.items():
        if fields is not None and name not in fields:
            continue
        info = copy.copy(info)
        info.default = None
        out[name] = (Optional[info.annotation], info)
    return create_model(f"{section.__name__}Patch", __config__=ConfigDict(extra="forbid", frozen=True), **out)


class ClusterConfig(_Section):
    backend: Literal["ray", "inprocess"] = Field(
        "ray", description="'ray': actors on a Ray cluster; 'inprocess': plain objects, for debugging")
    address: str | None = Field(
        None, description="Ray address; None = the job's cluster under `ray job submit`, else a new local one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a new local Ray cluster (None = all)")
    num_rollout_actors: int = Field(1, ge=1, description="vLLM engines; prompts are sharded across them")
    num_reward_actors: int = Field(1, ge=1, description="stateless reward scorers")
    threads: int | None = Field(None, ge=1, description="torch threads per actor (None = all cores: stages run in turn)")
    gpus_per_rollout_actor: float = Field(0.0, ge=0.0, description="GPU share per rollout actor (0 on CPU)")
    gpus_per_learner: float = Field(0.0, ge=0.0, description="GPU share for learner and reference actors")
    placement: Literal["none", "colocated", "spread", "disaggregated"] = Field(
        "none", description="placement groups (cluster/placement.py): colocated = one node for everything, "
                            "disaggregated = each engine and the learner on nodes of their own, spread, or none")
    metrics_export_port: int | None = Field(
        None, ge=1, le=65535, description="Prometheus port of a new local Ray cluster (None = Ray picks one; the "
                                          "run log names it); on an existing cluster, the cluster's own")
    max_restarts: int = Field(3, ge=0, description="times Ray restarts a dead rollout or reward actor; the call it "
                                                  "was running is retried from the same inputs")
    call_timeout_s: float = Field(3600.0, gt=0.0, description="a rollout/reward call that has not answered after this "
                                                             "many seconds fails, naming the actor and stage")
    verify_sync: bool = Field(True, description="after every weight sync, score a probe sequence on each engine "
                                                "and on the learner; stop if they differ by more than sync_tolerance")
    sync_tolerance: float | None = Field(None, gt=0.0, description="largest probe logprob gap accepted after a sync "
                                         "(cluster/sync_check.py): None = 1e-3 for the largest gap when learner and "
                                         "engines are fp32 (they differ by ~1e-5), 0.1 for the mean gap over the "
                                         "probe's likely tokens with bf16 anywhere (its rounding gives ~1e-2)")
    weight_sync: Literal["object_store", "collective"] = Field(
        "object_store", description="object_store: one ray.put per sync, read by every engine; collective: a process "
                        "group of learner and engines broadcasting into the engines' reload (gloo on CPU, NCCL on GPU)")


class ModelConfig(_Section):
    policy: str = Field("embedded:smollm2-135m-instruct",
                        description="HF id, local folder, or 'embedded:smollm2-135m-instruct'; causal or seq2seq "
                                    "(seq2seq needs rollout.engine=hf)")
    cache_dir: str | None = Field(None, description="where embedded models are materialized (None = ~/.cache/raygrpo)")
    trust_remote_code: bool = Field(False, description="let a model repo run its own Python code (custom "
                                                       "architectures); only for sources you trust")


class RolloutConfig(_Section):
    engine: Literal["vllm", "hf"] = Field("vllm", description="vllm, or hf (transformers generate; seq2seq)")
    group_size: int = Field(4, ge=2, description="K samples per prompt")
    temperature: float = Field(0.8, gt=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_prompt_tokens: int = Field(512, ge=16, description="longer prompts have their context cut (counted)")
    max_new_tokens: int = Field(64, ge=1)
    kv_cache_gib: float = Field(1.0, gt=0.0, description="vLLM CPU KV-cache size (VLLM_CPU_KVCACHE_SPACE); 1 GiB holds "
                                                         "~23k tokens of the 135M model, a step needs ~5k")
    dtype: Literal["auto", "fp32", "bf16"] = Field("auto", description="the engines' weights: auto = bf16 where a "
                                                   "bf16 matmul is measured faster than fp32 on the engine's node "
                                                   "(common/precision.py), else fp32")
    max_model_len: int = Field(2048, ge=64)
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    tensor_parallel_size: int = Field(1, ge=1, description=(
        "GPUs each vLLM engine spans (vLLM's tensor parallelism, its workers in processes of the engine actor's "
        "bundle); needs cluster.gpus_per_rollout_actor equal to it. More engines (cluster.num_rollout_actors) are "
        "the data-parallel axis"))
    seed: int = 0
    max_turns: int = Field(1, ge=1, description=(
        "policy turns a sample may take: 1 = one completion (today's rollouts); more = multi-turn with tools "
        "(tools.use): a turn that ends with a tool call (<search>...</search>) gets the tool's observation appended "
        "and the sample goes on, token in, token out (rollout/turns.py)"))
    sleep: Literal["auto", "off", "level1", "level2"] = Field("auto", description=(
        "vLLM's sleep mode, engines and learner sharing a GPU (cluster/sleep.py): between a step's generation and "
        "its weight sync the engines give their GPU memory to the learner. auto = on with cluster.placement="
        "colocated and GPU engines (level 1 below 2B parameters, else level 2), off otherwise; CPU vLLM has none"))
    max_total_tokens: int | None = Field(None, ge=1, description=(
        "multi-turn: completion tokens a sample may hold, policy and observations together (None = max_model_len - "
        "max_prompt_tokens - max_new_tokens)"))

    agent: str | None = Field(None, description=(
        "'my_agent.py:run' or 'package.module:run': an agent function `async def run(client, row, **params)` drives "
        "every sample through the run's OpenAI-compatible endpoint (an openai.AsyncOpenAI bound to the sample's "
        "session, one data row); it returns the sample's reward (a number, a dict of numeric parts, or None: "
        "then rewards score the last reply). group_size sessions per row (docs/environments.md)"))
    agent_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of every agent call")
    agent_timeout_s: float = Field(300.0, gt=0.0, description="seconds an agent's session may take (then it is "
                                                              "cancelled and counted, its sample left out)")
    agent_concurrency: int = Field(64, ge=1, description="agent sessions running at once")
    tool_call_parser: str | None = Field(None, description=(
        "vLLM's --tool-call-parser for the endpoint (hermes, llama3_json, mistral, ...: the one the policy's chat "
        "template writes calls in), so agents that pass `tools` get parsed tool_calls back; None: a request with "
        "tools and tool_choice auto is refused with vLLM's message"))

    def total_tokens(self) -> int:
        """The completion budget of a multi-turn sample."""
        return self.max_total_tokens or self.max_model_len - self.max_prompt_tokens - self.max_new_tokens


SAMPLING_FIELDS = ("group_size", "temperature", "top_p", "max_new_tokens")
SamplingPatch = _patch_of(RolloutConfig, SAMPLING_FIELDS)


class LoraConfig(_Section):
    rank: int = Field(16, ge=1, description="LoRA rank r (the NLU paper: 16)")
    alpha: float = Field(32.0, gt=0.0, description="scale = alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = Field(("q_proj", "k_proj", "v_proj", "o_proj"),
                                            description="names of the linear layers that get adapters")


class LearnerConfig(_Section):
    lr: float = Field(1e-5, gt=0.0, description="GRPO learning rate (a phase's own lr wins)")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    max_tokens_per_micro_batch: int | Literal["auto"] | None = Field(
        "auto", description="positions per forward/backward (prompt once per GRPO group + completions, padding "
                            "counted); sequences are sorted by length and cut into micro-batches of at most this many, "
                            "whole groups together while they fit; grads accumulate exactly. auto: by device (CPU "
                            "1024, GPU 16384); None: micro_batch_size alone")
    micro_batch_size: int | None = Field(None, ge=1, description="most sequences per forward/backward (None: the "
                                         "token budget alone decides; e.g. 4 = one GRPO group of K=4 a pass)")
    inner_steps: int = Field(1, ge=1, description="optimizer steps per rollout batch (PPO epochs, mu)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast where a bf16 matmul of the model's shapes is measured faster than "
                            "fp32 on the actor's node (AMX and some AVX512-BF16 CPUs, GPUs), else fp32; learner, "
                            "reference and critic (common/precision.py)")
    gradient_checkpointing: bool = False
    optimizer: Literal["adamw", "adamw_foreach", "adafactor"] = Field(
        "adamw", description="adamw: fused AdamW where torch has the kernel (CPU, CUDA); "
                             "adamw_foreach: torch's multi-tensor AdamW (same update up to rounding); "
                             "adafactor: the NLU paper's PPO optimizer")
    lora: LoraConfig | None = Field(None, description="LoRA adapters instead of full fine-tuning ({rank: 16}); "
                                    "the reference is then the model with adapters disabled")
    workers: int = Field(1, ge=1, description=(
        "learner processes (data parallel, learner/distributed.py): each takes its share of a step's sequences, "
        "gradients summed over them; the reference and the critic get as many. Ray only; one GPU each with "
        "cluster.gpus_per_learner"))
    sharding: Literal["replicate", "fsdp"] | None = Field(None, description=(
        "how the workers hold the model: replicate = each the whole model and optimizer state (DDP); fsdp = each "
        "1/N of parameters, gradients and optimizer state (FSDP2, learner/fsdp.py), so memory shrinks with the "
        "workers; also the reference and critic workers. None: fsdp with learner.workers > 1, else replicate"))
    offload: bool = Field(False, description="fsdp: keep parameters, gradients and optimizer state on the CPU "
                                             "between uses (FSDP2's CPUOffloadPolicy): a GPU holds less, steps are slower")
    reference_workers: int | None = Field(None, ge=1, description=(
        "frozen-reference processes (rows split over them for its logprobs), at most learner.workers: reference j "
        "shares learner worker j's placement bundle. None: as many as learner.workers; 1 saves W-1 model copies"))
    critic_workers: int | None = Field(None, ge=1, description=(
        "PPO critic processes (data parallel like the learner: value rows split by tokens, gradients summed), at "
        "most learner.workers. None: as many as learner.workers"))

    def workers_of(self, role: str) -> int:
        """Processes of a training role ('learner', 'reference', 'critic')."""
        n = None if role == "learner" else getattr(self, f"{role}_workers")
        return self.workers if n is None else n

    def sharded(self) -> str:
        """replicate | fsdp: `sharding` with its default resolved (common/plan.py records it in the run plan)."""
        return self.sharding or ("fsdp" if self.workers > 1 else "replicate")

    @model_validator(mode="after")
    def _some_bound(self) -> "LearnerConfig":
        if self.workers > 1 and self.lora is not None:
            raise ValueError("learner.workers > 1 with learner.lora is not supported yet: use learner.workers=1 with "
                             "LoRA (its adapters are small; one worker trains them)")
        for role in ("reference", "critic"):
            n = getattr(self, f"{role}_workers")
            if n is not None and n > self.workers:
                raise ValueError(f"learner.{role}_workers={n} is more than learner.workers={self.workers}: each {role} "
                                 f"process shares a learner worker's placement bundle; set learner.{role}_workers "
                                 f"<= {self.workers} (or null for as many)")
        if self.offload and self.sharded() != "fsdp":
            raise ValueError("learner.offload moves FSDP's shards to the CPU between uses: set learner.sharding=fsdp "
                             "(or drop learner.offload)")
        if self.sharding == "fsdp" and self.lora is not None:
            raise ValueError("learner.sharding=fsdp with learner.lora is not supported: LoRA's adapters are small and "
                             "its reference is the same model with them off, which a sharded model cannot serve "
                             "without gathering it; use learner.sharding=replicate (the default for one worker)")
        if self.micro_batch_size is None and self.max_tokens_per_micro_batch is None:
            raise ValueError("learner.micro_batch_size and learner.max_tokens_per_micro_batch are both None: a "
                             "micro-batch would be the whole batch; set one (e.g. max_tokens_per_micro_batch=auto)")
        if isinstance(self.max_tokens_per_micro_batch, int) and self.max_tokens_per_micro_batch < 16:
            raise ValueError(f"learner.max_tokens_per_micro_batch={self.max_tokens_per_micro_batch} is below one "
                             "short sequence; use auto or a few thousand")
        return self


class AlgoConfig(_Section):
    clip_eps: float = Field(0.2, gt=0.0)
    clip_eps_high: float | None = Field(None, gt=0.0, description="asymmetric upper clip (None = clip_eps)")
    beta: float = Field(0.04, ge=0.0, description="KL penalty coefficient")
    kl_kind: Literal["k3", "k1", "k2", "abs", "full"] = Field(
        "k3", description="k3 estimator on sampled tokens, k2 = squared log-ratio / 2, or 'full' = exact "
                          "full-vocabulary KL (paper)")
    advantage: Literal["grpo", "mean_only", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"] = Field(
        "grpo", description="GRPO's advantage estimator (learner/advantages.py): grpo = z-score in the group; "
                            "mean_only = (r - group mean); dr_grpo = mean_only with Dr.GRPO's constant loss "
                            "normaliser; rloo = leave-one-out baseline; reinforce_pp(_baseline) = REINFORCE++ "
                            "batch whitening (after subtracting the group mean)")
    old_logprobs: Literal["auto", "engine", "learner"] = Field(
        "auto", description="the importance ratio's denominator: the engine's sampling logprobs, or the learner's own "
                            "at the first update of a batch (no extra pass); auto = the learner's where learner or "
                            "engines run bf16 (their rounding would enter the ratio), else the engine's")
    tis_cap: float | None = Field(
        2.0, gt=0.0, description="truncated importance sampling where the ratio uses the learner's own old logprobs: "
                                 "each token's surrogate is weighted by min(pi_old / pi_engine, tis_cap), correcting "
                                 "for what a bf16 engine samples differently (weights are 1 with the engine's "
                                 "logprobs as old); None = off")
    adv_eps: float = Field(1e-4, gt=0.0)
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] | None = \
        Field(None, description="None = the estimator's own: seq-mean-token-sum-norm (a constant normaliser, "
                                "max_new_tokens a sample) for dr_grpo, else token-mean")
    dynamic_sampling: bool = Field(
        False, description="GRPO (DAPO): drop groups whose K rewards are all equal (no gradient) and draw more "
                           "prompts, up to max_rounds generation calls a step, until the step has prompts_per_step "
                           "groups with a signal (else it trains on what there is, and says so)")
    max_rounds: int = Field(4, ge=1, description="dynamic sampling: generation calls a step at most")
    overlong: Literal["keep", "mask", "soft"] = Field(
        "keep", description="samples cut at max_new_tokens: keep (as any other), mask (out of the loss, DAPO's "
                            "overlong filtering), soft (DAPO's soft overlong punishment: 0 up to max_new_tokens - "
                            "overlong_buffer, then linearly down to -overlong_penalty at the limit, added to the "
                            "reward)")
    overlong_buffer: int | None = Field(None, ge=1, description="soft: the punished interval in tokens (None = a "
                                                                 "quarter of max_new_tokens)")
    overlong_penalty: float = Field(1.0, gt=0.0, description="soft: the penalty at max_new_tokens")
    skip_solved: int = Field(0, ge=0, description="GRPO prompt pool: after a visit where all K answers were right "
                                                  "(reward >= solved_at), skip the prompt's next N visits (0 = off)")
    skip_failed: int = Field(0, ge=0, description="likewise after a visit where all K were wrong "
                                                  "(reward <= failed_at)")
    solved_at: float = Field(1.0, description="an answer is right when its reward is >= this (pool and counts)")
    failed_at: float = Field(0.0, description="an answer is wrong when its reward is <= this (pool and counts)")

    @model_validator(mode="after")
    def _kl_used(self) -> "AlgoConfig":
        if self.kl_kind == "full" and self.beta == 0:
            raise ValueError("algo.kl_kind=full with algo.beta=0 computes a KL that is never used; set beta > 0")
        if self.failed_at >= self.solved_at:
            raise ValueError(f"algo.failed_at ({self.failed_at}) must be below algo.solved_at ({self.solved_at}): an "
                             "answer cannot be right and wrong")
        return self


AlgoPatch = _patch_of(AlgoConfig)


RESERVED_REWARD_NAMES = ("mean", "std", "reward", "len", "unscored", "errors")  # metric keys beside components


class RewardComponent(_Section):
    name: str | None = Field(None, description=(
        "a reward of rewards/registry.py (qa arithmetic gsm8k countdown label stsb similarity repetition "
        "reward_model); with fn or url, the component's label in the metrics (default: the function's name, "
        "'server' for a url)"))
    fn: str | None = Field(None, description=(
        "your own reward function: 'path/to/file.py:function' (relative to where you run) or "
        "'package.module:function', called TRL's way: fn(completions, prompts, **columns) -> list[float | None] "
        "(rewards/user.py; docs/your_task.md)"))
    url: str | None = Field(None, description=(
        "a reward server: each batch is POSTed as JSON {prompts, completions, completion_ids, fields}, the answer "
        "is a list of scores (rewards/remote.py); params: retries (2), headers"))
    weight: float = Field(1.0, description="total reward = sum of weight * component value")
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "the reward's own fields (see its class); for fn, extra keyword arguments of every call; for url, "
        "retries and headers"))
    timeout_s: float | None = Field(None, gt=0.0, description="fn / url: this component's deadline per call "
                                                             "(None = rewards.timeout_s)")
    on_error: Literal["raise", "skip"] | None = Field(None, description="fn / url: None = rewards.on_error")

    @model_validator(mode="before")
    @classmethod
    def _label(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name"):
            if isinstance(data.get("fn"), str) and ":" in data["fn"]:
                data = {**data, "name": data["fn"].rpartition(":")[2]}
            elif data.get("url"):
                data = {**data, "name": "server"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> "RewardComponent":
        if self.fn and self.url:
            raise ValueError(f"reward component {self.name!r} gives both fn and url; a component is one of a "
                             "registry reward (name), your function (fn) or a server (url)")
        if not self.name:
            raise ValueError("a reward component needs name (a registry reward), fn: 'file.py:function' or url")
        if self.name in RESERVED_REWARD_NAMES or "/" in self.name:
            raise ValueError(f"reward component name {self.name!r} is taken by the step's metrics (or holds a '/'): "
                             f"give the component another name (not {', '.join(RESERVED_REWARD_NAMES)})")
        if (self.timeout_s is not None or self.on_error is not None) and not (self.fn or self.url):
            raise ValueError(f"reward component {self.name!r}: timeout_s and on_error are for fn and url components "
                             "(the registry's rewards run in-process and raise on a bug)")
        return self


class RewardsConfig(_Section):
    components: tuple[RewardComponent, ...] | None = Field(
        None, description="[{name, weight, params}] or [{fn: 'file.py:function', weight}] or [{url: ..., weight}]; "
                          "None = the task's own rewards (mlqa: the paper's 0.7 F1 + 0.3 EM - length penalty)")
    timeout_s: float = Field(300.0, gt=0.0, description=(
        "a user function's (fn) or server's (url) deadline per batched call, in the reward actor; past it the "
        "function's process is killed and the call fails (rewards.on_error)"))
    on_error: Literal["raise", "skip"] = Field("raise", description=(
        "a user function that raises or times out (or a server that fails): raise = stop the run naming the function, "
        "the exception and the first offending sample (the last checkpoint stays; --resume after the fix); skip = "
        "those samples get no reward (they leave their group's statistics and the loss), counted per step as "
        "reward/<name>/errors. NaN, infinity and wrong lengths are errors either way"))

    @model_validator(mode="after")
    def _distinct(self) -> "RewardsConfig":
        if self.components is None:
            return self
        names = [c.name for c in self.components]
        if not names:
            raise ValueError("rewards.components is empty; name at least one reward, e.g. [{name: qa}], "
                             "or leave it out for the task's own")
        if len(set(names)) != len(names):
            raise ValueError(f"rewards.components names a reward twice ({names}); merge their weights, or give "
                             "each fn / url component its own name")
        return self


class RetrievalConfig(_Section):
    enabled: bool = Field(False, description="replace the gold context by the top-k retrieved passages (QA tasks)")
    use_in: Literal["eval", "train_and_eval"] = Field("eval", description="where retrieved contexts are used")
    k: int = Field(3, ge=1, description="passages per question, placed before the question")
    chunk_tokens: int = Field(256, ge=8, description="chunk size in policy-tokenizer tokens")
    overlap: int = Field(32, ge=0, description="tokens shared by consecutive chunks")
    encoder: str | None = Field(None, description="None = the packaged all-MiniLM-L6-v2; or an HF id / folder")
    index_dir: str | None = Field(None, description="saved index (None = <output_dir>/index/<data source>)")
    rebuild: Literal["auto", "never", "always"] = Field(
        "auto", description="auto: rebuild a missing or stale index; never: refuse one; always: rebuild")
    num_actors: int = Field(1, ge=1, description="retrieval actors; queries are sharded across them")

    @model_validator(mode="after")
    def _overlap(self) -> "RetrievalConfig":
        if self.overlap >= self.chunk_tokens:
            raise ValueError(f"retrieval.overlap ({self.overlap}) must be below retrieval.chunk_tokens "
                             f"({self.chunk_tokens})")
        return self


class DataConfig(_Section):
    source: str | None = Field(None, description=(
        "what the task reads (None = its default). QA tasks: 'xquad:<lang>' / 'mlqa-de' (files in the shared "
        "data dir), a SQuAD-format .json path, a datasets folder, or 'hf:facebook/mlqa:<config>:<split>'; "
        "arithmetic and countdown: 'generated'"))
    eval_size: int | None = Field(200, ge=1, description="held-out examples for periodic eval and the best "
                                                        "checkpoint (None = eval_fraction)")
    test_size: int | None = Field(None, ge=1, description=(
        "examples held out first, for final reports only (jobs/eval.py --split test); None = no test split"))
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = 42
    limit: int | None = Field(None, ge=1, description="use only the first N examples (smoke runs)")


class ToolSpec(_Section):
    name: str = Field(description="search | calculate (built in), or your tool's name: the policy calls it as "
                                  "<name>argument</name>")
    fn: str | None = Field(None, description="your tool: 'my_tools.py:Weather', a class whose call(arg: str) -> str "
                                             "answers (or a function (arg) -> str), run in a child process")
    params: dict[str, Any] = Field(default_factory=dict, description="the tool's own fields (search: k, the "
                                                                     "passages per call, default 3; yours: its "
                                                                     "class's constructor arguments)")
    max_output_tokens: int | None = Field(None, ge=1, description="the tool's text is cut to this many tokens "
                                                                  "(None: search 384, calculate 32, yours 256)")
    concurrency: int = Field(8, ge=1, description="yours: calls a tool actor runs at once, each in a child process "
                                                  "of its own (a step's calls wait on the slowest, not on their sum)")


class ToolsConfig(_Section):
    use: tuple[ToolSpec, ...] = Field((), description="the tools multi-turn rollouts may call (rollout.max_turns > 1)")
    timeout_s: float = Field(30.0, gt=0.0, description="a tool call's deadline; past it the call's observation is "
                                                      "an error (a user tool's process is killed), counted")
    num_actors: int = Field(1, ge=1, description="tool actors (stateless, like the reward actors); calls are "
                                                 "sharded across them")
    template: str = Field("\n<information>{text}</information>\n", description=(
        "how an observation is appended after the call (Search-R1's <information> block)"))

    @model_validator(mode="after")
    def _names(self) -> "ToolsConfig":
        names = [t.name for t in self.use]
        if len(set(names)) != len(names):
            raise ValueError(f"tools.use names a tool twice ({names})")
        bad = [t.name for t in self.use if not t.fn and t.name not in ("search", "calculate")]
        if bad:
            raise ValueError(f"tools.use: {bad} are not built in (search, calculate); give your tool's fn: "
                             "'my_tools.py:MyTool'")
        if any(not n.isidentifier() for n in names):
            raise ValueError(f"tools.use: tool names {names} must be identifiers (they are the call's tags)")
        if "{text}" not in self.template:
            raise ValueError("tools.template must contain {text}, where the tool's answer goes")
        return self


class LoggingConfig(_Section):
    tensorboard: bool = Field(False, description="also write every step and eval metric to <run>/tensorboard/ "
                                                 "(needs the tensorboard extra)")
    mlflow: bool = Field(False, description=(
        "also log the run to MLflow: params = the resolved config, metrics = every step's and eval's numbers (needs "
        "the mlflow extra); a failing tracker is reported once and never stops training"))
    mlflow_tracking_uri: str | None = Field(None, description="None = a local file store, <run>/mlruns")
    mlflow_experiment: str | None = Field(None, description="None = 'raygrpo-<task name>'")


class TaskConfig(_Section):
    name: str = Field("mlqa", description="a task of tasks/registry.py: mlqa arithmetic countdown domain_qa labels "
                                          "reasoning_gym verifiers, or prompts (your own rows of prompts: tasks/prompts.py, docs/your_task.md); "
                                          "the default is the MLQA recipe's")
    params: dict[str, Any] = Field(default_factory=dict, description="the task's own fields (see its Params)")


# ---- phases ---------------------------------------------------------------------------------------------

class _Phase(_Section):
    name: str | None = Field(None, description="log tag and checkpoint folder (default: the kind, numbered "
                                               "when a kind repeats: grpo1, rs_sft, grpo2)")
    eval_every: int | None = Field(None, ge=1, description="steps between evals (None: train.eval_every for grpo; "
                                                           "sft and rs_sft evaluate at their end only)")
    patience: int | None = Field(None, ge=1, description="end the phase after this many evals without a "
                                                        "better primary metric (None = train.patience)")


class SFTPhase(_Phase):
    kind: Literal["sft"]
    epochs: float = Field(3.0, gt=0.0, description="passes over the (limited) training split (paper: 3)")
    steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    lr: float = Field(5e-5, gt=0.0)
    batch_size: int = Field(8, ge=1)
    limit: int | None = Field(None, ge=1, description="SFT on only the first N training examples")


class GRPOPhase(_Phase):
    kind: Literal["grpo"]
    steps: int = Field(100, ge=1, description="rollout batches (one generate/score/learn/sync each)")
    prompts_per_step: int | None = Field(None, ge=1, description="None = train.prompts_per_step")
    lr: float | None = Field(None, gt=0.0, description="None = learner.lr")
    reference: str = Field("phase_start", description=(
        "the KL reference: 'phase_start' (the model this phase starts from: after SFT, the SFT model), "
        "'initial' (the run's initial policy), or a model spec / checkpoint folder"))
    algo: AlgoPatch = Field(default_factory=AlgoPatch, description="fields of algo this phase changes")
    sampling: SamplingPatch = Field(default_factory=SamplingPatch, description=(
        f"fields of rollout this phase changes: {', '.join(SAMPLING_FIELDS)}"))


class RSSFTPhase(_Phase):
    kind: Literal["rs_sft"]
    prompts: int = Field(256, ge=1, description="training prompts to sample K completions for")
    threshold: float = Field(1.0, description="keep completions whose total reward is >= this")
    max_per_prompt: int | None = Field(None, ge=1, description="keep at most N distinct passing completions "
                                                              "per prompt (None = all)")
    sampling: SamplingPatch = Field(default_factory=SamplingPatch, description="fields of rollout it changes")
    epochs: float = Field(2.0, gt=0.0, description="passes over the kept completions")
    steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    lr: float = Field(1e-5, gt=0.0)
    batch_size: int = Field(8, ge=1)


class PPOPhase(GRPOPhase):
    """PPO with a critic (GAE): the same rollouts, reward and clipped surrogate as GRPO, with per-token
    advantages from a value model and the KL folded into the token rewards (OpenRLHF's and verl's default)."""
    kind: Literal["ppo"]
    epochs: int = Field(4, ge=1, description="passes over each rollout batch (PPO epochs)")
    minibatches: int = Field(2, ge=1, description="shuffled minibatches per epoch (one optimizer step each)")
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda")
    kl_coef: float = Field(0.05, ge=0.0, description="-kl_coef * (logp - ref_logp) per token in the rewards (k1)")
    whiten: bool = Field(True, description="whiten advantages over the batch's valid tokens")
    vf_clip: float | None = Field(0.2, gt=0.0, description="value clipping around the old values (None = off)")
    critic_lr: float = Field(1e-5, gt=0.0)
    critic_warmup: int = Field(0, ge=0, description="first steps train only the critic (the policy stays)")
    critic: str | None = Field(None, description="value model: None = the policy's architecture and weights at "
                                                 "the phase start, with a fresh scalar head; or any HF causal LM")


class DPOPhase(_Phase):
    """Direct preference optimisation (Rafailov et al. 2023) against the phase's reference: pairs from a file, or
    built online from the policy's own K samples of each prompt, the best against the worst by the task's reward."""
    kind: Literal["dpo"]
    pairs: str = Field("online", description=(
        "'online' (each step samples K per prompt; every group whose rewards differ gives one pair, its best sample "
        "over its worst) or preference pairs: a JSONL file of {prompt, chosen, rejected} (the prompt is the user "
        "message, rendered with the policy's chat template) or 'hf:<dataset>:<split>' with those columns"))
    steps: int | None = Field(None, ge=1, description="optimizer steps (online: default 100; file pairs: None = "
                                                      "epochs over them)")
    epochs: float = Field(1.0, gt=0.0, description="file pairs: passes over them")
    batch_size: int = Field(8, ge=1, description="file pairs: pairs per optimizer step")
    limit: int | None = Field(None, ge=1, description="file pairs: only the first N")
    prompts_per_step: int | None = Field(None, ge=1, description="online: prompts a step (None = "
                                                                  "train.prompts_per_step)")
    lr: float | None = Field(None, gt=0.0, description="None = learner.lr")
    beta: float = Field(0.1, gt=0.0, description="DPO's beta (ipo: tau, the target margin is 1 / (2 beta))")
    loss: Literal["sigmoid", "ipo"] = Field("sigmoid", description="sigmoid = DPO (with label_smoothing: cDPO); "
                                                                   "ipo = IPO, log-ratios averaged over tokens")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="sigmoid only: the chance a label is flipped")
    reference: str = Field("phase_start", description="the frozen reference: 'phase_start', 'initial' or a model "
                                                      "spec / checkpoint folder (as grpo's)")
    algo: AlgoPatch = Field(default_factory=AlgoPatch, description=(
        "online pairs: algo fields this phase changes (dynamic_sampling and max_rounds fill the step with pairs)"))
    sampling: SamplingPatch = Field(default_factory=SamplingPatch, description=(
        f"online pairs: fields of rollout this phase changes: {', '.join(SAMPLING_FIELDS)}"))

    @model_validator(mode="after")
    def _ipo_has_no_smoothing(self) -> "DPOPhase":
        if self.loss == "ipo" and self.label_smoothing:
            raise ValueError("label_smoothing is the sigmoid loss's (cDPO); with loss: ipo leave it 0")
        return self

    @property
    def online(self) -> bool:
        return self.pairs == "online"


Phase = Annotated[Union[SFTPhase, GRPOPhase, RSSFTPhase, PPOPhase, DPOPhase], Field(discriminator="kind")]
PHASE_KINDS = ("sft", "grpo", "rs_sft", "ppo", "dpo")
REFERENCE_KEYWORDS = ("phase_start", "initial")


class TrainConfig(_Section):
    phases: tuple[Phase, ...] = Field(
        (GRPOPhase(kind="grpo"),), description="[{kind: sft|grpo|rs_sft|ppo|dpo, ...}] run in order; default: 100 "
                                                "GRPO steps")
    prompts_per_step: int = Field(4, ge=1)
    eval_every: int = Field(10, ge=1)
    eval_at_start: bool = True
    patience: int | None = Field(None, ge=1, description="end a phase after this many evals without a better "
                                                        "primary metric")
    save_every: int = Field(10, ge=1, description="write a resumable checkpoint every N steps")
    keep_checkpoints: int = Field(1, ge=1, description="resumable checkpoints kept: last plus the newest N-1 earlier "
                                                       "ones as checkpoints/step-N (best and phase ends are extra)")
    max_staleness: int = Field(0, ge=0, le=16, description="GRPO: the engines sample up to this many learner "
                               "updates ahead of the learner (0: each step samples the learner's weights; 1: the next "
                               "step's samples are generated while this one learns; train.overlap=true is 1). Every "
                               "token carries the weights version that sampled it; the loss corrects for it "
                               "(algo.old_logprobs, algo.tis_cap: docs/async.md)")
    rollout_records: bool = Field(True, description="every GRPO/PPO step's samples, rewards and advantages to "
                                                    "<run>/rollouts/step-N.parquet (jobs/samples.py reads them)")
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _overlap_alias(cls, data):
        """train.overlap (a bool, before train.max_staleness) is max_staleness 1 (true) or 0 (false)."""
        if isinstance(data, dict) and "overlap" in data:
            data = dict(data)
            overlap = data.pop("overlap")
            if not isinstance(overlap, bool):
                raise ValueError(f"train.overlap must be true or false, not {overlap!r} (it is train.max_staleness 1 "
                                 "or 0; set train.max_staleness for more)")
            if "max_staleness" in data and data["max_staleness"] != int(overlap):
                raise ValueError(f"train.overlap={str(overlap).lower()} is train.max_staleness={int(overlap)}, and "
                                 f"train.max_staleness={data['max_staleness']} is set too: keep only max_staleness")
            data["max_staleness"] = int(overlap)
        return data

    @model_validator(mode="after")
    def _phase_names(self) -> "TrainConfig":
        if not self.phases:
            raise ValueError("train.phases is empty; give at least one phase, e.g. [{kind: grpo, steps: 100}]")
        if self.run_name is not None and (not self.run_name.strip(". ") or any(c in self.run_name for c in "/\\\0")):
            raise ValueError(f"train.run_name {self.run_name!r} must be a plain folder name (no '/', '\\', or '..'): "
                             "the run folder is <train.output_dir>/<train.run_name> and may not leave it")
        names = self.phase_names()
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"train.phases: phase names {dup} repeat; give each phase its own name")
        bad = [n for n in names if not n.replace("_", "").replace("-", "").isalnum()]
        if bad:
            raise ValueError(f"train.phases: names {bad} must be letters, digits, '-' or '_' (they name folders)")
        return self

    def phase_names(self) -> list[str]:
        """Each phase's name: its own, else its kind, numbered when the kind repeats (grpo1, rs_sft, grpo2)."""
        kinds = [p.kind for p in self.phases]
        seen: dict[str, int] = {}
        out = []
        for p in self.phases:
            seen[p.kind] = seen.get(p.kind, 0) + 1
            out.append(p.name or (p.kind if kinds.count(p.kind) == 1 else f"{p.kind}{seen[p.kind]}"))
        return out


class JobConfig(_Section):
    cluster: ClusterConfig = ClusterConfig()
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    algo: AlgoConfig = AlgoConfig()
    rewards: RewardsConfig = RewardsConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    data: DataConfig = DataConfig()
    task: TaskConfig = TaskConfig()
    train: TrainConfig = TrainConfig()
    tools: ToolsConfig = ToolsConfig()
    logging: LoggingConfig = LoggingConfig()

    def algo_for(self, phase) -> AlgoConfig:
        """The algo section with this phase's changes."""
        patch = getattr(phase, "algo", None)
        changes = patch.model_dump(exclude_none=True) if patch is not None else {}
        return AlgoConfig.model_validate({**self.algo.model_dump(), **changes}) if changes else self.algo

    def rollout_for(self, phase) -> RolloutConfig:
        """The rollout section with this phase's sampling changes."""
        patch = getattr(phase, "sampling", None)
        changes = patch.model_dump(exclude_none=True) if patch is not None else {}
        return RolloutConfig.model_validate({**self.rollout.model_dump(), **changes}) if changes else self.rollout

    @model_validator(mode="before")
    @classmethod
    def _task_agent(cls, data):
        """A task whose samples are agent sessions (verifiers: tasks/verifiers_env.py) drives them with its own
        agent unless rollout.agent names another."""
        if isinstance(data, dict) and isinstance(data.get("task"), dict) and data["task"].get("name") == "verifiers":
            rollout = data.get("rollout") or {}
            if isinstance(rollout, dict) and not rollout.get("agent"):
                data = {**data, "rollout": {**rollout, "agent": "tasks.verifiers_env:run"}}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> "JobConfig":
        """Every rule that ties fields together, on each phase's resolved values (its algo and sampling patches
        applied): a phase's own override cannot slip past a rule written for the top-level section."""
        for i, phase in enumerate(self.train.phases):
            where = f"train.phases.{i} ({phase.kind})"
            try:
                a, r = self.algo_for(phase), self.rollout_for(phase)
            except ValidationError as err:
                msg = err.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"{where}: {msg}") from None
            self._check_phase(i, phase, where, a, r)
        self._check_turns()
        self._check_agent()
        self._check_sleep()
        tp, gpus = self.rollout.tensor_parallel_size, self.cluster.gpus_per_rollout_actor
        if tp > 1 and (self.rollout.engine != "vllm" or gpus == 0):
            raise ValueError(f"rollout.tensor_parallel_size={tp} splits a vLLM engine over {tp} GPUs; "
                             + ("the hf engine has no tensor parallelism" if self.rollout.engine != "vllm" else
                                "with no GPUs (cluster.gpus_per_rollout_actor=0) vLLM's CPU backend runs one worker "
                                "per engine") + ": set it to 1 and add engines (cluster.num_rollout_actors) instead")
        if tp > 1 and gpus != tp:
            raise ValueError(f"rollout.tensor_parallel_size={tp} needs cluster.gpus_per_rollout_actor={tp} (one GPU per "
                             f"shard in the engine's bundle), not {gpus:g}")
        if self.learner.sharded() == "fsdp" and self.cluster.backend != "ray":
            raise ValueError("learner.sharding=fsdp shards over the learner processes' own group, which needs Ray: "
                             "drop --inprocess (cluster.backend=ray) or set learner.sharding=replicate")
        if self.learner.workers > 1 and self.cluster.backend != "ray":
            raise ValueError(f"learner.workers={self.learner.workers} starts that many learner processes, which "
                             "needs Ray: drop --inprocess (cluster.backend=ray) or set learner.workers=1")
        if self.cluster.weight_sync == "collective" and self.cluster.backend != "ray":
            raise ValueError("cluster.weight_sync=collective broadcasts between Ray actors; with "
                             "cluster.backend=inprocess use weight_sync=object_store")
        return self


    def _check_phase(self, i: int, phase, where: str, a: "AlgoConfig", r: RolloutConfig) -> None:
        """The rules of one phase, on its resolved algo `a` and rollout `r`."""
        if r.max_prompt_tokens + r.max_new_tokens > r.max_model_len:
            raise ValueError(
                f"rollout.max_prompt_tokens ({r.max_prompt_tokens}) + rollout.max_new_tokens "
                f"({r.max_new_tokens}, {where}) exceeds rollout.max_model_len ({r.max_model_len}); "
                "raise max_model_len or lower one of the two")
        if phase.kind in ("grpo", "ppo", "dpo") and not phase.reference.strip():
            raise ValueError(f"{where}: reference is empty; use 'phase_start', 'initial' or a model folder")
        if (self.learner.lora is not None and phase.kind in ("grpo", "ppo", "dpo") and phase.reference != "phase_start"
                and not (i == 0 and phase.reference == "initial")):
            raise ValueError(f"{where}: with learner.lora the reference is the model with its adapters "
                             f"disabled, which is the model the phase started from; reference "
                             f"'{phase.reference}' needs full fine-tuning (drop learner.lora) or "
                             "reference: phase_start")
        if a.kl_kind == "full" and a.beta > 0 and phase.kind == "grpo" and self.learner.sharded() == "fsdp":
            raise ValueError(f"{where}: algo.kl_kind=full keeps a whole frozen copy of the model inside each "
                             "learner worker, which learner.sharding=fsdp does not shard: use a sampled KL "
                             "(kl_kind k1/k2/k3, served by the sharded reference workers) or "
                             "learner.sharding=replicate")
        if phase.kind == "ppo" and (a.dynamic_sampling or a.skip_solved or a.skip_failed or a.advantage != "grpo"):
            raise ValueError(f"{where}: algo.dynamic_sampling, skip_solved/skip_failed and advantage are GRPO's; "
                             "PPO's advantages are GAE with its critic: drop them from this phase")
        if phase.kind == "grpo" and self.train.max_staleness and a.tis_cap is None and a.old_logprobs != "engine":
            raise ValueError(f"{where}: train.max_staleness={self.train.max_staleness} trains on samples of older "
                             "weights; with the learner's old logprobs the truncated importance weights against the "
                             "sampling engine's are the correction: set algo.tis_cap (e.g. 2) or "
                             "algo.old_logprobs=engine")
        if a.overlong == "soft" and a.overlong_buffer is not None and a.overlong_buffer > r.max_new_tokens:
            raise ValueError(f"{where}: algo.overlong_buffer ({a.overlong_buffer}) exceeds max_new_tokens "
                             f"({r.max_new_tokens}); use at most max_new_tokens (None = a quarter of it)")

    def _check_sleep(self) -> None:
        r, c = self.rollout, self.cluster
        if r.sleep in ("level1", "level2"):
            if r.engine != "vllm" or c.gpus_per_rollout_actor == 0:
                raise ValueError(f"rollout.sleep={r.sleep} is vLLM's sleep mode on a GPU; "
                                 + ("the hf engine has none" if r.engine != "vllm" else "CPU vLLM has none "
                                    "(cluster.gpus_per_rollout_actor=0)") + ": set rollout.sleep=auto or off")
        if r.sleep != "off" and self.train.max_staleness and self.sleeps():
            raise ValueError(f"train.max_staleness={self.train.max_staleness} generates while the learner trains, so "
                             "the engines cannot sleep then: set train.max_staleness=0 or rollout.sleep=off")

    def sleeps(self) -> bool:
        """Whether the engines sleep between generations (the level is decided with the model's size)."""
        r, c = self.rollout, self.cluster
        if r.sleep == "off" or r.engine != "vllm" or c.gpus_per_rollout_actor == 0:
            return False
        return r.sleep != "auto" or c.placement == "colocated"

    def _check_agent(self) -> None:
        r = self.rollout
        if r.agent is None:
            if r.agent_params:
                raise ValueError("rollout.agent_params without rollout.agent: name the agent (file.py:run) or drop them")
            return
        if r.engine != "vllm":
            raise ValueError("rollout.agent talks to the run's OpenAI-compatible endpoint, which vLLM serves: "
                             "rollout.engine=vllm")
        if r.max_turns > 1 or self.tools.use:
            raise ValueError("rollout.agent drives its own turns and tools: drop rollout.max_turns and tools.use")

    def _check_turns(self) -> None:
        r, use = self.rollout, self.tools.use
        if r.max_turns == 1:
            if use:
                raise ValueError("tools.use names tools, which multi-turn rollouts call: set rollout.max_turns (e.g. 4) "
                                 "or drop tools.use")
            return
        if not use:
            raise ValueError(f"rollout.max_turns={r.max_turns}: a turn ends in a tool call, and tools.use names no "
                             "tool; add one (e.g. tools.use=[{name: search}]) or set rollout.max_turns=1")
        if r.engine != "vllm":
            raise ValueError("multi-turn rollouts stop at tool calls, which the hf engine does not do: rollout.engine=vllm")
        if r.max_prompt_tokens + r.total_tokens() + r.max_new_tokens > r.max_model_len:
            raise ValueError(f"rollout.max_prompt_tokens ({r.max_prompt_tokens}) + max_total_tokens ({r.total_tokens()}) "
                             f"+ max_new_tokens ({r.max_new_tokens}) exceed max_model_len ({r.max_model_len}): a last "
                             "turn could not fit; lower one or raise max_model_len")


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the field and the fix."""


# Keys of earlier versions, and where their meaning lives now.
MOVED = {
    "train.steps": "train.phases.<i>.steps of a {kind: grpo} phase (e.g. train.phases.0.steps=2)",
    "train.sft_epochs": "a {kind: sft, epochs: N} phase in train.phases",
    "train.sft_lr": "train.phases.<i>.lr of the sft phase",
    "train.sft_batch_size": "train.phases.<i>.batch_size of the sft phase",
    "train.sft_limit": "train.phases.<i>.limit of the sft phase",
    "model.reference": "train.phases.<i>.reference ('phase_start', 'initial' or a model folder)",
    "data.lang": "task.params.lang (QA tasks; default: from data.source, e.g. xquad:de -> de)",
    "algo.adv_scale": "algo.advantage (adv_scale std = advantage grpo, none = mean_only)",
    "train.tensorboard": "logging.tensorboard",
}


def _model_of(annotation) -> type[BaseModel] | tuple[type[BaseModel], ...] | None:
    """The pydantic model(s) behind a field annotation: X, X | None, tuple[X, ...], Annotated[Union[...]]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = get_args(annotation)
    if typing.get_origin(annotation) in (tuple, list) and args:
        return _model_of(args[0])
    if typing.get_origin(annotation) is Annotated:
        return _model_of(args[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        models = tuple(m for a in args if (m := _model_of(a)) is not None and not isinstance(m, tuple))
        return models[0] if len(models) == 1 else (models or None)
    return None


def _allowed_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    pending: tuple[type[BaseModel], ...] | None = None
    for name in path:
        if name.isdigit():  # an item of a list section, e.g. train.phases.0
            continue
        if pending is not None:  # a tagged union: the loc names the chosen member by its tag
            model = next((m for m in pending if name in get_args(m.model_fields["kind"].annotation)), pending[0])
            pending = None
            continue
        field = model.model_fields.get(name)
        found = _model_of(field.annotation) if field is not None else None
        if found is None:
            return []
        if isinstance(found, tuple):
            pending = found
        else:
            model = found
    return list(model.model_fields)


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        raw = [str(p) for p in e["loc"]]
        # A tagged union puts the tag after the list index (train.phases.0.grpo.steps); it is not a key.
        loc_parts = [p for i, p in enumerate(raw) if not (p in PHASE_KINDS and i and raw[i - 1].isdigit())]
        loc = ".".join(loc_parts)
        if e["type"] == "extra_forbidden":
            parent, shown = raw[:-1], loc_parts[:-1]
            moved = next((k for k in MOVED if loc == k or loc.endswith("." + k)), None)  # also inside a phase
            if moved:
                lines.append(f"config key '{loc}' has moved: use {MOVED[moved]}")
                continue
            allowed = _allowed_keys(JobConfig, parent)
            close = difflib.get_close_matches(loc_parts[-1], allowed, n=1)
            hint = f" Did you mean '{'.'.join(shown + close)}'?" if close else ""
            lines.append(f"unknown config key '{'.'.join(shown + loc_parts[-1:])}'.{hint} "
                         f"Allowed here: {', '.join(allowed)}")
        elif e["type"] == "union_tag_invalid" or e["type"] == "union_tag_not_found":
            lines.append(f"{loc}: a phase needs kind: one of {', '.join(PHASE_KINDS)} (got {e.get('input')!r})")
        elif e["type"] == "value_error":  # a cross-field check: its message names the fields and the fix
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(msg if not loc or loc_parts[0] in msg else f"{loc}: {msg}")
        else:
            lines.append(f"{loc or 'config'}: {e['msg']} (got {e.get('input')!r})")
    return "invalid job config:\n  " + "\n  ".join(lines)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is a value, not a section")
    node[leaf] = value


def parse_overrides(items: list[str]) -> dict:
    """['rollout.temperature=0.7', 'train.phases.0.steps=2'] -> nested dict (values parsed as YAML scalars;
    a digit key addresses an item of a list)."""
    tree: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value (e.g. train.eval_every=2)")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def _merge(base: Any, top: Any, where: str = "") -> Any:
    if isinstance(top, dict) and isinstance(base, list) and all(k.isdigit() for k in top):
        out = list(base)
        for k, v in top.items():
            i = int(k)
            if i >= len(out):
                raise ConfigError(f"override '{where}.{k}': the list has {len(out)} items (0..{len(out) - 1})")
            out[i] = _merge(out[i], v, f"{where}.{k}")
        return out
    if isinstance(top, dict) and isinstance(base, dict):
        out = dict(base)
        for k, v in top.items():
            out[k] = _merge(out[k], v, f"{where}.{k}".lstrip(".")) if k in out else v
        return out
    return top


def _with_default_lists(tree: dict) -> dict:
    """Overrides into a list the YAML leaves at its default (train.phases.0.steps=2) patch the default list."""
    train = tree.get("train")
    if isinstance(train, dict) and isinstance(train.get("phases"), dict):
        defaults = [p.model_dump(exclude_defaults=True) | {"kind": p.kind} for p in TrainConfig().phases]
        tree = {**tree, "train": {**train, "phases": _merge(defaults, train["phases"], "train.phases")}}
    return tree


PRESETS_DIR = Path(__file__).resolve().parents[1] / "jobs" / "configs"  # shipped with the package


def config_path(name: str | Path) -> Path:
    """A config file: the path as given, else a preset of that name ('smoke', 'arithmetic_grpo.yaml')."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    preset = PRESETS_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if path.parent == Path(".") and preset.is_file():
        return preset
    known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(path.stem, known, n=1)
    hint = f" Did you mean the preset '{close[0]}'?" if close else ""
    raise ConfigError(f"config file '{name}' not found (looked at {path.resolve()}), and it is not a preset.{hint} "
                      f"Presets (raygrpo presets, jobs/configs/*.yaml): {', '.join(known)}")


def load_config(yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> JobConfig:
    """YAML file or preset name (optional) + overrides -> validated JobConfig, or ConfigError naming the fix."""
    tree: dict = {}
    if yaml_path is not None:
        path = config_path(yaml_path)
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of sections, not {type(tree).__name__}")
    tree = _with_default_lists(_merge(tree, parse_overrides(overrides or [])))
    try:
        return JobConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def config_to_dict(cfg: JobConfig) -> dict:
    return cfg.model_dump(mode="json")
