"""The step logic of a run over the actor groups of a fleet it borrowed (cluster/fleet.py), one typed method per stage.

  rollout   N x VLLMEngine (or HFEngine)     prompts sharded across engines
  reward    M x RewardScorer                samples sharded across scorers
  reference F x Reference                   frozen KL reference (when a phase's sampled-token KL is served by one);
                                            rows sharded over F = learner.reference_workers (default W) copies
  learner   W x Learner                     AdamW/Adafactor, schedule, micro-batched backward, SFT/DPO steps, LoRA,
                                            checkpoints (with LoRA it also serves the reference logprobs); with
                                            W > 1 data parallel (learner/distributed.py): each step's sequences
                                            split over the workers by tokens, worker 0 saves and serves weights;
                                            learner.sharding=fsdp (default for W > 1): each worker 1/W of the
                                            model and optimizer (learner/fsdp.py), the group in lockstep
  critic    C x Critic                      PPO value model and its optimizer (when a phase is ppo); C =
                                            learner.critic_workers (default W), data parallel like the learner
  tools     T x ToolBox                     multi-turn rollouts' tools (cluster/turns.py)
  retrieval R x Retriever                   top-k passages (when retrieval is enabled)

The fleet starts, places, resets and ends the actors; the system only uses the ones its run plan names (a fleet may
hold a critic a GRPO run leaves idle). Which KL each phase computes and where, and which old logprobs the ratio uses
come from the run plan (common/plan.py); the system carries them out. The weight sync and its check live in
cluster/weight_sync.py, surviving dead actors in cluster/recovery.py. Every actor call names its method object
(`self.learner.run(Learner.train_step, ...)`): a renamed stage fails where the call is written, not after an hour of
training.
"""
from __future__ import annotations

import threading

from common.checkpoint import TRAINER_DIR
from common.config import JobConfig
from common.plan import PhasePlan, RunPlan, make_plan
from common.types import AlgoParams, DPOParams, PreferenceBatch, Rollout, Sampling, ScoredRollout, TrainBatch
from cluster.engines import Engines
from cluster.fleet import Fleet, FleetPool, acquire, fleet_spec, run_roles
from cluster.groups import ActorGroup, get, handoff, shard
from cluster.recovery import Recovery
from cluster.sleep import EngineSleep
from cluster.weight_sync import WeightSync
from learner.critic import Critic
from learner.policy import Learner, Reference
from rewards.registry import RewardScorer
from rollout.engine import Engine


def param_count(path: str) -> float:
    """About how many parameters the model folder or hub id `path` has (embedding + layers), from its config."""
    from transformers import AutoConfig

    from common.models import trust_remote_code

    c = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code())
    h = c.hidden_size
    return c.vocab_size * h + c.num_hidden_layers * (4 * h * h + 3 * h * getattr(c, "intermediate_size", 4 * h))


def open_system(cfg: JobConfig, policy_path: str, reward_components: list[dict], init_path: str | None = None,
                plan: RunPlan | None = None, tool_index: str | None = None, fleet: Fleet | FleetPool | None = None,
                log_dir=None) -> "TrainingSystem":
    """A run's system: on `fleet` (borrowed: a Fleet, or one a FleetPool lends), else on a fleet of its own that
    `shutdown` ends. `init_path`: the weights the run starts from (a checkpoint when resuming; default the policy);
    `log_dir`: where the actors' output goes."""
    plan = plan or make_plan(cfg)
    spec = fleet_spec(cfg, plan, policy_path)
    roles = run_roles(cfg, plan, policy_path, init_path or policy_path, reward_components, tool_index)
    fleet, owned = acquire(fleet, spec, roles, log_dir)
    try:
        return TrainingSystem(cfg, fleet, plan, init_path or policy_path, owns_fleet=owned)
    except BaseException:
        if owned:
            fleet.close()
        raise


