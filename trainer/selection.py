"""What a GRPO step learns from: which prompts it draws, which groups it keeps, which samples enter its loss (the
pieces; trainer/acquire.py draws, generates and scores with them).

  prompt pool        (algo.skip_solved / skip_failed) a prompt whose K answers were all right (reward >= solved_at)
                     on a visit is skipped on its next `skip_solved` visits; all wrong (<= failed_at), `skip_failed`.
                     The skips live in the run state, so a resumed run skips what the uninterrupted one would.
  dynamic sampling   (algo.dynamic_sampling, DAPO) a group whose K rewards are all equal has zero advantage: it is
                     dropped, and more prompts are drawn, up to `max_rounds` generation calls a step (each one batch
                     on the engines), until the step has prompts_per_step groups with a signal; if the rounds run out
                     it trains on the groups it has (none at all: on the last round's, as plain GRPO would).
                     Groups beyond prompts_per_step are dropped (the step's batch keeps its size).
  overlong           (algo.overlong) soft: DAPO's length penalty added to the reward (rewards/overlong.py) before
                     anything above looks at it; mask: samples cut at max_new_tokens leave the loss (GRPOPhase.step).

"""
from __future__ import annotations

from common.plan import Selection
from common.types import ScoredRollout
from tasks.base import PromptBatch


def best_worst_pairs(rewards: list[float | None], group_size: int) -> list[tuple[int, int]]:
    """Online DPO's pairs: for each group of G whose rewards differ, (its best sample, its worst) as row indices;
    ties go to the earlier sample. Groups with equal rewards give no pair; unscored samples (None) are never paired.
        >>> best_worst_pairs([0.2, 0.9, 0.1, 0.5, 0.5, 0.5], 3)
        [(1, 2)]
        >>> best_worst_pairs([1, 0, 1, 0], 4)
        [(0, 1)]
        >>> best_worst_pairs([None, 0.5, 0.2], 3)
        [(1, 2)]
    """
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards are not groups of {group_size}")
    out = []
    for g in range(0, len(rewards), group_size):
        rs = rewards[g:g + group_size]
        js = [j for j in range(group_size) if rs[j] is not None]
        if len(js) < 2:
            continue
        best, worst = max(js, key=lambda j: (rs[j], -j)), min(js, key=lambda j: (rs[j], j))
        if rs[best] != rs[worst]:
            out.append((g + best, g + worst))
    return out


def group_verdicts(rewards: list[float | None], group_size: int, solved_at: float,
                   failed_at: float) -> tuple[list[bool], list[str | None]]:
    """Per group of G: (has a signal = its scored rewards are not all equal, 'right' | 'wrong' | None).

    'right': every scored answer's reward >= solved_at; 'wrong': every one <= failed_at; unscored answers (None)
    count for neither, and a group with no scored answer has no verdict.
        >>> group_verdicts([1, 1, 0, 0, 1, 1, 0.5, 0], 2, solved_at=1.0, failed_at=0.0)
        ([False, False, False, True], ['right', 'wrong', 'right', None])
        >>> group_verdicts([None, 1, None, None], 2, solved_at=1.0, failed_at=0.0)
        ([False, False], ['right', None])
    """
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards are not groups of {group_size}")
    signal, verdict = [], []
    for g in range(len(rewards) // group_size):
        rs = [x for x in rewards[g * group_size:(g + 1) * group_size] if x is not None]
        if not rs:
            signal.append(False)
            verdict.append(None)
            continue
        signal.append(any(x != rs[0] for x in rs))
        verdict.append("right" if min(rs) >= solved_at else "wrong" if max(rs) <= failed_at else None)
    return signal, verdict


class PromptPool:
    """Skips prompts the policy recently answered all right (or all wrong). `skips` maps a train-split index (as a
    string: it is saved as JSON) to [visits left to skip, 'right' | 'wrong'] and is updated in place."""

    def __init__(self, skips: dict, skip_solved: int, skip_failed: int):
        self.skips, self.after = skips, {"right": skip_solved, "wrong": skip_failed}

    def draw(self, task, start: int, n: int) -> tuple[PromptBatch, int, dict[str, int]]:
        """(n prompts from the stream at `start` that are not being skipped, the position after them, how many
        were skipped for each verdict)."""
        idx, pos, skipped = [], start, {"right": 0, "wrong": 0}
        while len(idx) < n:  # ends: every visit spends one of a prompt's skips
            i = task.position(pos)
            pos += 1
            left = self.skips.get(str(i))
            if left is not None:
                skipped[left[1]] += 1
                if left[0] <= 1:
                    del self.skips[str(i)]
                else:
                    left[0] -= 1
                continue
            idx.append(i)
        return task.batch_of(idx), pos, skipped

    def record(self, indices: list[int], verdicts: list[str | None]) -> None:
        for i, v in zip(indices, verdicts, strict=True):
            if v is not None and self.after[v] > 0:
                self.skips[str(i)] = [self.after[v], v]


def shape_overlong(scored: ScoredRollout, sel: Selection, max_new_tokens: int) -> ScoredRollout:
    """Soft overlong punishment added to the rewards, logged as the `overlong` component."""
    if sel.overlong != "soft":
        return scored
    from rewards.overlong import soft_overlong_penalty

    pen = soft_overlong_penalty([len(c) for c in scored.rollout.completion_ids], max_new_tokens,
                                min(sel.overlong_buffer, max_new_tokens), sel.overlong_penalty)
    return ScoredRollout(scored.rollout, [None if r is None else r + p for r, p in zip(scored.rewards, pen, strict=True)],
                         {**scored.components, "overlong": pen})
