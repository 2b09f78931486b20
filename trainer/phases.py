"""The five kinds of phase a recipe is made of, each a `begin` and a ~30-line `step`.

  sft     supervised fine-tuning on the task's gold targets (token-mean cross-entropy on the target tokens)
  grpo    generate K per prompt -> score -> reference logprobs -> group advantages -> clipped surrogate + KL
          -> broadcast weights (Shao et al. 2024; the MLQA paper's seed hyperparameters are the defaults)
  rs_sft  rejection-sampled SFT: sample K per prompt from the current policy, keep the distinct finished
          completions whose reward passes a threshold, fine-tune on them (the "SFT on its own correct traces"
          stage of GRPO -> SFT -> GRPO)
  ppo     the same rollouts with a critic: per-token GAE advantages, KL in the rewards, PPO epochs over
          minibatches (the NLU paper's PPO; OpenRLHF/verl conventions)
  dpo     direct preference optimisation against a frozen reference: pairs from a file, or online from the
          policy's own K samples (each group's best over its worst by the task's reward) (Rafailov et al. 2023)

Every phase starts with a fresh optimizer (its own lr and schedule over its own steps). A GRPO phase's KL
reference is explicit (`reference`: the model the phase started from by default, as the papers do after
SFT). The loop around the steps (eval, best checkpoint, patience, checkpoints, logs) is `Phase.execute`.
Deliberate simplifications of GRPO: the policy optimised is the temperature-1 model (the sampling
temperature only shapes exploration, as in OpenRLHF); top-p truncation is not corrected for in the ratio.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager

from common import seeds
from common.types import ScoredRollout, TrainBatch
from cluster.agents import agent_metrics
from rollout.turns import turn_metrics
from trainer.acquire import Acquisition


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        yield
        key = f"timing/{name}"  # a stage timed more than once a step (dynamic sampling's rounds): the sum
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t


class Phase:
    """The loop every phase shares; subclasses set `steps` in `begin` and implement `step`. The schedule (lr, steps,
    prompts a step, eval cadence, patience) is the run plan's (common/plan.py), resolved from the phase's own fields
    and the sections' defaults there, never here."""

    def __init__(self, run, index: int, name: str, cfg):
        self.run, self.index, self.name, self.cfg = run, index, name, cfg
        self.job = run.cfg
        self.plan = run.system.plan.phases[index]  # sampling, algorithm, KL and its reference (common/plan.py)
        self.steps = 0

    def begin(self, fresh: bool) -> None:
        raise NotImplementedError

    def opened(self, fresh: bool) -> None:
        """After `begin`: what lives as long as the phase runs in this process starts (the sample stream)."""

    def closed(self) -> None:
        """The phase ended here, or stopped (an error, a stop): what `opened` started ends."""

    def step(self, k: int) -> dict:
        raise NotImplementedError

    def execute(self) -> None:
        r, s = self.run, self.run.state
        fresh = s.phase != self.index or s.phase_step == 0
        s.phase, s.evals_since_best = self.index, (0 if fresh else s.evals_since_best)
        self.begin(fresh)
        self.opened(fresh)
        try:
            self._steps(fresh)
        finally:
            self.closed()

    def _steps(self, fresh: bool) -> None:
        r, s = self.run, self.run.state
        r.log.info(f"phase {self.name} ({self.cfg.kind}): {self.steps} steps"
                   + ("" if fresh else f", resuming after step {s.phase_step}"),
                   data={"phase": self.name, "kind": self.cfg.kind, "steps": self.steps, "start_step": s.step})
        eval_every = self.plan.eval_every
        k, done = s.phase_step, False
        if s.eval_due == self.name:  # the run stopped in the eval after step k, whose checkpoint holds that step
            done = self.evaluate(k)
        while not done and k < self.steps:
            k += 1
            r.doing = f"step {s.step + 1} (phase {self.name}, {k}/{self.steps})"
            metrics = self.step(k)
            s.step, s.phase_step = s.step + 1, k
            r.log.step(s.step, {"phase": self.name, "phase_step": k, **metrics, **r.memory_metrics()},
                       progress=(self.name, k, self.steps))
            due = k == self.steps or bool(eval_every and k % eval_every == 0)
            if due or s.step % self.job.train.save_every == 0:  # the step saved before its eval, which can fail
                s.eval_due = self.name if due else None
                r.save_last()
            if due:
                done = self.evaluate(k)
            if not done:
                r.check_budget()
        r.doing = f"the end of phase {self.name} (its checkpoints)"
        r.save_phase_end(self.name)
        s.phase, s.phase_step, s.evals_since_best = self.index + 1, 0, 0
        r.save_last()
        r.check_budget()

    def evaluate(self, k: int) -> bool:
        """The eval after step k (its checkpoint saved already); whether the phase ends here (its last step, or
        `patience` evals without a better primary metric)."""
        r, s, patience = self.run, self.run.state, self.plan.patience
        r.doing = f"the eval after step {s.step}"
        r.eval_and_keep_best(self.name)
        s.eval_due = None
        r.eval_done()
        stop = patience is not None and s.evals_since_best >= patience
        if stop:
            r.log.info(f"early stop of phase {self.name}: {patience} evals without a better {r.metric}")
        return stop or k == self.steps

    # shared by sft and rs_sft
    def sft_step(self, pairs: list[tuple], k: int, batch_size: int) -> dict:
        """`pairs`: (prompt ids, target ids) or, for gold multi-turn traces, (prompt ids, target ids, target mask)."""
        batch = [pairs[((k - 1) * batch_size + j) % len(pairs)] for j in range(batch_size)]
        t0 = time.perf_counter()
        masks = [b[2] for b in batch] if len(batch[0]) == 3 else None
        m = self.run.system.sft_step([b[0] for b in batch], [b[1] for b in batch], masks)
        self.run.engines_stale = True
        return {**m, "timing/step": time.perf_counter() - t0}


