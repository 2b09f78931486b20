"""Tasks by name, and the checks of a job config that need to know tasks and rewards.

`check_job(cfg)` runs right after `load_config` in every entry point, before any actor starts: it is where
the knowledge lives (which tasks exist, what their params are, which example fields each reward reads and
which fields each task provides), so `common/config.py` does not reach up for it. `check_rewards(task, cfg)` runs
once the task's data is loaded, still before any actor: it imports and checks the user's reward functions
(rewards/user.py) against the fields the task really provides (the prompts task's are its data's columns), and
checks that a reward server answers.
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
from tasks.prompts import PromptsTask
from tasks.reasoning_gym import ReasoningGymTask
from tasks.verifiers_env import VerifiersTask

TASKS: dict[str, type[Task]] = {
    "mlqa": MLQATask,
    "arithmetic": ArithmeticTask,
    "countdown": CountdownTask,
    "domain_qa": DomainQATask,
    "labels": LabelTask,
    "prompts": PromptsTask,
    "reasoning_gym": ReasoningGymTask,
    "verifiers": VerifiersTask,
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown task '{name}' (task.name).{hint} Known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def reward_components(cfg: JobConfig) -> list[dict[str, Any]]:
    """The job's reward components as plain dicts: the config's (a user function's or server's with its deadline and
    error policy resolved), else the task's own."""
    if cfg.rewards.components is not None:
        out = []
        for c in cfg.rewards.components:
            d = c.model_dump()
            if c.fn or c.url:
                d.update(timeout_s=c.timeout_s or cfg.rewards.timeout_s, on_error=c.on_error or cfg.rewards.on_error)
            out.append(d)
        return out
    cls = task_class(cfg.task.name)
    if cls.default_rewards is None and cfg.rollout.agent is not None:
        return []  # the agent's return is the reward; a None return then has nothing to score it (counted)
    if cls.default_rewards is None:
        raise ConfigError(f"task '{cls.name}' has no reward of its own: name yours in rewards.components, e.g. "
                          "[{fn: 'my_rewards.py:score'}] (your function), [{url: 'http://host:port/score'}] (a server) "
                          f"or [{{name: gsm8k}}] (the registry: {', '.join(REWARDS)}); docs/your_task.md")
    return [dict(c) for c in cls.default_rewards]


def check_job(cfg: JobConfig) -> None:
    """Raise ConfigError naming the fix for anything the task or reward registries refuse."""
    cls = task_class(cfg.task.name)
    try:
        cls.make_params(cfg.task.params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task.params of task '{cls.name}': {err}") from None
    for i, comp in enumerate(reward_components(cfg)):
        if comp.get("fn") or comp.get("url"):
            continue  # checked by check_rewards once the task's fields are known
        try:
            check_params(comp["name"], comp.get("params", {}))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"rewards.components.{i}: {err}") from None
        if not cls.fields_from_data:
            _check_fields(i, comp["name"], cls.name, set(cls.reward_fields))
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


def _check_fields(i: int, name: str, task: str, fields: set[str]) -> None:
    missing = missing_fields(name, fields)
    if missing:
        fits = [n for n in REWARDS if not missing_fields(n, fields)]
        raise ConfigError(
            f"reward '{name}' reads example fields {missing}, which task '{task}' does not provide (it provides "
            f"{sorted(fields)}; rewards.components.{i}); use one of {', '.join(fits)} with this task, a function of "
            "your own ({fn: 'file.py:function'}), or a task that provides those fields (task.name)")


def check_rewards(task: Task, cfg: JobConfig) -> None:
    """Each of the job's reward components checked against the loaded task (ConfigError naming the fix): a registry
    reward reads only fields the task provides; a user function imports, is callable and can be called with the task's
    fields; a server's host answers. Also the prompts task's primary metric names a component, and an sft phase has
    targets."""
    from rewards.remote import check_url, reachable
    from rewards.user import UserCodeError, check_function, load_function, parse_spec

    fields = set(task.fields())
    comps = reward_components(cfg)
    for i, comp in enumerate(comps):
        where = f"rewards.components.{i} ({comp['name']})"
        if comp.get("fn"):
            try:
                spec = parse_spec(comp["fn"])
                fn = load_function(spec)
                check_function(fn, spec, sorted(fields - {"prompt"}), comp.get("params") or {})
            except UserCodeError as err:
                raise ConfigError(f"{where}: {err}") from None
        elif comp.get("url"):
            try:
                check_url(comp["url"])
            except ValueError as err:
                raise ConfigError(f"{where}: {err}") from None
            why = reachable(comp["url"])
            if why:
                raise ConfigError(f"{where}: no reward server answers at {comp['url']} ({why}); start it before the "
                                  "run, or fix the url")
        else:
            _check_fields(i, comp["name"], task.name, fields)
    primary = task.primary_metric
    if cfg.task.name == "prompts" and primary != "reward" and primary.split("/")[0] not in {c["name"] for c in comps}:
        raise ConfigError(f"task.params.primary {primary!r} names no reward component ({', '.join(c['name'] for c in comps)});"
                          " use 'reward' (the total), a component's name or '<component>/<part>'")
    if any(p.kind == "sft" for p in cfg.train.phases) and task.splits.get("train"):
        try:
            task.sft_target(task.splits["train"][0])
        except ValueError as err:
            raise ConfigError(str(err)) from None


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
    rewards = tuple(reward_components(cfg))
    return cls(splits, params, tokenizer, cfg.rollout.max_prompt_tokens, cfg.train.seed,
               {"source": source, **stats}, rewards=rewards)
