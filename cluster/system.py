"""The actor groups of a training job, built from the config, with one typed method per pipeline stage.

  rollout   N x VLLMEngine (or HFEngine)     prompts sharded across engines
  reward    M x RewardScorer                samples sharded across scorers
  reference 1 x Reference                   frozen KL reference (only when some phase uses a sampled-token KL)
  learner   1 x Learner                     AdamW/Adafactor, schedule, micro-batched backward, SFT steps, LoRA,
                                            checkpoints (with LoRA it also serves the reference logprobs)
  critic    1 x Critic                      PPO value model and its optimizer (only when a phase is ppo)

Weight sync (cluster.weight_sync): `object_store` makes the learner's weights one object in the Ray object store
(the return value of `named_arrays`) that every engine reads (zero-copy numpy on a node) and reloads in place;
`collective` broadcasts them tensor by tensor over a process group of the learner and every engine's worker
(common/collective.py: gloo on CPU, NCCL on GPU) straight into the engines' reload. After either, every engine
scores a probe sequence that must match the learner's (verify_sync). Engines know the version of the weights they
hold; one restarted by Ray (rollout and reward actors restart, cluster.max_restarts) refuses to sample until it
has been synced again. Actors are placed by cluster/placement.py.

The job calls these methods only; a renamed stage fails at import, not after an hour of training.
"""
from __future__ import annotations

from common.config import ClusterConfig, JobConfig, RolloutConfig
from common.types import Rollout, Sampling, ScoredRollout, TrainBatch
from cluster import runtime
from cluster.groups import ActorGroup, get, handoff, member_died_errors, shard
from cluster.placement import ENGINE_CPUS, TRAIN_CPUS
from cluster.sync_check import SyncCheck
from common.precision import measure_before_actors
from common.checkpoint import TRAINER_DIR
from learner.lora import LoraSpec
from learner.policy import AlgoParams, Learner, Reference
from rewards.registry import RewardScorer


def start_rollout(rollout: RolloutConfig, cluster: ClusterConfig, model_path: str, backend: str,
                  placement=None) -> ActorGroup:
    """The rollout engines (the one place engines are built: training jobs and jobs/eval.py)."""
    from rollout.engine import HFEngine, VLLMEngine

    if rollout.engine == "hf":
        cls, kw = HFEngine, dict(seed=rollout.seed, dtype=rollout.dtype)
    else:
        cls, kw = VLLMEngine, dict(max_model_len=rollout.max_model_len, kv_cache_gib=rollout.kv_cache_gib,
                                   seed=rollout.seed, gpu_memory_utilization=rollout.gpu_memory_utilization,
                                   dtype=rollout.dtype)
    return ActorGroup.create("rollout", cls, cluster.num_rollout_actors, backend, args=(model_path,), kwargs=kw,
                             num_cpus=ENGINE_CPUS, num_gpus=cluster.gpus_per_rollout_actor,
                             max_restarts=cluster.max_restarts, placement=placement)


def needs_reference_actor(cfg: JobConfig) -> bool:
    """A reference actor serves sampled-token KL (k1/k2/k3/abs); full KL keeps its copy in the learner, and
    with LoRA the learner serves it (its model with the adapters disabled)."""
    return cfg.learner.lora is None and needs_ref_logprobs(cfg)


def needs_ref_logprobs(cfg: JobConfig) -> bool:
    algos = [cfg.algo_for(p) for p in cfg.train.phases if p.kind == "grpo"]
    ppo_kl = any(p.kind == "ppo" and p.kl_coef > 0 for p in cfg.train.phases)
    return ppo_kl or any(a.beta > 0 and a.kl_kind != "full" for a in algos)


def policy_dims(path: str) -> tuple[int, int]:
    """(hidden, intermediate) of the model folder or hub id `path`."""
    from transformers import AutoConfig

    from common.models import trust_remote_code
    from common.precision import model_dims

    return model_dims(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code()))


