"""Long-form domain QA (the similarity + repetition reward system): answer in a full sentence.

Offline data built from XQuAD the way the system's references are shaped: each question's reference
answer is the sentence of its context that contains the gold span (located by the span's offset). The
policy sees the context and the question and should answer in a sentence or two.
Reward: MiniLM cosine similarity to the reference - a repetition penalty (repeated word 3-grams and
near-duplicate sentences), both served by the reward actors (`similarity`, `repetition`).
Metrics: accuracy at a similarity threshold (primary), mean similarity, repetition rate (answers with any
repetition), answer length in tokens, and, over `eval_samples` = 3 sampled answers per question, their
consistency (all three on the same side of the threshold) and the spread of their similarities. The
engine logs generation seconds beside them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rewards.qa import MLQA_LANGS
from tasks.base import Task
from tasks.mlqa import load_qa_splits
from tasks.squad import QAExample, load_examples, source_lang

DOMAIN_TEMPLATE = ("Answer the question in one or two complete sentences, using the context.\n"
                   "Context: {context} Question: {question}")
# CJK full stops end a sentence without a following space (Chinese text has none)
_SENTENCE_END = re.compile(r"(?<=[.!?।])\s+|(?<=[。！？])\s*|\n+")


def containing_sentence(context: str, start: int, length: int) -> str:
    """The sentence of `context` that holds the span [start, start + length) (sentences end at . ! ? and
    Devanagari's danda followed by space, at CJK full stops, or at a newline); a span across a boundary takes both.

    >>> containing_sentence("Ann met Bob. Bob met Cy in Rome. The end.", 21, 2)
    'Bob met Cy in Rome.'
    """
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(context)]  # where each sentence begins
    end = max(start, start + length - 1)
    first = max(i for i, b in enumerate(starts) if b <= start)
    last = max(i for i, b in enumerate(starts) if b <= end)
    stop = starts[last + 1] if last + 1 < len(starts) else len(context)
    return context[starts[first]:stop].strip()


def split_sentences(context: str) -> list[str]:
    """The sentences of `context` by the same rule as containing_sentence.

    >>> split_sentences("Ann met Bob. Bob met Cy in Rome. The end.")
    ['Ann met Bob.', 'Bob met Cy in Rome.', 'The end.']
    """
    return [s.strip() for s in _SENTENCE_END.split(context) if s.strip()]


def reference_sentence(ex: QAExample) -> str:
    """The reference answer of a QA example: the context sentence holding its first gold span."""
    answer = ex.answers[0]
    start = ex.answer_starts[0] if ex.answer_starts else ex.context.find(answer)
    if start < 0:
        return answer  # the gold span is not in the context (bad data): the span itself is the reference
    return containing_sentence(ex.context, start, len(answer)) or answer


@dataclass(frozen=True)
class DomainExample:
    id: str
    context: str
    question: str
    reference: str
    lang: str


def as_domain(ex: QAExample) -> DomainExample:
    return DomainExample(ex.id, ex.context, ex.question, reference_sentence(ex), ex.lang)


@dataclass(frozen=True)
class DomainQAParams:
    threshold: float = 0.7               # similarity at or above which an answer counts as correct
    lang: str | None = None
    template: str = DOMAIN_TEMPLATE
    encoder: str | None = None           # None = the packaged all-MiniLM-L6-v2 (as the similarity reward)

    def __post_init__(self):
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if self.lang is not None and self.lang not in MLQA_LANGS:
            raise ValueError(f"lang must be one of {', '.join(MLQA_LANGS)}, got {self.lang!r}")


class DomainQATask(Task):
    name = "domain_qa"
    primary_metric = "accuracy"
    reward_fields = frozenset({"reference"})
    default_rewards = ({"name": "similarity", "weight": 1.0, "params": {}},
                       {"name": "repetition", "weight": 1.0, "params": {}})
    default_source = "xquad:en"
    eval_samples = 3
    Params = DomainQAParams
    retrievable = True

    @classmethod
    def load(cls, source, data, params):
        splits, stats = load_qa_splits(source, data, params.lang)
        return {k: [as_domain(ex) for ex in v] for k, v in splits.items()}, stats

    @classmethod
    def all_examples(cls, source, data, params):
        return [as_domain(ex) for ex in load_examples(source, params.lang or source_lang(source), limit=data.limit)[0]]

    def content(self, example: DomainExample, cut: str | None = None) -> str:
        context = example.context if cut is None else cut
        return self.params.template.format(context=context, question=example.question)

    def cuttable(self, example: DomainExample) -> str:
        return example.context

    def reward_inputs(self, example: DomainExample) -> dict:
        return {"reference": example.reference}

    def sft_target(self, example: DomainExample) -> str:
        return example.reference

    def _encoder(self):
        from rewards.semantic import cached_encoder

        return cached_encoder(self.params.encoder)

    def score(self, texts: list[str], examples: Sequence[DomainExample]) -> dict[str, list[float]]:
        from rewards.semantic import ngram_repetition, sentence_repetition, similarity

        enc = self._encoder()
        sims = similarity(enc, list(texts), [ex.reference for ex in examples])
        sent = sentence_repetition(enc, list(texts))
        ngram = [ngram_repetition(t, 3) for t in texts]
        return {
            "accuracy": [float(s >= self.params.threshold) for s in sims],
            "similarity": sims,
            "repetition_rate": [float(a > 0 or b > 0) for a, b in zip(sent, ngram)],
            "len": [float(len(self.tokenizer.encode(t, add_special_tokens=False))) for t in texts],
        }

    def score_samples(self, samples: list[list[str]], examples: Sequence[DomainExample]) -> dict[str, list[float]]:
        """Per question, over its n sampled answers: do they agree on correct-or-not (consistency), and how far
        apart are their similarities (spread = max - min)."""
        from rewards.semantic import similarity

        flat = [t for group in samples for t in group]
        refs = [ex.reference for ex, group in zip(examples, samples, strict=True) for _ in group]
        sims = similarity(self._encoder(), flat, refs)
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

