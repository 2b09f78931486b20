"""The run plan: a job config turned once into the decisions every part of a run reads, and nothing re-decides.

    plan = make_plan(cfg)                       before any actor starts: phases, KL, references, roles
    plan = plan.with_precisions(precisions)     once the actors measured their nodes (common/precision.py):
                                                old logprobs under 'auto' and the sync check's statistic

Per phase it fixes:
  sampling      K, temperature, top-p, max new tokens (the rollout section with the phase's changes)
  algo          the learner's AlgoParams: clip, KL in the loss (kind, beta), aggregation, old logprobs, TIS cap
  kl            none | sampled (k1/k2/k3/abs, in the loss; PPO: k1 in the token rewards) | full (exact, in the loss)
                with its coefficient, its reference (phase_start | initial | a model spec) and where the
                reference's logprobs are computed:
                  reference_actor   a frozen copy in its own actor (sampled KL, full fine-tuning)
                  adapters_off      the learner's model with its LoRA adapters disabled (sampled KL with LoRA)
                  learner_copy      a frozen copy inside the learner (full KL: it needs every position's logits)
  old_logprobs  the importance ratio's denominator: 'engine' (the sampling engine's logprobs) or 'learner'
                (the learner's own at a batch's first update, TIS-weighted against the engine's); 'auto' picks
                'learner' where bf16 runs on either side or samples can be stale (train.max_staleness > 0: the
                ratio is then clipped against the learner's weights now, the proximal policy, and the weights of
                the version that sampled a token enter only the truncated importance weight), else 'engine'
  staleness     GRPO's train.max_staleness: how many learner updates ahead the engines may sample (trainer/stream.py)
  selection     GRPO's choice of what to learn from: the advantage estimator (and its loss normaliser), dynamic
                sampling (rounds), the overlong treatment, the prompt pool's skips (see Selection)

For the run: the actor roles it needs (a reference actor only when a phase's KL is served by one, a critic only
for PPO, retrieval only when enabled, tool actors for multi-turn rollouts), how a sampled phase's samples are
generated (`turns`: one completion, or turns with tools up to a token budget), how the training workers hold the model (`sharding`: replicate, or
fsdp with its default for several workers), the precision asked of each role and, after `with_precisions`, the one
measured, and the sync check's precision (fp32 only when learner and every engine run fp32).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from common.config import JobConfig
from common.types import AlgoParams, DPOParams, Sampling

KLKind = Literal["none", "k1", "k2", "k3", "abs", "full"]
Served = Literal["none", "reference_actor", "adapters_off", "learner_copy"]


@dataclass(frozen=True)
class KLPlan:
    kind: KLKind = "none"           # the estimator; 'full' = exact full-vocabulary KL
    coef: float = 0.0               # beta (GRPO, in the loss) or kl_coef (PPO, in the token rewards)
    where: Literal["none", "loss", "reward", "preference"] = "none"  # preference: DPO's beta * log(pi / ref)
    reference: str = "phase_start"  # phase_start | initial | a model spec or folder
    served_by: Served = "none"

    @property
    def sampled(self) -> bool:
        """The reference's logprobs of the sampled tokens are needed each step (sampled-token KL, or PPO's)."""
        return self.kind not in ("none", "full")

    def describe(self) -> str:
        if self.kind == "none":
            return "no KL"
        return f"KL {self.kind} x {self.coef:g} in the {self.where} vs {self.reference} ({self.served_by})"


@dataclass(frozen=True)
class Selection:
    """What a GRPO step learns from (trainer/selection.py carries it out)."""
    advantage: str = "grpo"          # learner/advantages.py ESTIMATORS
    adv_eps: float = 1e-4
    dynamic_rounds: int = 1          # generation calls a step at most; 1 = no dynamic sampling
    overlong: str = "keep"           # keep | mask | soft
    overlong_buffer: int = 0         # soft: the punished interval (tokens)
    overlong_penalty: float = 1.0
    skip_solved: int = 0             # prompt pool: visits skipped after an all-right visit
    skip_failed: int = 0             # ... after an all-wrong visit
    solved_at: float = 1.0           # a right answer's reward is >= this
    failed_at: float = 0.0           # a wrong answer's reward is <= this

    @property
    def dynamic(self) -> bool:
        return self.dynamic_rounds > 1

    @property
    def pool(self) -> bool:
        return bool(self.skip_solved or self.skip_failed)

    def describe(self) -> str:
        """'' for plain GRPO (the default: z-scored advantages of every sampled group)."""
        parts = [f"advantage {self.advantage}"] if self.advantage != "grpo" else []
        if self.dynamic:
            parts.append(f"dynamic sampling <= {self.dynamic_rounds} rounds")
        if self.overlong != "keep":
            parts.append(f"overlong {self.overlong}" + (f" (last {self.overlong_buffer} tokens, -{self.overlong_penalty:g})"
                                                         if self.overlong == "soft" else ""))
        if self.pool:
            parts.append(f"pool skips solved x{self.skip_solved}, failed x{self.skip_failed}")
        return ", ".join(parts)


@dataclass(frozen=True)
class TurnsPlan:
    """Multi-turn rollouts (rollout.max_turns > 1): every sampled phase's samples are turns with these tools."""
    max_turns: int
    max_total_tokens: int            # completion tokens a sample may hold, policy and observations together
    tools: tuple[str, ...]

    def describe(self) -> str:
        return f"<= {self.max_turns} turns with {', '.join(self.tools)}, <= {self.max_total_tokens} tokens"


