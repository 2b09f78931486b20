"""An exact dense index over corpus chunks: unit embeddings [N, D], their chunks, and how they were made.

Search is a brute-force matrix product, exact by construction; at MLQA/XQuAD scale (a few thousand chunks,
384-d) one query batch costs milliseconds, so an approximate index (FAISS/HNSW) would add a dependency and
recall loss for nothing.

On disk an index is a directory:
  embeddings.npy   float32 [N, D]
  chunks.jsonl     one {"doc_id", "start", "end", "text"} per row of embeddings
  meta.json        encoder, dim, chunk_tokens, overlap, tokenizer, corpus_sha256, n_docs, n_chunks, built_at,
                   build_seconds, and the sha256 of the two files above
It is written into a temporary folder and swapped in by rename (common.checkpoint.atomic_checkpoint), so a
killed build never leaves a half index. Loading verifies the checksums and what the caller expects
(same encoder, chunking, tokenizer and corpus); any difference raises StaleIndexError naming it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from common.checkpoint import atomic_checkpoint
from retrieval.chunking import Chunk, chunk_corpus
from retrieval.encoder import Encoder

FILES = ("embeddings.npy", "chunks.jsonl")
EXPECTABLE = ("encoder", "dim", "chunk_tokens", "overlap", "tokenizer", "corpus_sha256")
REBUILD_MODES = ("auto", "never", "always")
_REBUILD_HINT = "delete the directory or set retrieval.rebuild=auto (or always) to rebuild it"


class StaleIndexError(IndexError):
    """A saved index that is missing, corrupted, or built from other inputs than the ones asked for."""


def corpus_sha256(docs: Sequence[str]) -> str:
    """sha256 over the docs with length prefixes, so ["ab", "c"] and ["a", "bc"] differ."""
    h = hashlib.sha256()
    for doc in docs:
        data = doc.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class DenseIndex:
    def __init__(self, embeddings: np.ndarray, chunks: list[Chunk], meta: dict[str, Any]):
        if embeddings.ndim != 2 or embeddings.shape[0] != len(chunks):
            raise ValueError(f"embeddings {embeddings.shape} do not match {len(chunks)} chunks")
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)  # [N, D] unit rows
        self.chunks = chunks
        self.meta = meta

    def __len__(self) -> int:
        return len(self.chunks)

    def search(self, query_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by cosine. query_emb [Q, D] unit rows -> (scores [Q, k] float32, ids [Q, k] int64).

        Sorted by score descending, ties by lower chunk id; k larger than the index is clipped to N.
        """
        if query_emb.ndim != 2 or query_emb.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"query_emb must be [Q, {self.embeddings.shape[1]}], got {query_emb.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not np.isfinite(query_emb).all():
            raise ValueError("query_emb holds NaN or inf")
        q, n = query_emb.shape[0], len(self)
        k = min(k, n)
        scores = query_emb.astype(np.float32) @ self.embeddings.T  # [Q, N]
        if k == n:
            ids = np.argsort(-scores, axis=1, kind="stable")  # [Q, N]; stable keeps lower ids first on ties
            return np.take_along_axis(scores, ids, axis=1), ids.astype(np.int64)
        # argpartition picks an arbitrary member of a tie at the k-th place; keep every id above the k-th
        # score plus the lowest-id ones equal to it, which is exactly k per row.
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [Q, k]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)  # [Q, 1]
        above = scores > kth  # [Q, N]
        at = scores == kth  # [Q, N]
        room = k - above.sum(axis=1, keepdims=True)  # [Q, 1]
        keep = above | (at & (np.cumsum(at, axis=1) <= room))  # [Q, N], k True per row
        ids = np.nonzero(keep)[1].reshape(q, k)  # [Q, k] ascending ids per row
        top = np.take_along_axis(scores, ids, axis=1)  # [Q, k]
        order = np.argsort(-top, axis=1, kind="stable")  # [Q, k]
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(ids, order, axis=1).astype(np.int64)

    def save(self, path: str | Path) -> Path:
        """Write the index directory atomically, replacing an existing one; returns its path."""

        def write(tmp: Path) -> None:
            np.save(tmp / "embeddings.npy", self.embeddings, allow_pickle=False)
            with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
                for c in self.chunks:
                    f.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
            meta = {**self.meta, "checksums": {name: _file_sha256(tmp / name) for name in FILES}}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # last: its presence marks a full index

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_checkpoint(target, write)


