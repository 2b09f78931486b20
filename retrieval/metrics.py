"""Retrieval quality: recall@k against the chunks that hold a gold answer. Pure Python and numpy."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from retrieval.chunking import Chunk


def recall_at_k(
    ranked_ids: Sequence[Sequence[int]] | np.ndarray,
    relevant: Sequence[set[int]],
    ks: Iterable[int] = (1, 3, 10),
) -> dict[str, float]:
    """Fraction of queries with a relevant id among their first k ranked ids, for each k: {"recall@k": float}.

    ranked_ids: [Q, K] best first (K may be < k: then all of them count). A query with no relevant id at all
    (its answer is in no chunk) counts as a miss, so recall is not inflated by dropping hard questions.

    >>> recall_at_k([[3, 1], [0, 2]], [{1}, {5}], ks=(1, 2))
    {'recall@1': 0.0, 'recall@2': 0.5}
    """
    if len(ranked_ids) != len(relevant):
        raise ValueError(f"{len(ranked_ids)} rankings but {len(relevant)} relevant sets")
    if len(relevant) == 0:
        raise ValueError("recall_at_k needs at least one query")
    out = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        hits = sum(bool(rel.intersection(int(i) for i in ranked[:k])) for ranked, rel in zip(ranked_ids, relevant))
        out[f"recall@{k}"] = hits / len(relevant)
    return out


def relevant_chunks(chunks: Sequence[Chunk], doc_id: int, answers: Iterable[str]) -> set[int]:
    """Ids (positions in `chunks`) of the chunks of document `doc_id` whose text contains a gold answer.

    Only the question's own document counts: the same answer string in another paragraph is a coincidence.
    Empty answer strings are ignored (they would match every chunk).
    """
    answers = [a for a in answers if a]
    return {i for i, c in enumerate(chunks) if c.doc_id == doc_id and any(a in c.text for a in answers)}