@dataclass(frozen=True)
class PhasePlan:
    index: int
    name: str
    kind: str                         # sft | grpo | rs_sft | ppo | dpo
    sampling: Sampling | None = None  # None for sft and for dpo on file pairs
    algo: AlgoParams | None = None    # grpo, ppo
    kl: KLPlan = KLPlan()
    staleness: int = 0                # grpo: train.max_staleness (0: every step samples the learner's weights)
    selection: Selection | None = None  # grpo, ppo (its defaults), online dpo (dynamic sampling, pool)
    dpo: DPOParams | None = None      # dpo: its loss
    turns: TurnsPlan | None = None    # sampled phases of a multi-turn run
    # the schedule, each phase's own value or the section's default, resolved here (trainer/phases.py reads these)
    lr: float = 1e-5                  # the phase's own lr, else learner.lr (grpo, ppo, dpo)
    steps: int | None = None          # explicit optimizer/rollout steps; None: from the data (sft/rs_sft epochs, dpo file)
    prompts_per_step: int | None = None  # grpo, ppo, online dpo: the phase's, else train.prompts_per_step
    inner_steps: int = 1              # grpo: learner.inner_steps updates per rollout batch
    eval_every: int | None = None     # the phase's, else train.eval_every for sampled phases; None: at its end only
    patience: int | None = None       # the phase's, else train.patience

    @property
    def old_logprobs(self) -> str | None:
        return self.algo.old_logprobs if self.algo is not None else None

    def describe(self) -> str:
        parts = [f"{self.name} ({self.kind})"]
        if self.sampling is not None:
            s = self.sampling
            parts.append(f"K={s.group_size} T={s.temperature:g} top-p {s.top_p:g} max {s.max_new_tokens} tokens"
                         + (f" a turn, {self.turns.describe()}" if self.turns is not None else ""))
        if self.selection is not None and self.selection.describe():
            parts.append(self.selection.describe())
        if self.dpo is not None:
            d = self.dpo
            parts += [f"{d.loss} loss" + (f", label smoothing {d.label_smoothing:g}" if d.label_smoothing else ""),
                      self.kl.describe()]
        if self.algo is not None:
            tis = f", TIS cap {self.algo.tis_cap:g}" if self.algo.old_logprobs == "learner" and self.algo.tis_cap \
                else ""
            parts += [self.kl.describe(), f"old logprobs: {self.algo.old_logprobs}{tis}"]
        if self.staleness:
            parts.append(f"samples up to {self.staleness} update(s) stale")
        return "; ".join(parts)