class SFTPhase(Phase):
    """Gold targets of the task's first `limit` training examples, `epochs` passes (or `steps` batches)."""

    def begin(self, fresh: bool) -> None:
        c, r = self.cfg, self.run
        self.pairs = r.task.sft_pairs(c.limit)
        if r.system.tools is not None and r.task.splits["train"] and r.task.gold_calls(r.task.splits["train"][0]):
            self.pairs = gold_traces(r.task, r.system, len(self.pairs))
            r.log.info(f"phase {self.name}: SFT on {len(self.pairs)} gold multi-turn traces (the tools' real "
                       "observations, not trained on)")
        self.steps = c.steps or max(1, math.ceil(c.epochs * len(self.pairs) / c.batch_size))
        self.run.start_optimizer(c.lr, self.steps, fresh)

    def step(self, k: int) -> dict:
        return self.sft_step(self.pairs, k, self.cfg.batch_size)


class SampledPhase(Phase):
    """What the phases that sample from the policy share (grpo, ppo, online dpo): their samples (an Acquisition,
    trainer/acquire.py), the KL reference, the rollout records and the step metrics."""

    def __init__(self, run, index, name, cfg):
        super().__init__(run, index, name, cfg)
        self.sampling, self.algo = self.plan.sampling, self.plan.algo
        self.selection = self.plan.selection  # the advantage, dynamic sampling, overlong, pool
        self.acquire = Acquisition(run, self.plan, self.plan.prompts_per_step) if self.sampling is not None else None
        self.selected: dict = {}  # this step's sampling/ and pool/ metrics
        self.shorts = 0  # dynamic sampling: steps that ran out of rounds
        self.said_unscored = False  # the first step with samples no reward scored is said in the log

    def opened(self, fresh: bool) -> None:
        if self.acquire is not None:
            self.acquire.begin(fresh)

    def closed(self) -> None:
        if self.acquire is not None:
            self.acquire.close()

    def start_reference(self, fresh: bool) -> None:
        """The phase's KL reference where the plan serves it: the model the phase starts from ('current' when it
        starts now, its saved start when a run resumes inside it), the run's initial policy, or a model spec."""
        r, kl = self.run, self.plan.kl
        if kl.kind == "none":
            return
        if kl.reference == "phase_start":
            source = "current" if fresh else r.phase_start_model(self.index)
        else:
            source = r.policy_path if kl.reference == "initial" else _resolve(kl.reference, self.job)
        r.system.set_reference(self.plan, source)

    def rollout(self, timer: "Timer", remaining: int = 0):
        """This step's prompts, samples, scores and (where the phase's KL needs them) reference logprobs;
        `remaining`: the phase's steps after this one (their samples may be generated ahead: trainer/stream.py)."""
        batch, scored, self.selected = self.acquire.step(timer, remaining)
        with timer("reference"):
            ref = self.run.system.ref_logprobs(scored.rollout, self.plan)
        return batch, scored.rollout, scored, ref

    def say_if_short(self, k: int) -> None:
        """Dynamic sampling ran out of rounds: said the first time and every 10th time after."""
        if not self.selected.get("sampling/short"):
            return
        self.shorts += 1
        if self.shorts == 1 or self.shorts % 10 == 0:
            self.run.log.info(f"dynamic sampling: step {k} of {self.name} found {self.selected['sampling/groups_kept']}"
                              f" of {self.plan.prompts_per_step} groups with a signal in {self.selected['sampling/rounds']} "
                              f"rounds ({self.shorts} such steps so far); it trains on those (raise algo.max_rounds "
                              "to draw more)")

    def record(self, batch, rollout, scored, advantages, ref) -> None:
        """This step's samples to <run>/rollouts/step-N.parquet (common/rollout_records.py)."""
        r = self.run
        if not self.job.train.rollout_records:
            return
        from common import rollout_records

        decode = r.task.tokenizer.decode
        rows = rollout_records.step_rows(
            r.state.step + 1, self.name, self.sampling.group_size, batch.indices,
            [decode(p, skip_special_tokens=False) for p in batch.prompt_ids], batch.reward_inputs, rollout.texts,
            rollout.completion_ids, rollout.finish_reasons, scored.rewards, scored.components, advantages,
            rollout.old_logprobs, ref, rollout.policy_mask, rollout.turns, rollout.versions, self.acquire.version)
        rollout_records.write_step(r.path, r.state.step + 1, rows)

    def metrics(self, batch, rollout, scored, timer: "Timer", extra: dict) -> dict:
        import torch

        from rewards.registry import component_metrics

        seconds, lens = sum(timer.seconds.values()), [len(c) for c in rollout.completion_ids]
        got = [r for r in scored.rewards if r is not None]
        rewards = torch.tensor(got or [math.nan])
        unscored = len(scored.rewards) - len(got)
        if unscored and not self.said_unscored:
            self.said_unscored = True
            self.run.log.info(f"step {self.run.state.step + 1}: {unscored} of {len(lens)} samples got no reward (their "
                              "reward returned None, or rewards.on_error=skip dropped them after an error); they leave "
                              "their groups' statistics and the loss, counted in reward/unscored every step")
        failed = [t for ts in (rollout.turns or []) for t in ts if t.get("failure")]
        if failed:  # on the console too, named as the tool's (the policy read the exception alone)
            self.run.log.info(f"step {self.run.state.step + 1}: {len(failed)} tool call(s) failed, the first: "
                              f"{failed[0]['failure']}")
        agents = [t for ts in (rollout.turns or []) for t in ts if t.get("agent_failure")]
        if agents:  # no reward for these samples (counted in agent/*), named on the console
            self.run.log.info(f"step {self.run.state.step + 1}: {len(agents)} of {len(lens)} agent session(s) got no "
                              f"reward, the first: {agents[0]['agent_failure']}")
        return {
            "reward/mean": rewards.mean().item(), "reward/std": rewards.std().item() if len(got) > 1 else 0.0,
            "reward/unscored": unscored,
            **{f"reward/{k}": v for k, v in component_metrics(scored.components, self.sampling.group_size).items()},
            **{k: v for k, v in extra.items() if k.startswith("reward/")},
            "rollout/len_mean": sum(lens) / len(lens), "rollout/len_max": max(lens),
            "rollout/hit_max_tokens_frac": sum(f == "length" for f in rollout.finish_reasons) / len(lens),
            **{k: v for k, v in extra.items() if not k.startswith("reward/")},
            **turn_metrics(rollout),  # multi-turn: turns, calls, tool errors, observation tokens
            **agent_metrics(rollout),  # rollout.agent: sessions, failures, token-in-token-out counts
            **self.run.system.last_sync,  # the probe check after this step's sync
            **timer.seconds, "timing/step": seconds, "perf/samples_per_s": len(lens) / seconds,
            "cluster/actor_restarts": self.run.system.restarts, "rollout/staleness": self.acquire.staleness,
            # the generation's own seconds (ahead of the step under train.max_staleness, the wait is less)
            "perf/tokens_per_s_generate": sum(lens) / max(extra.get("stream/generate_s")
                                                          or timer.seconds["timing/generate"], 1e-9),
            "sample/completion": rollout.texts[0][:200], "sample/reward_inputs": json.dumps(batch.reward_inputs[0])[:200],
        }


