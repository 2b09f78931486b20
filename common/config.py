"""The one job config: a frozen pydantic model, sections mirroring the folders.

Defaults are the MLQA paper's seed hyperparameters; a job's YAML holds only what it changes, and
`key=value` overrides on the command line go on top. Validation runs once, before any actor starts:
an unknown key or a bad value raises `ConfigError` naming the field, the allowed values and a close
match when there is one.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    weight_sync: Literal["object_store", "collective"] = Field(
        "object_store", description="object_store: one ray.put per sync (CPU); collective: NCCL broadcast (GPU)")


class ModelConfig(_Section):
    policy: str = Field("embedded:smollm2-135m-instruct",
                        description="HF id, local folder, or 'embedded:smollm2-135m-instruct'")
    reference: str | None = Field(None, description="reference model spec (None = the initial policy)")
    cache_dir: str | None = Field(None, description="where embedded models are materialized (None = ~/.cache/raygrpo)")


class RolloutConfig(_Section):
    engine: Literal["vllm", "hf"] = Field("vllm", description="vllm, or hf (transformers generate; seq2seq)")
    group_size: int = Field(4, ge=2, description="K samples per prompt")
    temperature: float = Field(0.8, gt=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_prompt_tokens: int = Field(512, ge=16, description="longer prompts have their context cut (counted)")
    max_new_tokens: int = Field(64, ge=1)
    kv_cache_gib: float = Field(2.0, gt=0.0, description="vLLM CPU KV-cache size (VLLM_CPU_KVCACHE_SPACE)")
    max_model_len: int = Field(2048, ge=64)
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    seed: int = 0


class LearnerConfig(_Section):
    lr: float = Field(1e-5, gt=0.0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    micro_batch_size: int = Field(4, ge=1, description="sequences per forward/backward; grads accumulate")
    inner_steps: int = Field(1, ge=1, description="optimizer steps per rollout batch (PPO epochs, mu)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16 autocast is ~4x faster on AMX CPUs but raises the vLLM-vs-learner logprob gap")
    gradient_checkpointing: bool = False


class AlgoConfig(_Section):
    clip_eps: float = Field(0.2, gt=0.0)
    clip_eps_high: float | None = Field(None, gt=0.0, description="asymmetric upper clip (None = clip_eps)")
    beta: float = Field(0.04, ge=0.0, description="KL penalty coefficient")
    kl_kind: Literal["k3", "k1", "k2", "abs", "full"] = Field(
        "k3", description="k3 estimator on sampled tokens, or 'full' = exact full-vocabulary KL (paper)")
    adv_scale: Literal["std", "none"] = Field("std", description="z-score within group, or mean-only")
    adv_eps: float = Field(1e-4, gt=0.0)
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                      "seq-mean-token-sum-norm"] = "token-mean"


class RewardComponent(_Section):
    name: str = Field(description="a reward of rewards/registry.py: qa arithmetic gsm8k countdown label stsb "
                                  "similarity repetition")
    weight: float = Field(1.0, description="total reward = sum of weight * component value")
    params: dict[str, Any] = Field(default_factory=dict, description="the reward's own fields (see its class)")

    @model_validator(mode="after")
    def _known(self) -> "RewardComponent":
        from rewards.registry import check_params  # stdlib-only import; encoders load in the actors

        check_params(self.name, self.params)
        return self


class RewardsConfig(_Section):
    components: tuple[RewardComponent, ...] = Field(
        (RewardComponent(name="qa"),),
        description="[{name, weight, params}]; default: the paper's 0.7 F1 + 0.3 EM - length penalty")

    @model_validator(mode="after")
    def _distinct(self) -> "RewardsConfig":
        names = [c.name for c in self.components]
        if not names:
            raise ValueError("rewards.components is empty; name at least one reward, e.g. [{name: qa}]")
        if len(set(names)) != len(names):
            raise ValueError(f"rewards.components names a reward twice ({names}); merge their weights")
        return self


class RetrievalConfig(_Section):
    enabled: bool = Field(False, description="replace the gold context by the top-k retrieved passages")
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
    source: str = Field("xquad:en", description=(
        "'xquad:<lang>' / 'mlqa-de' (files in the shared data dir), a SQuAD-format .json path, "
        "a datasets folder, or 'hf:facebook/mlqa:<config>:<split>'"))
    lang: str = Field("en", description="language for the metric: en es de vi zh ar hi")
    eval_size: int | None = Field(200, ge=1, description="held-out questions for periodic eval and the best "
                                                        "checkpoint (None = 10%)")
    test_size: int | None = Field(None, ge=1, description=(
        "questions held out first, for final reports only (jobs/eval.py --split test); None = no test split"))
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = 42
    limit: int | None = Field(None, ge=1, description="use only the first N questions (smoke runs)")


class TrainConfig(_Section):
    steps: int = Field(100, ge=1, description="GRPO steps (one rollout batch each)")
    prompts_per_step: int = Field(4, ge=1)
    eval_every: int = Field(10, ge=1)
    eval_at_start: bool = True
    patience: int | None = Field(None, ge=1, description="stop after this many evals without a better F1")
    save_every: int = Field(10, ge=1, description="write a resumable checkpoint every N steps")
    sft_epochs: float = Field(0.0, ge=0.0, description="SFT epochs before GRPO (paper: 3; 0 = GRPO only)")
    sft_lr: float = Field(5e-5, gt=0.0)
    sft_batch_size: int = Field(8, ge=1)
    sft_limit: int | None = Field(None, ge=1, description="SFT on only the first N training questions")
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None


class JobConfig(_Section):
    cluster: ClusterConfig = ClusterConfig()
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    algo: AlgoConfig = AlgoConfig()
    rewards: RewardsConfig = RewardsConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> "JobConfig":
        r = self.rollout
        if r.max_prompt_tokens + r.max_new_tokens > r.max_model_len:
            raise ValueError(
                f"rollout.max_prompt_tokens ({r.max_prompt_tokens}) + rollout.max_new_tokens "
                f"({r.max_new_tokens}) exceeds rollout.max_model_len ({r.max_model_len}); "
                "raise max_model_len or lower one of the two")
        if self.cluster.weight_sync == "collective" and self.cluster.gpus_per_learner == 0:
            raise ValueError("cluster.weight_sync=collective needs GPUs (cluster.gpus_per_learner > 0); "
                             "use weight_sync=object_store on CPU")
        if self.algo.kl_kind == "full" and self.algo.beta == 0:
            raise ValueError("algo.kl_kind=full with algo.beta=0 computes a KL that is never used; set beta > 0")
        return self


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the field and the fix."""


def _allowed_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    for name in path:
        if name.isdigit():  # an item of a list section, e.g. rewards.components.0
            continue
        field = model.model_fields.get(name)
        ann = field.annotation if field is not None else None
        args = get_args(ann)  # tuple[RewardComponent, ...] -> RewardComponent
        if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            ann = args[0]
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parent = [str(p) for p in e["loc"][:-1]]
            allowed = _allowed_keys(JobConfig, parent)
            close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f" Did you mean '{'.'.join(parent + close)}'?" if close else ""
            lines.append(f"unknown config key '{loc}'.{hint} Allowed here: {', '.join(allowed)}")
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
    """['rollout.temperature=0.7', 'train.steps=2'] -> nested dict (values parsed as YAML scalars)."""
    tree: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value (e.g. train.steps=2)")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> JobConfig:
    """YAML file (optional) + overrides -> validated JobConfig, or ConfigError naming the fix."""
    tree: dict = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' not found; presets live in jobs/configs/*.yaml")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of sections, not {type(tree).__name__}")
    tree = _merge(tree, parse_overrides(overrides or []))
    try:
        return JobConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def config_to_dict(cfg: JobConfig) -> dict:
    return cfg.model_dump(mode="json")
