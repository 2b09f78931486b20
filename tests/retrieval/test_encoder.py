"""The hash-encoder fake's contract, and the real packaged all-MiniLM-L6-v2 (loads offline in ~0.3 s)."""

from pathlib import Path

import numpy as np

from retrieval.encoder import folder_fingerprint, load_encoder, packaged_encoder_dir
from tests.fakes import HashEncoder


def _cos(a, b):
    return float(a @ b)


def test_hash_encoder_contract():
    enc = HashEncoder()
    emb = enc.encode(["The cat sat on the mat", "the CAT sat on the mat!", "A cat is on a mat", "Stock markets fell", ""])
    assert emb.shape == (5, 64) and emb.dtype == np.float32 and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    assert _cos(emb[0], emb[1]) > 0.999999  # same words after lower-casing
    assert _cos(emb[0], emb[2]) > _cos(emb[0], emb[3])  # shared words -> closer
    assert emb[4].tolist() == [1.0] + [0.0] * 63  # empty text -> e_0
    assert np.array_equal(enc.encode(["The cat sat on the mat"])[0], emb[0])  # deterministic, batch-independent
    assert enc.encode([]).shape == (0, 64)


def test_packaged_minilm_embeds_meaning():
    enc = load_encoder(None)
    assert enc.dim == 384
    assert enc.name == f"all-MiniLM-L6-v2@{folder_fingerprint(packaged_encoder_dir())}"
    assert (Path(packaged_encoder_dir()) / "model.safetensors").is_file()
    emb = enc.encode(["The cat sat on the mat", "A cat is sitting on a mat", "Stock markets fell sharply"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert _cos(emb[0], emb[1]) > _cos(emb[0], emb[2]) + 0.3
    assert enc.encode([]).shape == (0, 384)
