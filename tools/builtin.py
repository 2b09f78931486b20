"""The built-in tools: `search` (the dense index over the task's contexts, retrieval/) and `calculate` (exact
arithmetic with the Countdown reward's whitelisted evaluator, never `eval`).

A tool is a plain class with `name`, `max_output_tokens` and `call(arg: str) -> str`; a malformed argument raises
ValueError (the tool box turns it into an observation "could not parse ...", counted), anything else it raises is
an error observation too (counted). `meta` of the last call is what the rollout records keep (the search hits).
"""
from __future__ import annotations

from fractions import Fraction


class SearchTool:
    """`<search>query</search>`: the top-k passages of the index, best first, as "[1] text\\n[2] text"."""
    name = "search"

    def __init__(self, index_dir: str, encoder: str | None = None, k: int = 3, max_output_tokens: int = 384):
        from retrieval.retriever import Retriever

        if k < 1:
            raise ValueError(f"tool search: k must be >= 1, got {k}")
        self.retriever, self.k, self.max_output_tokens = Retriever(index_dir, encoder), k, max_output_tokens
        self.meta: dict = {}

    def call(self, arg: str) -> str:
        from retrieval.retriever import format_passages

        query = arg.strip()
        if not query:
            raise ValueError("an empty query")
        hits = self.retriever.retrieve([query], self.k)[0]
        self.meta = {"doc_ids": [h["doc_id"] for h in hits]}
        return format_passages(hits)


class CalculateTool:
    """`<calculate>12 * (3 + 4)</calculate>`: the exact value of + - * / ( ) over integers ("84", "7/2")."""
    name = "calculate"

    def __init__(self, max_output_tokens: int = 32):
        self.max_output_tokens = max_output_tokens
        self.meta: dict = {}

    def call(self, arg: str) -> str:
        from rewards.countdown import ExpressionError, evaluate, parse_expression

        try:
            value: Fraction = evaluate(parse_expression(arg))
        except ExpressionError as err:
            raise ValueError(str(err)) from None
        return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
