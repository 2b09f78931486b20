"""Deterministic fakes for unit tests (no model downloads, no torch)."""
from __future__ import annotations

import hashlib
import re

import numpy as np


class HashEncoder:
    """Bag of hashed lower-cased word tokens in `dim` buckets, L2-normalised: the `Encoder` interface.

    Texts sharing words get a higher cosine; identical word multisets get cosine 1. Hashing is blake2b,
    not `hash()`, so vectors are the same across processes and PYTHONHASHSEED values. A text with no word
    maps to the fixed unit vector e_0, never NaN.
    """

    def __init__(self, dim: int = 64):
        self.dim = dim
        self.name = f"hash-encoder@{dim}"

    def _bucket(self, word: str) -> int:
        return int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") % self.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # [N, D]
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, self._bucket(word)] += 1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)
