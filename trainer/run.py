"""The recipe engine: run a config's phases for any task on the Ray/vLLM system.

    task   = the config's task (data, prompts, rewards' inputs, SFT targets, metrics)   tasks/
    system = rollout engines, reward and tool actors, reference, learner, critic        cluster/system.py
    plan   = each phase's KL, reference, old logprobs, schedule; the actors (decided once)  common/plan.py
    for each phase (sft | grpo | rs_sft | ppo | dpo, trainer/phases.py; the sampled ones draw, generate and
    score through trainer/acquire.py):
        begin   fresh optimizer, the phase's KL reference, engines synced
        steps   one step -> metrics -> log; every `eval_every` steps and at the phase's end a greedy eval on
                the held-out split keeps the best checkpoint by the task's primary metric; `patience` evals
                without a better one end the phase; a resumable checkpoint every `save_every` steps
        end     checkpoints/<phase name> (the next phase's default reference) and an eval

Everything a run writes lives in one run dir (common/checkpoint.py). A stopped run resumes from its last
checkpoint with `--resume`: the phase, the step inside it, the optimizer, RNGs and the data position all
come back, so the rest of the run is the run that would have happened.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from common import checkpoint as ck
from common import seeds
from common import console
from common.config import JobConfig, config_to_dict
from common.memory import check_memory, memory_plan
from common.metrics_log import MetricsLog, drop_after, plot_curves
from common.models import load_tokenizer, resolve_model
from common.types import Sampling
from tasks.base import Task
from tasks.registry import build_task, reward_components
from trainer.stops import (ActorLost, Commands, Interrupted, NothingToResume, RewardFailed, Stopped,  # noqa: F401
                           lost_actor, message, reward_error)


@dataclass
class RunState:
    """The driver's state; saved beside every checkpoint as driver_state.json."""
    phase: int = 0               # index of the phase in progress
    phase_step: int = 0          # steps of that phase done (0: the phase has not begun)
    step: int = 0                # steps done over all phases (the x axis of every curve)
    grpo_steps: int = 0          # GRPO steps done over all phases (seeds each step's sampling)
    drawn: int = 0               # training prompts drawn from the task's stream (the data position)
    weights_version: int = 0     # learner updates the engines hold (a sampled token's version counts them)
    skips: dict = field(default_factory=dict)  # the GRPO prompt pool's skips (trainer/selection.py PromptPool)
    best: float | None = None    # best primary metric so far, and where
    best_step: int | None = None
    best_phase: str | None = None
    evals_since_best: int = 0    # within the current phase
    eval_due: str | None = None  # the phase whose eval after this step is still to run (saved before it)


class StopRequested(Exception):
    """This invocation's step budget (--max-steps) is spent; the run resumes later with --resume."""