class GRPOPhase(SampledPhase):
    def begin(self, fresh: bool) -> None:
        r, p = self.run, self.plan
        self.steps = p.steps
        r.start_optimizer(p.lr, p.steps * p.inner_steps, fresh)
        self.start_reference(fresh)
        r.sync_if_stale()

    def step(self, k: int) -> dict:
        import torch

        from learner.advantages import estimate_advantages

        r, sel, timer = self.run, self.selection, Timer()
        batch, rollout, scored, ref = self.rollout(timer, remaining=self.steps - k)
        self.say_if_short(k)
        has = scored.scored  # a sample without a reward leaves its group's statistics and the loss
        adv, adv_m = estimate_advantages(sel.advantage, torch.tensor([0.0 if r is None else r for r in scored.rewards]),
                                         self.sampling.group_size,
                                         torch.tensor([max(1, len(c)) for c in rollout.completion_ids]), sel.adv_eps,
                                         scored=torch.tensor(has))
        train = TrainBatch(rollout.prompt_ids, rollout.completion_ids, rollout.old_logprobs, ref, adv.tolist(),
                           policy_mask=rollout.policy_mask)  # multi-turn: observation tokens out of the loss
        keep = [h and (sel.overlong != "mask" or f != "length") for h, f in zip(has, rollout.finish_reasons)]
        if not all(keep):  # unscored samples and, with overlong=mask, cut ones (their groups' advantages stand)
            train = keep_rows(train, keep)
        learn_m = {}
        if train.completion_ids:
            with timer("learn"):
                learn_m = r.system.train(train, self.algo, self.plan.inner_steps)
        with timer("sync"):  # waits for an engine call in flight (the stream's): no generation spans a sync
            r.system.sync_weights()
        self.record(batch, rollout, scored, adv.tolist(), ref)
        return self.metrics(batch, rollout, scored, timer, {
            **{f"reward/{k}": v for k, v in adv_m.items()}, **{f"learner/{k}": v for k, v in learn_m.items()},
            **self.selected, **({"rollout/masked_overlong": sum(h and f == "length" for h, f in
                                                                zip(has, rollout.finish_reasons))}
                                if sel.overlong == "mask" else {})})


