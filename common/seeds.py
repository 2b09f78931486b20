"""Every seed a run derives from its configured ones, in one place: each stream of randomness has its own offset,
so no two streams draw the same numbers and a resumed run draws what the uninterrupted one would have.

The offsets are arbitrary and fixed (changing one changes every sampled number of the runs it touches).
"""


def shard(seed: int, i: int) -> int:
    """Engine shard i of one generate call (`start` + i when a caller cuts its prompts into batches)."""
    return seed + 7919 * i


def grpo_step(rollout_seed: int, step: int) -> int:
    """The sampling of the `step`-th GRPO/PPO step of the run (1-based, over all phases)."""
    return rollout_seed + 1000 * step


def dynamic_round(rollout_seed: int, step: int, round_: int) -> int:
    """Dynamic sampling's extra generation call `round_` (1, 2, ...) of GRPO step `step` (round 0 is grpo_step's)."""
    return rollout_seed + 1000 * step + 13 * round_ + 3_000_017


def eval_samples(rollout_seed: int) -> int:
    """The periodic eval's sampled answers (task eval_samples): the same draws at every eval."""
    return rollout_seed + 999_983


def rs_sft(rollout_seed: int, drawn: int) -> int:
    """A rejection-sampling batch, by the data position after it."""
    return rollout_seed + 7_000_003 + drawn


def ppo_minibatches(train_seed: int, step: int) -> int:
    """The shuffle of PPO step `step`'s minibatches."""
    return train_seed * 7919 + step


def data_epoch(data_seed: int, epoch: int) -> int:
    """The permutation of the training examples in `epoch` (the data position is a function of the draw count)."""
    return data_seed * 100_003 + epoch


def turn(call_seed: int, turn_: int) -> int:
    """Turn `turn_` (2, 3, ...) of a multi-turn generation whose first turn sampled with `call_seed`."""
    return call_seed + 104_729 * turn_ + 11


def session_request(run_seed: int, session: str | None, n: int | str) -> int:
    """The seed of request `n` of an endpoint session (rollout/endpoint.py) that sets none: a rerun samples what the
    run did. Sessions are named by strings, so this one hashes (blake2b: stable across processes, unlike hash())."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(repr((run_seed, session, n)).encode(), digest_size=4).digest(), "little")
