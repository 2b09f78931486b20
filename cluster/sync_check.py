"""The weight-sync check: after every sync, each engine must serve the learner's weights, in fp32 and in bf16.

Each engine and the learner score one fixed probe sequence (a fixed prompt and the initial policy's own greedy
continuation: tokens the model finds likely, where rounding moves logprobs least). Three tests, all on the
probe's likely tokens (learner logprob >= LIKELY at the first check):

  agrees   the engine's logprobs are within a tolerance of the learner's: the largest gap <= 1e-3 when both sides
           are fp32 (they differ by ~1e-5), the mean gap <= 0.1 with bf16 on either side (rounding alone gives
           ~1e-2 a token, up to ~0.3 on single tokens: a max would stop healthy runs). cluster.sync_tolerance
           overrides the number.
  moved    when the learner's probe moved since the last check (rms > MOVE_MIN), the engine's must have changed:
           a stale engine returns bit-identical logprobs for the same weights, in any precision. This is the test
           that catches a no-op sync in bf16, where one small update hides inside the rounding of `agrees`.
  tracks   since the first check, the engine must have moved with the learner: once the learner's probe moved
           beyond the rounding noise (rms(l - l0) > TRACK_SPAN x the first check's rms gap, and > 1e-3), the
           engine's movement projected on the learner's, <e - e0, l - l0> / |l - l0|^2, must be >= 1/2 (a healthy
           engine gives 1; the projection averages the rounding over the probe's tokens, so it sees a partial
           follower long before its gap reaches the tolerance). Catches an engine that takes some tensors and
           keeps others (a stale head).

The functions are pure (lists of floats in, a verdict out); `SyncCheck` keeps each engine's history.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

LIKELY = math.log(0.05)  # "tokens the model finds likely": p >= 5% under the learner at the first check
MIN_LIKELY = 8  # fewer likely tokens than this: all tokens count
# Learner movement (rms nats) below which an unchanged engine is plausible. An update flips the bf16 rounding of
# about 256 x (relative change) of the weights, so any update that moves the learner's probe by 1e-4 changes
# thousands of an engine's bf16 weights (and with them its probe); only a near-zero lr moves less.
MOVE_MIN = {"fp32": 1e-6, "bf16": 1e-4}
TRACK_SPAN = 3.0
TOLERANCE = {"fp32": 1e-3, "bf16": 0.1}


class SyncFailed(RuntimeError):
    """An engine does not serve the learner's weights after a sync."""


def _rms(xs: list[float]) -> float:
    return math.sqrt(sum(x * x for x in xs) / len(xs)) if xs else 0.0


def likely_tokens(learner: list[float]) -> list[int]:
    """Indices of the probe tokens the learner finds likely (all of them when fewer than MIN_LIKELY are)."""
    picked = [i for i, lp in enumerate(learner) if lp >= LIKELY]
    return picked if len(picked) >= MIN_LIKELY else list(range(len(learner)))


def gap_statistic(engine: list[float], learner: list[float], idx: list[int], precision: str) -> float:
    """max |e - l| over `idx` in fp32, mean |e - l| with bf16 anywhere."""
    gaps = [abs(engine[i] - learner[i]) for i in idx]
    return max(gaps) if precision == "fp32" else sum(gaps) / len(gaps)


@dataclass
class _History:
    first_e: list[float]
    first_l: list[float]
    noise: float  # rms gap at the first check: the rounding noise between the two sides
    last_e: list[float] = field(default_factory=list)
    last_l: list[float] = field(default_factory=list)


class SyncCheck:
    """`precision`: 'fp32' when learner and every engine run fp32, else 'bf16'. `tolerance`: the `agrees`
    bound (None: TOLERANCE by precision)."""

    def __init__(self, precision: str, tolerance: float | None = None):
        self.precision = precision
        self.tolerance = tolerance if tolerance is not None else TOLERANCE[precision]
        self.idx: list[int] | None = None
        self.history: dict[int, _History] = {}

    def forget(self, engine: int) -> None:
        """An engine was restarted: its next check starts its history again."""
        self.history.pop(engine, None)

    def check(self, engines: list[list[float]], learner: list[float]) -> dict[str, float]:
        """Judge every engine's probe logprobs against the learner's; raise SyncFailed naming the first engine that
        fails, else return metrics (sync/gap: the worst engine's statistic; sync/learner_moved: rms since the last
        check)."""
        if self.idx is None:
            self.idx = likely_tokens(learner)
        idx, worst, moved = self.idx, 0.0, 0.0
        for i, got in enumerate(engines):
            if len(got) != len(learner):
                raise SyncFailed(f"weight sync failed: engine rollout-{i} scored {len(got)} probe tokens, the learner "
                                 f"{len(learner)}")
            e, l = [got[j] for j in idx], [learner[j] for j in idx]
            h = self.history.get(i)
            if h is not None:  # first: "kept its old weights" is the sharper diagnosis than "far away"
                moved = max(moved, self._moved(i, h, e, l))
            gap = gap_statistic(e, l, list(range(len(idx))), self.precision)
            worst = max(worst, gap)
            kind = "largest" if self.precision == "fp32" else "mean"
            if not gap <= self.tolerance:
                raise SyncFailed(
                    f"weight sync failed: engine rollout-{i} scores the probe sequence {gap:.3g} away from the learner "
                    f"({kind} gap over {len(idx)} likely tokens; cluster.sync_tolerance {self.tolerance:g}, "
                    f"{self.precision}): it samples from another policy than the one being trained")
            if h is None:
                self.history[i] = _History(e, l, _rms([a - b for a, b in zip(e, l)]), e, l)
                continue
            self._tracks(i, h, e, l)
            h.last_e, h.last_l = e, l
        return {"sync/gap": worst, "sync/learner_moved": moved, "sync/tokens": float(len(idx))}

    def _moved(self, i: int, h: _History, e: list[float], l: list[float]) -> float:
        learner_moved = _rms([a - b for a, b in zip(l, h.last_l)])
        if learner_moved > MOVE_MIN[self.precision] and e == h.last_e:
            raise SyncFailed(
                f"weight sync failed: engine rollout-{i} scores the probe exactly as before the sync while the "
                f"learner's logprobs moved by {learner_moved:.3g} (rms): the engine kept its old weights")
        return learner_moved

    def _tracks(self, i: int, h: _History, e: list[float], l: list[float]) -> None:
        dl = [a - b for a, b in zip(l, h.first_l)]
        span = _rms(dl)
        if span <= max(TRACK_SPAN * h.noise, 1e-3):
            return
        de = [a - b for a, b in zip(e, h.first_e)]
        followed = sum(x * y for x, y in zip(de, dl)) / sum(y * y for y in dl)
        if followed < 0.5:
            raise SyncFailed(
                f"weight sync failed: engine rollout-{i} has not followed the learner: since the first sync the "
                f"learner's probe moved {span:.3g} (rms) and the engine's moved {followed:.2f} of that way: some of "
                "its weights were not updated")
