"""The actors a run borrows: a fleet.

A fleet holds the Ray connection (a new local cluster, one joined at an address, or plain objects in this process),
the actor groups of training (rollout engines, reward scorers, learner / reference / critic workers, tool actors,
retrievers), their placement, and their lifetime. It is built for a run and outlives it: the next run whose actors
it has borrows it, and every actor is reset to that run's start, in the process it already has (imports, the
vLLM engine, the KV cache's memory stay; state does not):

    engines       the run's initial weights loaded, the prefix cache dropped, the weights version back to 0 (tagged
                  with the fleet's run count, so an engine Ray restarts meanwhile is never taken for synced)
    learner, reference, critic
                  built again by their constructors with the run's arguments (weights from the run's start, optimizer,
                  schedule, LoRA adapters, RNG seed, critic head), their process groups formed again
    reward, tools built again with the run's components and tools (a user function's child process restarted)
    every actor   its output to the new run's logs/ folder

    fleet = Fleet(spec, roles, log_dir)    # Ray and every group, built with the first run's arguments
    fleet.borrow(spec, roles, log_dir)     # a later run: refused (FleetMismatch) naming what differs, else reset
    fleet.close()                          # actors, placement, and the Ray connection if the fleet made it

`FleetSpec` is what a fleet *is* (the model's architecture, engine settings, how many of each actor, placement);
`Roles` is what one run asks of it (constructor arguments, initial weights). A CLI or job run starts its own fleet and
closes it at the end (trainer/run.py); `FleetPool` keeps warm fleets for many runs in one process (a sweep, the test
suite), one per spec. The step logic over a fleet is cluster/system.py's.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace

from cluster import runtime
from cluster.groups import WORKDIR_ENV, ActorGroup, get
from cluster.placement import ENGINE_CPUS, REWARD_CPUS, TRAIN_CPUS
from common.console import LOG_DIR_ENV


class FleetMismatch(ValueError):
    """A run asked a fleet for actors or placements it does not have; the message names each difference."""


# What a fleet is. Compared field by field when a run borrows it; `model` (the folder it was built from), `address`
# and `num_cpus` (how it connected) are not compared: a run of the same architecture starts from any folder of it.
@dataclass(frozen=True)
class FleetSpec:
    backend: str = "ray"
    address: str | None = None
    num_cpus: int | None = None         # slots of a new local Ray cluster (None: the machine's cores, at least the actors')
    model: str = ""                     # the folder or hub id every actor is first built from
    model_id: str = ""                  # the architecture and tokenizer it serves (model_identity)
    engine: tuple = ()                  # (kind, (keyword, value) ...) of the rollout engines' constructor
    engines: int = 1
    rewards: int = 1
    learners: int = 1                   # learner workers (0: an eval fleet, engines only)
    sharding: str = "replicate"
    references: int = 0                 # reference workers (0: none)
    critics: int = 0
    tools: int = 0
    retrievers: int = 0                 # retrieval actors: built for each run over its index when it asks
                                        # (start_retrieval), so any fleet serves a run's retrieval
    placement: str = "none"
    gpus_per_engine: float = 0.0
    gpus_per_learner: float = 0.0
    threads: int | None = None
    max_restarts: int = 3

    ALWAYS = ("backend", "model_id", "engine", "engines", "placement", "gpus_per_engine", "threads", "max_restarts")
    # roles a run may not use at all (an eval uses engines only): compared where the run uses them, else held idle
    WHEN_USED = ("rewards", "learners", "references", "critics", "tools")
    TRAINING = ("learners", "sharding", "references", "critics")  # the layout Fleet.regroup builds anew

    def lacks(self, need: "FleetSpec") -> list[str]:
        """What a run needing `need` would miss here, one phrase each ([] = it fits)."""
        names = [*self.ALWAYS, *(n for n in self.WHEN_USED if getattr(need, n))]
        if need.learners:
            names += ["sharding", "gpus_per_learner"]
        out = []
        for name in names:
            have, want = getattr(self, name), getattr(need, name)
            if have != want:
                out.append(f"{name}: the fleet has {_show(name, have)}, the run needs {_show(name, want)}")
        return out

    def regroupable(self, need: "FleetSpec") -> bool:
        """Whether a fleet of this spec serves `need` once its training groups are built anew for need's layout
        (Fleet.regroup): everything else fits, on Ray without placement groups or GPUs for the learners."""
        if self.backend != "ray" or self.placement != "none" or self.gpus_per_learner or need.gpus_per_learner \
                or not need.learners:
            return False
        return not self.lacks(replace(need, **{n: getattr(self, n) for n in self.TRAINING}))

    def covering(self, other: "FleetSpec") -> "FleetSpec":
        """This spec with the optional roles `other` has too (one fleet for runs with and without a critic, say)."""
        return replace(self, **{n: max(getattr(self, n), getattr(other, n)) for n in self.WHEN_USED})

    def cpus(self) -> float:
        """Ray CPUs its actors ask for."""
        return round(self.engines * ENGINE_CPUS + self.rewards * REWARD_CPUS + self.learners * TRAIN_CPUS["learner"]
                     + self.references * TRAIN_CPUS["reference"] + self.critics * TRAIN_CPUS["critic"]
                     + (self.tools + self.retrievers) * REWARD_CPUS, 3)

    def engine_kwargs(self) -> dict:
        return dict(self.engine[1])

    def describe(self) -> str:
        parts = [f"{self.engines} {self.engine[0] if self.engine else '?'} engine(s)", f"{self.rewards} reward"]
        if self.learners:
            parts.append(f"{self.learners} learner ({self.sharding})")
        parts += [f"{n} {role}" for role, n in (("reference", self.references), ("critic", self.critics),
                                                ("tools", self.tools), ("retrieval", self.retrievers)) if n]
        return ", ".join(parts) + f" on {self.backend}" + (f", placement {self.placement}" if self.placement != "none"
                                                           else "")


def _show(name: str, value) -> str:
    if name == "engine" and value:
        return f"{value[0]} engines with " + ", ".join(f"{k}={v}" for k, v in value[1])
    if name == "model_id":
        return f"model {value}"
    return repr(value)


def model_identity(path: str) -> str:
    """The architecture and tokenizer a model folder (or hub id) describes, as a short string: two folders with the same
    identity hold weights of one shape that one engine can serve (a run's checkpoints have their policy's)."""
    import hashlib
    import json

    from transformers import AutoConfig

    from common.models import load_tokenizer, trust_remote_code
    from retrieval.index import tokenizer_id

    c = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code()).to_dict()
    keys = ("model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings",
            "max_position_embeddings", "rope_theta", "rms_norm_eps", "is_encoder_decoder", "d_model", "num_layers")
    arch = json.dumps({k: c.get(k) for k in keys}, sort_keys=True, default=str)
    digest = hashlib.sha256((arch + tokenizer_id(load_tokenizer(path))).encode()).hexdigest()[:12]
    return f"{c.get('model_type', '?')}-{c.get('num_hidden_layers', '?')}x{c.get('hidden_size', '?')}-{digest}"


def engine_settings(r, sleep_mode: bool = False) -> tuple:
    """(kind, (keyword, value) ...) of the rollout engines' constructor from the rollout section."""
    # not rollout.seed: every request carries its own seed (common/seeds.py), the engine's global one draws nothing
    if r.engine == "hf":
        return ("hf", (("dtype", r.dtype),))
    kw = dict(max_model_len=r.max_model_len, kv_cache_gib=r.kv_cache_gib,
              gpu_memory_utilization=r.gpu_memory_utilization, dtype=r.dtype,
              tensor_parallel_size=r.tensor_parallel_size, sleep_mode=sleep_mode)
    return ("vllm", tuple(sorted(kw.items())))