class Run:
    """One run: its dir, log, state, task and system; evaluation and checkpoints for the phases."""

    def __init__(self, cfg: JobConfig, task: Task, system, path: Path, log: MetricsLog, state: RunState,
                 policy_path: str, max_steps: int | None = None, resume_from: Path | None = None):
        self.cfg, self.task, self.system, self.path, self.log, self.state = cfg, task, system, path, log, state
        self.policy_path, self.resume_from = policy_path, resume_from
        self.engines_stale = False  # the learner has moved since the engines last received its weights
        self.stop_at = None if max_steps is None else state.step + max_steps
        self.peak_rss: dict = {}  # GiB by actor group, read when the run ends
        self.memory_plan = None  # common/memory.py MemoryPlan: each actor's expected peak, logged beside the measured
        self.doing = "the set-up"  # what the run is doing, for a stop's message
        self.in_flight = None  # the running phase's launches in flight, saved with a resumable checkpoint
        self.saved_step = state.step if resume_from is not None else None  # the step checkpoints/last holds
        if resume_from is not None:
            system.resume_version(state.weights_version)

    def start_optimizer(self, lr: float, total_steps: int, fresh: bool) -> None:
        """A phase's optimizer and schedule; resuming inside the phase, its saved moments and schedule position
        on top (the schedule's shape is code, not state, so it is rebuilt first)."""
        self.system.reset_optimizer(lr, total_steps)
        if not fresh:
            self.system.load_trainer_state(str(self.resume_from))

    def check_budget(self) -> None:
        """After a step or a phase: with --max-steps spent, leave a resumable checkpoint and stop."""
        if self.stop_at is not None and self.state.step >= self.stop_at:
            self.save_last()  # where it is saved already, its state only
            raise StopRequested

    def trainer_state(self, phase: str) -> dict:
        """The step being scored as a reward function reads it (TRL's `trainer_state`, rewards/user.py)."""
        steps = [p.steps for p in self.cfg.train.phases]
        return {"global_step": self.state.step + 1, "max_steps": sum(steps) if None not in steps else 0,
                "phase": phase}

    def memory_metrics(self) -> dict[str, float]:
        """Each actor group's measured peak so far (the largest of its processes on this node, GiB) beside the
        memory plan's figure for one of its processes: memory/<group>_peak_gib, memory/<group>_plan_gib."""
        read = getattr(self.system, "peak_rss_now", None)
        if read is None:
            return {}
        planned = {a.role: a.peak_gib for a in self.memory_plan.actors} if self.memory_plan is not None else {}
        out = {}
        for group, values in read().items():
            values = [v for v in values if v is not None]
            if values:
                out[f"memory/{group}_peak_gib"] = round(max(values), 3)
            role = {"rollout": "engine"}.get(group, group)
            if role in planned:
                out[f"memory/{group}_plan_gib"] = round(planned[role], 3)
        return out

    @property
    def metric(self) -> str:
        return "eval/agent" if self.cfg.rollout.agent is not None else f"eval/{self.task.primary_metric}"

    def sync_if_stale(self) -> None:
        if self.engines_stale:
            self.system.sync_weights()
            self.engines_stale = False

    def evaluate(self) -> dict:
        """Greedy answers to the held-out split, scored by the task; with the task's `eval_samples`, also that many
        sampled answers per question (their consistency). trainer/evaluate.py, as jobs/eval.py."""
        from trainer.evaluate import answer, sample_statistics

        self.sync_if_stale()
        t = time.perf_counter()
        if self.cfg.rollout.agent is not None:
            return self.evaluate_agent(t)
        prompts, examples = self.task.prompts("eval"), self.task.splits["eval"]
        print(f"[eval] greedy answers for {len(prompts)} held-out examples ...", flush=True)
        r, n = self.cfg.rollout, self.task.eval_samples
        sampling = Sampling(n, r.temperature, r.top_p, r.max_new_tokens) if n else None
        ans = answer(self.system.engines, self.task, examples, prompts, r.max_new_tokens, sampling,
                     seeds.eval_samples(r.seed), turns=self.system.generate if self.system.tools is not None else None)
        out = {f"eval/{k}": v for k, v in ans.means().items()}
        out["eval/seconds_per_answer"] = ans.seconds / len(ans.texts)
        if ans.rollout is not None:  # multi-turn: turns, tool calls and their errors of the greedy answers
            from rollout.turns import turn_metrics

            out.update({f"eval/{k}": v for k, v in turn_metrics(ans.rollout).items()})
        if ans.sampled is not None:
            out.update({f"eval/{k}": v for k, v in sample_statistics(self.task, ans.sampled, examples, n).items()})
        return {**out, "eval/n": len(ans.texts), "eval/context": self.task.contexts.get("eval", "gold"),
                "eval/seconds": time.perf_counter() - t, "eval/sample": ans.texts[0][:200]}

    def evaluate_agent(self, t: float) -> dict:
        """rollout.agent: one session of the agent per held-out row (the run's sampling, the eval's seed), scored as
        in training; eval/agent is the mean reward of the sessions that got one, eval/agent/<part> each part's."""
        from cluster.agents import agent_metrics

        examples = self.task.splits["eval"]
        print(f"[eval] agent sessions for {len(examples)} held-out rows ...", flush=True)
        rows = [self.task.reward_inputs(ex) for ex in examples]
        r = self.cfg.rollout
        rollout = self.system.agent_sessions(rows, Sampling(1, r.temperature, r.top_p, r.max_new_tokens),
                                             seeds.eval_samples(r.seed))
        scored = self.system.score(rollout, rows, self.trainer_state("eval"))
        out = {f"eval/{k}": v for k, v in agent_metrics(rollout).items()}
        for name, values in [("agent", scored.rewards), *((k, v) for k, v in scored.components.items()
                                                          if k.startswith("agent/"))]:
            got = [v for v in values if v is not None]
            if got:
                out[f"eval/{name}"] = sum(got) / len(got)
        return {**out, "eval/n": len(rows), "eval/seconds": time.perf_counter() - t,
                "eval/sample": rollout.texts[0][:200]}

    def eval_and_keep_best(self, phase: str) -> None:
        """Evaluate; keep checkpoints/best by the task's primary metric."""
        m = self.evaluate()
        s = self.state
        self.log.eval(s.step, {**m, "phase": phase})
        if self.metric not in m:  # every held-out answer went unscored (the user's reward returned None or failed)
            s.evals_since_best += 1
            self.log.info(f"eval at step {s.step}: no held-out answer got a value of {self.metric} (the reward gave "
                          "none or failed on each); the best checkpoint stays as it was")
        elif s.best is None or m[self.metric] > s.best:
            s.best, s.best_step, s.best_phase, s.evals_since_best = m[self.metric], s.step, phase, 0
            ck.atomic_checkpoint(self.path / "checkpoints" / "best",
                                 lambda p: self.system.save(str(p), False), {**asdict(s), "eval": m})
        else:
            s.evals_since_best += 1

    def save_last(self) -> None:
        """checkpoints/last; the one it replaces is kept as step-N while train.keep_checkpoints allows. Where last
        holds this step already (saved before its eval), only its driver state is rewritten."""
        ckpts, keep = self.path / "checkpoints", self.cfg.train.keep_checkpoints
        last = ckpts / "last"
        self.state.weights_version = self.system.weights_version
        if self.saved_step == self.state.step and ck.resumable(last):
            ck.update_driver_state(last, asdict(self.state))
            return
        previous = None
        if keep > 1 and ck.resumable(last) and (step := ck.load_driver_state(last)["step"]) != self.state.step:
            previous = ck.step_folder(ckpts, step)
        ck.atomic_checkpoint(last, self._save_resumable, asdict(self.state), previous)
        ck.prune(ckpts, keep - 1)
        self.saved_step = self.state.step

    def _save_resumable(self, folder) -> None:
        """The learner's state, and the samples generated ahead of it (trainer/stream.py): the data position in
        the state is past their prompts, so a resumed run trains on them rather than drawing them again."""
        from trainer.stream import save_in_flight

        self.system.save(str(folder), True)
        launches = self.in_flight() if self.in_flight is not None else []
        if launches:
            save_in_flight(folder, launches)

    def eval_done(self) -> None:
        """After the eval of a step checkpointed before it: the checkpoint's state says so (a stop from here on
        does not run that eval again on resume)."""
        if self.saved_step == self.state.step:
            self.save_last()

    def save_phase_end(self, name: str) -> Path:
        return ck.atomic_checkpoint(self.path / "checkpoints" / name, lambda p: self.system.save(str(p), False))

    def phase_start_model(self, index: int) -> str:
        """The model phase `index` started from, as a folder: the previous phase's end checkpoint (or the
        initial policy for the first phase). Needed when a run resumes inside a phase."""
        if index == 0:
            return self.policy_path
        prev = self.cfg.train.phase_names()[index - 1]
        return str(self.path / "checkpoints" / prev)