class PPOPhase(SampledPhase):
    """PPO with a critic: the GRPO phase's rollouts and clipped surrogate, with per-token GAE advantages from a
    value model and -kl_coef * k1 folded into the token rewards; `epochs` passes over `minibatches` shuffled
    minibatches per rollout batch, the policy and the critic one optimizer step each per minibatch; the first
    `critic_warmup` steps train only the critic."""

    def begin(self, fresh: bool) -> None:
        r, c = self.run, self.cfg
        self.steps = self.plan.steps
        updates = self.steps * c.epochs * c.minibatches
        r.system.start_critic(c.critic_lr, updates, _resolve(c.critic, self.job) if c.critic else None, fresh)
        r.start_optimizer(self.plan.lr, updates, fresh)  # resuming: loads learner and critic
        self.start_reference(fresh)
        r.sync_if_stale()

    def step(self, k: int) -> dict:
        import random

        import torch

        from learner.advantages import ppo_advantages
        from learner.logprobs import from_ragged, to_ragged

        r, c, timer = self.run, self.cfg, Timer()
        batch, full, scored_full, ref_full = self.rollout(timer)
        rows = [i for i, h in enumerate(scored_full.scored) if h]  # unscored samples leave PPO's batch
        rollout, ref = full, ref_full
        scored = scored_full
        if len(rows) < len(full.completion_ids):
            rollout = full.take(rows, 1)
            scored = ScoredRollout(rollout, [scored_full.rewards[i] for i in rows], {})
            ref = [ref_full[i] for i in rows] if ref_full else ref_full
        if not rows:
            raise RuntimeError(f"PPO step {k}: no sample of the batch got a reward; check the reward components")
        with timer("values"):
            values = r.system.values(rollout)
        T = max(1, max(len(x) for x in rollout.completion_ids))
        lengths = from_ragged([[1.0] * len(x) for x in rollout.completion_ids], T)  # [B, T]
        # multi-turn: GAE runs over the policy's tokens, passing over the observations between them
        mask = lengths if rollout.policy_mask is None else from_ragged(rollout.policy_mask, T)  # [B, T]
        adv, ret, ppo_m = ppo_advantages(torch.tensor(scored.rewards), mask, from_ragged(rollout.old_logprobs, T),
                                         from_ragged(ref, T) if ref else None, from_ragged(values, T),
                                         self.plan.kl.coef, c.gamma, c.lam, c.whiten)
        adv_rows, ret_rows = to_ragged(adv, lengths), to_ragged(ret, lengths)  # 0 at observations
        rng, B = random.Random(seeds.ppo_minibatches(self.job.train.seed, k)), len(rollout.completion_ids)
        learn, critic = [], []
        own_old = None
        if self.algo.old_logprobs == "learner":  # the ratio's denominator is the learner's own
            with timer("old_logprobs"):  # logprobs before this step's updates (one pass for every minibatch)
                own_old = r.system.learner_logprobs(rollout)
        with timer("learn"):
            for _ in range(c.epochs):
                order = list(range(B))
                rng.shuffle(order)
                for mb in (sorted(order[j::c.minibatches]) for j in range(c.minibatches)):
                    pick = lambda rows: rows if rows is None else [rows[i] for i in mb]  # noqa: E731
                    critic.append(r.system.train_critic(pick(rollout.prompt_ids), pick(rollout.completion_ids),
                                                        pick(values), pick(ret_rows), c.vf_clip,
                                                        pick(rollout.policy_mask)))
                    if k > c.critic_warmup:
                        learn.append(r.system.train(TrainBatch(
                            pick(rollout.prompt_ids), pick(rollout.completion_ids), pick(rollout.old_logprobs), [],
                            pick(adv_rows), pick(own_old), policy_mask=pick(rollout.policy_mask)), self.algo, 1))
        if learn:
            r.engines_stale = True
        with timer("sync"):
            r.sync_if_stale()
        placed: list = [None] * len(full.completion_ids)  # the advantages back at their rows (unscored: none)
        for i, a in zip(rows, adv_rows):
            placed[i] = a
        self.record(batch, full, scored_full, placed, ref_full)
        mean = lambda ms: {key: sum(m[key] for m in ms) / len(ms) for key in ms[0]} if ms else {}  # noqa: E731
        learn_m = mean(learn)
        if learn:  # engine vs learner as the first minibatch of the first epoch saw them (before any update)
            learn_m.update({k: v for k, v in learn[0].items() if k.startswith(("logprob_diff", "mismatch_"))},
                           clip_frac_first=learn[0]["clip_frac"], clip_frac_last=learn[-1]["clip_frac"])
        return self.metrics(batch, full, scored_full, timer, {
            **{f"ppo/{k}": v for k, v in ppo_m.items()}, **{f"critic/{k}": v for k, v in mean(critic).items()},
            **{f"learner/{k}": v for k, v in learn_m.items()}, "ppo/policy_updates": len(learn)})


