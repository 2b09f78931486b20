"""Split documents into overlapping windows of policy-tokenizer tokens, kept as exact character spans.

Windows are measured in the *policy's* tokens (not the encoder's) because a retrieved chunk is pasted into
the policy's prompt, whose budget is counted in those tokens. Cuts fall on token boundaries found through
the fast tokenizer's offset mapping, so `chunk.text == document[chunk.start:chunk.end]` always holds and a
chunk never starts or ends inside a word piece. Window i covers tokens [i*stride, i*stride + chunk_tokens)
with stride = chunk_tokens - overlap; the last window stops at the document's end, and no window lies
wholly inside the previous one.

Byte-level BPE splits a multi-byte character over several tokens that all report the same character span;
a window edge there rounds outward to whole characters, so such a character can appear in both neighbours.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Chunk:
    doc_id: int
    start: int  # character offsets into the document: text == document[start:end]
    end: int
    text: str


def _check_window(chunk_tokens: int, overlap: int) -> None:
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ValueError(
            f"overlap must satisfy 0 <= overlap < chunk_tokens, got overlap={overlap}, chunk_tokens={chunk_tokens}; "
            f"lower retrieval.overlap (e.g. to chunk_tokens // 8)"
        )


def _windows(
    text: str, offsets: Sequence[tuple[int, int]], doc_id: int, chunk_tokens: int, overlap: int
) -> list[Chunk]:
    """Chunks of one document from its token character offsets [(start, end)] per token."""
    n = len(offsets)
    if n == 0 or not text:
        return []
    stride = chunk_tokens - overlap
    chunks: list[Chunk] = []
    for s in range(0, n, stride):
        e = min(s + chunk_tokens, n)
        start = 0 if s == 0 else offsets[s][0]
        # Stretch to the next token's start so characters no token claims (trimmed whitespace) stay covered.
        end = len(text) if e == n else max(offsets[e - 1][1], offsets[e][0])
        chunks.append(Chunk(doc_id=doc_id, start=start, end=end, text=text[start:end]))
        if e == n:
            break
    return chunks


def _offsets(tokenizer: Any, texts: list[str]) -> list[list[tuple[int, int]]]:
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [[(int(a), int(b)) for a, b in doc] for doc in enc["offset_mapping"]]


def chunk_document(tokenizer: Any, text: str, doc_id: int, chunk_tokens: int = 256, overlap: int = 32) -> list[Chunk]:
    """Windows of `chunk_tokens` tokens sharing `overlap` tokens with the next; [] for an empty text.

    `tokenizer` must be a HF fast tokenizer (it needs `return_offsets_mapping`).
    """
    _check_window(chunk_tokens, overlap)
    if not text:
        return []
    return _windows(text, _offsets(tokenizer, [text])[0], doc_id, chunk_tokens, overlap)


def chunk_corpus(tokenizer: Any, docs: list[str], chunk_tokens: int = 256, overlap: int = 32) -> list[Chunk]:
    """`chunk_document` over every doc (doc_id = position in `docs`), tokenized in one batch call."""
    _check_window(chunk_tokens, overlap)
    if not docs:
        return []
    offsets = _offsets(tokenizer, list(docs))
    return [c for i, (doc, offs) in enumerate(zip(docs, offsets)) for c in _windows(doc, offs, i, chunk_tokens, overlap)]


def unique_contexts(examples: Iterable[Any]) -> tuple[list[str], list[int]]:
    """(distinct contexts in first-seen order, index into them for each example) from objects with `.context`."""
    index: dict[str, int] = {}
    doc_of_example: list[int] = []
    for ex in examples:
        doc_of_example.append(index.setdefault(ex.context, len(index)))
    return list(index), doc_of_example
