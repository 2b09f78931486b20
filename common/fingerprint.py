"""A cheap fingerprint of a model's weights that survives the engine's re-layout: (sum, sum of squares) of every
parameter element in float64. vLLM stacks q/k/v and gate/up into fused tensors and pads vocabularies with zeros;
both sums are invariant to that, so the learner's fingerprint of what it sent must equal the engine's fingerprint
of what it now holds. A sync that silently did nothing (a known failure of broadcast-based syncs) leaves the old
fingerprint: cluster/system.py checks after every sync and stops the run with the engine's name.
"""
from __future__ import annotations

from typing import Iterable

REL_TOL = 1e-6  # float64 sums of the same float32 values in another order and grouping agree far closer


def fingerprint(tensors: Iterable) -> tuple[float, float]:
    """(sum, sum of squares) over all elements of `tensors` (torch tensors or numpy arrays), in float64."""
    import numpy as np
    import torch

    total, squares = 0.0, 0.0
    for t in tensors:
        t = torch.from_numpy(np.asarray(t)) if not isinstance(t, torch.Tensor) else t.detach()
        t = t.reshape(-1)
        for chunk in t.split(1 << 22):  # 4M elements at a time: no float64 copy of a whole embedding
            c = chunk.double()
            total += c.sum().item()
            squares += c.square().sum().item()
    return total, squares


def same(a: tuple[float, float], b: tuple[float, float], rel_tol: float = REL_TOL) -> bool:
    return all(abs(x - y) <= rel_tol * max(1.0, abs(x), abs(y)) for x, y in zip(a, b))
