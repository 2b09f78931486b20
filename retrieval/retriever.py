"""Query-time retrieval: a saved index plus the encoder it was built with, loaded once.

`Retriever` is a plain class; cluster/groups.py wraps it with `ray.remote(Retriever)`, so it runs (and is
tested) without Ray. It refuses an index built with a different encoder than the one it loads, because
query and chunk vectors from two encoders are not comparable.
"""
from __future__ import annotations

from typing import Any

from retrieval.encoder import Encoder, load_encoder
from retrieval.index import load_index


class Retriever:
    """`encoder`: a spec for `load_encoder` (None = the packaged all-MiniLM-L6-v2) or an encoder object."""

    def __init__(self, index_dir: str, encoder: str | None | Encoder = None, device: str | None = None):
        if encoder is None or isinstance(encoder, str):
            encoder = load_encoder(encoder, device=device)
        self.encoder = encoder
        self.index = load_index(index_dir, expect={"encoder": self.encoder.name, "dim": self.encoder.dim})

    def retrieve(self, queries: list[str], k: int = 3) -> list[list[dict[str, Any]]]:
        """Top-k chunks per query, best first: {"chunk_id", "doc_id", "score", "text"}. One encode, one search."""
        if not queries:
            return []
        scores, ids = self.index.search(self.encoder.encode(list(queries)), k)  # [Q, k], [Q, k]
        hits = []
        for row_scores, row_ids in zip(scores.tolist(), ids.tolist()):
            chunks = [self.index.chunks[i] for i in row_ids]
            hits.append([{"chunk_id": i, "doc_id": c.doc_id, "score": s, "text": c.text}
                         for i, s, c in zip(row_ids, row_scores, chunks)])
        return hits


def format_passages(hits: list[dict[str, Any]]) -> str:
    """Retrieved passages as one prompt context, best first: "[1] text\\n[2] text".

    It fills {context} of a QA prompt template (tasks/mlqa.py), so the passages come before the question.

    >>> format_passages([{"text": " Paris is in France."}, {"text": "Lyon too. "}])
    '[1] Paris is in France.\\n[2] Lyon too.'
    """
    return "\n".join(f"[{i}] {hit['text'].strip()}" for i, hit in enumerate(hits, start=1))