def fleet_spec(cfg, plan, model_path: str, model_id: str | None = None) -> FleetSpec:
    """The fleet a run of `cfg` (its plan) needs, built from `model_path` (the run's policy; `model_id` its
    model_identity, read from the folder when None)."""
    c, L = cfg.cluster, cfg.learner
    engine = engine_settings(cfg.rollout, plan.sleep != "off")
    return FleetSpec(backend=c.backend, address=c.address, num_cpus=c.num_cpus, model=model_path,
                     model_id=model_id or model_identity(model_path), engine=engine, engines=c.num_rollout_actors,
                     rewards=c.num_reward_actors, learners=L.workers, sharding=plan.sharding,
                     references=L.workers_of("reference") if plan.has("reference") else 0,
                     critics=L.workers_of("critic") if plan.has("critic") else 0,
                     tools=cfg.tools.num_actors if plan.has("tools") else 0,
                     retrievers=cfg.retrieval.num_actors if plan.has("retrieval") else 0, placement=c.placement,
                     gpus_per_engine=c.gpus_per_rollout_actor, gpus_per_learner=c.gpus_per_learner,
                     threads=None if c.threads == os.cpu_count() else c.threads,  # every core, said either way
                     max_restarts=c.max_restarts)


def engines_spec(rollout, model_path: str, engines: int = 1, backend: str = "ray", address: str | None = None,
                 num_cpus: int | None = None, threads: int | None = None, tools: int = 0) -> FleetSpec:
    """A fleet of rollout engines only (and tool actors for multi-turn answers): jobs/eval.py, the reward-model job."""
    return FleetSpec(backend=backend, address=address, num_cpus=num_cpus, model=model_path,
                     model_id=model_identity(model_path), engine=engine_settings(rollout), engines=engines, rewards=0,
                     learners=0, tools=tools, threads=threads)


