"""DenseIndex: hand-computed and brute-force-equivalent top-k, save/load round trip, staleness checks."""

import json
import math

import numpy as np
import pytest

from retrieval.chunking import Chunk
from retrieval.index import (
    DenseIndex,
    StaleIndexError,
    build_index,
    corpus_sha256,
    expected_meta,
    load_index,
    load_or_build,
)
from tests.fakes import HashEncoder

DOCS = [
    "The Rhine flows through Switzerland, Germany and the Netherlands into the North Sea.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in plant leaves.",
    "The Norman conquest of England began in 1066 with the Battle of Hastings. " * 6,
]
TOKENIZER_NAME = "smollm2-135m-instruct"


def _index(embeddings) -> DenseIndex:
    emb = np.asarray(embeddings, dtype=np.float32)
    chunks = [Chunk(doc_id=i, start=0, end=1, text=f"c{i}") for i in range(len(emb))]
    return DenseIndex(emb, chunks, {})


def _build(tokenizer, docs=DOCS, encoder=None, chunk_tokens=16, overlap=4):
    return build_index(docs, tokenizer, encoder or HashEncoder(), chunk_tokens, overlap, TOKENIZER_NAME)


# ---- search: hand-computed ----

def test_search_2d_hand_computed():
    idx = _index([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6], [1, 0]])  # ids 0..4
    # q=[1,0] scores: [1, 0, .6, .8, 1] -> ids 0 and 4 tie at 1; the lower id comes first.
    # q=[0,1] scores: [0, 1, .8, .6, 0]
    scores, ids = idx.search(np.array([[1, 0], [0, 1]], dtype=np.float32), k=3)
    assert ids.dtype == np.int64 and ids.shape == scores.shape == (2, 3)
    assert ids.tolist() == [[0, 4, 3], [1, 2, 3]]
    np.testing.assert_allclose(scores, [[1, 1, 0.8], [1, 0.8, 0.6]], rtol=1e-6)


def test_search_tie_at_the_kth_place_keeps_lowest_ids():
    idx = _index([[0, 1], [1, 0], [1, 0], [1, 0]])
    # q=[1,0] scores: [0, 1, 1, 1]; k=2 must take ids 1 and 2 of the three tied, never 3.
    _, ids = idx.search(np.array([[1, 0]], dtype=np.float32), k=2)
    assert ids.tolist() == [[1, 2]]
    _, ids = idx.search(np.array([[1, 0]], dtype=np.float32), k=1)
    assert ids.tolist() == [[1]]


def test_search_3d_and_k_larger_than_n():
    idx = _index(np.eye(3))
    q = np.array([[1, 3, 2]], dtype=np.float32) / math.sqrt(14)  # scores [1, 3, 2] / sqrt(14)
    scores, ids = idx.search(q, k=10)  # k > N = 3 -> all 3
    assert ids.tolist() == [[1, 2, 0]]
    np.testing.assert_allclose(scores, [[3 / math.sqrt(14), 2 / math.sqrt(14), 1 / math.sqrt(14)]], rtol=1e-6)


def test_search_rejects_bad_queries():
    idx = _index(np.eye(3))
    with pytest.raises(ValueError, match=r"\[Q, 3\]"):
        idx.search(np.ones(3, dtype=np.float32), k=1)
    with pytest.raises(ValueError, match="k must be"):
        idx.search(np.ones((1, 3), dtype=np.float32), k=0)
    with pytest.raises(ValueError, match="NaN"):
        idx.search(np.full((1, 3), np.nan, dtype=np.float32), k=1)


# ---- search: equivalence with a brute-force loop ----