class RSSFTPhase(Phase):
    """Sample K per prompt for `prompts` training prompts, keep distinct finished completions with reward >=
    `threshold` (at most `max_per_prompt` per prompt), then SFT on them. The kept traces are written to
    <run>/rs_sft-<name>.jsonl before training, so a resumed phase trains on the same traces."""

    def begin(self, fresh: bool) -> None:
        c, r = self.cfg, self.run
        traces = r.path / f"rs_sft-{self.name}.jsonl"
        if fresh or not traces.is_file():
            self.collect(traces)
        rows = [json.loads(line) for line in traces.read_text().splitlines() if line.strip()]
        # multi-turn traces carry their policy mask: the tools' observations are context, not targets
        self.pairs = [(row["prompt_ids"], row["completion_ids"], *([row["policy_mask"]] if "policy_mask" in row
                                                                   else [])) for row in rows]
        self.steps = 0 if not self.pairs else (c.steps or max(1, math.ceil(c.epochs * len(self.pairs) / c.batch_size)))
        if not self.pairs:
            r.log.info(f"phase {self.name}: no completion passed reward >= {c.threshold}; nothing to train on")
        else:
            r.start_optimizer(c.lr, self.steps, fresh)

    def collect(self, traces) -> None:
        c, r = self.cfg, self.run
        r.sync_if_stale()
        t, kept, seen, per_prompt, rewards, done = time.perf_counter(), [], set(), {}, [], 0
        for batch, scored in Acquisition(r, self.plan, c.prompts).batches(c.prompts, Timer()):
            rewards += [x for x in scored.rewards if x is not None]
            kept += keep_passing(scored.rollout, scored.rewards, batch.indices, c.threshold, c.max_per_prompt, seen,
                                 per_prompt)
            done += len(batch.indices)
            print(f"[{self.name}] sampled {done}/{c.prompts} prompts, kept {len(kept)} completions", flush=True)
        tmp = traces.with_name(traces.name + ".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.rename(traces)
        r.log.info(f"phase {self.name}: kept {len(kept)} of {len(rewards)} sampled completions "
                   f"({len(per_prompt)} of {c.prompts} prompts had one with reward >= {c.threshold})",
                   data={"phase": self.name, "rs_sft/sampled": len(rewards), "rs_sft/kept": len(kept),
                         "rs_sft/prompts": c.prompts, "rs_sft/prompts_with_kept": len(per_prompt),
                         "rs_sft/reward_mean": sum(rewards) / max(1, len(rewards)), "rs_sft/traces": str(traces),
                         "rs_sft/seconds": time.perf_counter() - t})

    def step(self, k: int) -> dict:
        return self.sft_step(self.pairs, k, self.cfg.batch_size)


class DPOPhase(SampledPhase):
    """Direct preference optimisation against the phase's reference (learner/losses.py dpo_loss), one optimizer
    step per step. Online pairs: sample K per prompt (with dynamic sampling, until prompts_per_step groups have
    rewards that differ), pair each such group's best sample with its worst, learn, sync the engines. File pairs:
    `batch_size` pairs a step in file order, `epochs` passes (or `steps`). The reference's summed logprobs of both
    completions are computed for each step's pairs where the plan serves them (reference actor, or LoRA adapters
    off)."""

    def begin(self, fresh: bool) -> None:
        from common.data import preference_pairs

        r, c = self.run, self.cfg
        if c.online:
            self.steps = self.plan.steps
        else:
            self.pairs, skipped = preference_pairs(c.pairs, r.task.tokenizer, self.job.rollout.max_prompt_tokens,
                                                   c.limit)
            if any(skipped.values()):
                r.log.info(f"phase {self.name}: {len(self.pairs)} preference pairs from {c.pairs}; skipped "
                           + ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in skipped.items() if n),
                           data={"phase": self.name, "dpo/pairs_file": len(self.pairs),
                                 **{f"dpo/skipped_{k}": v for k, v in skipped.items()}})
            self.steps = c.steps or max(1, math.ceil(c.epochs * len(self.pairs) / c.batch_size))
        r.start_optimizer(self.plan.lr, self.steps, fresh)
        self.start_reference(fresh)
        r.sync_if_stale()

    def learn(self, prompts: list[list[int]], chosen: list[list[int]], rejected: list[list[int]],
              timer: Timer, engine_logprobs: list[list[float]] | None = None,
              policy_masks: list[list[int]] | None = None) -> dict:
        """`engine_logprobs`, `policy_masks` (multi-turn): [2P] chosen, rejected, chosen, ..."""
        from common.types import PreferenceBatch

        r = self.run
        with timer("reference"):  # chosen, rejected, chosen, ...: each pair's two rows share their prompt
            ref = r.system.ref_sequence_logps([p for p in prompts for _ in range(2)],
                                              [x for pair in zip(chosen, rejected) for x in pair], self.plan,
                                              policy_masks)
        with timer("learn"):
            m = r.system.dpo_step(PreferenceBatch(prompts, chosen, rejected, ref[0::2], ref[1::2], engine_logprobs,
                                                  policy_masks), self.plan.dpo)
        r.engines_stale = True
        return {**m, "dpo/pairs": len(prompts)}

    def step(self, k: int) -> dict:
        from trainer.selection import best_worst_pairs

        r, timer = self.run, Timer()
        if not self.cfg.online:
            n = self.cfg.batch_size
            rows = [self.pairs[((k - 1) * n + j) % len(self.pairs)] for j in range(n)]
            m = self.learn(*map(list, zip(*rows)), timer)
            return {**m, **timer.seconds, "timing/step": sum(timer.seconds.values())}
        batch, scored, self.selected = self.acquire.step(timer)
        rollout = scored.rollout
        self.say_if_short(k)
        pairs = best_worst_pairs(scored.rewards, self.sampling.group_size)
        learn_m = {"dpo/pairs": 0}
        if pairs:
            pick = lambda rows, side: [rows[p[side]] for p in pairs]  # noqa: E731
            both = lambda rows: None if rows is None else [rows[i] for pair in pairs for i in pair]  # noqa: E731
            learn_m = self.learn(pick(rollout.prompt_ids, 0), pick(rollout.completion_ids, 0),
                                 pick(rollout.completion_ids, 1), timer, both(rollout.old_logprobs),
                                 both(rollout.policy_mask))
            with timer("sync"):
                r.sync_if_stale()
        labels = [0.0] * len(rollout.completion_ids)  # the rollout records' "advantage": +1 chosen, -1 rejected
        for c, j in pairs:
            labels[c], labels[j] = 1.0, -1.0
        self.record(batch, rollout, scored, labels, [])
        return self.metrics(batch, rollout, scored, timer, {**learn_m, **self.selected})


