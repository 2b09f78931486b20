"""DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, eq. 13): a length-aware penalty added to the
task's reward, so answers that run into the token limit are discouraged gradually instead of all at once.

    penalty(L) = 0                                   L <= Lmax - buffer
               = ((Lmax - buffer) - L) / buffer * p  Lmax - buffer < L <= Lmax
               = -p                                  L > Lmax (a completion cut at the limit has L = Lmax: -p)

with Lmax = max_new_tokens, `buffer` the punished interval and p the penalty at the limit (verl's
overlong_buffer.len / penalty_factor).
"""
from __future__ import annotations


def soft_overlong_penalty(lengths: list[int], max_new_tokens: int, buffer: int, penalty: float = 1.0) -> list[float]:
    """[B] penalties (<= 0) for completions of these token lengths.

    Example: limit 16, the last 4 tokens punished, penalty 1: 12 tokens -> 0, 14 -> (12 - 14) / 4 = -0.5, 16 -> -1.
        >>> soft_overlong_penalty([12, 14, 16], max_new_tokens=16, buffer=4)
        [0.0, -0.5, -1.0]
    """
    if not 1 <= buffer <= max_new_tokens:
        raise ValueError(f"buffer must lie in 1..max_new_tokens ({max_new_tokens}), got {buffer}")
    if penalty <= 0:
        raise ValueError(f"penalty must be > 0, got {penalty}")
    expected = max_new_tokens - buffer
    return [max(min((expected - n) / buffer * penalty, 0.0), -penalty) + 0.0 for n in lengths]