def prepare(cfg: JobConfig, resume: str | None,
            commands: Commands | None = None) -> tuple[Path, RunState, Path | None]:
    """(run dir, state, checkpoint to resume from). A fresh run never appends to an old one: an old run dir of
    the same name is kept beside it, renamed. `--resume` where no checkpoint is: NothingToResume naming the command
    that starts the run (nothing is created)."""
    run_name = cfg.train.run_name or time.strftime("run-%Y%m%d-%H%M%S")
    path = Path(resume) if resume not in (None, "auto") else Path(cfg.train.output_dir) / run_name
    ckpt = ck.find_resumable(path) if resume else None
    if resume and ckpt is None:
        why = (f"{path} holds no checkpoint (the run stopped before its first save)" if path.is_dir()
               else f"there is no run folder {path}" + ("" if cfg.train.run_name or resume != "auto" else
                                                          " (name the run to continue: train.run_name=...)"))
        raise NothingToResume(f"--resume: nothing to resume: {why}; start the run with: "
                              f"{(commands or Commands()).start_over()}")
    if not resume and (path / "metrics.jsonl").exists():
        path.rename(path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}"))
    path.mkdir(parents=True, exist_ok=True)
    state = RunState(**{k: v for k, v in ck.load_driver_state(ckpt).items() if k in RunState.__dataclass_fields__}) \
        if ckpt is not None else RunState()
    return path, state, ckpt


