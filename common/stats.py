"""Small statistics for reports: seeded percentile-bootstrap confidence intervals of a mean."""
from __future__ import annotations

import random


def bootstrap_ci(values: list[float], n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (resampling items with replacement, seeded).

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    >>> lo, hi = bootstrap_ci([0.0, 1.0] * 50); round(lo, 2) < 0.5 < round(hi, 2)
    True
    """
    if not values:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng, n = random.Random(seed), len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(n_resamples))
    tail = (1.0 - level) / 2
    lo = means[int(tail * (n_resamples - 1))]
    hi = means[int(round((1.0 - tail) * (n_resamples - 1)))]
    return lo, hi


def paired_bootstrap_diff(a: list[float], b: list[float], n_resamples: int = 2000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float, float]:
    """Mean of b - a over the same items, and its percentile-bootstrap CI (items resampled in pairs, so what
    the two models share, the items' difficulty, cancels out).

    >>> paired_bootstrap_diff([0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0])[0]
    0.5
    >>> paired_bootstrap_diff([1.0, 0.0], [1.0, 0.0])
    (0.0, 0.0, 0.0)
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need the same non-zero length, got {len(a)} and {len(b)}")
    diffs = [y - x for x, y in zip(a, b)]
    lo, hi = bootstrap_ci(diffs, n_resamples, seed, level)
    return sum(diffs) / len(diffs), lo, hi


def mcnemar_exact(a: list[float], b: list[float]) -> tuple[int, int, float]:
    """Exact McNemar test for two 0/1 scores on the same items: (items only `a` got right, items only `b` got
    right, two-sided p-value of "both are equally good": a binomial test on the discordant items).

    >>> mcnemar_exact([1, 1, 0, 0], [1, 1, 0, 0])
    (0, 0, 1.0)
    >>> mcnemar_exact([0] * 10, [1] * 10)[2] < 0.01
    True
    """
    from math import comb

    if len(a) != len(b):
        raise ValueError(f"paired samples need the same length, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x >= 0.5 > y)
    only_b = sum(1 for x, y in zip(a, b) if y >= 0.5 > x)
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 0, 0, 1.0
    p = 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n
    return only_a, only_b, min(1.0, p)
