"""Tasks by name, and the checks of a job config that need to know tasks and rewards.

`check_job(cfg)` runs right after `load_config` in every entry point, before any actor starts: it is where
the knowledge lives (which tasks exist, what their params are, which example fields each reward reads and
which fields each task provides), so `common/config.py` does not reach up for it.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from common.config import REFERENCE_KEYWORDS, ConfigError, JobConfig
from rewards.registry import REWARDS, check_params, missing_fields
from tasks.arithmetic import ArithmeticTask
from tasks.base import Task
from tasks.countdown import CountdownTask
from tasks.domain_qa import DomainQATask
from tasks.labels import LabelTask
from tasks.mlqa import MLQATask

TASKS: dict[str, type[Task]] = {
    "mlqa": MLQATask,
    "arithmetic": ArithmeticTask,
    "countdown": CountdownTask,
    "domain_qa": DomainQATask,
    "labels": LabelTask,
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown task '{name}' (task.name).{hint} Known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def reward_components(cfg: JobConfig) -> list[dict[str, Any]]:
    """The job's reward components as plain dicts: the config's, else the task's own."""
    if cfg.rewards.components is not None:
        return [c.model_dump() for c in cfg.rewards.components]
    return [dict(c) for c in task_class(cfg.task.name).default_rewards]


def check_job(cfg: JobConfig) -> None:
    """Raise ConfigError naming the fix for anything the task or reward registries refuse."""
    cls = task_class(cfg.task.name)
    try:
        cls.make_params(cfg.task.params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task.params of task '{cls.name}': {err}") from None
    for i, comp in enumerate(reward_components(cfg)):
        try:
            check_params(comp["name"], comp.get("params", {}))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"rewards.components.{i}: {err}") from None
        missing = missing_fields(comp["name"], set(cls.reward_fields))
        if missing:
            fits = [n for n in REWARDS if not missing_fields(n, set(cls.reward_fields))]
            raise ConfigError(
                f"reward '{comp['name']}' reads example fields {missing}, which task '{cls.name}' does not provide "
                f"(it provides {sorted(cls.reward_fields)}); use one of {', '.join(fits)} with this task, or a "
                "task that provides those fields (task.name)")
    if cfg.retrieval.enabled and not cls.retrievable:
        qa = ", ".join(n for n, c in TASKS.items() if c.retrievable)
        raise ConfigError(f"retrieval.enabled=true replaces QA contexts, and task '{cls.name}' has none; "
                          f"turn retrieval off or use a QA task ({qa})")
    for i, phase in enumerate(cfg.train.phases):
        ref = getattr(phase, "reference", None)
        if ref is not None and ref not in REFERENCE_KEYWORDS and not ref.startswith("embedded:"):
            from common.models import resolve_model

            try:
                resolve_model(ref, cfg.model.cache_dir)
            except FileNotFoundError as err:
                raise ConfigError(f"train.phases.{i}.reference: {err}") from None
        pairs = getattr(phase, "pairs", "online")
        if pairs != "online" and not pairs.startswith("hf:") and not Path(pairs).expanduser().is_file():
            raise ConfigError(f"train.phases.{i}.pairs: {pairs!r} is not a file; give a JSONL file of {{prompt, "
                              "chosen, rejected}} rows, hf:<dataset>:<split>, or online")
    _check_engine(cfg)


def _check_engine(cfg: JobConfig) -> None:
    """vLLM serves causal LMs only; a seq2seq policy (flan-t5) needs the HF engine."""
    from common.models import is_seq2seq

    policy = cfg.model.policy
    seq2seq = Path(policy).expanduser().is_dir() and is_seq2seq(policy)
    if cfg.rollout.engine == "vllm" and seq2seq:
        raise ConfigError(f"model.policy {policy} is an encoder-decoder (seq2seq) model, which vLLM does not "
                          "serve; set rollout.engine=hf")
    ppo = [i for i, p in enumerate(cfg.train.phases) if p.kind == "ppo" and p.critic is None]
    if seq2seq and ppo:
        raise ConfigError(f"train.phases.{ppo[0]} (ppo): the critic starts from the policy, and model.policy {policy} "
                          "is an encoder-decoder; the critic needs a causal LM: set the phase's critic to a causal "
                          "LM folder, or train this policy with grpo")


def build_task(cfg: JobConfig, tokenizer: Any) -> Task:
    """Load and split the task's data and return the task, ready to build prompts with `tokenizer`."""
    cls = task_class(cfg.task.name)
    params = cls.make_params(cfg.task.params)
    source = cfg.data.source or cls.default_source
    splits, stats = cls.load(source, cfg.data, params)
    if not splits.get("train") or not splits.get("eval"):
        sizes = ", ".join(f"{k} ({len(v)})" for k, v in splits.items())
        raise ValueError(f"task {cls.name!r} needs non-empty train and eval splits of data.source {source!r}, got "
                         f"{sizes}; lower data.eval_size / data.test_size or raise data.limit")
    return cls(splits, params, tokenizer, cfg.rollout.max_prompt_tokens, cfg.train.seed,
               {"source": source, **stats})
