"""A verifiers environment as a task (`task.name: verifiers`): its taskset is the data, its harness drives the model
through the run's OpenAI-compatible endpoint with verifiers' own TrainClient (prompts rendered to ids by verifiers'
renderer, vLLM's /inference/v1/generate, token in, token out: rollout/endpoint.py records each call in the sample's
session), and its rubric is the reward: the trace's reward, each reward function's score logged as a part
(reward/agent/<function>).

    task:
      name: verifiers
      params:
        env: {taskset: {id: my-env, ...its config}, agent: {harness: {id: "null"}}}   # verifiers' EnvConfig

`env` is verifiers' own environment config as `vf-eval` reads it (`vf.resolve_env_config`); the runtime defaults to
`subprocess` here (verifiers' default is a remote sandbox). The environment is verifiers' v1 API, the only one the
release on PyPI (0.4.0) has: a 0.1.x module (`load_environment(**kwargs)` returning a SingleTurnEnv with a Rubric)
does not load on it, and supporting it would mean pinning an old verifiers beside this project's openai 3; a run
names that. Each sample is one session of `run` below (cluster/agents.py: K per task, the same deadlines and
failure counts as any agent). Data: every task of the taskset; data.eval_size of them (default 8, split with
data.split_seed) held out.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from tasks.base import Task

EVAL_SIZE = 8
AGENT = "tasks.verifiers_env:run"
KEY_VAR = "RAYGRPO_ENDPOINT_TOKEN"  # verifiers reads an endpoint's key from an environment variable


def require():
    try:
        import verifiers.v1 as vf
    except ImportError as err:
        raise ImportError(f"verifiers is not installed ({err}): it is raygrpo's `envs` extra (scripts/setup.sh "
                          "installs verifiers 0.4.0 with --no-deps beside openai 3; docs/environments.md)") from None
    return vf


@dataclass(frozen=True)
class VFTask:
    index: int          # position in the environment's taskset
    prompt: str
    system_prompt: str | None
    data: str           # the task's data as JSON (what its rewards read)


@dataclass(frozen=True)
class VerifiersParams:
    env: dict = field(default_factory=dict, hash=False)  # verifiers' EnvConfig as a dict

    def __post_init__(self):
        if not isinstance(self.env, dict) or not self.env.get("taskset"):
            raise ValueError("name the environment as verifiers does: env: {taskset: {id: <its id or module>, ...its "
                             "arguments}, agent: {harness: {id: ...}}}")

    def config(self) -> dict:
        """The EnvConfig dict with this project's defaults: a subprocess runtime, not a remote sandbox."""
        env = json.loads(json.dumps(self.env))
        agent = env.setdefault("agent", {})
        agent.setdefault("runtime", {"type": "subprocess"})
        return env


_LOADED: dict[str, tuple[Any, list]] = {}


def environment(config: str):
    """(env, its tasks) of an EnvConfig given as JSON, loaded once a process; ValueError naming the fix."""
    if config not in _LOADED:
        vf = require()
        raw = json.loads(config)
        taskset = raw["taskset"].get("id") or raw["taskset"]
        try:
            env = vf.load_environment(vf.resolve_env_config(raw))
        except ModuleNotFoundError as err:
            raise ValueError(f"verifiers environment {taskset!r} cannot be imported ({err}); install its package "
                             "(pip install -e <its folder>) or put its folder on PYTHONPATH") from None
        except Exception as err:  # verifiers' own errors (config fields, a 0.1.x module): named as they are
            hint = (" (a module written to verifiers 0.1.x, load_environment(**kwargs) returning a SingleTurnEnv, "
                    "does not load on verifiers 0.4's v1 API: port it to a Taskset)") if "load_environment" in str(err) \
                else ""
            raise ValueError(f"verifiers could not load environment {taskset!r}: {type(err).__name__}: {err}{hint}") \
                from None
        _LOADED[config] = (env, list(env.taskset))
    return _LOADED[config]


async def run(client, row: dict) -> dict:
    """One episode of the environment's task `row["vf_index"]` through `client`'s session of the run's endpoint;
    its trace's reward and each reward function's weighted score as parts. An episode that failed raises (counted
    as an agent error, with verifiers' words)."""
    vf = require()
    env, tasks = environment(row["vf_env"])
    models = await client.models.list()
    root = getattr(models.data[0], "root", None) or models.data[0].id  # the policy's folder: verifiers' renderer
    os.environ[KEY_VAR] = client.api_key
    ctx = vf.ModelContext(model=models.data[0].id, sampling=vf.SamplingConfig(),
                          client=vf.TrainClientConfig(base_url=str(client.base_url).rstrip("/"), api_key_var=KEY_VAR,
                                                      renderer_model_name=root))
    async with env.serving():
        episode = await env.run_episode(tasks[row["vf_index"]], ctx)
    trace = episode.traces[0] if episode.traces else None
    if not episode.ok or trace is None or trace.reward is None:
        errors = [e.message[-400:] for e in episode.errors] or [e.message[-400:] for e in (trace.errors if trace else [])]
        raise RuntimeError(f"the verifiers episode failed: {errors or 'no trace'}")
    parts = {name: r.score * r.weight for name, r in trace.rewards.items() if r is not None}
    return {"reward": float(trace.reward), **parts, **{f"metric/{k}": float(v) for k, v in (trace.metrics or {}).items()
                                                        if isinstance(v, (int, float))}}


class VerifiersTask(Task):
    name = "verifiers"
    primary_metric = "agent"
    reward_fields = frozenset({"vf_index", "vf_env"})
    default_rewards = None   # the environment's rubric, through its sessions (rollout.agent)
    default_source = "environment"
    Params = VerifiersParams

    @classmethod
    def load(cls, source, data, params):
        if source != "environment":
            raise ValueError(f"task verifiers reads its tasks from the environment (data.source 'environment'), "
                             f"got {source!r}")
        import random

        config = json.dumps(params.config(), sort_keys=True)
        _, tasks = environment(config)
        rows = []
        for i, t in enumerate(tasks):
            d = t.data
            rows.append(VFTask(i, str(d.prompt) if isinstance(d.prompt, str) else json.dumps(d.prompt, default=str),
                               getattr(d, "system_prompt", None), config))
        order = list(range(len(rows)))
        random.Random(data.split_seed).shuffle(order)
        n_eval = min(data.eval_size or EVAL_SIZE, len(rows) - 1)
        if n_eval < 1:
            raise ValueError(f"the environment has {len(rows)} task(s); at least 2 are needed (train and eval)")
        splits = {"eval": [rows[i] for i in order[:n_eval]], "train": [rows[i] for i in order[n_eval:]]}
        return splits, {"tasks": len(rows)}

    def prompt_ids(self, example: VFTask) -> tuple[list[int], bool]:
        from common.data import fit_prompt

        return fit_prompt(self.tokenizer, lambda _: example.prompt, "", self.max_prompt_tokens,
                          system_prompt=example.system_prompt, label=f"verifiers task {example.index}")

    def content(self, example: VFTask, cut: str | None = None) -> str:
        return example.prompt

    def reward_inputs(self, example: VFTask) -> dict:
        return {"vf_index": example.index, "vf_env": example.data}

    def sft_target(self, example: VFTask) -> str:
        raise ValueError("a verifiers environment has no reference answers to train toward; use grpo phases")

    def metrics(self, texts: list[str], examples: Sequence[VFTask]) -> dict[str, list[float | None]]:
        raise ValueError("a verifiers environment is scored by its rubric in agent sessions (the eval runs them)")
