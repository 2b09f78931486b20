"""recall_at_k and relevant_chunks, hand-computed."""

import numpy as np
import pytest

from retrieval.chunking import Chunk
from retrieval.metrics import recall_at_k, relevant_chunks


def test_recall_at_k_hand_computed():
    ranked = [
        [4, 2, 7, 1],  # relevant {2}: first hit at rank 2
        [0, 1, 3, 5],  # relevant {0, 9}: hit at rank 1
        [6, 8, 3, 2],  # relevant {5}: never
        [9, 7, 5, 1],  # relevant set(): answer in no chunk, always a miss
    ]
    relevant = [{2}, {0, 9}, {5}, set()]
    # recall@1 = 1/4 (query 1); @2 = 2/4 (+ query 0); @10 (only 4 ranked) = 2/4
    assert recall_at_k(ranked, relevant, ks=(1, 2, 10)) == {"recall@1": 0.25, "recall@2": 0.5, "recall@10": 0.5}
    assert recall_at_k(np.array(ranked, dtype=np.int64), relevant, ks=(1, 2, 10)) == recall_at_k(
        ranked, relevant, ks=(1, 2, 10))


def test_recall_at_k_rejects_mismatch():
    with pytest.raises(ValueError, match="2 rankings but 1"):
        recall_at_k([[0], [1]], [{0}])
    with pytest.raises(ValueError, match="at least one"):
        recall_at_k([], [])
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k([[0]], [{0}], ks=(0,))


def test_relevant_chunks_only_in_own_document():
    chunks = [
        Chunk(0, 0, 10, "Paris is the capital"),  # id 0: doc 0, contains "Paris"
        Chunk(0, 8, 20, "capital of France"),  # id 1: doc 0, contains "France"
        Chunk(1, 0, 12, "Paris, Texas"),  # id 2: other doc, ignored
        Chunk(0, 18, 30, "in Europe"),  # id 3: no answer
    ]
    assert relevant_chunks(chunks, 0, ("Paris", "France")) == {0, 1}
    assert relevant_chunks(chunks, 1, ("Paris",)) == {2}
    assert relevant_chunks(chunks, 0, ("",)) == set()  # an empty answer matches nothing