def _brute_force(queries, embeddings, k):
    ids, scores = [], []
    for q in queries.tolist():
        s = [sum(a * b for a, b in zip(q, e)) for e in embeddings.tolist()]
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))[:k]
        ids.append(order)
        scores.append([s[j] for j in order])
    return scores, ids


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n,d,q", [(1, 2, 1), (7, 3, 4), (60, 8, 5), (300, 32, 3)])
def test_search_equals_brute_force(seed, n, d, q):
    rng = np.random.default_rng(seed)
    # Multiples of 1/4 in [-0.5, 0.5]: every dot product is exact in float32 (so both sides agree bit for
    # bit) and ties are frequent, which is what the tie-breaking needs to be tested on.
    emb = (rng.integers(-2, 3, size=(n, d)) / 4).astype(np.float32)  # [N, D]
    queries = (rng.integers(-2, 3, size=(q, d)) / 4).astype(np.float32)  # [Q, D]
    idx = _index(emb)
    for k in sorted({1, 3, n, n + 5}):
        scores, ids = idx.search(queries, k)
        want_scores, want_ids = _brute_force(queries, emb, k)
        assert ids.tolist() == want_ids
        assert scores.tolist() == want_scores


# ---- build, save, load ----

def test_build_index_meta_and_unit_rows(policy_tokenizer):
    idx = _build(policy_tokenizer)
    assert len(idx) == len(idx.chunks) == idx.meta["n_chunks"] > len(DOCS)  # the long doc has several chunks
    assert idx.embeddings.shape == (len(idx), 64) and idx.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(idx.embeddings, axis=1), 1.0, rtol=1e-6)
    assert idx.meta["encoder"] == "hash-encoder@64" and idx.meta["dim"] == 64
    assert (idx.meta["chunk_tokens"], idx.meta["overlap"], idx.meta["tokenizer"]) == (16, 4, TOKENIZER_NAME)
    assert idx.meta["corpus_sha256"] == corpus_sha256(DOCS) and idx.meta["build_seconds"] >= 0
    assert all(c.text == DOCS[c.doc_id][c.start:c.end] for c in idx.chunks)


def test_corpus_sha256_separates_documents():
    assert corpus_sha256(["ab", "c"]) != corpus_sha256(["a", "bc"])
    assert corpus_sha256(["ab", "c"]) == corpus_sha256(["ab", "c"])


def test_save_load_round_trip_and_search_invariance(policy_tokenizer, tmp_path):
    idx = _build(policy_tokenizer)
    idx.save(tmp_path / "index")
    loaded = load_index(tmp_path / "index", expect=expected_meta(DOCS, HashEncoder(), 16, 4, TOKENIZER_NAME))
    assert np.array_equal(loaded.embeddings, idx.embeddings)
    assert loaded.chunks == idx.chunks
    assert loaded.meta == idx.meta
    queries = HashEncoder().encode(["Battle of Hastings 1066", "plants make oxygen", "river to the sea", ""])
    for k in (1, 3, 100):
        before, after = idx.search(queries, k), loaded.search(queries, k)
        assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_save_replaces_existing_index_cleanly(policy_tokenizer, tmp_path):
    _build(policy_tokenizer, chunk_tokens=16).save(tmp_path / "index")
    _build(policy_tokenizer, chunk_tokens=32, overlap=0).save(tmp_path / "index")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no .tmp / .old left behind
    assert load_index(tmp_path / "index").meta["chunk_tokens"] == 32


def test_corrupted_embeddings_raise_stale(policy_tokenizer, tmp_path):
    _build(policy_tokenizer).save(tmp_path / "index")
    path = tmp_path / "index" / "embeddings.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StaleIndexError, match=r"embeddings\.npy is corrupted.*delete the directory.*retrieval\.rebuild"):
        load_index(tmp_path / "index")


def test_missing_index_raises_stale(tmp_path):
    with pytest.raises(StaleIndexError, match="no index at"):
        load_index(tmp_path / "nothing")


