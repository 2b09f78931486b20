"""Chunking with the real SmolLM2 tokenizer: hand-computed windows, equivalence, and span invariants."""

import pytest

from tasks.squad import QAExample
from retrieval.chunking import Chunk, chunk_corpus, chunk_document, unique_contexts

LONG_EN = " ".join(f"Fox number {i} is brown and sleeps under tree {i % 7}." for i in range(120))
DOCS = [
    LONG_EN,
    "第三只狐狸是红色的。" * 80 + " 😀 émigré façade " * 20,  # multi-byte characters split over byte tokens
    "  leading and trailing whitespace\n\nwith\tbreaks  ",
    "Short.",
]


def _token_spans(tokenizer, text):
    return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def test_hand_computed_windows(policy_tokenizer):
    # "one two three four five six seven eight" is 8 tokens: "one", " two", ..., " eight".
    # chunk_tokens=3, overlap=1 -> stride 2 -> token windows [0,3) [2,5) [4,7) [6,8).
    doc = "one two three four five six seven eight"
    chunks = chunk_document(policy_tokenizer, doc, doc_id=5, chunk_tokens=3, overlap=1)
    assert [c.text for c in chunks] == ["one two three", " three four five", " five six seven", " seven eight"]
    assert chunks[0] == Chunk(doc_id=5, start=0, end=13, text="one two three")
    assert [(c.start, c.end) for c in chunks] == [(0, 13), (7, 23), (18, 33), (27, 39)]


def test_overlap_zero_tiles_the_document(policy_tokenizer):
    doc = "one two three four five six seven eight"  # 8 tokens, windows [0,4) [4,8)
    chunks = chunk_document(policy_tokenizer, doc, 0, chunk_tokens=4, overlap=0)
    assert [c.text for c in chunks] == ["one two three four", " five six seven eight"]


def test_short_empty_and_invalid(policy_tokenizer):
    assert chunk_document(policy_tokenizer, "Short doc.", 3) == [Chunk(3, 0, 10, "Short doc.")]
    assert chunk_document(policy_tokenizer, "", 0) == []
    for chunk_tokens, overlap in [(8, 8), (8, 9), (8, -1), (0, 0)]:
        with pytest.raises(ValueError, match="overlap|chunk_tokens"):
            chunk_document(policy_tokenizer, "a b c", 0, chunk_tokens=chunk_tokens, overlap=overlap)


@pytest.mark.parametrize("chunk_tokens,overlap", [(16, 4), (50, 0), (7, 6), (256, 32)])
@pytest.mark.parametrize("doc", DOCS, ids=["english", "multibyte", "whitespace", "short"])
def test_spans_cover_document_and_match_text(policy_tokenizer, doc, chunk_tokens, overlap):
    chunks = chunk_document(policy_tokenizer, doc, 0, chunk_tokens, overlap)
    assert all(c.text == doc[c.start:c.end] for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(doc)
    # Consecutive spans overlap or touch, so their union is all of [0, len).
    assert all(a.start <= b.start <= a.end for a, b in zip(chunks, chunks[1:]))
    n_tokens = len(_token_spans(policy_tokenizer, doc))
    stride = chunk_tokens - overlap
    assert len(chunks) == max(1, -(-(n_tokens - overlap) // stride))  # ceil((n - overlap) / stride)


@pytest.mark.parametrize("chunk_tokens,overlap", [(16, 4), (50, 0), (7, 6), (64, 32)])
def test_consecutive_chunks_share_exactly_overlap_tokens(policy_tokenizer, chunk_tokens, overlap):
    # ASCII text: every token has its own characters, so counting tokens inside a span is exact.
    spans = _token_spans(policy_tokenizer, LONG_EN)
    chunks = chunk_document(policy_tokenizer, LONG_EN, 0, chunk_tokens, overlap)
    assert len(chunks) > 3

    def tokens_in(start, end):
        return sum(start <= a and b <= end for a, b in spans)

    assert all(tokens_in(c.start, c.end) == chunk_tokens for c in chunks[:-1])
    assert 0 < tokens_in(chunks[-1].start, chunks[-1].end) <= chunk_tokens
    assert all(tokens_in(b.start, a.end) == overlap for a, b in zip(chunks, chunks[1:]))


def test_chunk_corpus_equals_per_document_chunking(policy_tokenizer):
    batched = chunk_corpus(policy_tokenizer, DOCS + [""], chunk_tokens=32, overlap=8)
    one_by_one = [c for i, d in enumerate(DOCS + [""]) for c in chunk_document(policy_tokenizer, d, i, 32, 8)]
    assert batched == one_by_one
    assert sorted({c.doc_id for c in batched}) == [0, 1, 2, 3]  # the empty doc 4 has no chunk


def test_unique_contexts_keeps_first_seen_order():
    def ex(i, context):
        return QAExample(id=str(i), context=context, question="q?", answers=("a",), lang="en")

    examples = [ex(0, "B"), ex(1, "A"), ex(2, "B"), ex(3, "C"), ex(4, "A")]
    docs, doc_of_example = unique_contexts(examples)
    assert docs == ["B", "A", "C"]
    assert doc_of_example == [0, 1, 0, 2, 1]
    assert [docs[d] for d in doc_of_example] == [e.context for e in examples]
