"""Stateless reward scoring of a batch of completions (served by reward actors, see rewards/actors.py).

A reward function that raises on one sample is a bug in our code or data, not bad model output: the
scorer re-raises with the sample attached so the step fails loudly. Garbage model output scores per
its rule (low) and is counted through the components.
"""
from __future__ import annotations

from dataclasses import dataclass

from rewards.qa import extract_answer, qa_reward


@dataclass(frozen=True)
class QARewardParams:
    f1_weight: float = 0.7
    em_weight: float = 0.3
    length_free_tokens: int = 64
    length_coef: float = 0.001


class RewardError(RuntimeError):
    """A reward function raised on a sample; the message carries the sample."""


class QAScorer:
    def __init__(self, params: QARewardParams = QARewardParams()):
        self.params = params

    def score(self, texts: list[str], num_tokens: list[int], golds: list[list[str]],
              langs: list[str]) -> tuple[list[float], dict[str, list[float]]]:
        """[B] completions -> ([B] rewards, {"f1", "em", "length_penalty", "empty"}: [B] each)."""
        p = self.params
        rewards: list[float] = []
        comps: dict[str, list[float]] = {"f1": [], "em": [], "length_penalty": [], "empty": []}
        for i, (text, n, g, lang) in enumerate(zip(texts, num_tokens, golds, langs)):
            try:
                pred = extract_answer(text)
                r, parts = qa_reward(pred, g, lang, n, p.f1_weight, p.em_weight,
                                     p.length_free_tokens, p.length_coef)
            except Exception as err:
                raise RewardError(f"reward raised on sample {i}: {type(err).__name__}: {err}; "
                                  f"completion={text[:200]!r} golds={g!r} lang={lang!r}") from err
            rewards.append(r)
            for k, v in parts.items():
                comps[k].append(v)
            comps["empty"].append(float(not pred))
        return rewards, comps