@dataclass
class Call:
    """One role's constructor arguments."""
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class Roles:
    """What one run asks of a fleet: the weights it starts from, and each role's constructor arguments (None: a role
    the run does not use)."""
    init_path: str                       # the engines' and the learner's first weights (the policy, or a checkpoint)
    reward: Call | None = None
    learner: Call | None = None
    reference: Call | None = None
    critic: Call | None = None
    tools: Call | None = None
    call_timeout_s: float | None = None  # the run's deadline for a training call (cluster.call_timeout_s)
    cwd: str | None = None               # where the run was started: its actors' working directory
    weight_backend: str = "gloo"         # the training groups' process groups: nccl on GPUs


def run_roles(cfg, plan, policy_path: str, init_path: str, reward_components: list[dict],
              tool_index: str | None = None) -> Roles:
    """The constructor arguments of a run of `cfg` for each role its plan uses."""
    from learner.lora import LoraSpec

    c, L = cfg.cluster, cfg.learner
    train_kw = dict(micro_batch_size=L.micro_batch_size, max_tokens_per_micro_batch=L.max_tokens_per_micro_batch,
                    precision=L.precision, threads=c.threads, sharding=plan.sharding, offload=L.offload)
    # The optimizer is rebuilt by reset_optimizer when each phase starts; total_steps=1 is a placeholder.
    learner = Call((init_path,), dict(lr=L.lr, total_steps=1, warmup_ratio=L.warmup_ratio, schedule=L.schedule,
                                      weight_decay=L.weight_decay, grad_clip=L.grad_clip, seed=cfg.train.seed,
                                      gradient_checkpointing=L.gradient_checkpointing, optimizer=L.optimizer,
                                      lora=LoraSpec(**L.lora.model_dump()) if L.lora else None, **train_kw))
    t = cfg.tools
    return Roles(
        init_path=init_path,
        reward=Call((reward_components,)),
        learner=learner,
        # built for every run, so that a fleet holding one the run does not use keeps it like the run would build it
        reference=Call((policy_path,), dict(train_kw)),
        critic=Call((init_path,), dict(grad_clip=L.grad_clip, seed=cfg.train.seed, **train_kw)),
        tools=Call(([u.model_dump() for u in t.use], policy_path, t.timeout_s, t.template, tool_index,
                    cfg.retrieval.encoder)) if plan.has("tools") else None,
        call_timeout_s=c.call_timeout_s, weight_backend="nccl" if c.gpus_per_learner > 0 else "gloo", cwd=os.getcwd())