def load_task(cfg: JobConfig) -> tuple[str, Task]:
    """(policy folder or hub id, the task with its data loaded and every train/eval prompt built): everything
    that can fail on bad input, done before a run dir or an actor exists."""
    from tasks.registry import check_rewards

    policy_path = resolve_model(cfg.model.policy, cfg.model.cache_dir)
    task = build_task(cfg, load_tokenizer(policy_path))
    check_rewards(task, cfg)  # the user's reward functions import and fit the task's fields
    check_tools(task, cfg)
    check_agent(cfg)
    task.prompts("train"), task.prompts("eval")
    check_memory(memory_plan(cfg, policy_path))  # each actor's expected peak against the node: fits, or the fix
    return policy_path, task


def check_agent(cfg: JobConfig) -> None:
    """rollout.agent imports and takes (client, row, **agent_params) before any actor starts; ConfigError naming the
    fix (the openai client it is given is the `envs` extra's)."""
    from common.config import ConfigError
    from common.usercode import UserCodeError

    if cfg.rollout.agent is None:
        return
    from cluster.agents import load_agent

    try:
        import openai  # noqa: F401
    except ImportError:
        raise ConfigError("rollout.agent is given an openai.AsyncOpenAI client, and the openai package is not "
                          "installed: pip install 'raygrpo[envs]'") from None
    try:
        load_agent(cfg.rollout.agent, cfg.rollout.agent_params)
    except UserCodeError as err:
        raise ConfigError(f"rollout.agent: {err}") from None


def check_tools(task: Task, cfg: JobConfig) -> None:
    """The multi-turn tools before any actor starts: search needs a QA task's contexts; a user tool imports and has
    call(arg). ConfigError naming the fix."""
    from common.config import ConfigError
    from common.usercode import UserCodeError
    from tools.toolbox import check_user_tool, needs_index

    for i, tool in enumerate(cfg.tools.use):
        if tool.fn:
            try:
                check_user_tool(tool.model_dump())
            except UserCodeError as err:
                raise ConfigError(f"tools.use.{i} ({tool.name}): {err}") from None
        if needs_index(tool.model_dump()) and not task.retrievable:
            what = "search" if not tool.fn else f"{tool.name} (its class takes index_dir)"
            raise ConfigError(f"tools.use.{i}: {what} reads a dense index over the task's contexts, and task "
                              f"{task.name!r} has none; use a QA task (mlqa, domain_qa) or another tool")


