"""Extractive QA on MLQA / XQuAD (the MLQA paper's recipe): answer with a span of the context.

Data, prompt (the paper's template, verbatim), split by context and retrieval: the QA base (tasks/qa.py).
Reward: 0.7 F1 + 0.3 EM under the official MLQA rules of the example's language - 0.001 per token above
64 (rewards/registry.py `qa`). Metrics: F1 (primary) and EM, the `qa` reward's own parts; answer length in
tokens.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from rewards.qa import normalize_answer
from rewards.registry import QAReward
from tasks.qa import PROMPT_TEMPLATE, QAParams, QATask
from tasks.squad import QAExample

__all__ = ["MLQAParams", "MLQATask", "PROMPT_TEMPLATE"]

MLQAParams = QAParams  # the QA tasks' params (lang, template), and nothing of its own


class MLQATask(QATask):
    name = "mlqa"
    primary_metric = "f1"
    reward_fields = frozenset({"answers", "lang"})
    default_rewards = ({"name": "qa", "weight": 1.0, "params": {}},)

    def reward_inputs(self, example: QAExample) -> dict:
        return {"answers": list(example.answers), "lang": example.lang}

    def sft_target(self, example: QAExample) -> str:
        """The first gold answer (the only one in MLQA dev and XQuAD)."""
        return example.answers[0]

    def gold_calls(self, example: QAExample) -> tuple[list[tuple[str, str]], str] | None:
        """With context: none (the Search-R1 recipe): search the question, answer with the gold span in the answer
        tag."""
        if self.params.context != "none":
            return None
        tag = self.params.answer_tag
        answer = f"<{tag}>{example.answers[0]}</{tag}>" if tag else example.answers[0]
        return [("search", example.question)], answer

    def metrics(self, texts: list[str], examples: Sequence[QAExample]) -> dict[str, list[float]]:
        """Per question: the official F1 and EM of the extracted answer, as the `qa` reward computes them."""
        _, parts = self.reward_parts(QAReward(answer_tag=self.params.answer_tag), texts, examples)
        return {"f1": parts["f1"], "em": parts["em"]}

    def score_samples(self, samples: list[list[str]], examples: Sequence[QAExample]) -> dict[str, list[float]]:
        """Per question, over its sampled answers: do all normalized answers agree, and the F1 of the most
        common one (majority vote)."""
        agree, voted = [], []
        for answers, ex in zip(samples, examples, strict=True):
            norm = [normalize_answer(QAReward(answer_tag=self.params.answer_tag).prediction(t), ex.lang) for t in answers]
            agree.append(float(len(set(norm)) == 1))
            voted.append(answers[norm.index(Counter(norm).most_common(1)[0][0])])
        _, parts = self.reward_parts(QAReward(answer_tag=self.params.answer_tag), voted, examples)
        return {"agree_frac": agree, "majority_vote_f1": parts["f1"]}