def check_cpus(need: float, have: float, local: bool) -> None:
    """An actor Ray cannot place waits forever, and the run with it: say so up front, with the fix."""
    if need <= have + 1e-9:
        return
    fix = ("raise cluster.num_cpus (Ray's CPUs are scheduling slots, not cores)" if local else
           "add nodes or CPUs to the cluster")
    raise RuntimeError(f"the job's actors ask for {need:g} Ray CPUs and the cluster has {have:g}, so some would wait "
                       f"forever: {fix}, or start fewer (cluster.num_rollout_actors, cluster.num_reward_actors, "
                       "learner.workers, learner.reference_workers, learner.critic_workers)")


def policy_dims(path: str) -> tuple[int, int]:
    """(hidden, intermediate) of the model folder or hub id `path`."""
    from transformers import AutoConfig

    from common.models import trust_remote_code
    from common.precision import model_dims

    return model_dims(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code()))


class Fleet:
    """Ray (or plain objects) and the actor groups of `spec`, each role built with `roles`' arguments."""

    def __init__(self, spec: FleetSpec, roles: Roles, log_dir=None):
        self.spec, self.backend = spec, spec.backend
        self.runs = 0                  # runs that borrowed it (the engines' weights carry this count)
        self.closed = False
        self.broken = False            # an actor holding state died in a run (a learner): no run can borrow it
        self.retrieval: ActorGroup | None = None
        self.built_for: Roles | None = None  # the run regroup built the training groups for
        self.roles = roles
        self.log_dir = _absolute(log_dir)
        kv = dict(spec.engine[1]).get("kv_cache_gib", 1.0) if spec.engine else 1.0
        self.env = runtime.actor_env(spec.threads, kv, self.log_dir)
        if roles.cwd:  # its actors' constructors read the first run's files from there (later runs: enter)
            self.env[WORKDIR_ENV] = roles.cwd
        import uuid

        self.namespace = f"raygrpo-fleet-{uuid.uuid4().hex[:8]}"  # its actors' names (rollout-0, ...) are its own
        local = spec.backend == "ray" and not runtime.joins_cluster(spec.address)
        # a local cluster gets at least the slots its actors ask for (a 2-core laptop runs 2 learner workers beside
        # their PPO critics: 2.4 slots); cluster.num_cpus, when set, is taken as the user's limit
        num_cpus = spec.num_cpus or (max(os.cpu_count() or 1, math.ceil(spec.cpus())) if local else None)
        self.owns_runtime = runtime.start(spec.backend, spec.address, num_cpus, self.env)
        self.placement = None
        try:
            self._start(spec, roles, local)
        except BaseException:
            self.close()
            raise

    def _start(self, spec: FleetSpec, roles: Roles, local: bool) -> None:
        from rewards.registry import RewardScorer

        backend = spec.backend
        if backend == "ray" and spec.placement == "none":  # a placement group times out with its own message
            import ray

            check_cpus(spec.cpus(), ray.cluster_resources().get("CPU", 0.0), local)
        asked = [dict(spec.engine[1]).get("dtype", "fp32")] + ([roles.learner.kwargs["precision"]] if roles.learner
                                                                else [])
        if backend == "ray" and not (spec.gpus_per_learner or spec.gpus_per_engine) and "auto" in asked:
            from common.precision import measure_before_actors  # this node's precision probe, before actors load

            measure_before_actors(policy_dims(spec.model), runtime.actor_threads(spec.threads))
        if backend == "ray" and spec.placement != "none":
            from cluster.placement import Placement

            self.placement = Placement(spec.placement, spec.engines, spec.gpus_per_engine, spec.gpus_per_learner,
                                       learner_workers=max(1, spec.learners))
        on = (lambda role: getattr(self.placement, role)()) if self.placement else (lambda role: None)  # noqa: E731
        common = dict(env=self.env, namespace=self.namespace)
        self.rollout = start_engines(spec, on("engines"), **common)
        self.reward = None
        if spec.rewards and roles.reward is not None:
            self.reward = ActorGroup.create("reward", RewardScorer, spec.rewards, backend, args=roles.reward.args,
                                            num_cpus=REWARD_CPUS, max_restarts=spec.max_restarts,
                                            rebuilt_after_restart=True, **common)
        self.tools = None
        if spec.tools:
            from tools.toolbox import ToolBox

            self.tools = ActorGroup.create("tools", ToolBox, spec.tools, backend, args=roles.tools.args,
                                           num_cpus=REWARD_CPUS, max_restarts=spec.max_restarts,
                                           rebuilt_after_restart=True, **common)
        self._start_training(spec, roles, on("learners") if self.placement else None, common)
        self.current = roles  # the arguments every member was last built with (a restarted member is built again)

    def _start_training(self, spec: FleetSpec, roles: Roles, placement, common: dict) -> None:
        """The learner, reference and critic workers of `spec`, each group with its process group."""
        from learner.critic import Critic
        from learner.policy import Learner, Reference

        backend = spec.backend
        # the learner's GPU share is split among the training actors that exist; with learner.workers W, worker i
        # shares its bundle (bundle 0 for worker 0) with reference shard i and critic worker i
        gpu = spec.gpus_per_learner / (1 + bool(spec.references) + bool(spec.critics))
        per_worker = dict(num_gpus=gpu, placement=placement, **common)
        self.learner = self.reference = self.critic = None
        if spec.learners:
            self.reference = ActorGroup.create("reference", Reference, spec.references, backend,
                                               args=roles.reference.args, kwargs=roles.reference.kwargs,
                                               num_cpus=TRAIN_CPUS["reference"], **per_worker) \
                if spec.references else None
            self.learner = ActorGroup.create("learner", Learner, spec.learners, backend, args=roles.learner.args,
                                             kwargs=roles.learner.kwargs, num_cpus=TRAIN_CPUS["learner"], **per_worker)
            self.critic = ActorGroup.create("critic", Critic, spec.critics, backend, args=roles.critic.args,
                                            kwargs=roles.critic.kwargs, num_cpus=TRAIN_CPUS["critic"],
                                            **per_worker) if spec.critics else None
            self._form_training_groups(roles)

    def _form_training_groups(self, roles: Roles) -> None:
        """Each training group's own process group: replicated workers when several, sharded ones always (FSDP's
        units live on it, learner/fsdp.py); sharded groups take every call together (ActorGroup.lockstep). Every
        training call has a deadline."""
        from learner.critic import Critic
        from learner.policy import Learner, Reference

        sharded = self.spec.sharding == "fsdp"
        for group, init in ((self.learner, Learner.init_data_parallel), (self.reference, Reference.init_data_parallel),
                            (self.critic, Critic.init_data_parallel)):
            if group is not None and (sharded or (len(group.members) > 1 and group is not self.reference)):
                start_data_parallel(group, init, roles.call_timeout_s, roles.weight_backend)
                group.lockstep = sharded
            if group is not None:
                group.timeout = roles.call_timeout_s

    def regroup(self, spec: FleetSpec, roles: Roles, log_dir=None) -> None:
        """The training groups built anew for `spec`'s layout (learner workers, sharding, reference and critic workers:
        FleetSpec.regroupable) beside the engines, reward and tool actors the fleet keeps; the next borrow by a run
        with `roles` uses them as built."""
        import ray

        old = [g for g in (self.learner, self.reference, self.critic) if g is not None]
        for g in old:
            g.kill()
        for g in old:  # their names (learner-0, ...) are free once Ray has them dead
            for i in range(len(g.members)):
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        ray.get_actor(f"{g.name}-{i}", namespace=self.namespace)
                    except ValueError:
                        break
                    time.sleep(0.1)
        self.spec = replace(self.spec, **{n: getattr(spec, n) for n in FleetSpec.TRAINING})
        env = {**self.env, **({LOG_DIR_ENV: _absolute(log_dir)} if log_dir else {}),
               **({WORKDIR_ENV: roles.cwd} if roles.cwd else {})}
        self._start_training(self.spec, roles, None, dict(env=env, namespace=self.namespace))
        self.built_for = roles  # reset leaves them as they are built

    # ---- a run borrows it ----------------------------------------------------------------------------------------
    def borrow(self, spec: FleetSpec, roles: Roles, log_dir=None) -> None:
        """Lend the fleet to a run needing `spec` with `roles`: refused (FleetMismatch) naming every difference;
        else, after its first run, every actor is reset to this run's start (the module's docstring says how)."""
        if self.closed or self.broken:
            raise FleetMismatch(f"the fleet was {'closed' if self.closed else 'left without an actor a run needs'}; "
                                "start a new one")
        missing = self.spec.lacks(spec)
        if missing:
            raise FleetMismatch(f"this fleet ({self.spec.describe()}) cannot run this job: " + "; ".join(missing)
                                + ". Start a fleet for it (a job run without a fleet starts its own)")
        self.runs += 1
        self.reset(roles, log_dir, rebuild=self.runs > 1)

    def reset(self, roles: Roles, log_dir=None, rebuild: bool = True) -> None:
        """Every actor to the start of a run with `roles`, its output to `log_dir`: the engines load the run's
        initial weights (where they hold others) as version 0 of run `self.runs`; with `rebuild` (every run but the
        fleet's first, whose actors were built with its arguments), every other actor is built anew."""
        from rollout.engine import Engine

        timeout = roles.call_timeout_s
        if rebuild:
            self.log_dir = _absolute(log_dir)
        for g in self.groups():
            g.enter(self.log_dir if rebuild else None, roles.cwd)
        if rebuild:
            for group, call in ((self.reward, roles.reward), (self.tools, roles.tools)):
                if group is not None and call is not None:  # a tool group the run does not use stays as it is
                    group.reinit(call.args, call.kwargs, timeout=timeout)
            fresh, self.built_for = self.built_for is roles, None  # regroup built them with these arguments
            if self.learner is not None and roles.learner is not None and not fresh:  # (an eval leaves them idle)
                for group, call in ((self.learner, roles.learner), (self.reference, roles.reference),
                                    (self.critic, roles.critic)):
                    if group is not None:
                        group.lockstep = False  # built anew: one call per member, then the process groups again
                        group.reinit(call.args, call.kwargs, timeout=timeout)
                self._form_training_groups(roles)
        get(self.rollout.call_all(Engine.reset, roles.init_path, self.runs), timeout=timeout, what="rollout.reset")
        for g in self.groups():  # their processes' memory is read each step without calling them
            g.learn_pids()
        self.current = roles

    def restored(self, group: ActorGroup) -> None:
        """After Ray restarted a member of `group` (built again from the fleet's first arguments): the stateless
        roles are built with the current run's, and every member writes to the current run's logs."""
        group.enter(self.log_dir, self.current.cwd)
        call = {"reward": self.current.reward, "tools": self.current.tools}.get(group.name)
        if call is not None:
            group.reinit(call.args, call.kwargs, timeout=self.current.call_timeout_s)
        group.learn_pids()  # a restarted member is another process

    def healthy(self) -> bool:
        """Every member answers (none died in the last run, none is restarting)."""
        return not (self.closed or self.broken) and all(g.alive() for g in self.groups())

    # ---- retrieval over a run's index -----------------------------------------------------------------------------
    def start_retrieval(self, index_dir: str, encoder: str | None, n: int) -> ActorGroup:
        """Retrieval actors over a saved index (the run's: built beforehand by the driver, trainer/rag.py)."""
        from retrieval.retriever import Retriever

        if self.retrieval is not None and len(self.retrieval.members) == n:
            self.retrieval.enter(self.log_dir, self.current.cwd)
            self.retrieval.reinit((index_dir, encoder))
        else:
            if self.retrieval is not None:
                self.retrieval.kill()
            self.retrieval = ActorGroup.create("retrieval", Retriever, n, self.backend, args=(index_dir, encoder),
                                               num_cpus=REWARD_CPUS, env=self.env, namespace=self.namespace)
        self.retrieval.learn_pids()
        return self.retrieval

    # ---- what the run log reports -----------------------------------------------------------------------------------
    def groups(self) -> list[ActorGroup]:
        return [g for g in (self.rollout, self.reward, self.reference, self.learner, self.critic, self.retrieval,
                            self.tools) if g is not None]

    def peak_rss_gib(self) -> dict[str, list[float | None]]:
        """Peak resident memory of every actor, by group (the driver's own under 'driver'); a warm fleet's actors
        report their peak since they started, over every run they served."""
        from cluster.groups import process_peak_rss_gib

        return {"driver": [process_peak_rss_gib("self")], **{g.name: g.peak_rss_gib() for g in self.groups()}}

    def peak_rss_now(self) -> dict[str, list[float | None]]:
        """As peak_rss_gib, read from this node's /proc without calling any actor (each step's log)."""
        from cluster.groups import process_peak_rss_gib

        return {"driver": [process_peak_rss_gib("self")], **{g.name: g.peak_rss_now() for g in self.groups()}}

    def nodes(self) -> dict[str, list[str]]:
        """The node id of every Ray actor, by group (placement tests and the run log)."""
        from cluster.placement import node_of

        if self.backend != "ray":
            return {}
        return {g.name: g.on_each(node_of, timeout=60) for g in self.groups() if g.name != "retrieval"}

    def close(self) -> None:
        """Every actor ended, the placement group removed, and Ray disconnected if the fleet connected it."""
        if self.closed:
            return
        self.closed = True
        for g in self.groups() if hasattr(self, "rollout") else []:
            g.kill()
        if self.placement is not None:
            self.placement.remove()
        if self.owns_runtime:
            runtime.shutdown(self.backend)

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_engines(spec: FleetSpec, placement=None, env=None, namespace=None) -> ActorGroup:
    """The rollout engines of `spec`, built from spec.model (the one place engines are built: training and
    jobs/eval.py)."""
    from rollout.engine import HFEngine, VLLMEngine

    kind, kw = spec.engine[0], dict(spec.engine[1])
    if kind == "vllm" and kw.get("tensor_parallel_size", 1) > 1 and spec.backend == "ray":
        from cluster.placement import check_gpus_per_node

        check_gpus_per_node(kw["tensor_parallel_size"], "rollout.tensor_parallel_size")
    return ActorGroup.create("rollout", HFEngine if kind == "hf" else VLLMEngine, spec.engines, spec.backend,
                             args=(spec.model,), kwargs=kw, num_cpus=ENGINE_CPUS, num_gpus=spec.gpus_per_engine,
                             max_restarts=spec.max_restarts, placement=placement, env=env, namespace=namespace)