def run(cfg: JobConfig, resume: str | None = None, max_steps: int | None = None,
        loaded: tuple[str, Task] | None = None, fleet=None, commands: Commands | None = None) -> dict:
    """Run every phase of `cfg` (or the rest of them, resuming; at most `max_steps` steps in this call);
    return the run's summary. `loaded` is `load_task(cfg)` when the caller has it already. `fleet`: the actors to
    borrow (cluster/fleet.py: a Fleet, or a FleetPool that lends one); None starts the run's own and ends it after.
    A stop before the end raises `Stopped` (trainer/stops.py) saying what happened, the intact checkpoint and the
    `commands` that continue the run."""
    from trainer.phases import PHASES

    policy_path, task = loaded or load_task(cfg)
    commands = commands or Commands()
    path, state, ckpt = prepare(cfg, resume, commands)
    logs = console.attach(path / "logs")
    redone = drop_after(path / "metrics.jsonl", state.step) if ckpt is not None else 0
    log = MetricsLog(path / "metrics.jsonl")
    if redone:  # a run stopped between checkpoints logged steps its checkpoint does not hold: they run again
        log.info(f"resuming after step {state.step}: {redone} step/eval records of later steps removed (they run "
                 "again)", data={"redone_records": redone})
    log.info(f"run dir {path.resolve()}" + (f" (engine and library logs: {logs.parent})" if logs else ""), data={"task": task.name, **task.stats,
                                                **{f"train_prompts_{k}": v for k, v in task.prompt_stats("train").items()},
                                                **{f"eval_prompts_{k}": v for k, v in task.prompt_stats("eval").items()}})
    for note in task.stats.get("notes", []):  # what the task skipped of the user's data, and why
        log.info(note)
    add_trackers(cfg, log, path)
    if ckpt is not None:
        log.info(f"resuming from {ckpt} after step {state.step} (phase {state.phase}, step {state.phase_step})")
    (path / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    system, r, finished = None, None, True
    doing = "the set-up (the dense index, the actors)"
    try:
        mplan = memory_plan(cfg, policy_path)  # checked before (load_task); the lines a person reads first
        if cfg.learner.max_tokens_per_micro_batch == "auto" and mplan.notes:  # auto: the largest budget that fits
            cfg = cfg.model_copy(update={"learner": cfg.learner.model_copy(
                update={"max_tokens_per_micro_batch": mplan.budget})})
        log.info("memory plan (GiB, each process's expected peak): " + " | ".join(mplan.describe()),
                 data={"memory_plan": {a.role: round(a.peak_gib, 3) for a in mplan.actors}})
        system = open_system_for(cfg, task, policy_path, ckpt, fleet, path, log)
        r = Run(cfg, task, system, path, log, state, policy_path, max_steps, resume_from=ckpt)
        r.memory_plan = mplan
        if cfg.retrieval.enabled:
            from trainer.rag import attach_retrieval

            r.task, info = attach_retrieval(system, task, cfg)
            log.info("retrieval: contexts replaced by top-k passages", data=info)
        if ckpt is None and cfg.train.eval_at_start:
            r.doing = "the eval at the start"
            r.eval_and_keep_best("base")
        names = cfg.train.phase_names()
        for i in range(state.phase, len(cfg.train.phases)):
            phase = cfg.train.phases[i]
            PHASES[phase.kind](r, i, names[i], phase).execute()
    except StopRequested:
        finished = False
        log.info(f"stopped after {max_steps} steps as asked (--max-steps); continue with: "
                 f"{commands.again(path.name, resume)}")
    except BaseException as err:
        stop = stopped(err, path, log, r.doing if r is not None else doing, system, commands, resume)
        raise stop from (err if type(stop) is Stopped else None)  # ours named in one line; anything else chained
    finally:
        try:
            if r is not None:
                r.peak_rss = system.peak_rss_gib()  # while the actors live
            if system is not None and cfg.cluster.backend == "ray":  # an export cycle of Ray's metrics agent where
                import os  # it is short (at most 1 s), so a short run's last gauges reach the Prometheus endpoint

                time.sleep(min(1.0, 2 * int(os.environ.get("RAY_metrics_report_interval_ms", "10000")) / 1000))
        finally:
            if system is not None:
                system.shutdown()
            log.close(finished)
    return finish(r, finished)


def open_system_for(cfg: JobConfig, task: Task, policy_path: str, ckpt: Path | None, fleet, path: Path,
                    log: MetricsLog):
    """The run's system on its actors (borrowed from `fleet`, or its own), the dense index a tool reads built first;
    the lines that say what it chose."""
    from cluster.system import open_system
    from tools.toolbox import needs_index

    tool_index = None
    if any(needs_index(t.model_dump()) for t in cfg.tools.use):  # the dense index a tool reads, built once
        from trainer.rag import open_index

        _, status, index_dir, n_docs = open_index(task, cfg)
        tool_index = str(index_dir)
        log.info(f"search tool: the dense index over {n_docs} contexts at {index_dir} ({status})")
    system = open_system(cfg, policy_path, reward_components(cfg), init_path=str(ckpt) if ckpt else None,
                         tool_index=tool_index, fleet=fleet,
                         log_dir=None if console.verbose() else path / "logs")
    log.info(precision_line(cfg, system), precision=system.precisions)
    log.info("plan: " + " | ".join(system.plan.describe()), data={"plan": system.plan.describe()})
    if cfg.cluster.backend == "ray":  # the step metrics on the cluster's Prometheus endpoint as well
        from cluster.metrics_export import PrometheusSink, endpoint

        log.sinks.append(PrometheusSink(path.name))
        log.info(f"metrics exported to Prometheus at {endpoint()} (gauges raygrpo_*)")
    return system


def stopped(err: BaseException, path: Path, log: MetricsLog, where: str, system, commands: Commands,
            resume: str | None) -> Stopped:
    """The one message of a stop (trainer/stops.py), written to metrics.jsonl as a `stop` record (not to the console:
    the command line prints it once); a stop that is not one we name leaves its traceback in logs/."""
    import traceback

    actor, failed = lost_actor(err), reward_error(err)
    if actor is not None:  # one line, not Ray's page of actor details (those are in the run log)
        if system is not None:
            system.fleet.broken = True  # a borrowed fleet too: the next run starts a new one
        kind, what = ActorLost, f"actor {actor} died in {where} ({type(err).__name__})"
    elif failed is not None:  # the user's function or server, named with its sample (not Ray's traceback page)
        kind, what = RewardFailed, f"stopped in {where}: {failed}"
    elif isinstance(err, KeyboardInterrupt):
        kind, what = Interrupted, f"interrupted (Ctrl-C) in {where}"
    else:
        kind, what = Stopped, f"stopped in {where} by {type(err).__name__}: {err}"
        trace = path / "logs" / "stop-traceback.txt"
        try:
            trace.parent.mkdir(parents=True, exist_ok=True)
            trace.write_text("".join(traceback.format_exception(err)))
            what += f" (traceback: {trace})"
        except OSError:
            pass
    text = message(what, path, commands, resume)
    try:
        log.write({"kind": "stop", "time": time.time(), "message": text, "error": type(err).__name__,
                     "detail": str(err)[:4000]})
    except Exception:  # noqa: BLE001 -- the stop is said by the caller either way
        pass
    return kind(text)


def add_trackers(cfg: JobConfig, log: MetricsLog, path: Path) -> None:
    """The trackers the config asks for, as sinks of the run's log; one that cannot start is said once and the run
    goes on without it."""
    from common.metrics_log import MLflowSink, TensorBoardSink

    L = cfg.logging
    wanted = [("logging.tensorboard", lambda: TensorBoardSink(path / "tensorboard"))] if L.tensorboard else []
    if L.mlflow:
        wanted.append(("logging.mlflow", lambda: MLflowSink(path, config_to_dict(cfg), L.mlflow_tracking_uri,
                                                            L.mlflow_experiment or f"raygrpo-{cfg.task.name}")))
    for key, make in wanted:
        try:
            sink = make()
        except Exception as err:  # noqa: BLE001 -- a tracker never stops training
            log.info(f"{key}: the tracker did not start ({type(err).__name__}: {err}); training goes on without it")
            continue
        log.sinks.append(sink)
        if isinstance(sink, MLflowSink):
            log.info(f"MLflow run {sink.run_id} at {sink.uri}")
    console.quiet_library_loggers()  # trackers install console handlers of their own on import


def precision_line(cfg: JobConfig, system) -> str:
    """What `precision: auto` chose on each actor's node and the figures it was decided on, where the importance
    ratio's denominator comes from, and what the sync check compares (all from the run plan)."""
    from common.precision import Choice, isa_summary

    c, plan = system.choices, system.plan
    engines = sorted({Choice(**e).describe() for e in c["engines"]})
    parts = [f"learner {Choice(**c['learner']).describe()}", f"engines {' / '.join(engines)}"]
    parts += [f"{role} {c[role]['precision']}" for role in ("reference", "critic") if role in c]
    old = ratio_denominator(plan)
    check = system.weights.check
    stat = "largest" if check.precision == "fp32" else "mean"
    return (f"precision: {'; '.join(parts)} [learner.precision={cfg.learner.precision}, rollout.dtype="
            f"{cfg.rollout.dtype}; this node: {isa_summary()}]; ratio's old logprobs: {old}; sync check: {stat} "
            f"probe gap <= {check.tolerance:g}")


def ratio_denominator(plan) -> str:
    """Where the importance ratio's old logprobs come from, per RL phase when they differ (the plan's, after every
    phase's own algo changes: a phase's TIS cap is its own)."""
    said = []
    for p in plan.phases:
        if p.algo is None:
            continue
        a = p.algo
        said.append(("the learner's own" + (f" (TIS against the engine's, cap {a.tis_cap:g})" if a.tis_cap is not None
                                             else "")) if a.old_logprobs == "learner" else "the engine's")
    if not said:
        return "none (no RL phase)"
    if len(set(said)) == 1:
        return said[0]
    return "; ".join(f"{p.name}: {x}" for p, x in zip([p for p in plan.phases if p.algo is not None], said))


def finish(r: Run, finished: bool = True) -> dict:
    png = plot_curves(r.path / "metrics.jsonl", r.path / "curves.png", title=r.path.name,
                      primary=r.task.primary_metric)
    s = r.state
    summary = {"run_dir": str(r.path.resolve()), "finished": finished, "task": r.task.name, "primary_metric": r.metric,
               f"best_{r.task.primary_metric}": s.best, "best_step": s.best_step, "best_phase": s.best_phase,
               "steps": s.step, "phases": r.cfg.train.phase_names(), "curves": str(png.resolve()),
               "metrics": str((r.path / "metrics.jsonl").resolve()),
               "best_checkpoint": str((r.path / "checkpoints" / "best").resolve()),
               "last_checkpoint": str((r.path / "checkpoints" / "last").resolve()),
               "peak_rss_gib": r.peak_rss}
    (r.path / "summary.json").write_text(json.dumps(summary, indent=1))
    for k, v in summary.items():
        print(f"{k}: {v}")
    return summary


def parse_args(argv=None, description: str = "", prog: str | None = None):
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", help="a YAML file, or a preset's name (raygrpo presets; jobs/configs/*.yaml); "
                                    "defaults are the MLQA paper's")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="start a single-node Ray cluster in this process")
    where.add_argument("--inprocess", action="store_true", help="no Ray: plain objects in this process (debug)")
    p.add_argument("--resume", nargs="?", const="auto", help="resume a run dir (default: output_dir/run_name)")
    p.add_argument("--verbose", action="store_true", help="engine and library logs on the console too (else they "
                                                          "go to the run folder's logs/)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps, leaving a checkpoint to --resume from "
                                                 "(time-boxed or preemptible allocations)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.phases.0.steps=2")
    return p.parse_args(argv)


