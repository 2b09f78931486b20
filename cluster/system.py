"""The four actor groups of a GRPO job, built from the config, with one method per pipeline stage.

  rollout   N x VLLMEngine (or HFEngine)     prompts sharded across engines
  reward    M x RewardScorer                samples sharded across scorers
  reference 1 x Reference                   frozen initial policy
  learner   1 x Learner                     AdamW, schedule, micro-batched backward

Weight sync: the learner's weights become one object in the Ray object store (the return value of
`named_arrays`); every engine reads that same object (zero-copy numpy on a node) and reloads in
place. On GPUs the same interface is where an NCCL broadcast goes (cluster.weight_sync=collective),
which this CPU-only project does not implement yet and refuses at config time.
"""
from __future__ import annotations

from common.config import JobConfig
from common.types import Rollout, ScoredRollout, TrainBatch
from cluster import runtime
from cluster.groups import ActorGroup, get, shard
from learner.policy import AlgoParams, Learner, Reference
from rewards.registry import RewardScorer


class GRPOSystem:
    def __init__(self, cfg: JobConfig, policy_path: str, reference_path: str, total_updates: int,
                 learner_init_path: str | None = None):
        c, backend = cfg.cluster, cfg.cluster.backend
        self.cfg, self.backend = cfg, backend
        runtime.start(backend, c.address, c.num_cpus,
                      runtime.actor_env(c.threads, cfg.rollout.kv_cache_gib))
        r = cfg.rollout
        engine_cls = _engine_class(r.engine)
        engine_kw = dict(seed=r.seed) if r.engine == "hf" else dict(
            max_model_len=r.max_model_len, kv_cache_gib=r.kv_cache_gib, seed=r.seed,
            gpu_memory_utilization=r.gpu_memory_utilization)
        init_path = learner_init_path or policy_path
        self.rollout = ActorGroup.create("rollout", engine_cls, c.num_rollout_actors, backend,
                                         args=(init_path,), kwargs=engine_kw, num_cpus=0.5,
                                         num_gpus=c.gpus_per_rollout_actor)
        components = [c_.model_dump() for c_ in cfg.rewards.components]
        self.reward = ActorGroup.create("reward", RewardScorer, c.num_reward_actors, backend,
                                        args=(components,), num_cpus=0.1)
        L = cfg.learner
        self.reference = None
        if cfg.algo.beta > 0 and cfg.algo.kl_kind != "full":
            self.reference = ActorGroup.create("reference", Reference, 1, backend, args=(reference_path,),
                                               kwargs=dict(micro_batch_size=L.micro_batch_size,
                                                           precision=L.precision, threads=c.threads),
                                               num_cpus=0.2, num_gpus=c.gpus_per_learner / 2)
        self.learner = ActorGroup.create(
            "learner", Learner, 1, backend, args=(init_path,),
            kwargs=dict(lr=L.lr, total_steps=total_updates, warmup_ratio=L.warmup_ratio, schedule=L.schedule,
                        weight_decay=L.weight_decay, grad_clip=L.grad_clip, micro_batch_size=L.micro_batch_size,
                        precision=L.precision, threads=c.threads,
                        gradient_checkpointing=L.gradient_checkpointing, seed=cfg.train.seed,
                        full_kl_reference=reference_path if cfg.algo.kl_kind == "full" else None),
            num_cpus=0.5, num_gpus=c.gpus_per_learner / 2 if self.reference else c.gpus_per_learner)
        a = cfg.algo
        self.retrieval = None  # started by start_retrieval once the index exists
        self.algo = AlgoParams(clip_eps=a.clip_eps, clip_eps_high=a.clip_eps_high, beta=a.beta,
                               kl_kind=a.kl_kind, loss_agg=a.loss_agg, max_new_tokens=r.max_new_tokens)

    # ---- stages -----------------------------------------------------------------------------------
    def generate(self, prompt_ids: list[list[int]], seed: int) -> Rollout:
        r = self.cfg.rollout
        shards = shard(prompt_ids, len(self.rollout.members))
        futs = self.rollout.map_shards("generate", [(s, r.group_size, r.temperature, r.top_p, r.max_new_tokens,
                                                     seed + 7919 * i) for i, s in enumerate(shards)])
        return Rollout.concat(get(futs))

    def score(self, rollout: Rollout, examples: list[dict]) -> ScoredRollout:
        """examples: [P] reward inputs, one per prompt (sample i belongs to prompt i // G)."""
        G = rollout.group_size
        rows = list(range(len(rollout.texts)))
        shards = shard(rows, len(self.reward.members))
        futs = self.reward.map_shards("score", [
            ([rollout.texts[i] for i in s], [len(rollout.completion_ids[i]) for i in s],
             [examples[i // G] for i in s]) for s in shards])
        rewards, comps = [], {}
        for rw, cp in get(futs):
            rewards.extend(rw)
            for k, v in cp.items():
                comps.setdefault(k, []).extend(v)
        return ScoredRollout(rollout, rewards, comps)

    def ref_logprobs(self, rollout: Rollout) -> list[list[float]]:
        if self.reference is None:
            return []
        return get(self.reference.call("logprobs", rollout.prompt_ids, rollout.completion_ids))

    def train(self, batch: TrainBatch) -> dict:
        return get(self.learner.call("train_step", batch, self.algo, self.cfg.learner.inner_steps))

    def sync_weights(self) -> None:
        weights = self.learner.call("named_arrays")  # one object, read by every engine
        arg = weights if self.backend == "ray" else weights.value
        get(self.rollout.call_all("update_weights", arg))

    def greedy(self, prompt_ids: list[list[int]], max_new_tokens: int) -> list[str]:
        shards = shard(prompt_ids, len(self.rollout.members))
        return [t for part in get(self.rollout.map_shards("greedy", [(s, max_new_tokens) for s in shards]))
                for t in part]

    def start_retrieval(self, index_dir: str) -> None:
        """Retrieval actors over a saved index (built beforehand by the driver, see jobs/qa_task.py)."""
        from retrieval.retriever import Retriever

        c = self.cfg.retrieval
        self.retrieval = ActorGroup.create("retrieval", Retriever, c.num_actors, self.backend,
                                           args=(index_dir, c.encoder), num_cpus=0.1)

    def retrieve(self, queries: list[str], k: int, batch_size: int = 256) -> list[list[dict]]:
        """Top-k passages per query; batches go round-robin to the retrieval actors."""
        batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
        futs = self.retrieval.map_shards("retrieve", [(b, k) for b in batches])
        return [hits for part in get(futs) for hits in part]

    def learner_call(self, method: str, *args):
        return get(self.learner.call(method, *args))

    def shutdown(self) -> None:
        runtime.shutdown(self.backend)


def _engine_class(kind: str):
    from rollout.engine import HFEngine, VLLMEngine

    return {"vllm": VLLMEngine, "hf": HFEngine}[kind]