def start_data_parallel(group: ActorGroup, init, timeout: float | None, backend: str) -> None:
    """A training group's own process group (learner/distributed.py), rendezvous at member 0's node."""
    from cluster.weight_sync import _rendezvous

    host, port = get(group.members[0].__ray_call__.remote(_rendezvous)) if group.backend == "ray" else \
        ("127.0.0.1", _free_port())
    W = len(group.members)
    get([group.call(init, host, port, W, i, backend, index=i) for i in range(W)],
        timeout=timeout, what=f"the {group.name} workers' {backend} group at {host}:{port}")


def _free_port() -> int:
    from common.collective import free_port

    return free_port()


def acquire(source, spec: FleetSpec, roles: Roles, log_dir=None) -> tuple["Fleet", bool]:
    """(the fleet a run uses, whether the run owns it): `source` None starts one for the run (the run closes it),
    a Fleet is borrowed, a FleetPool lends one."""
    if source is None:
        fleet = Fleet(spec, roles, log_dir)
        try:
            fleet.borrow(spec, roles, log_dir)
        except BaseException:
            fleet.close()
            raise
        return fleet, True
    if isinstance(source, FleetPool):
        return source.lend(spec, roles, log_dir), False
    source.borrow(spec, roles, log_dir)
    return source, False