def load_job(config: str | None, overrides: list[str], only_task: str | None = None) -> JobConfig:
    """The validated config (common/config.py) checked against the task and reward registries; ConfigError
    naming the fix otherwise."""
    from common.config import ConfigError, load_config
    from tasks.registry import check_job

    cfg = load_config(config, overrides)
    if only_task and cfg.task.name != only_task:
        raise ConfigError(f"this job script runs task '{only_task}', the config names task '{cfg.task.name}'; "
                          "run it with jobs/train.py --config ...")
    check_job(cfg)
    return cfg


def main(argv=None, description: str = "", only_task: str | None = None, prog: str | None = None,
         fleet=None) -> int:
    """Command line of every training entry point: config + overrides -> checks -> run. Bad config, data or reward
    function, or --resume with nothing to resume: exit 2 with the message, before any actor starts; a run that
    stopped mid-way (an actor lost, a reward that failed, any other error): exit 3 with one message naming the intact
    checkpoint and the command that continues; Ctrl-C: that message alone, exit 130. `fleet`: the actors the run
    borrows (a Fleet or FleetPool of a process that runs many commands; None: the run starts and ends its own)."""
    import sys

    from common.config import ConfigError

    commands = Commands(prog or f"python {sys.argv[0]}", sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, description, prog)
    console.quiet(args.verbose)
    overrides = list(args.overrides)
    if args.local:
        overrides.append("cluster.backend=ray")
    if args.inprocess:
        overrides.append("cluster.backend=inprocess")
    if args.max_steps is not None and args.max_steps < 1:
        print("error: --max-steps must be >= 1", file=sys.stderr)
        return 2
    try:
        try:
            cfg = load_job(args.config, overrides, only_task)
            if cfg.model.trust_remote_code:  # this process and, through runtime.actor_env, every actor
                import os

                from common.models import TRUST_ENV

                os.environ[TRUST_ENV] = "1"
            if cfg.cluster.backend == "ray":
                from cluster.runtime import check_reachable

                check_reachable(cfg.cluster.address)
            loaded = load_task(cfg)
        except (ConfigError, FileNotFoundError, ValueError, ConnectionError) as err:  # config, cluster, model, data
            print(f"error: {err}", file=sys.stderr)
            return 2
        try:
            run(cfg, resume=args.resume, max_steps=args.max_steps, loaded=loaded, commands=commands, fleet=fleet)
        except NothingToResume as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except Interrupted as err:
            print(f"\n{err}", file=sys.stderr)
            return err.exit_code
        except Stopped as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
    except KeyboardInterrupt:  # before the run began (nothing was written), or a second Ctrl-C while it stopped
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0