class Pending:
    """A generation in flight (GRPOSystem.generate_async): its futures, its inputs, the weights version it samples."""

    def __init__(self, futures: list, inputs: tuple, version: int):
        self.futures, self.inputs, self.version = futures, inputs, version


def _alive(_instance) -> bool:
    return True


def _rendezvous(_learner) -> tuple[str, int]:
    """On the learner's node: its address and a free port for the weight-sync group's store."""
    import ray

    from common.collective import free_port

    return ray.util.get_node_ip_address(), free_port()


class GRPOSystem:
    def __init__(self, cfg: JobConfig, policy_path: str, reward_components: list[dict],
                 learner_init_path: str | None = None):
        c, backend = cfg.cluster, cfg.cluster.backend
        self.cfg, self.backend = cfg, backend
        runtime.start(backend, c.address, c.num_cpus, runtime.actor_env(c.threads, cfg.rollout.kv_cache_gib),
                      c.metrics_export_port)
        init_path = learner_init_path or policy_path
        if backend == "ray" and not (c.gpus_per_learner or c.gpus_per_rollout_actor) and "auto" in (
                cfg.learner.precision, cfg.rollout.dtype):  # this node's precision probe, before its actors load
            measure_before_actors(policy_dims(init_path), runtime.actor_threads(c.threads))
        self.placement = None
        if backend == "ray" and c.placement != "none":
            from cluster.placement import Placement

            self.placement = Placement(c.placement, c.num_rollout_actors, c.gpus_per_rollout_actor, c.gpus_per_learner)
        on = (lambda role: getattr(self.placement, role)()) if self.placement else (lambda role: None)  # noqa: E731
        self.rollout = start_rollout(cfg.rollout, c, init_path, backend, placement=on("engines"))
        self.reward = ActorGroup.create("reward", RewardScorer, c.num_reward_actors, backend,
                                        args=(reward_components,), num_cpus=0.1, max_restarts=c.max_restarts)
        self.restarts = 0  # stateless actors that died and came back (their calls were retried)
        self.weights_version = 0  # syncs so far; engines refuse to sample from another version (StaleWeights)
        L = cfg.learner
        has_critic = any(p.kind == "ppo" for p in cfg.train.phases)
        # the learner's GPU share is split among the training actors that exist (they share bundle 0)
        gpu = c.gpus_per_learner / (1 + needs_reference_actor(cfg) + has_critic)
        self.reference = None
        if needs_reference_actor(cfg):
            self.reference = ActorGroup.create("reference", Reference, 1, backend, args=(policy_path,),
                                               kwargs=dict(micro_batch_size=L.micro_batch_size,
                                                           max_tokens_per_micro_batch=L.max_tokens_per_micro_batch,
                                                           precision=L.precision, threads=c.threads),
                                               num_cpus=TRAIN_CPUS["reference"], num_gpus=gpu,
                                               placement=on("trainer"))
        # The optimizer is rebuilt by reset_optimizer when each phase starts; total_steps=1 is a placeholder.
        self.learner = ActorGroup.create(
            "learner", Learner, 1, backend, args=(init_path,),
            kwargs=dict(lr=L.lr, total_steps=1, warmup_ratio=L.warmup_ratio, schedule=L.schedule,
                        weight_decay=L.weight_decay, grad_clip=L.grad_clip, micro_batch_size=L.micro_batch_size,
                        precision=L.precision, threads=c.threads,
                        gradient_checkpointing=L.gradient_checkpointing, seed=cfg.train.seed,
                        optimizer=L.optimizer, lora=LoraSpec(**L.lora.model_dump()) if L.lora else None,
                        max_tokens_per_micro_batch=L.max_tokens_per_micro_batch),
            num_cpus=TRAIN_CPUS["learner"], num_gpus=gpu,
            placement=on("trainer"))
        self.critic = None
        if has_critic:
            from learner.critic import Critic

            self.critic = ActorGroup.create("critic", Critic, 1, backend, args=(init_path,),
                                            kwargs=dict(grad_clip=L.grad_clip, micro_batch_size=L.micro_batch_size,
                                                        threads=c.threads, seed=cfg.train.seed,
                                                        precision=L.precision,
                                                        max_tokens_per_micro_batch=L.max_tokens_per_micro_batch),
                                            num_cpus=TRAIN_CPUS["critic"], num_gpus=gpu,
                                            placement=on("trainer"))
        for group in (self.learner, self.reference, self.critic):  # every training call has a deadline too
            if group is not None:
                group.timeout = c.call_timeout_s
        self.retrieval = None  # started by start_retrieval once the index exists
        self.weights_meta = None
        # Each actor resolved precision 'auto' on its own node (common/precision.py): what it chose and the figures
        self.choices = {"learner": self.learner.run("precision_choice"),
                        "engines": get(self.rollout.call_all("precision_choice"))}
        for role in ("reference", "critic"):
            if getattr(self, role) is not None:
                self.choices[role] = getattr(self, role).run("precision_choice")
        self.precisions = {role: ([c["precision"] for c in v] if role == "engines" else v["precision"])
                           for role, v in self.choices.items()}
        self.learner.run("set_engine_precision", "bf16" if "bf16" in self.precisions["engines"] else "fp32")
        if c.weight_sync == "collective":
            self.start_collective()
        self.sync_check = SyncCheck("fp32" if self.all_fp32 else "bf16", c.sync_tolerance)
        self.last_sync: dict[str, float] = {}  # the last check's metrics (sync/gap, ...), logged with each step
        self.probe = self.learner.run("probe_sequence") if c.verify_sync else None
        if c.verify_sync:  # engines and learner start from the same weights: the check's baseline
            self.verify_sync()

    # ---- rollout and reward ------------------------------------------------------------------------------
    def _generate_args(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int) -> list[tuple]:
        """One `generate` call's arguments per engine shard (each shard its own seed)."""
        shards = shard(prompt_ids, len(self.rollout.members))
        return [(s, sampling.group_size, sampling.temperature, sampling.top_p, sampling.max_new_tokens, seed + 7919 * i)
                for i, s in enumerate(shards)]

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int) -> Rollout:
        return Rollout.concat(self.retried(self.rollout, "generate", self._generate_args(prompt_ids, sampling, seed)))

    def generate_async(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int) -> "Pending":
        """Start `generate` and return at once (train.overlap): the engines sample with the weights they hold now
        (a weight sync sent meanwhile waits in each engine's queue until the generation is done)."""
        args = self._generate_args(prompt_ids, sampling, seed)
        return Pending(self.rollout.map_shards("generate", args, weights_version=self.weights_version),
                       (prompt_ids, sampling, seed), self.weights_version)

    def collect(self, pending: "Pending") -> tuple[Rollout, int]:
        """(rollout, weights version it was sampled with) of a `generate_async`; an engine that died meanwhile is
        recovered and the rollout generated again from the same inputs, with the weights of now."""
        from rollout.engine import StaleWeights

        try:
            return Rollout.concat(get(pending.futures, timeout=self.cfg.cluster.call_timeout_s,
                                      what="rollout.generate")), pending.version
        except (*member_died_errors(self.backend), StaleWeights) as err:
            self.recover(self.rollout, "generate", 0, err)
            self.sync_weights()
            return self.generate(*pending.inputs), self.weights_version

    def greedy(self, prompt_ids: list[list[int]], max_new_tokens: int) -> list[str]:
        shards = shard(prompt_ids, len(self.rollout.members))
        return [t for part in self.retried(self.rollout, "greedy", [(s, max_new_tokens) for s in shards]) for t in part]

    def retried(self, group: ActorGroup, method: str, shard_args: list[tuple]) -> list:
        """`group.map_shards(method, shard_args)` resolved; if a member died (its process killed, a node lost) and
        Ray restarted it, the whole call is run again from the same inputs (same seeds: the same samples, none
        lost or counted twice). A restarted engine starts from the initial weights, so the learner's are sent
        (and checked) first. A call that never answers fails after cluster.call_timeout_s."""
        from rollout.engine import StaleWeights

        c = self.cfg.cluster
        for attempt in range(c.max_restarts + 1):
            try:
                # engines are told which weights they must hold: a restarted one refuses (StaleWeights)
                kwargs = {"weights_version": self.weights_version} if group is self.rollout else {}
                return get(group.map_shards(method, shard_args, **kwargs), timeout=c.call_timeout_s,
                           what=f"{group.name}.{method}")
            except (*member_died_errors(self.backend), StaleWeights) as err:  # died in the call, or restarted before
                self.recover(group, method, attempt, err)
                if group is self.rollout:
                    self.sync_weights()
        raise AssertionError("unreachable")

    def recover(self, group: ActorGroup, what: str, attempt: int, err: Exception) -> None:
        """After a member of `group` died during `what` (attempt 0, 1, ...): give up after cluster.max_restarts,
        else count the restart, wait until Ray has brought the member back, and rebuild the weight-sync group
        if the engines are in one (a restarted engine is in none)."""
        c = self.cfg.cluster
        if attempt == c.max_restarts:
            raise RuntimeError(f"a {group.name} actor died during {what} {attempt + 1} times "
                               f"(cluster.max_restarts={c.max_restarts}); last: {err}") from err
        self.restarts += 1
        if group is self.rollout:  # a restarted engine's probe history starts again
            for i in range(len(group.members)):
                self.sync_check.forget(i)
        print(f"[cluster] a {group.name} actor died during {what} ({type(err).__name__}); Ray restarts it and "
              f"{what} is repeated ({self.restarts} restarts so far)", flush=True)
        self.await_restart(group)
        if group is self.rollout and c.weight_sync == "collective":
            self.start_collective()

    def await_restart(self, group: ActorGroup) -> None:
        """Until every member answers again: a restarting actor refuses calls (ActorUnavailableError) while its
        __init__ runs again (a vLLM engine: tens of seconds). A member Ray gave up on (ActorDiedError) raises."""
        if self.backend != "ray":
            return
        import time

        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

        deadline = time.time() + self.cfg.cluster.call_timeout_s
        for i, member in enumerate(group.members):
            died = 0
            while True:
                try:
                    ray.get(member.__ray_call__.remote(_alive), timeout=60)
                    break
                except ActorDiedError:
                    died += 1  # right after a death Ray may not yet say "restarting"; a few times, then it is final
                    if died > 5:
                        raise
                    time.sleep(2.0)
                except (ActorUnavailableError, GetTimeoutError) as err:
                    if time.time() > deadline:
                        raise TimeoutError(f"{group.name}-{i} did not come back within cluster.call_timeout_s "
                                           f"after a restart") from err
                    time.sleep(2.0)

    def score(self, rollout: Rollout, reward_inputs: list[dict]) -> ScoredRollout:
        """reward_inputs: [P] one per prompt (sample i belongs to prompt i // G)."""
        G = rollout.group_size
        shards = shard(list(range(len(rollout.texts))), len(self.reward.members))
        args = [([rollout.texts[i] for i in s], [len(rollout.completion_ids[i]) for i in s],
                 [reward_inputs[i // G] for i in s]) for s in shards]
        rewards, comps = [], {}
        for rw, cp in self.retried(self.reward, "score", args):
            rewards.extend(rw)
            for k, v in cp.items():
                comps.setdefault(k, []).extend(v)
        return ScoredRollout(rollout, rewards, comps)

    # ---- reference and learner ---------------------------------------------------------------------------
    def ref_logprobs(self, rollout: Rollout) -> list[list[float]]:
        if self.reference is not None:
            return self.reference.run("logprobs", rollout.prompt_ids, rollout.completion_ids)
        if self.cfg.learner.lora is not None and needs_ref_logprobs(self.cfg):
            return self.learner.run("ref_logprobs", rollout.prompt_ids, rollout.completion_ids)
        return []

    def set_reference(self, source: str, full_kl: bool) -> None:
        """The KL reference of the phase that starts: 'current' (the learner's weights now) or a model folder.
        The reference actor gets it; with full KL the learner keeps its own frozen copy instead."""
        if self.cfg.learner.lora is not None:
            # The config allows only the phase-start model here. A folder means a resumed phase (the saved base
            # weights already are its start) or the first phase's initial model (the adapters are fresh).
            if source == "current":
                self.learner.run("start_phase_reference")
        elif self.reference is not None:
            if source == "current":
                self.reference.run("load_weights", handoff(self.learner.call("named_arrays")))
            else:
                self.reference.run("reload", source)
        self.learner.run("set_full_reference", source if full_kl else None)

    def train(self, batch: TrainBatch, algo: AlgoParams, inner_steps: int) -> dict:
        return self.learner.run("train_step", batch, algo, inner_steps)

    # ---- PPO critic --------------------------------------------------------------------------------------
    def start_critic(self, lr: float, total_steps: int, source: str | None, fresh: bool) -> None:
        """A PPO phase's critic: from the learner's weights now (source None) or a model folder, fresh head and
        optimizer; resuming, the saved critic is loaded by load_trainer_state instead."""
        L = self.cfg.learner
        if fresh:
            weights = handoff(self.learner.call("named_arrays")) if source is None else None
            self.critic.run("start_from", weights, source)
        self.critic.run("reset_optimizer", lr, total_steps, L.warmup_ratio, L.schedule)

    def values(self, rollout: Rollout) -> list[list[float]]:
        return self.critic.run("values", rollout.prompt_ids, rollout.completion_ids)

    def train_critic(self, prompt_ids, completion_ids, old_values, returns, clip_eps: float | None) -> dict:
        return self.critic.run("train_step", prompt_ids, completion_ids, old_values, returns, clip_eps)

    def sft_step(self, prompt_ids: list[list[int]], target_ids: list[list[int]]) -> dict:
        return self.learner.run("sft_step", prompt_ids, target_ids)

    def reset_optimizer(self, lr: float, total_steps: int) -> None:
        """A fresh AdamW and schedule (warmup, shape and weight decay from the learner section)."""
        L = self.cfg.learner
        self.learner.run("reset_optimizer", lr, total_steps, L.warmup_ratio, L.schedule, L.weight_decay)

    def start_collective(self) -> None:
        """A weight-sync process group of the learner (rank 0) and every engine's worker (common/collective.py):
        gloo on CPU, NCCL when the learner has a GPU. Built again after an engine restart."""
        c = self.cfg.cluster
        host, port = get(self.learner.members[0].__ray_call__.remote(_rendezvous))
        world, backend = 1 + len(self.rollout.members), "nccl" if c.gpus_per_learner > 0 else "gloo"
        futs = [self.learner.call("init_sync_group", host, port, world, backend),
                *[self.rollout.call("init_sync_group", host, port, world, 1 + i, backend, index=i)
                  for i in range(len(self.rollout.members))]]
        get(futs, timeout=c.call_timeout_s, what=f"the {backend} weight-sync group at {host}:{port}")
        self.weights_meta = self.learner.run("weights_meta")

    def _push_weights(self) -> None:
        c = self.cfg.cluster
        if c.weight_sync == "collective":  # rank 0 broadcasts while every engine receives into its reload
            futs = [self.learner.call("broadcast_weights"),
                    *self.rollout.call_all("receive_weights", self.weights_meta, self.weights_version)]
            get(futs, timeout=c.call_timeout_s, what="the collective weight sync")
        else:  # one object in the store, read by every engine of a node without a copy
            weights = handoff(self.learner.call("named_arrays"))
            get(self.rollout.call_all("update_weights", weights, self.weights_version), timeout=c.call_timeout_s,
                what="rollout.update_weights")

    def sync_weights(self) -> None:
        """The learner's weights to every engine (cluster.weight_sync: object_store or collective), then checked
        on each. An engine that dies on the way is restarted by Ray and gets them again."""
        c = self.cfg.cluster
        self.weights_version += 1
        for attempt in range(c.max_restarts + 1):
            try:
                self._push_weights()
                if c.verify_sync:
                    self.verify_sync()
                return
            except member_died_errors(self.backend) as err:
                self.recover(self.rollout, "the weight sync", attempt, err)

    @property
    def all_fp32(self) -> bool:
        return self.precisions["learner"] == "fp32" and set(self.precisions["engines"]) == {"fp32"}

    def own_old_logprobs(self, algo: AlgoParams) -> bool:
        """Whether the learner uses its own logprobs as the ratio's denominator (AlgoConfig.old_logprobs)."""
        return self.learner.run("own_old_logprobs", algo)

    def learner_logprobs(self, rollout: Rollout) -> list[list[float]]:
        return self.learner.run("logprobs", rollout.prompt_ids, rollout.completion_ids)

    def verify_sync(self) -> None:
        """Every engine serves the learner's weights: each scores the probe sequence (the learner's own likely
        tokens), and cluster/sync_check.py judges that against the learner's logprobs and how both moved since the
        last check, in fp32 and in bf16; a failure (SyncFailed, a RuntimeError) names the engine. A sync that
        silently did nothing, a known failure of broadcast-based syncs, would leave the engine on the old policy."""
        if self.probe is None:
            self.probe = self.learner.run("probe_sequence")
        prompt, completion = self.probe
        want = self.learner.run("logprobs", [prompt], [completion])[0]
        probes = get(self.rollout.call_all("probe_logprobs", prompt, completion), timeout=self.cfg.cluster.call_timeout_s,
                     what="rollout.probe_logprobs")
        self.last_sync = self.sync_check.check(probes, want)

    def save(self, path: str, with_optimizer: bool) -> None:
        self.learner.run("save", path, with_optimizer)
        if with_optimizer and self.critic is not None:
            self.critic.run("save", path)

    def load_trainer_state(self, path: str) -> None:
        self.learner.run("load_trainer_state", path)
        from pathlib import Path

        if self.critic is not None and (Path(path) / TRAINER_DIR / "critic.safetensors").is_file():
            self.critic.run("load", path)

    # ---- retrieval ---------------------------------------------------------------------------------------
    def start_retrieval(self, index_dir: str) -> None:
        """Retrieval actors over a saved index (built beforehand by the driver, see jobs/rag.py)."""
        from retrieval.retriever import Retriever

        c = self.cfg.retrieval
        self.retrieval = ActorGroup.create("retrieval", Retriever, c.num_actors, self.backend,
                                           args=(index_dir, c.encoder), num_cpus=0.1)

    def retrieve(self, queries: list[str], k: int, batch_size: int = 256) -> list[list[dict]]:
        """Top-k passages per query; batches go round-robin to the retrieval actors."""
        batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
        futs = self.retrieval.map_shards("retrieve", [(b, k) for b in batches])
        return [hits for part in get(futs) for hits in part]

    def peak_rss_gib(self) -> dict[str, list[float | None]]:
        """Peak resident memory of every actor, by group (the driver's own under 'driver')."""
        from cluster.groups import process_peak_rss_gib

        groups = [g for g in (self.rollout, self.reward, self.reference, self.learner, self.critic, self.retrieval)
                  if g is not None]
        return {"driver": [process_peak_rss_gib("self")], **{g.name: g.peak_rss_gib() for g in groups}}

    def nodes(self) -> dict[str, list[str]]:
        """The node id of every Ray actor, by group (placement tests and the run log)."""
        from cluster.placement import node_of

        groups = [g for g in (self.rollout, self.reward, self.reference, self.learner, self.critic) if g is not None]
        if self.backend != "ray":
            return {}
        return {g.name: get([m.__ray_call__.remote(node_of) for m in g.members], timeout=60) for g in groups}

    def shutdown(self) -> None:
        if self.placement is not None:
            self.placement.remove()
        runtime.shutdown(self.backend)
