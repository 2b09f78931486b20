"""Semantic rewards of the domain-QA system: similarity to a reference answer, and repetition.

Encoders map texts to unit rows ([N, D] float32), so a dot product is a cosine. The packaged
all-MiniLM-L6-v2 (retrieval/encoder.py) is the default; it loads once per reward actor
(`cached_encoder`). Pure functions take the encoder as an argument, so tests pass a hash encoder.

Repetition has two signals, because each misses what the other sees: repeated word n-grams catch
verbatim loops ("the the the"), sentence-embedding similarity catches paraphrased repeats.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from rewards.sentences import split_sentences

MAX_SENTENCES = 32        # per completion: bounds the cost of a 10k-character completion
MAX_SENTENCE_CHARS = 1000


@cache
def cached_encoder(spec: str | None):
    from retrieval.encoder import load_encoder

    return load_encoder(spec)


@cache
def load_cross_encoder(spec: str):
    from sentence_transformers import CrossEncoder

    from common.device import device_for

    return CrossEncoder(spec, device=device_for())


def similarity(encoder, completions: list[str], references: list[str]) -> list[float]:
    """[B] cosine(completion_i, reference_i) in [-1, 1]; an empty completion scores 0.0 (not the
    cosine of an empty string's embedding, which is arbitrary)."""
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    if not completions:
        return []
    a = encoder.encode(completions)   # [B, D]
    b = encoder.encode(references)    # [B, D]
    cos = np.clip((a * b).sum(axis=1), -1.0, 1.0)  # [B]
    return [0.0 if not c.strip() else float(x) for c, x in zip(completions, cos)]


def cross_encoder_scores(model, completions: list[str], references: list[str]) -> list[float]:
    """[B] cross-encoder scores of (completion, reference) pairs, as the model outputs them."""
    if not completions:
        return []
    scores = np.asarray(model.predict(list(zip(completions, references))), dtype=np.float64).reshape(-1)
    return [0.0 if not c.strip() else float(s) for c, s in zip(completions, scores)]


def sentences(text: str) -> list[str]:
    """The sentences of `text` (rewards/sentences.py's rule); at most MAX_SENTENCES, each capped in length.

    >>> sentences("It rains. It pours!\\nThe end")
    ['It rains.', 'It pours!', 'The end']
    """
    return [s[:MAX_SENTENCE_CHARS] for s in split_sentences(text)][:MAX_SENTENCES]


def ngram_repetition(text: str, n: int = 3) -> float:
    """Fraction of word n-grams that repeat an earlier one: 1 - distinct/total; 0.0 below n words.

    >>> ngram_repetition("a b c a b c", 3)   # 4 trigrams, 3 distinct
    0.25
    >>> ngram_repetition("a b", 3)
    0.0
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = text.split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(words[i:i + n]) for i in range(total)})
    return 1.0 - distinct / total


def max_pairwise_cosine(emb: np.ndarray) -> float:
    """Largest cosine between two different rows of unit-row `emb` [S, D]; 0.0 when S < 2."""
    if emb.shape[0] < 2:
        return 0.0
    sims = emb @ emb.T                      # [S, S]
    np.fill_diagonal(sims, -1.0)
    return float(sims.max())


def sentence_repetition(encoder, completions: list[str], threshold: float = 0.8) -> list[float]:
    """[B] penalty in [0, 1]: how far the most similar pair of sentences of each completion lies above
    `threshold`, rescaled so threshold -> 0 and identical sentences -> 1. All sentences of the batch
    are embedded in one call."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    per = [sentences(t) for t in completions]
    flat = [s for ss in per for s in ss]
    emb = encoder.encode(flat) if flat else np.zeros((0, 1), np.float32)  # [sum S, D]
    out, start = [], 0
    for ss in per:
        top = max_pairwise_cosine(emb[start:start + len(ss)])
        start += len(ss)
        out.append(float(min(1.0, max(0.0, (top - threshold) / (1.0 - threshold)))))
    return out
