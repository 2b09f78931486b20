"""Long-form domain QA (the similarity + repetition reward system): answer in a full sentence.

Offline data built from XQuAD the way the system's references are shaped: each question's reference
answer is the sentence of its context that contains the gold span (located by the span's offset,
tasks/squad.py `reference_sentence`). The policy sees the context and the question (the QA base, tasks/qa.py)
and should answer in a sentence or two.
Reward: MiniLM cosine similarity to the reference - a repetition penalty (repeated word 3-grams and
near-duplicate sentences), both served by the reward actors (`similarity`, `repetition`).
Metrics, read off those two rewards: accuracy at a similarity threshold (primary), mean similarity,
repetition rate (answers with any repetition), answer length in tokens, and, over `eval_samples` = 3 sampled
answers per question, their consistency (all three on the same side of the threshold) and the spread of
their similarities. The engine logs generation seconds beside them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rewards.registry import RepetitionReward, SimilarityReward
from tasks.qa import QAParams, QATask
from tasks.squad import QAExample, reference_sentence

DOMAIN_TEMPLATE = ("Answer the question in one or two complete sentences, using the context.\n"
                   "Context: {context} Question: {question}")


@dataclass(frozen=True)
class DomainExample:
    id: str
    context: str
    question: str
    reference: str
    lang: str


@dataclass(frozen=True)
class DomainQAParams(QAParams):
    template: str = DOMAIN_TEMPLATE
    threshold: float = 0.7               # similarity at or above which an answer counts as correct
    encoder: str | None = None           # None = the packaged all-MiniLM-L6-v2 (as the similarity reward)

    def __post_init__(self):
        super().__post_init__()
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}")


class DomainQATask(QATask):
    name = "domain_qa"
    primary_metric = "accuracy"
    reward_fields = frozenset({"reference"})
    default_rewards = ({"name": "similarity", "weight": 1.0, "params": {}},
                       {"name": "repetition", "weight": 1.0, "params": {}})
    eval_samples = 3
    Params = DomainQAParams

    @staticmethod
    def from_qa(example: QAExample) -> DomainExample:
        return DomainExample(example.id, example.context, example.question, reference_sentence(example),
                             example.lang)

    def reward_inputs(self, example: DomainExample) -> dict:
        return {"reference": example.reference}

    def sft_target(self, example: DomainExample) -> str:
        return example.reference

    def similarities(self, texts: list[str], examples: Sequence[DomainExample]) -> list[float]:
        """[B] the `similarity` reward, with the task's encoder."""
        return self.reward_parts(SimilarityReward(encoder=self.params.encoder), texts, examples)[0]

    def metrics(self, texts: list[str], examples: Sequence[DomainExample]) -> dict[str, list[float]]:
        sims = self.similarities(texts, examples)
        _, rep = self.reward_parts(RepetitionReward(encoder=self.params.encoder), texts, examples)
        return {
            "accuracy": [float(s >= self.params.threshold) for s in sims],
            "similarity": sims,
            "repetition_rate": [float(a > 0 or b > 0) for a, b in zip(rep["sentence"], rep["ngram"], strict=True)],
        }

    def score_samples(self, samples: list[list[str]], examples: Sequence[DomainExample]) -> dict[str, list[float]]:
        """Per question, over its n sampled answers: do they agree on correct-or-not (consistency), and how far
        apart are their similarities (spread = max - min)."""
        flat = [t for group in samples for t in group]
        sims = self.similarities(flat, [ex for ex, group in zip(examples, samples, strict=True) for _ in group])
        out: dict[str, list[float]] = {"consistency": [], "sample_spread": [], "sample_similarity": []}
        start = 0
        for group in samples:
            s = sims[start:start + len(group)]
            start += len(group)
            ok = [x >= self.params.threshold for x in s]
            out["consistency"].append(float(all(ok) or not any(ok)))
            out["sample_spread"].append(max(s) - min(s))
            out["sample_similarity"].append(sum(s) / len(s))
        return out