def build_index(
    docs: Sequence[str],
    tokenizer: Any,
    encoder: Encoder,
    chunk_tokens: int = 256,
    overlap: int = 32,
    tokenizer_name: str = "",
) -> DenseIndex:
    """Chunk `docs` with the policy tokenizer and embed every chunk; meta records how, for staleness checks."""
    t0 = time.perf_counter()
    chunks = chunk_corpus(tokenizer, list(docs), chunk_tokens, overlap)
    embeddings = encoder.encode([c.text for c in chunks])  # [N, D]
    if embeddings.shape != (len(chunks), encoder.dim):
        raise ValueError(f"encoder {encoder.name} returned {embeddings.shape}, expected ({len(chunks)}, {encoder.dim})")
    meta = {
        **expected_meta(docs, encoder, chunk_tokens, overlap, tokenizer_name),
        "n_docs": len(docs),
        "n_chunks": len(chunks),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    return DenseIndex(embeddings, chunks, meta)


def tokenizer_id(tokenizer: Any) -> str:
    """What chunking depends on: the tokenizer's own definition (a fast tokenizer's whole tokenizer.json, hashed),
    not the folder it was read from, so a checkpoint of the same policy (the same tokenizer at another path) reuses
    the index; a tokenizer without that definition is known by its name or path."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return "sha256:" + hashlib.sha256(backend.to_str().encode()).hexdigest()[:16]
    return str(getattr(tokenizer, "name_or_path", ""))


def expected_meta(
    docs: Sequence[str], encoder: Encoder, chunk_tokens: int, overlap: int, tokenizer_name: str
) -> dict[str, Any]:
    """The meta entries an index built from these inputs has; pass as `expect` to `load_index`."""
    return {
        "encoder": encoder.name,
        "dim": int(encoder.dim),
        "chunk_tokens": chunk_tokens,
        "overlap": overlap,
        "tokenizer": tokenizer_name,
        "corpus_sha256": corpus_sha256(docs),
    }


def _read_meta(path: Path) -> dict[str, Any]:
    if not (path / "meta.json").is_file():
        raise StaleIndexError(f"no index at {path} (meta.json missing); build it, e.g. with retrieval.rebuild=auto")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StaleIndexError(f"{path / 'meta.json'} is corrupted ({err}); {_REBUILD_HINT}") from err
    for name in FILES:
        file = path / name
        if not file.is_file():
            raise StaleIndexError(f"{file} is missing; {_REBUILD_HINT}")
        if _file_sha256(file) != meta.get("checksums", {}).get(name):
            raise StaleIndexError(f"{file} is corrupted (sha256 differs from meta.json); {_REBUILD_HINT}")
    return meta


def _check_expect(path: Path, meta: dict[str, Any], expect: dict[str, Any]) -> None:
    unknown = sorted(set(expect) - set(EXPECTABLE))
    if unknown:
        raise ValueError(f"cannot check index meta keys {unknown}; checkable keys: {', '.join(EXPECTABLE)}")
    diffs = [f"{key}: saved {meta.get(key, '<missing>')!r}, expected {value!r}"
             for key, value in expect.items() if meta.get(key, "<missing>") != value]
    if diffs:
        raise StaleIndexError(f"index at {path} is stale: {'; '.join(diffs)}; {_REBUILD_HINT}")


def load_index(path: str | Path, expect: dict[str, Any] | None = None) -> DenseIndex:
    """Load a saved index, verifying its checksums and that its meta matches `expect` (see `expected_meta`)."""
    path = Path(path)
    meta = _read_meta(path)
    if expect:
        _check_expect(path, meta, expect)
    embeddings = np.load(path / "embeddings.npy", allow_pickle=False)  # [N, D]
    with open(path / "chunks.jsonl", encoding="utf-8") as f:
        chunks = [Chunk(**json.loads(line)) for line in f]
    if embeddings.shape != (meta.get("n_chunks"), meta.get("dim")) or len(chunks) != embeddings.shape[0]:
        raise StaleIndexError(
            f"index at {path} is inconsistent: embeddings {embeddings.shape}, {len(chunks)} chunks, meta says "
            f"n_chunks={meta.get('n_chunks')} dim={meta.get('dim')}; {_REBUILD_HINT}"
        )
    meta.pop("checksums")
    return DenseIndex(embeddings, chunks, meta)


def load_or_build(
    path: str | Path,
    docs: Sequence[str],
    tokenizer: Any,
    encoder: Encoder,
    chunk_tokens: int = 256,
    overlap: int = 32,
    tokenizer_name: str = "",
    rebuild: str = "auto",
) -> tuple[DenseIndex, str]:
    """(index, "loaded" | "built" | "rebuilt").

    rebuild="auto" rebuilds a missing or stale index and prints why; "never" raises StaleIndexError
    instead; "always" rebuilds unconditionally.
    """
    if rebuild not in REBUILD_MODES:
        raise ValueError(f"rebuild must be one of {REBUILD_MODES}, got {rebuild!r}")
    path = Path(path)
    existed = path.exists()
    if rebuild != "always":
        try:
            return load_index(path, expected_meta(docs, encoder, chunk_tokens, overlap, tokenizer_name)), "loaded"
        except StaleIndexError as err:
            if rebuild == "never":
                raise
            print(f"[retrieval] rebuilding the index: {err}" if existed else f"[retrieval] building the index at {path}")
    index = build_index(docs, tokenizer, encoder, chunk_tokens, overlap, tokenizer_name)
    index.save(path)
    return index, "rebuilt" if existed else "built"