class TrainingSystem:
    def __init__(self, cfg: JobConfig, fleet: Fleet, plan: RunPlan, init_path: str, owns_fleet: bool = False):
        """The run's stages over `fleet` (borrowed for this run, its actors reset to the run's start); once every actor
        measured its node, the plan is completed with their precisions (`self.plan`, which the phases read)."""
        c = cfg.cluster
        self.cfg, self.fleet, self.backend, self.owns_fleet = cfg, fleet, fleet.backend, owns_fleet
        self.rollout, self.reward, self.learner = fleet.rollout, fleet.reward, fleet.learner
        self.reference = fleet.reference if plan.has("reference") else None
        self.critic = fleet.critic if plan.has("critic") else None
        self.tools = fleet.tools if plan.has("tools") else None
        self.retrieval = None  # started by start_retrieval once the index exists
        self._tokenizer = None  # the policy's, loaded when a multi-turn turn needs decoding (decode)
        # rollout.agent: the run's endpoint, its agent function and the event loop its sessions run in
        self.endpoint = self.dispatch = self.agent = self.agent_loop = None
        self._agent_start = threading.Lock()
        self.recovery = Recovery(c.max_restarts, c.call_timeout_s, self.backend, restored=fleet.restored)
        # Each actor resolved precision 'auto' on its own node (common/precision.py): what it chose and the figures
        self.choices = {"learner": self.learner.run(Learner.precision_choice),
                        "engines": get(self.rollout.call_all(Engine.precision_choice))}
        if self.reference is not None:
            self.choices["reference"] = self.reference.run(Reference.precision_choice)
        if self.critic is not None:
            self.choices["critic"] = self.critic.run(Critic.precision_choice)
        self.precisions = {role: ([c["precision"] for c in v] if role == "engines" else v["precision"])
                           for role, v in self.choices.items()}
        self.plan = plan.with_precisions(self.precisions)
        if self.plan.sleep == "auto":  # the level by the model's size (cluster/sleep.py), decided once here
            from dataclasses import replace

            from cluster.sleep import sleep_level

            self.plan = replace(self.plan, sleep=f"level{sleep_level(param_count(init_path))}")
        level = int(self.plan.sleep[-1]) if self.plan.sleep != "off" else None
        self.sleep = EngineSleep(level, lambda method, *a: get(self.rollout.call_all(method, *a), timeout=c.call_timeout_s,
                                                                what=f"rollout.{method.__name__}"),
                                 lambda: self.learner.run(Learner.free_cache))
        self.weights = WeightSync(self.learner, self.rollout, c, self.recovery, self.plan.sync_precision,
                                  cfg.rollout.tensor_parallel_size, run=fleet.runs)
        self.engines = Engines(self.rollout, self.recovery, self.weights, c.call_timeout_s)  # generate, greedy

    def on_learners(self, method, *args) -> object:
        """The same call on every learner worker (they stay identical); worker 0's answer."""
        return get(self.learner.call_all(method, *args), timeout=self.learner.timeout,
                   what=f"learner.{method.__name__}")[0]

    @staticmethod
    def sharded_step(group: ActorGroup, method, whole: tuple, rows_of, units: list[list[int]], lengths: list[int],
                     totals, *args) -> dict:
        """One optimizer step of a training group (learner, critic): with one worker, `method(*whole, *args)`; with
        W, each worker gets the rows of its balanced share (`rows_of(rows)`: its arguments in `whole`'s place) and
        the whole batch's `totals`. Worker 0's metrics (summed over the workers)."""
        W = len(group.members)
        if W == 1:
            return group.run(method, *whole, *args)
        from learner.distributed import balanced_shards

        shards = balanced_shards(lengths, units, W)
        futs = [group.call(method, *rows_of(rows), *args, totals, index=i) for i, rows in enumerate(shards)]
        return get(futs, timeout=group.timeout, what=f"{group.name}.{method.__name__} on {W} workers")[0]

    def training_groups(self) -> list[ActorGroup]:
        return [g for g in (self.learner, self.reference, self.critic) if g is not None]

    @property
    def restarts(self) -> int:
        return self.recovery.restarts

    @property
    def weights_version(self) -> int:
        """The learner updates the engines hold, over the whole run (a resumed one continues its count)."""
        return self.weights.learner_version

    def resume_version(self, version: int) -> None:
        """A resumed run: the engines hold the checkpoint's weights, which were the run's `version`."""
        self.weights.base = version - self.weights.version

    @property
    def last_sync(self) -> dict[str, float]:
        return self.weights.last

    def sync_weights(self) -> None:
        """The learner's weights to every engine, checked on each (cluster/weight_sync.py); sleeping engines wake
        around it (cluster/sleep.py)."""
        self.weights.sync(around=self.sleep.around_sync)

    def rest_engines(self) -> None:
        """After a step's generation: with rollout.sleep on, the engines' GPU memory goes to the learner until the
        next weight sync (cluster/sleep.py); otherwise nothing."""
        self.sleep.rest()

    # ---- generation ----------------------------------------------------------------------------------------
    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int,
                 rows: list[dict] | None = None) -> Rollout:
        """K samples per prompt: one completion each, or with tools (rollout.max_turns > 1) the multi-turn loop of
        cluster/turns.py, or with rollout.agent K agent sessions per row (`rows`: the prompts' data rows)."""
        self.sleep.ensure_awake(self.sync_weights)
        if self.cfg.rollout.agent is not None and rows is not None:
            with self.weights.lock:  # every session ends on the weights it started on (no sync meanwhile)
                return self.agent_sessions(rows, sampling, seed).sampled_by(self.weights.learner_version)
        turns = self.plan.turns
        if turns is None:
            return self.engines.generate(prompt_ids, sampling, seed)
        from cluster.turns import generate_turns

        return generate_turns(self.engines.generate, self.run_tools, prompt_ids, sampling, seed, turns.tools,
                              turns.max_turns, turns.max_total_tokens, self.decode)

    def agent_sessions(self, rows: list[dict], sampling: Sampling, seed: int) -> Rollout:
        """rollout.agent over the run's endpoint (started at the first call, stopped with the run): K sessions per
        row (cluster/agents.py)."""
        import asyncio

        from cluster.agents import load_agent, outcomes_rollout, run_sessions

        r = self.cfg.rollout
        with self._agent_start:  # the stream's generation thread and an eval may come first at once
            if self.endpoint is None:
                self.endpoint, self.dispatch = self._serve(sampling)
            self.agent = self.agent or load_agent(r.agent, r.agent_params)
            if self.agent_loop is None:  # one loop, in a thread of its own, for the run's agents: what they keep
                # between steps (clients, locks) stays bound to it, whichever thread asks for sessions
                self.agent_loop = asyncio.new_event_loop()
                threading.Thread(target=self.agent_loop.run_forever, name="raygrpo-agents", daemon=True).start()
        outcomes = asyncio.run_coroutine_threadsafe(run_sessions(
            self.agent, self.endpoint, rows, sampling.group_size, r.agent_params, r.agent_timeout_s,
            r.agent_concurrency, prefix=f"{seed}"), self.agent_loop).result()
        for o in outcomes:
            self.dispatch.release(o.session.sid)
        return outcomes_rollout(outcomes, sampling.group_size, self._decoder().eos_token_id or 0)

    def _serve(self, sampling: Sampling):
        """The run's OpenAI-compatible endpoint over its engines (rollout/endpoint.py), its requests batched per
        engine (cluster/serving.py); a request that sets no sampling gets the run's."""
        from cluster.serving import EngineDispatch
        from common.models import trust_remote_code
        from rollout.endpoint import Endpoint

        r = self.cfg.rollout
        dispatch = EngineDispatch(self.rollout, lambda: self.weights.tag)
        endpoint = Endpoint(self.fleet.spec.model, ["policy", self.cfg.model.policy], r.max_model_len,
                            dispatch.submit, max_tokens=sampling.max_new_tokens, seed=r.seed,
                            trust_remote_code=trust_remote_code(), tool_call_parser=r.tool_call_parser,
                            defaults={"temperature": sampling.temperature, "top_p": sampling.top_p,
                                      "max_new_tokens": sampling.max_new_tokens})
        endpoint.start()
        return endpoint, dispatch

    def _decoder(self):
        if self._tokenizer is None:
            from common.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.fleet.spec.model)
        return self._tokenizer

    def decode(self, ids: list[int]) -> str:
        """The policy tokenizer's text of `ids` (a multi-turn sample's policy turn cut at its token budget)."""
        return self._decoder().decode(ids)

    def run_tools(self, calls: list[tuple[str, str | None]], rooms: list[int] | None = None) -> list:
        """The tool actors' observations of these calls, in order, each cut to its sample's room (tokens left of
        rollout.max_total_tokens); a tool actor that died is restarted, the call repeated."""
        from tools.toolbox import ToolBox

        rooms = rooms if rooms is not None else [None] * len(calls)
        shards = shard(list(range(len(calls))), len(self.tools.members))
        args = [([calls[i] for i in s], [rooms[i] for i in s]) for s in shards]
        return [o for part in self.recovery.retried(self.tools, ToolBox.run, args) for o in part]

    # ---- reward ------------------------------------------------------------------------------------------
    def score(self, rollout: Rollout, reward_inputs: list[dict], state: dict | None = None) -> ScoredRollout:
        """reward_inputs: [P] one per prompt (sample i belongs to prompt i // G); `state`: the step being scored, as
        a reward function reads it (rewards/user.py TrainerState)."""
        G = rollout.group_size
        shards = shard(list(range(len(rollout.texts))), len(self.reward.members))
        args = [([rollout.texts[i] for i in s], [len(rollout.completion_ids[i]) for i in s],
                 [reward_inputs[i // G] for i in s], [rollout.completion_ids[i] for i in s], state) for s in shards]
        rewards: list = []
        comps: dict[str, list] = {}
        for rw, cp in self.recovery.retried(self.reward, RewardScorer.score, args):
            for k in dict.fromkeys([*comps, *cp]):  # a part one shard's samples lack (None there), never a shifted column
                comps.setdefault(k, [None] * len(rewards)).extend(cp.get(k, [None] * len(rw)))
            rewards.extend(rw)
        if rollout.turns is not None:  # rollout.agent: what each agent returned wins (cluster/agents.py)
            from cluster.agents import with_agent_rewards

            rewards, comps = with_agent_rewards(rollout, rewards, comps)
        return ScoredRollout(rollout, rewards, comps)

    # ---- reference and learner ---------------------------------------------------------------------------
    def ref_logprobs(self, rollout: Rollout, phase: PhasePlan) -> list[list[float]]:
        """The sampled tokens' reference logprobs where the phase's KL needs them (else [])."""
        if not phase.kl.sampled:
            return []
        return self._reference_logprobs(rollout.prompt_ids, rollout.completion_ids, phase)

    def ref_sequence_logps(self, prompt_ids, completion_ids, phase: PhasePlan,
                           policy_masks: list[list[int]] | None = None) -> list[float]:
        """DPO: each completion's reference log-probability, summed over its tokens (multi-turn: the policy's)."""
        rows = self._reference_logprobs(prompt_ids, completion_ids, phase)
        if policy_masks is None:
            return [sum(row) for row in rows]
        return [sum(x for x, m in zip(row, mask, strict=True) if m) for row, mask in zip(rows, policy_masks,
                                                                                        strict=True)]

    def _reference_logprobs(self, prompt_ids, completion_ids, phase: PhasePlan) -> list[list[float]]:
        if phase.kl.served_by == "reference_actor":
            return self.sharded_rows(self.reference, Reference.logprobs, prompt_ids, completion_ids)
        return self.learner.run(Learner.ref_logprobs, prompt_ids, completion_ids)  # adapters_off

    def set_reference(self, phase: PhasePlan, source: str) -> None:
        """The KL reference of the phase that starts: 'current' (the learner's weights now) or a model folder,
        where the plan says it is served."""
        if self.plan.lora:
            # The config allows only the phase-start model here. A folder means a resumed phase (the saved base
            # weights already are its start) or the first phase's initial model (the adapters are fresh).
            if source == "current":
                self.learner.run(Learner.start_phase_reference)
        elif phase.kl.served_by == "reference_actor":
            if source == "current":
                weights = handoff(self.learner.call(Learner.named_arrays))
                get(self.reference.call_all(Reference.load_weights, weights), timeout=self.reference.timeout,
                    what="reference.load_weights")
            else:
                get(self.reference.call_all(Reference.reload, source), timeout=self.reference.timeout,
                    what="reference.reload")
        self.on_learners(Learner.set_full_reference, source if phase.kl.served_by == "learner_copy" else None)

    def train(self, batch: TrainBatch, algo: AlgoParams, inner_steps: int) -> dict:
        from learner.distributed import prompt_units

        lengths = [len(c) for c in batch.completion_ids]  # the work each row costs; the loss counts policy tokens
        return self.sharded_step(self.learner, Learner.train_step, (batch,), lambda rows: (batch.rows(rows),),
                                 prompt_units(batch.prompt_ids), lengths, (len(lengths), sum(batch.policy_tokens())),
                                 algo, inner_steps)

    def dpo_step(self, batch: PreferenceBatch, params: DPOParams) -> dict:
        lengths = [len(a) + len(b) for a, b in zip(batch.chosen_ids, batch.rejected_ids)]
        return self.sharded_step(self.learner, Learner.dpo_step, (batch,), lambda rows: (batch.rows(rows),),
                                 [[i] for i in range(len(lengths))], lengths, (len(lengths), batch.tokens()), params)

    def sft_step(self, prompt_ids: list[list[int]], target_ids: list[list[int]],
                 target_masks: list[list[int]] | None = None) -> dict:
        """`target_masks`: 0 at a gold trace's observation tokens (not trained on, not counted)."""
        lengths = [len(t) for t in target_ids]
        if target_masks is None:
            return self.sharded_step(self.learner, Learner.sft_step, (prompt_ids, target_ids),
                                     lambda rows: ([prompt_ids[i] for i in rows], [target_ids[i] for i in rows]),
                                     [[i] for i in range(len(lengths))], lengths, sum(lengths))
        W, counted = len(self.learner.members), sum(sum(m) for m in target_masks)
        if W == 1:
            return self.learner.run(Learner.sft_step, prompt_ids, target_ids, counted, target_masks)
        from learner.distributed import balanced_shards

        shards = balanced_shards(lengths, [[i] for i in range(len(lengths))], W)
        futs = [self.learner.call(Learner.sft_step, [prompt_ids[i] for i in rows], [target_ids[i] for i in rows],
                                  counted, [target_masks[i] for i in rows], index=k) for k, rows in enumerate(shards)]
        return get(futs, timeout=self.learner.timeout, what=f"learner.sft_step on {W} workers")[0]

    def learner_logprobs(self, rollout: Rollout) -> list[list[float]]:
        return self.learner.run(Learner.logprobs, rollout.prompt_ids, rollout.completion_ids)

    def reset_optimizer(self, lr: float, total_steps: int) -> None:
        """A fresh AdamW and schedule (warmup, shape and weight decay from the learner section)."""
        L = self.cfg.learner
        self.on_learners(Learner.reset_optimizer, lr, total_steps, L.warmup_ratio, L.schedule, L.weight_decay)

    # ---- PPO critic --------------------------------------------------------------------------------------
    def start_critic(self, lr: float, total_steps: int, source: str | None, fresh: bool) -> None:
        """A PPO phase's critic: from the learner's weights now (source None) or a model folder, fresh head and
        optimizer; resuming, the saved critic is loaded by load_trainer_state instead."""
        L = self.cfg.learner
        every = lambda method, *args: get(self.critic.call_all(method, *args), timeout=self.critic.timeout,  # noqa: E731
                                          what=f"critic.{method.__name__}")
        if fresh:
            weights = handoff(self.learner.call(Learner.named_arrays)) if source is None else None
            every(Critic.start_from, weights, source)
        every(Critic.reset_optimizer, lr, total_steps, L.warmup_ratio, L.schedule)

    def values(self, rollout: Rollout) -> list[list[float]]:
        return self.sharded_rows(self.critic, Critic.values, rollout.prompt_ids, rollout.completion_ids)

    def train_critic(self, prompt_ids, completion_ids, old_values, returns, clip_eps: float | None,
                     value_masks: list[list[int]] | None = None) -> dict:
        """One critic step; `value_masks` (multi-turn) keeps tool observations out of the value loss."""
        from learner.distributed import prompt_units

        whole = (prompt_ids, completion_ids, old_values, returns, value_masks)
        lengths = [len(c) for c in completion_ids]
        counted = sum(map(sum, value_masks)) if value_masks else sum(lengths)
        return self.sharded_step(self.critic, Critic.train_values, whole,
                                 lambda rows: tuple(None if xs is None else [xs[i] for i in rows] for xs in whole),
                                 prompt_units(prompt_ids), lengths, counted, clip_eps)

    @staticmethod
    def sharded_rows(group: ActorGroup, method, prompt_ids, completion_ids) -> list[list[float]]:
        """A per-row inference call (logprobs, values) split over the group's members by tokens, whole prompt runs
        together; rows back in the callers' order."""
        if len(group.members) == 1:
            return group.run(method, prompt_ids, completion_ids)
        from learner.distributed import balanced_shards, prompt_units

        # every member is called, one with no rows too: sharded members answer in step (learner/fsdp.py)

        shards = balanced_shards([len(c) for c in completion_ids], prompt_units(prompt_ids), len(group.members))
        parts = get([group.call(method, [prompt_ids[i] for i in rows], [completion_ids[i] for i in rows], index=k)
                     for k, rows in enumerate(shards)], timeout=group.timeout, what=f"{group.name}.{method.__name__}")
        out: list[list[float]] = [[] for _ in completion_ids]
        for rows, part in zip(shards, parts):
            for i, row in zip(rows, part):
                out[i] = row
        return out

    # ---- checkpoints -------------------------------------------------------------------------------------
    def save(self, path: str, with_optimizer: bool) -> None:
        """Worker 0 writes the model folder (sharded: from buckets every worker gathers), and the optimizer state
        when asked (sharded: each worker its part)."""
        self.learner.run(Learner.save, path, with_optimizer)
        if with_optimizer and self.critic is not None:
            self.critic.run(Critic.save, path)

    def load_trainer_state(self, path: str) -> None:
        self.on_learners(Learner.load_trainer_state, path)
        from pathlib import Path

        saved = Path(path) / TRAINER_DIR
        if self.critic is not None and (saved / "critic.safetensors").is_file():
            get(self.critic.call_all(Critic.load, path), timeout=self.critic.timeout, what="critic.load")

    # ---- retrieval ---------------------------------------------------------------------------------------
    def start_retrieval(self, index_dir: str) -> None:
        """Retrieval actors over a saved index (built beforehand by the driver, see trainer/rag.py)."""
        c = self.cfg.retrieval
        self.retrieval = self.fleet.start_retrieval(index_dir, c.encoder, c.num_actors)

    def retrieve(self, queries: list[str], k: int, batch_size: int = 256) -> list[list[dict]]:
        """Top-k passages per query; batches go round-robin to the retrieval actors."""
        from retrieval.retriever import Retriever

        batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
        futs = self.retrieval.map_shards(Retriever.retrieve, [(b, k) for b in batches])
        return [hits for part in get(futs) for hits in part]

    # ---- what the run log reports ------------------------------------------------------------------------
    def peak_rss_gib(self) -> dict[str, list[float | None]]:
        """Peak resident memory of every actor of the fleet, by group (the driver's own under 'driver')."""
        return self.fleet.peak_rss_gib()

    def peak_rss_now(self) -> dict[str, list[float | None]]:
        """The same, read from this node's /proc without calling any actor (each step's log)."""
        return self.fleet.peak_rss_now()

    def nodes(self) -> dict[str, list[str]]:
        """The node id of every Ray actor, by group (placement tests and the run log)."""
        return self.fleet.nodes()

    def shutdown(self) -> None:
        """The run is over: its endpoint stops, its own fleet ends; a borrowed one lives on for the next run."""
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
        if self.agent_loop is not None:
            loop, self.agent_loop = self.agent_loop, None
            loop.call_soon_threadsafe(loop.stop)
        if self.owns_fleet:
            self.fleet.close()
