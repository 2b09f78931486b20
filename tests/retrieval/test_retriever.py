"""Retriever over a saved index with the hash-encoder fake: batched hits, encoder check, prompt context."""

import pytest

from tasks.mlqa import PROMPT_TEMPLATE
from retrieval.index import StaleIndexError, build_index
from retrieval.retriever import Retriever, format_passages
from tests.fakes import HashEncoder

DOCS = [
    "The Rhine flows through Switzerland, Germany and the Netherlands into the North Sea.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in plant leaves.",
    "The Norman conquest of England began in 1066 with the Battle of Hastings.",
]


@pytest.fixture
def index_dir(policy_tokenizer, tmp_path):
    build_index(DOCS, policy_tokenizer, HashEncoder(), chunk_tokens=64, overlap=8).save(tmp_path / "index")
    return str(tmp_path / "index")


def test_retrieve_finds_the_matching_document(index_dir):
    retriever = Retriever(index_dir, encoder=HashEncoder())
    hits = retriever.retrieve(["Which sea does the Rhine flow into?", "When was the Battle of Hastings?"], k=2)
    assert [h[0]["doc_id"] for h in hits] == [0, 2]
    assert all(len(h) == 2 and h[0]["score"] >= h[1]["score"] for h in hits)
    assert set(hits[0][0]) == {"chunk_id", "doc_id", "score", "text"}
    assert hits[1][0]["text"] == DOCS[2] and isinstance(hits[1][0]["chunk_id"], int)
    assert retriever.retrieve([], k=3) == []


def test_batched_retrieve_equals_one_at_a_time(index_dir):
    retriever = Retriever(index_dir, encoder=HashEncoder())
    queries = ["oxygen from leaves", "Germany", "1066 England", "", "unrelated words entirely"]
    assert retriever.retrieve(queries, k=3) == [retriever.retrieve([q], k=3)[0] for q in queries]


def test_retriever_refuses_an_index_from_another_encoder(index_dir):
    with pytest.raises(StaleIndexError, match="encoder: saved 'hash-encoder@64', expected 'hash-encoder@32'"):
        Retriever(index_dir, encoder=HashEncoder(dim=32))


def test_format_passages_into_the_prompt():
    hits = [{"text": " Paris is in France. "}, {"text": "Lyon is too."}]
    context = format_passages(hits)
    assert context == "[1] Paris is in France.\n[2] Lyon is too."
    prompt = PROMPT_TEMPLATE.format(context=context, question="Where is Paris?")
    assert prompt == ("Answer the question based on the context.\n"
                      "Context: [1] Paris is in France.\n[2] Lyon is too. Question: Where is Paris?")
    assert format_passages([]) == ""