def gold_traces(task, system, limit: int) -> list[tuple[list[int], list[int], list[int]]]:
    """SFT targets with tools: for each of the first `limit` training examples, its gold calls (`<tool>arg</tool>`,
    the policy's), the tool actors' real observations of them (context, mask 0) and its final answer with EOS (the
    policy's): (prompt ids, target ids, target mask)."""
    tok, train = task.tokenizer, task.splits["train"][:limit]
    golds = [task.gold_calls(ex) for ex in train]
    calls = [c for calls, _ in golds for c in calls]
    observed = iter(system.run_tools(calls))
    out = []
    for prompt, (calls, answer) in zip(task.prompts("train"), golds):
        ids, mask = [], []
        for name, arg in calls:
            span = tok.encode(f"<{name}>{arg}</{name}>", add_special_tokens=False)
            obs = next(observed).ids
            ids, mask = ids + span + obs, mask + [1] * len(span) + [0] * len(obs)
        span = task.target_ids(answer)
        out.append((prompt, ids + span, mask + [1] * len(span)))
    return out


def keep_rows(batch: TrainBatch, keep: list[bool]) -> TrainBatch:
    """The rows of a GRPO batch where `keep` is true (dropping a row = masking it out of every loss term)."""
    return batch.rows([i for i, k in enumerate(keep) if k])