@dataclass(frozen=True)
class RunPlan:
    phases: tuple[PhasePlan, ...]
    roles: tuple[str, ...]                  # actor groups the run starts, in start order
    precision: dict[str, str]               # role -> asked (auto | fp32 | bf16), or measured after with_precisions
    measured: bool = False                  # with_precisions has run
    sync_precision: str | None = None       # fp32 | bf16, once measured
    turns: TurnsPlan | None = None          # multi-turn rollouts with tools, or None (one completion a sample)
    lora: bool = False                      # LoRA adapters: a phase's reference is its start with them off, so the
                                            # adapters are merged into the base weights when a phase starts
    sharding: str = "replicate"             # replicate | fsdp: how learner, reference and critic workers hold models
    workers: int = 1                        # learner workers
    sleep: str = "off"                      # engines between generations (cluster/sleep.py): off | auto (the level
                                            # by model size, at start) | level1 | level2
    colocated: bool = False                 # cluster.placement=colocated (the run log says why sleep is off)

    def has(self, role: str) -> bool:
        return role in self.roles

    @property
    def sampled_reference(self) -> Served:
        """Who serves the sampled tokens' reference logprobs in this run (one server for every phase)."""
        served = {p.kl.served_by for p in self.phases if p.kl.sampled}
        return served.pop() if served else "none"

    def with_precisions(self, precisions: dict) -> "RunPlan":
        """The plan once every actor measured its node: `precisions` maps role -> 'fp32'|'bf16' ('engines' ->
        one per engine). 'auto' old logprobs become the learner's where bf16 runs on either side."""
        engines = precisions["engines"]
        engines = [engines] if isinstance(engines, str) else list(engines)
        bf16 = precisions["learner"] == "bf16" or "bf16" in engines
        phases = tuple(p if p.algo is None or p.algo.old_logprobs != "auto" else
                       replace(p, algo=replace(p.algo, old_logprobs="learner" if bf16 else "engine"))
                       for p in self.phases)
        return replace(self, phases=phases, measured=True, sync_precision="bf16" if bf16 else "fp32",
                       precision={**self.precision, **{k: (v if isinstance(v, str) else "/".join(sorted(set(v))))
                                                       for k, v in precisions.items()}})

    def describe(self) -> list[str]:
        """One line per phase, then the roles and precisions (the run log's plan; the table test's rows)."""
        prec = ", ".join(f"{k} {v}" for k, v in self.precision.items())
        workers = f"; {self.workers} learner workers, {self.sharding}" if self.workers > 1 or self.sharding != \
            "replicate" else ""
        if self.sleep != "off":
            workers += f"; engines sleep between generations ({self.sleep})"
        elif self.colocated:
            workers += "; engine sleep mode off (it needs vLLM on a GPU)"
        return [p.describe() for p in self.phases] + [f"actors: {' '.join(self.roles)}; precision: {prec}{workers}"]


def make_plan(cfg: JobConfig) -> RunPlan:
    """The plan of `cfg` before any actor exists (old logprobs may still be 'auto': see RunPlan.with_precisions)."""
    lora = cfg.learner.lora is not None
    names = cfg.train.phase_names()
    r = cfg.rollout
    turns = TurnsPlan(r.max_turns, r.total_tokens(), tuple(t.name for t in cfg.tools.use)) if r.max_turns > 1 else None
    phases = tuple(replace(_phase(cfg, i, names[i], p, lora), **_schedule(cfg, p))
                   for i, p in enumerate(cfg.train.phases))
    phases = tuple(replace(p, turns=turns) if p.sampling is not None and turns else p for p in phases)
    roles = ["rollout", "reward", "learner"]
    if any(p.kl.served_by == "reference_actor" for p in phases):
        roles.append("reference")
    if any(p.kind == "ppo" for p in phases):
        roles.append("critic")
    if cfg.retrieval.enabled:
        roles.append("retrieval")
    if turns is not None:
        roles.append("tools")
    learner = cfg.learner.precision
    precision = {"learner": learner, "engines": cfg.rollout.dtype,
                 **{role: learner for role in ("reference", "critic") if role in roles}}
    return RunPlan(phases, tuple(roles), precision, turns=turns, lora=lora, sharding=cfg.learner.sharded(),
                   workers=cfg.learner.workers, sleep=cfg.rollout.sleep if cfg.sleeps() else "off",
                   colocated=cfg.cluster.placement == "colocated")


