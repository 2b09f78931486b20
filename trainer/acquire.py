"""How a sampled phase gets its samples (grpo, ppo, online dpo, rs_sft): draw prompts -> generate -> score, written
once here, with the plan's choice of what to learn from (trainer/selection.py: dynamic sampling's rounds, the prompt
pool, the soft overlong penalty). A step's first generation comes from the sample stream (trainer/stream.py): made
now and waited for (train.max_staleness 0), or launched up to max_staleness steps earlier, while earlier steps
learned; dynamic sampling's extra rounds are generated when the step finds it lacks groups with a signal.

It owns the run state's data-position counters: `drawn` (prompts taken from the training stream, skipped ones too,
launches in flight included) and `grpo_steps` (sampled steps consumed, the seeds' step number), so a resumed run
draws and samples exactly what the uninterrupted one did (each generation call has its own seed: common/seeds.py;
the launches in flight at a checkpoint are saved with it: trainer/stream.py).
"""
from __future__ import annotations

import math

from common import seeds
from common.plan import PhasePlan
from common.types import ScoredRollout
from tasks.base import PromptBatch
from trainer.selection import PromptPool, group_verdicts, shape_overlong
from trainer.stream import Launch, SampleStream, load_in_flight, staleness_metrics


class Acquisition:
    """A phase's source of scored samples: `step` for a training step's (`prompts` groups), `batches` for RS-SFT's
    collection. `run`: the trainer's Run (its task, system, state and config)."""

    def __init__(self, run, plan: PhasePlan, prompts: int):
        self.run, self.plan, self.prompts = run, plan, prompts
        self.stream = SampleStream(plan.staleness, self._generate, self._score)
        self.staleness = 0  # the most learner updates a token of this step's samples is behind the learner's
        self.version = 0  # the learner's weights version this step's update starts from (what staleness counts to)

    def begin(self, fresh: bool) -> None:
        """A phase resumed inside: the launches its checkpoint held come first (none for a fresh phase)."""
        self.stream.close()
        if not fresh:
            self.stream.restore(load_in_flight(self.run.resume_from, self.plan.name))
        self.run.in_flight = self.stream.snapshot  # what a checkpoint saves of this phase (trainer/run.py)

    def close(self) -> None:
        self.stream.close()
        if getattr(self.run, "in_flight", None) == self.stream.snapshot:
            self.run.in_flight = None

    # ---- the one draw -> generate -> score ---------------------------------------------------------------------
    def _draw(self, n: int, pool: PromptPool | None) -> tuple[PromptBatch, dict[str, int]]:
        """The next n prompts of the training stream (the pool's skips left out); the data position advances."""
        s = self.run.state
        if pool is not None:
            batch, s.drawn, skipped = pool.draw(self.run.task, s.drawn, n)
            return batch, skipped
        batch, s.drawn = self.run.task.train_batch(s.drawn, n), s.drawn + n
        return batch, {"right": 0, "wrong": 0}

    def _generate(self, batch: PromptBatch, seed: int):
        return self.run.system.generate(batch.prompt_ids, self.plan.sampling, seed=seed, rows=batch.reward_inputs)

    def _score(self, rollout, batch: PromptBatch, state: dict | None = None) -> ScoredRollout:
        sel = self.plan.selection
        scored = self.run.system.score(rollout, batch.reward_inputs, state or self.run.trainer_state(self.plan.name))
        return shape_overlong(scored, sel, self.plan.sampling.max_new_tokens) if sel is not None else scored

    def _sample(self, batch: PromptBatch, seed: int, timer) -> ScoredRollout:
        with timer("generate"):
            rollout = self._generate(batch, seed)
        with timer("reward"):
            return self._score(rollout, batch)

    def _launch(self, step: int, pool: PromptPool | None, ahead: bool = True) -> Launch:
        """Step `step`'s first generation drawn and handed to the stream, with the reward functions' view of that
        step (trainer_state) fixed now."""
        batch, skipped = self._draw(self.prompts, pool)
        state = {**self.run.trainer_state(self.plan.name), "global_step": self.run.state.step + 1
                 + (step - self.run.state.grpo_steps)}
        return self.stream.launch(Launch(self.plan.name, step, batch, skipped,
                                         seeds.grpo_step(self.run.cfg.rollout.seed, step),
                                         self.run.system.weights_version, state), ahead)

    # ---- a training step's samples -----------------------------------------------------------------------------
    def step(self, timer, remaining: int = 0) -> tuple[PromptBatch, ScoredRollout, dict]:
        """One step's prompts, their scored samples, and its sampling/, pool/ and staleness metrics. `remaining`:
        the phase's steps after this one; the stream launches theirs up to train.max_staleness ahead, with the
        weights of now, before this step learns."""
        s, sel, G = self.run.state, self.plan.selection, self.plan.sampling.group_size
        rseed, prompts = self.run.cfg.rollout.seed, self.prompts
        pool = PromptPool(s.skips, sel.skip_solved, sel.skip_failed) if sel.pool else None
        s.grpo_steps += 1
        first = self.stream.take() or self._launch(s.grpo_steps, pool, ahead=False)
        while len(self.stream.pending) < min(self.plan.staleness, remaining):  # the next steps', at this version
            self._launch(s.grpo_steps + len(self.stream.pending) + 1, pool)
        version = self.version = self.run.system.weights_version  # the learner's, this step's update starts from
        with timer("generate"):  # what the step waits for: all of it at max_staleness 0, else what was not hidden
            if first.generated is not None:
                first.generated.result()
        with timer("reward"):
            scored = first.result()
        parts: list[tuple[PromptBatch, ScoredRollout]] = []
        kept = drawn = right = wrong = with_signal = rounds = 0
        skipped = dict(first.skipped)
        n, last, batch = prompts, None, first.batch
        for rnd in range(sel.dynamic_rounds):
            if rnd:
                batch, sk = self._draw(n, pool)
                skipped = {k: skipped[k] + sk[k] for k in skipped}
                scored = self._sample(batch, seeds.dynamic_round(rseed, s.grpo_steps, rnd), timer)
            signal, verdict = group_verdicts(scored.rewards, G, sel.solved_at, sel.failed_at)
            if pool is not None:
                pool.record(batch.indices, verdict)
            rounds, drawn = rounds + 1, drawn + n
            right, wrong = right + verdict.count("right"), wrong + verdict.count("wrong")
            with_signal += sum(signal)
            picked = [g for g in range(n) if signal[g]] if sel.dynamic else list(range(n))
            picked = picked[:prompts - kept]
            if picked:
                parts.append((batch.groups(picked), scored.groups(picked)))
                kept += len(picked)
            last = (batch, scored)
            if kept >= prompts:
                break
            n = min(math.ceil((prompts - kept) / max(kept / drawn, 0.25)), 4 * prompts)
        if not self.stream.pending:  # no generation ahead: with rollout.sleep, the GPU goes to learning
            self.run.system.rest_engines()
        if not parts:  # no group had a signal in any round: the last round's, as plain GRPO trains on
            parts = [last]
        batch, scored = PromptBatch.concat([b for b, _ in parts]), ScoredRollout.concat([sc for _, sc in parts])
        ages = staleness_metrics(scored.rollout, version, self.plan.staleness)
        self.staleness = ages["rollout/staleness"]
        metrics = {"sampling/prompts_drawn": drawn, "sampling/groups_kept": kept if sel.dynamic else drawn,
                   "sampling/signal_frac": with_signal / drawn, "sampling/all_right": right, "sampling/all_wrong": wrong,
                   "sampling/rounds": rounds, "sampling/samples_per_update": drawn * G,
                   "sampling/short": float(sel.dynamic and kept < prompts), **ages,
                   **{f"stream/{k}_s": v for k, v in first.seconds.items()}, "stream/ahead": len(self.stream.pending)}
        if pool is not None:
            metrics.update({"pool/skipped_solved": skipped["right"], "pool/skipped_failed": skipped["wrong"],
                            "pool/skipping": len(s.skips)})
        return batch, scored, metrics

    # ---- RS-SFT's collection -----------------------------------------------------------------------------------
    def batches(self, prompts: int, timer, chunk: int = 32):
        """(prompt batch, scored samples) for `prompts` training prompts, `chunk` at a time (RS-SFT's collection);
        the engines rest after the last (its SFT steps follow)."""
        s, done = self.run.state, 0
        while done < prompts:
            n = min(chunk, prompts - done)
            batch, _ = self._draw(n, None)
            done += n
            yield batch, self._sample(batch, seeds.rs_sft(self.run.cfg.rollout.seed, s.drawn), timer)
        self.run.system.rest_engines()
