"""Extractive QA on MLQA / XQuAD (the MLQA paper's recipe): answer with a span of the context.

Prompt: the paper's template, verbatim, inside the chat template; an overlong context loses its tail.
Reward: 0.7 F1 + 0.3 EM under the official MLQA rules of the example's language - 0.001 per token above
64 (rewards/registry.py `qa`). Metrics: F1 (primary), EM, answer length in tokens.
Split: grouped by context (a deliberate deviation from the paper's random question split, so no eval
question shares a paragraph with a training one); the optional test split is cut first.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from rewards.qa import MLQA_LANGS, extract_answer, normalize_answer, qa_scores
from tasks.base import Task, split_by
from tasks.squad import QAExample, load_examples, source_lang

PROMPT_TEMPLATE = "Answer the question based on the context.\nContext: {context} Question: {question}"


@dataclass(frozen=True)
class MLQAParams:
    lang: str | None = None          # metric language; None = from data.source (xquad:de -> de, else en)
    template: str = PROMPT_TEMPLATE  # with {context} and {question}

    def __post_init__(self):
        if self.lang is not None and self.lang not in MLQA_LANGS:
            raise ValueError(f"lang must be one of {', '.join(MLQA_LANGS)}, got {self.lang!r}")
        for slot in ("{context}", "{question}"):
            if slot not in self.template:
                raise ValueError(f"template must contain {slot}, got {self.template!r}")


def load_qa_splits(source: str, data, lang: str | None) -> tuple[dict[str, list[QAExample]], dict]:
    """SQuAD-format examples of `source`, split (train, eval, test) by context."""
    examples, stats = load_examples(source, lang or source_lang(source), limit=data.limit)
    return split_by(examples, lambda ex: ex.context, data), stats


class MLQATask(Task):
    name = "mlqa"
    primary_metric = "f1"
    reward_fields = frozenset({"answers", "lang"})
    default_rewards = ({"name": "qa", "weight": 1.0, "params": {}},)
    default_source = "xquad:en"
    Params = MLQAParams
    retrievable = True

    @classmethod
    def load(cls, source, data, params):
        return load_qa_splits(source, data, params.lang)

    @classmethod
    def all_examples(cls, source, data, params):
        """File order, so `--limit N` takes a file's first N questions."""
        return load_examples(source, params.lang or source_lang(source), limit=data.limit)[0]

    def content(self, example: QAExample, cut: str | None = None) -> str:
        context = example.context if cut is None else cut
        return self.params.template.format(context=context, question=example.question)

    def cuttable(self, example: QAExample) -> str:
        return example.context

    def reward_inputs(self, example: QAExample) -> dict:
        return {"answers": list(example.answers), "lang": example.lang}

    def sft_target(self, example: QAExample) -> str:
        """The first gold answer (the only one in MLQA dev and XQuAD)."""
        return example.answers[0]

    def score(self, texts: list[str], examples: Sequence[QAExample]) -> dict[str, list[float]]:
        """Per question: the official EM and F1 of the extracted answer, and the completion's length in tokens."""
        ems, f1s, lens = [], [], []
        for text, ex in zip(texts, examples, strict=True):
            em, f1 = qa_scores(extract_answer(text), list(ex.answers), ex.lang)
            ems.append(em)
            f1s.append(f1)
            lens.append(float(len(self.tokenizer.encode(text, add_special_tokens=False))))
        return {"f1": f1s, "em": ems, "len": lens}

    def score_samples(self, samples: list[list[str]], examples: Sequence[QAExample]) -> dict[str, list[float]]:
        """Per question, over its sampled answers: do all normalized answers agree, and the F1 of the most
        common one (majority vote)."""
        agree, vote = [], []
        for answers, ex in zip(samples, examples, strict=True):
            extracted = [extract_answer(t) for t in answers]
            norm = [normalize_answer(a, ex.lang) for a in extracted]
            agree.append(float(len(set(norm)) == 1))
            top = Counter(norm).most_common(1)[0][0]
            vote.append(qa_scores(extracted[norm.index(top)], list(ex.answers), ex.lang)[1])
        return {"agree_frac": agree, "majority_vote_f1": vote}
