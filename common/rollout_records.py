"""Every GRPO/PPO step's samples as a Parquet dataset in the run folder: what was asked, what the policy answered,
how each reward component scored it, its advantage and its logprob statistics.

    runs/<name>/rollouts/step-000012.parquet   one file per step, one row per sample

A step's file is written aside and renamed into place, so a crash leaves whole files only; a resumed run
rewrites the steps it repeats (same name), so the dataset never holds a step twice. Read it with
`pandas.read_parquet(run / "rollouts")` or `datasets.load_dataset("parquet", data_files=str(run / "rollouts/*.parquet"))`;
`python jobs/samples.py <run>` prints a step's best and worst samples.

Columns: step, phase, prompt (index in the step), sample (index in its group), train_index (position in the
train split), prompt_text, completion, reward, reward/<component> ... (null where the sample got no reward), advantage (per-token advantages are
averaged, PPO), completion_tokens, finish_reason, logprob_mean (the engine's, per token), ref_logprob_mean and
kl_k1_mean (when a reference scored the step), reward_inputs (JSON); multi-turn steps (tools, agent sessions) also
policy_tokens, turns (JSON: each policy turn's text, each tool call with its argument, status, observation and token
count; an agent session's requests and its outcome) and the sample's completion_ids and policy_mask.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

DIR = "rollouts"


def _num(x) -> float | str | None:
    """A reward's value or part as a record holds it (a text column a reward function logged stays text)."""
    return x if x is None or isinstance(x, str) else float(x)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if len(xs) else None


def step_rows(step: int, phase: str, group_size: int, train_indices: list[int], prompt_texts: list[str],
              reward_inputs: list[dict], completions: list[str], completion_ids: list[list[int]],
              finish_reasons: list[str], rewards: list[float], components: dict[str, list[float]],
              advantages: Sequence, old_logprobs: list[list[float]], ref_logprobs: list[list[float]],
              policy_mask: list[list[int]] | None = None, turns: list[list[dict]] | None = None,
              versions: list[list[int]] | None = None, learner_version: int | None = None) -> list[dict]:
    """One row per sample; the per-prompt lists ([P]) are repeated over each prompt's `group_size` samples ([B]).
    Multi-turn samples (`policy_mask`) average their logprobs over the policy's tokens and keep their turns.
    `versions`: the weights version that sampled each completion token (-1: not sampled, an observation), kept
    with the learner's version this step updated from (`learner_version`) and the sample's largest staleness."""
    rows = []
    for i, text in enumerate(completions):
        p = i // group_size
        adv = advantages[i] if i < len(advantages) else None
        adv = _mean(adv) if isinstance(adv, (list, tuple)) else adv
        lp, ref = old_logprobs[i], (ref_logprobs[i] if ref_logprobs else None)
        if policy_mask is not None:  # the engine's logprobs exist for the policy's tokens only
            keep = [t for t, m in enumerate(policy_mask[i]) if m]
            lp, ref = [lp[t] for t in keep], ([ref[t] for t in keep] if ref else None)
        row = {"step": step, "phase": phase, "prompt": p, "sample": i % group_size, "train_index": train_indices[p],
               "prompt_text": prompt_texts[p], "completion": text, "reward": _num(rewards[i]),
               **{f"reward/{k}": _num(v[i]) for k, v in components.items()},
               "advantage": None if adv is None else float(adv), "completion_tokens": len(completion_ids[i]),
               "finish_reason": finish_reasons[i], "logprob_mean": _mean(lp),
               "ref_logprob_mean": _mean(ref) if ref else None,
               "kl_k1_mean": _mean([a - b for a, b in zip(lp, ref)]) if ref else None,
               "reward_inputs": json.dumps(reward_inputs[p], ensure_ascii=False, default=str)}
        if turns is not None:
            # the sample's ids as the engines consumed and sampled them, token in, token out (agent sessions too)
            row.update(policy_tokens=len(lp), turns=json.dumps(turns[i], ensure_ascii=False, default=str),
                       completion_ids=list(completion_ids[i]), policy_mask=list(policy_mask[i]))
        if versions is not None:
            own = [v for v in versions[i] if v >= 0]
            row.update(weights_versions=list(versions[i]), learner_version=learner_version,
                       staleness_max=(learner_version - min(own)) if own and learner_version is not None else None)
        rows.append(row)
    return rows


def write_step(run: Path, step: int, rows: list[dict]) -> Path:
    """rollouts/step-<step>.parquet, written aside then renamed (atomic on one filesystem)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(run) / DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:06d}.parquet"
    tmp = folder / f".step-{step:06d}.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)
    return path


def read(run: Path, step: int | None = None):
    """The run's samples as a pandas DataFrame (one step's, or all)."""
    import pandas as pd

    folder = Path(run) / DIR
    files = [folder / f"step-{step:06d}.parquet"] if step is not None else sorted(folder.glob("step-*.parquet"))
    files = [f for f in files if f.is_file()]
    if not files:
        raise FileNotFoundError(f"no rollout records under {folder}" + (f" for step {step}" if step is not None else "")
                                + "; they are written by GRPO and PPO steps (train.rollout_records)")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
