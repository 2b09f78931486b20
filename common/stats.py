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