def _phase(cfg: JobConfig, index: int, name: str, p, lora: bool) -> PhasePlan:
    if p.kind == "sft":
        return PhasePlan(index, name, p.kind)
    r = cfg.rollout_for(p)
    sampling = Sampling(r.group_size, r.temperature, r.top_p, r.max_new_tokens)
    if p.kind == "rs_sft":
        return PhasePlan(index, name, p.kind, sampling)
    a = cfg.algo_for(p)
    if p.kind == "dpo":  # the reference's logprobs of both completions of every pair, where sampled KL's are served
        kl = KLPlan("k1", p.beta, "preference", p.reference, _served("k1", lora))
        selection = Selection(dynamic_rounds=a.max_rounds if a.dynamic_sampling else 1, skip_solved=a.skip_solved,
                              skip_failed=a.skip_failed, solved_at=a.solved_at, failed_at=a.failed_at)
        return PhasePlan(index, name, p.kind, sampling if p.online else None, kl=kl,
                         selection=selection if p.online else None,
                         dpo=DPOParams(kl.coef, p.loss, p.label_smoothing))  # beta: the KL's coefficient
    if p.kind == "ppo":  # k1 against the reference folded into the token rewards; no KL term in the loss
        kl = KLPlan("k1", p.kl_coef, "reward", p.reference, _served("k1", lora)) if p.kl_coef > 0 else KLPlan()
        staleness = 0
    else:
        kl = KLPlan(a.kl_kind, a.beta, "loss", p.reference, _served(a.kl_kind, lora)) if a.beta > 0 else KLPlan()
        staleness = cfg.train.max_staleness if p.kind == "grpo" else 0
    # stale samples: the decoupled correction (the ratio against the learner's weights now, clipped; the sampling
    # version's logprobs in the truncated importance weight), whatever the precision
    old = "learner" if staleness and a.old_logprobs == "auto" else a.old_logprobs
    algo = AlgoParams(clip_eps=a.clip_eps, clip_eps_high=a.clip_eps_high,
                      beta=kl.coef if kl.where == "loss" else 0.0,
                      kl_kind=kl.kind if kl.where == "loss" else "none",
                      loss_agg=a.loss_agg or ("seq-mean-token-sum-norm" if a.advantage == "dr_grpo" else "token-mean"),
                      max_new_tokens=r.max_new_tokens, old_logprobs=old, tis_cap=a.tis_cap)
    selection = Selection()  # PPO: GAE with its critic, every group (config.py refuses GRPO's selection on PPO)
    if p.kind == "grpo":
        selection = Selection(a.advantage, a.adv_eps, a.max_rounds if a.dynamic_sampling else 1, a.overlong,
                              a.overlong_buffer or max(1, r.max_new_tokens // 4), a.overlong_penalty, a.skip_solved,
                              a.skip_failed, a.solved_at, a.failed_at)
    return PhasePlan(index, name, p.kind, sampling, algo, kl, staleness, selection)


def _schedule(cfg: JobConfig, p) -> dict:
    """A phase's lr, steps, prompts a step, inner steps and eval cadence: its own value, else the section's."""
    t, sampled = cfg.train, p.kind in ("grpo", "ppo", "dpo")
    out = dict(lr=(p.lr or cfg.learner.lr) if sampled else p.lr, steps=getattr(p, "steps", None),
               eval_every=p.eval_every or (t.eval_every if sampled else None), patience=p.patience or t.patience)
    if p.kind == "grpo":
        out["inner_steps"] = cfg.learner.inner_steps
    if sampled:
        out["prompts_per_step"] = p.prompts_per_step or t.prompts_per_step
    if p.kind == "dpo" and p.online:
        out["steps"] = p.steps or 100
    return out


def _served(kind: str, lora: bool) -> Served:
    if kind == "full":
        return "learner_copy"
    return "adapters_off" if lora else "reference_actor"