def available_gib() -> float:
    """Memory the node can still give (MemAvailable of /proc/meminfo, GiB); infinite where that is not readable."""
    from common.memory import meminfo_gib

    got = meminfo_gib("MemAvailable")
    return math.inf if got is None else got


def _absolute(log_dir) -> str | None:
    """The run's log folder as its actors must be told it: they work in another directory until they enter the run."""
    return os.path.abspath(log_dir) if log_dir else None


class FleetPool:
    """Warm fleets for many runs in one process (a sweep, the test suite): a run borrows the fleet of its spec, one is
    started for a spec none covers, and beyond `keep` fleets the least recently used is closed. Idle fleets are also
    closed, least recently used first, while the node has less than `reserve_gib` of memory available when a run
    starts (an engine holds its KV cache; a run adds its own growth, a retrieval index, a job of its own).
    A fleet whose actor died is closed and replaced. `widen(spec)`: the spec a new fleet gets (e.g. a critic held
    idle, so PPO and GRPO runs of one model share a fleet)."""

    def __init__(self, keep: int = 2, widen=None, reserve_gib: float = 9.0):
        self.keep, self.widen, self.reserve_gib = keep, widen or (lambda spec: spec), reserve_gib
        self.fleets: list[Fleet] = []  # most recently used last
        self.started = 0               # fleets this pool started (a test of sharing reads it)
        self.lent = 0                  # runs it lent a warm fleet to
        self.regrouped = 0             # runs it lent warm engines to, the training groups built anew for them
        self.starts: list[str] = []    # each fleet started: what it is, and why no warm one would do

    def lend(self, spec: FleetSpec, roles: Roles, log_dir=None) -> Fleet:
        """A warm fleet that fits `spec`; else warm engines that fit, their training groups built anew for the run's
        layout (Fleet.regroup); else a new fleet."""
        why = [missing for fleet in reversed(self.fleets) if (missing := "; ".join(fleet.spec.lacks(spec)))]
        for regroup in (False, True):
            for fleet in reversed(self.fleets):
                if not (fleet.spec.regroupable(spec) if regroup else not fleet.spec.lacks(spec)):
                    continue
                self.fleets.remove(fleet)
                if not fleet.healthy():
                    fleet.close()
                    continue
                if regroup:
                    fleet.regroup(self.widen(spec), roles, log_dir)
                self.trim(room_for=0)
                fleet.borrow(spec, roles, log_dir)
                self.fleets.append(fleet)
                self.regrouped += regroup
                self.lent += not regroup
                return fleet
        self.trim(room_for=1)
        fleet = Fleet(self.widen(spec), roles, log_dir)
        self.started += 1
        self.starts.append(fleet.spec.describe() + (f" (the warm ones lacked: {' | '.join(why)})" if why else ""))
        fleet.borrow(spec, roles, log_dir)
        self.fleets.append(fleet)
        return fleet

    def trim(self, room_for: int = 0) -> None:
        """Idle fleets closed, least recently used first, until `room_for` more fit under `keep` and the node has
        `reserve_gib` available (all of them: `room_for=0` and a reserve above the node's memory)."""
        while self.fleets and (len(self.fleets) + room_for > self.keep or available_gib() < self.reserve_gib):
            self.fleets.pop(0).close()

    def close(self) -> None:
        while self.fleets:
            self.fleets.pop().close()

    def __enter__(self) -> "FleetPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