def keep_passing(rollout, rewards: list[float], prompt_indices: list[int], threshold: float,
                 max_per_prompt: int | None, seen: set, per_prompt: dict) -> list[dict]:
    """The samples of `rollout` worth fine-tuning on: finished (stopped, not cut at the token limit), reward >=
    `threshold`, not a repeat of a kept completion of the same prompt (whitespace-normalised), at most
    `max_per_prompt` per prompt. `seen` and `per_prompt` carry over between batches and are updated.
    Samples are group-contiguous: sample i answers prompt `prompt_indices[i // G]`."""
    out = []
    for i, (text, reward) in enumerate(zip(rollout.texts, rewards, strict=True)):
        p = prompt_indices[i // rollout.group_size]
        key = (p, " ".join(text.split()))
        if (reward is None or reward < threshold or rollout.finish_reasons[i] != "stop" or key in seen
                or per_prompt.get(p, 0) >= (max_per_prompt or math.inf)):
            continue
        seen.add(key)
        per_prompt[p] = per_prompt.get(p, 0) + 1
        out.append({"prompt_index": p, "prompt_ids": rollout.prompt_ids[i],
                    "completion_ids": rollout.completion_ids[i], "text": text, "reward": reward,
                    **({"policy_mask": rollout.policy_mask[i]} if rollout.policy_mask is not None else {})})
    return out


def _resolve(spec: str, job) -> str:
    from common.models import resolve_model

    return resolve_model(spec, job.model.cache_dir)


PHASES = {"sft": SFTPhase, "grpo": GRPOPhase, "rs_sft": RSSFTPhase, "ppo": PPOPhase, "dpo": DPOPhase}