def test_mismatched_inputs_name_each_key(policy_tokenizer, tmp_path):
    _build(policy_tokenizer).save(tmp_path / "index")
    with pytest.raises(StaleIndexError, match="chunk_tokens: saved 16, expected 32") as err:
        load_index(tmp_path / "index", expect=expected_meta(DOCS, HashEncoder(), 32, 4, TOKENIZER_NAME))
    assert "overlap" not in str(err.value) and "corpus_sha256" not in str(err.value)
    with pytest.raises(StaleIndexError) as err:
        load_index(tmp_path / "index", expect=expected_meta(DOCS[:2], HashEncoder(32), 16, 4, TOKENIZER_NAME))
    message = str(err.value)
    assert "encoder: saved 'hash-encoder@64', expected 'hash-encoder@32'" in message
    assert "dim: saved 64, expected 32" in message and "corpus_sha256: saved" in message
    with pytest.raises(ValueError, match="cannot check"):
        load_index(tmp_path / "index", expect={"chunk_size": 16})


def test_saved_meta_lists_checksums(policy_tokenizer, tmp_path):
    _build(policy_tokenizer).save(tmp_path / "index")
    meta = json.loads((tmp_path / "index" / "meta.json").read_text())
    assert set(meta["checksums"]) == {"embeddings.npy", "chunks.jsonl"}
    assert all(len(v) == 64 for v in meta["checksums"].values())


# ---- load_or_build ----

def test_load_or_build_auto(policy_tokenizer, tmp_path, capsys):
    path, enc = tmp_path / "index", HashEncoder()
    args = (policy_tokenizer, enc, 16, 4, TOKENIZER_NAME)
    first, how = load_or_build(path, DOCS, *args)
    assert how == "built"
    second, how = load_or_build(path, DOCS, *args)
    assert how == "loaded" and second.chunks == first.chunks
    capsys.readouterr()
    third, how = load_or_build(path, DOCS[:2], *args)  # the corpus changed
    assert how == "rebuilt" and third.meta["corpus_sha256"] == corpus_sha256(DOCS[:2])
    assert "corpus_sha256: saved" in capsys.readouterr().out
    assert load_or_build(path, DOCS[:2], *args, rebuild="always")[1] == "rebuilt"


def test_load_or_build_never_refuses(policy_tokenizer, tmp_path):
    path, enc = tmp_path / "index", HashEncoder()
    with pytest.raises(StaleIndexError, match="no index at"):
        load_or_build(path, DOCS, policy_tokenizer, enc, 16, 4, TOKENIZER_NAME, rebuild="never")
    load_or_build(path, DOCS, policy_tokenizer, enc, 16, 4, TOKENIZER_NAME)
    with pytest.raises(StaleIndexError, match="overlap: saved 4, expected 2"):
        load_or_build(path, DOCS, policy_tokenizer, enc, 16, 2, TOKENIZER_NAME, rebuild="never")
    assert load_index(path).meta["overlap"] == 4  # refused, not rebuilt
    with pytest.raises(ValueError, match="rebuild must be"):
        load_or_build(path, DOCS, policy_tokenizer, enc, 16, 4, TOKENIZER_NAME, rebuild="sometimes")


def test_the_tokenizer_is_known_by_its_definition_not_its_folder(policy_tokenizer, tmp_path):
    """A checkpoint of the policy carries the same tokenizer in another folder: the index's staleness check must not
    rebuild for it (it did, comparing paths); a tokenizer that chunks differently is another one."""
    from common.models import load_tokenizer
    from retrieval.index import tokenizer_id

    policy_tokenizer.save_pretrained(tmp_path / "ckpt")
    copy = load_tokenizer(str(tmp_path / "ckpt"))
    assert copy.name_or_path != policy_tokenizer.name_or_path
    assert tokenizer_id(copy) == tokenizer_id(policy_tokenizer) and tokenizer_id(copy).startswith("sha256:")
    copy.add_tokens(["<zzz_new_token>"])
    assert tokenizer_id(copy) != tokenizer_id(policy_tokenizer)
