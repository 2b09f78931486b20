"""The base of the QA tasks (mlqa, domain_qa): a question on a context, from SQuAD-format data.

Data: SQuAD-format examples of `data.source` (tasks/squad.py), split grouped by context (a deliberate deviation
from the MLQA paper's random question split, so no eval question shares a paragraph with a training one); the
optional test split is cut first. A task turns each `QAExample` into its own example (`from_qa`); every one has
`.id`, `.context`, `.question` and `.lang`.
Prompt: a template with {context} and {question} (`task.params.template`, by default the MLQA paper's, verbatim)
inside the chat template; an overlong context loses its tail.
Retrieval: the question is the query, the context is the document that retrieved passages replace.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rewards.qa import MLQA_LANGS
from tasks.base import Task, split_by
from tasks.squad import QAExample, load_examples, source_lang

PROMPT_TEMPLATE = "Answer the question based on the context.\nContext: {context} Question: {question}"


@dataclass(frozen=True)
class QAParams:
    lang: str | None = None          # metric language; None = from data.source (xquad:de -> de, else en)
    template: str = PROMPT_TEMPLATE  # with {context} and {question} ({question} only with context: none)
    context: str = "gold"            # gold: the paragraph in the prompt; none: the question alone (the policy
                                     # searches for it: tools.use [{name: search}], the Search-R1 recipe)
    answer_tag: str | None = None    # score the last <tag>...</tag> of the answer (a multi-turn transcript)

    def __post_init__(self):
        if self.lang is not None and self.lang not in MLQA_LANGS:
            raise ValueError(f"lang must be one of {', '.join(MLQA_LANGS)}, got {self.lang!r}")
        if self.context not in ("gold", "none"):
            raise ValueError(f"context must be gold or none, got {self.context!r}")
        for slot in ("{context}", "{question}") if self.context == "gold" else ("{question}",):
            if slot not in self.template:
                raise ValueError(f"template must contain {slot}, got {self.template!r}")
        if self.context == "none" and "{context}" in self.template:
            raise ValueError("context: none asks a template without {context}")


def load_qa_splits(source: str, data, lang: str | None) -> tuple[dict[str, list[QAExample]], dict]:
    """SQuAD-format examples of `source`, split (train, eval, test) by context."""
    examples, stats = load_examples(source, lang or source_lang(source), limit=data.limit)
    return split_by(examples, lambda ex: ex.context, data), stats


class QATask(Task):
    default_source = "xquad:en"
    retrievable = True
    Params = QAParams

    @staticmethod
    def from_qa(example: QAExample) -> Any:
        """The task's example of a SQuAD-format one (by default the same)."""
        return example

    @classmethod
    def load(cls, source, data, params):
        splits, stats = load_qa_splits(source, data, params.lang)
        return {k: [cls.from_qa(ex) for ex in v] for k, v in splits.items()}, stats

    @classmethod
    def all_examples(cls, source, data, params):
        """File order, so `--limit N` takes a file's first N questions."""
        examples, _ = load_examples(source, params.lang or source_lang(source), limit=data.limit)
        return [cls.from_qa(ex) for ex in examples]

    def content(self, example, cut: str | None = None) -> str:
        if self.params.context == "none":
            return self.params.template.format(question=example.question)
        context = example.context if cut is None else cut
        return self.params.template.format(context=context, question=example.question)

    def cuttable(self, example) -> str | None:
        return example.context if self.params.context == "gold" else None

    def retrieval_query(self, example) -> str:
        return example.question

    def retrieval_document(self, example) -> str:
        return example.context

    def with_context(self, example, text: str):
        return dataclasses.replace(example, context=text)
