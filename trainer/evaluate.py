"""The one evaluation of a model on a task's examples: greedy answers scored by the task, and optionally n sampled
answers per example. Training's periodic eval (trainer/run.py: means, for the best checkpoint) and jobs/eval.py
(means with bootstrap CIs, per-item rows, the sampling distribution) both call `answer`; generation goes through
cluster/engines.py, so the same prompts and seed give the same answers in both.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from common.stats import bootstrap_ci
from common.types import Rollout, Sampling


@dataclass
class Answers:
    texts: list[str]                    # [Q] greedy answers
    per_item: dict[str, list[float]]    # the task's per-example metrics of the greedy answers
    seconds: float                      # greedy generation
    sampled: list[str] | None = None    # [Q * n] sampled answers, example-contiguous
    sampled_seconds: float = 0.0
    rollout: Rollout | None = None      # multi-turn: the greedy transcripts (their turns, calls, observations)

    def means(self) -> dict[str, float]:
        """Every metric's mean over the items that have it (None: an answer no reward scored)."""
        from tasks.base import means

        return means(self.per_item)


def answer(engines, task, examples: list, prompts: list[list[int]], max_new_tokens: int,
           sampling: Sampling | None = None, seed: int = 0, batch: int | None = None,
           progress: bool = False, turns=None) -> Answers:
    """Greedy answers to `prompts` (the task's prompts of `examples`), scored by the task; with `sampling`,
    also `sampling.group_size` sampled answers per example (seeded by `seed`). `batch` prompts per call to the
    engines (None: all at once), with a progress bar when `progress`. `turns(prompt_ids, sampling, seed)`: the
    multi-turn generation with tools (TrainingSystem.generate), greedy at temperature 0; the answers are whole
    transcripts then, observations included."""
    t, greedy = time.perf_counter(), None
    if turns is not None:
        greedy = turns(prompts, Sampling(1, 0.0, 1.0, max_new_tokens), seed)
        texts = greedy.texts
    else:
        texts = engines.greedy(prompts, max_new_tokens, batch=batch, progress="greedy" if progress else None)
    out = Answers(texts, task.score(texts, examples), time.perf_counter() - t, rollout=greedy)
    if sampling is not None and sampling.group_size > 0:
        t = time.perf_counter()
        rollout = turns(prompts, sampling, seed) if turns is not None else \
            engines.generate(prompts, sampling, seed, batch=batch, progress="sampled" if progress else None)
        out.sampled, out.sampled_seconds = rollout.texts, time.perf_counter() - t
    return out


def summarize(per: dict[str, list[float | None]], seed: int) -> dict:
    """n, and for every metric its mean and bootstrap 95% CI (`<metric>_ci`) over the items that have it (None: an
    answer no reward scored; `<metric>_n` then says how many did)."""
    n = len(next(iter(per.values())))
    out: dict = {"n": n}
    for k, v in per.items():
        got = [x for x in v if x is not None]
        if not got:
            continue
        out[k] = sum(got) / len(got)
        out[f"{k}_ci"] = bootstrap_ci(got, seed=seed)
        if len(got) < n:
            out[f"{k}_n"] = len(got)
    return out


def sample_statistics(task, texts: list[str], items, n: int) -> dict[str, float]:
    """The means of the task's per-example statistics of n sampled answers per example (e.g. consistency)."""
    groups = [texts[q * n:(q + 1) * n] for q in range(len(items))]
    return {k: sum(v) / len(v) for k, v in task.score_samples(groups, items).items() if v}


def sample_distribution(task, texts: list[str], items, n: int) -> dict:
    """n runs of one sampled answer per item: mean/std/min/max of every metric over the runs, best-of-n of the
    primary metric, and the means of the task's per-item statistics of the n samples."""
    runs = [task.score(texts[j::n], items) for j in range(n)]
    out: dict = {"samples": n}
    for metric in runs[0]:
        vals = [sum(r[metric]) / len(r[metric]) for r in runs]
        out.update({f"{metric}_mean": statistics.mean(vals), f"{metric}_std": statistics.pstdev(vals),
                    f"{metric}_min": min(vals), f"{metric}_max": max(vals)})
    p = task.primary_metric
    out[f"best_of_n_{p}"] = sum(max(r[p][q] for r in runs) for q in range(len(items))) / len(items)
    out.update(sample_statistics(task, texts, items, n))
    return out
