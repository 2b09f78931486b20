"""How a sampled phase gets its samples (grpo, ppo, online dpo, rs_sft): draw prompts -> generate -> score, written
once here, with the plan's choice of what to learn from (trainer/selection.py: dynamic sampling's rounds, the prompt
pool, the soft overlong penalty) or, with train.overlap, the next step's generation started while this step learns.

It owns the run state's data-position counters: `drawn` (prompts taken from the training stream, skipped ones too)
and `grpo_steps` (sampled steps, the seeds' step number), so a resumed run draws and samples exactly what the
uninterrupted one did (each generation call has its own seed: common/seeds.py). Under overlap the state counts
consumed batches only: a checkpoint never skips prompts, and a resumed run generates its next batch again.
"""
from __future__ import annotations

import math

from common import seeds
from common.plan import PhasePlan
from common.types import ScoredRollout
from tasks.base import PromptBatch
from trainer.selection import PromptPool, group_verdicts, shape_overlong


class Acquisition:
    """A phase's source of scored samples: `step` for a training step's (`prompts` groups), `batches` for RS-SFT's
    collection. `run`: the trainer's Run (its task, system, state and config)."""

    def __init__(self, run, plan: PhasePlan, prompts: int):
        self.run, self.plan, self.prompts = run, plan, prompts
        self.pending = None  # overlap: (batch, its generation in flight or done) for the next step
        self.staleness = 0  # learner updates between the weights that sampled this step's batch and the learner's

    # ---- the one draw -> generate -> score ---------------------------------------------------------------------
    def _draw(self, n: int, pool: PromptPool | None) -> tuple[PromptBatch, dict[str, int]]:
        """The next n prompts of the training stream (the pool's skips left out); the data position advances."""
        s = self.run.state
        if pool is not None:
            batch, s.drawn, skipped = pool.draw(self.run.task, s.drawn, n)
            return batch, skipped
        batch, s.drawn = self.run.task.train_batch(s.drawn, n), s.drawn + n
        return batch, {"right": 0, "wrong": 0}

    def _score(self, rollout, batch: PromptBatch) -> ScoredRollout:
        sel = self.plan.selection
        scored = self.run.system.score(rollout, batch.reward_inputs, self.run.trainer_state(self.plan.name))
        return shape_overlong(scored, sel, self.plan.sampling.max_new_tokens) if sel is not None else scored

    def _sample(self, batch: PromptBatch, seed: int, timer) -> ScoredRollout:
        with timer("generate"):
            rollout = self.run.system.generate(batch.prompt_ids, self.plan.sampling, seed=seed,
                                               rows=batch.reward_inputs)
        with timer("reward"):
            return self._score(rollout, batch)

    # ---- a training step's samples -----------------------------------------------------------------------------
    def step(self, timer, more: bool = False) -> tuple[PromptBatch, ScoredRollout, dict]:
        """One step's prompts, their scored samples, and its sampling/ and pool/ metrics. Overlapped (the plan's):
        the batch generated during the previous step (or now), and the next one started when `more` steps follow."""
        if self.plan.overlap:
            return self._overlapped(timer, more)
        return self._rounds(timer)

    def _rounds(self, timer) -> tuple[PromptBatch, ScoredRollout, dict]:
        """draw -> generate -> score, dropping groups without a signal and drawing again under dynamic sampling."""
        s, sel, G = self.run.state, self.plan.selection, self.plan.sampling.group_size
        rseed, prompts = self.run.cfg.rollout.seed, self.prompts
        pool = PromptPool(s.skips, sel.skip_solved, sel.skip_failed) if sel.pool else None
        s.grpo_steps += 1
        parts: list[tuple[PromptBatch, ScoredRollout]] = []
        kept = drawn = right = wrong = with_signal = rounds = 0
        skipped = {"right": 0, "wrong": 0}
        n, last = prompts, None
        for rnd in range(sel.dynamic_rounds):
            batch, sk = self._draw(n, pool)
            skipped = {k: skipped[k] + sk[k] for k in skipped}
            seed = seeds.grpo_step(rseed, s.grpo_steps) if rnd == 0 else seeds.dynamic_round(rseed, s.grpo_steps, rnd)
            scored = self._sample(batch, seed, timer)
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
        self.run.system.rest_engines()  # the step's generation is done: with rollout.sleep, the GPU goes to learning
        if not parts:  # no group had a signal in any round: the last round's, as plain GRPO trains on
            parts = [last]
        metrics = {"sampling/prompts_drawn": drawn, "sampling/groups_kept": kept if sel.dynamic else drawn,
                   "sampling/signal_frac": with_signal / drawn, "sampling/all_right": right, "sampling/all_wrong": wrong,
                   "sampling/rounds": rounds, "sampling/samples_per_update": drawn * G,
                   "sampling/short": float(sel.dynamic and kept < prompts)}
        if pool is not None:
            metrics.update({"pool/skipped_solved": skipped["right"], "pool/skipped_failed": skipped["wrong"],
                            "pool/skipping": len(s.skips)})
        return PromptBatch.concat([b for b, _ in parts]), ScoredRollout.concat([sc for _, sc in parts]), metrics

    def _overlapped(self, timer, more: bool) -> tuple[PromptBatch, ScoredRollout, dict]:
        """train.overlap: this step's batch was generated while the previous step learned, by weights one update
        older than the learner's; the ratio against the engine's logprobs is then the off-policy correction."""
        s, system = self.run.state, self.run.system
        with timer("generate"):  # only what the learning step did not hide
            batch, done = self.pending or self._launch()
            rollout, version = done if isinstance(done, tuple) else system.engines.collect(done)
        self.pending = None
        self.staleness = system.weights_version - version  # learner updates since these samples' weights
        s.drawn, s.grpo_steps = s.drawn + self.prompts, s.grpo_steps + 1
        if more:
            self.pending = self._launch()
        with timer("reward"):
            scored = self._score(rollout, batch)
        return batch, scored, {}

    def _launch(self):
        """Start generating the batch at the data position after the one being consumed (the state counts consumed
        batches only)."""
        s = self.run.state
        batch = self.run.task.train_batch(s.drawn, self.prompts)
        return batch, self.run.system.engines.generate_async(
            batch.prompt_ids, self.plan.sampling, seed=seeds.grpo_step(self.run.cfg.rollout.seed, s.grpo_steps + 1))

    def finish_pending(self, timer) -> None:
        """Overlap: wait for the next step's generation before the weight sync (which would queue behind it)."""
        if self.pending is not None and not isinstance(self.pending[1], tuple):
            with timer("generate_wait"):
                self.pending = (self.pending[0], self.run.system.engines.collect(self.pending[1]))

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
