"""trainer/selection.py and trainer/acquire.py: group verdicts (hand-computed), the prompt pool, and a GRPO step's
collection of groups with dynamic sampling on a fake engine whose rewards are fixed per prompt (so every number is
known in advance)."""
import random
from types import SimpleNamespace

import pytest

from common.plan import PhasePlan, Selection
from common.types import Rollout, Sampling, ScoredRollout
from rewards.overlong import soft_overlong_penalty
from tasks.base import PromptBatch
from trainer.run import RunState
from trainer.acquire import Acquisition
from trainer.selection import PromptPool, group_verdicts, shape_overlong


@pytest.mark.parametrize("rewards, G, signal, verdict", [
    ([1, 1, 1], 3, [False], ["right"]),                 # K/K right: no signal
    ([0, 0], 2, [False], ["wrong"]),                    # K/K wrong
    ([0.5, 0.5], 2, [False], [None]),                   # all equal, neither right nor wrong
    ([1, 0.99], 2, [True], [None]),                     # 0.99 < solved_at 1: not all right, and a signal
    ([1, 2], 2, [True], ["right"]),                     # all >= 1: right, with a signal (pool and counts differ)
    ([-0.2, 0], 2, [True], ["wrong"]),                  # all <= 0
    ([1, 0, 0, 0], 2, [True, False], [None, "wrong"]),  # two groups
])
def test_group_verdicts(rewards, G, signal, verdict):
    assert group_verdicts(rewards, G, solved_at=1.0, failed_at=0.0) == (signal, verdict)


def test_soft_overlong_penalty_by_hand():
    # limit 10, buffer 4: free up to 6 tokens; 7 -> -1/4, 8 -> -2/4, 10 -> -1; penalty 0.5 halves it
    assert soft_overlong_penalty([1, 6, 7, 8, 10], 10, 4) == [0.0, 0.0, -0.25, -0.5, -1.0]
    assert soft_overlong_penalty([8, 12], 10, 4, penalty=0.5) == [-0.25, -0.5]  # past the limit: capped
    with pytest.raises(ValueError, match="buffer"):
        soft_overlong_penalty([1], 10, 11)


class FakeTask:
    """A stream of n prompts (a fixed shuffle per epoch, like tasks/base.py); prompt i is the token list [i]."""

    def __init__(self, n: int = 20):
        self.splits = {"train": list(range(n))}
        self.perm = {}

    def position(self, g: int) -> int:
        n = len(self.splits["train"])
        if g // n not in self.perm:
            self.perm[g // n] = random.Random(g // n).sample(range(n), n)
        return self.perm[g // n][g % n]

    def batch_of(self, idx):
        return PromptBatch(list(idx), [[i] for i in idx], [{"i": i} for i in idx])

    def train_batch(self, first, n):
        return self.batch_of([self.position(first + j) for j in range(n)])


class FakeSystem:
    """generate: completion [i, j] of length `length(i, j)`; score: `reward(i, j)`. Records every call's seed."""

    weights_version = 0  # the learner updates its "engines" hold (never moves here: no learner)

    def __init__(self, reward, length=lambda i, j: 2):
        self.reward, self.length, self.seeds = reward, length, []
        self.engines = SimpleNamespace(generate=self.generate)

    def generate(self, prompt_ids, sampling, seed, rows=None):
        self.seeds.append(seed)
        G = sampling.group_size
        rows = [(p[0], j) for p in prompt_ids for j in range(G)]
        comps = [[i] * self.length(i, j) for i, j in rows]
        return Rollout([[i] for i, _ in rows], comps, [[0.0] * len(c) for c in comps], [str(r) for r in rows],
                       ["length" if len(c) >= sampling.max_new_tokens else "stop" for c in comps], G)

    def rest_engines(self):
        self.rested = getattr(self, "rested", 0) + 1

    def score(self, rollout, reward_inputs, state=None):
        rows = [(p[0], j % rollout.group_size) for j, p in enumerate(rollout.prompt_ids)]
        rewards = [float(self.reward(i, j)) for i, j in rows]
        return ScoredRollout(rollout, rewards, {"task": rewards})


def _run(system, task=None, state=None):
    state = state or RunState()
    return SimpleNamespace(state=state, system=system, task=task or FakeTask(),
                           cfg=SimpleNamespace(rollout=SimpleNamespace(seed=5)),
                           trainer_state=lambda phase: {"global_step": state.step + 1, "phase": phase})


def _plan(**sel) -> PhasePlan:
    return PhasePlan(0, "grpo", "grpo", Sampling(2, 1.0, 1.0, 4), selection=Selection(**sel))


def _timer():
    from trainer.phases import Timer

    return Timer()


def test_without_dynamic_sampling_a_step_is_todays_draw():
    sys_ = FakeSystem(lambda i, j: i % 2)  # every group all-equal: no signal anywhere
    run = _run(sys_)
    batch, scored, m = Acquisition(run, _plan(), 3).step(_timer())
    assert batch.indices == [run.task.position(g) for g in range(3)] and run.state.drawn == 3
    assert sys_.seeds == [5 + 1000 * 1] and run.state.grpo_steps == 1  # seeds.grpo_step(5, 1)
    assert len(scored.rewards) == 6 and m["sampling/rounds"] == 1 and m["sampling/signal_frac"] == 0.0
    assert m["sampling/groups_kept"] == 3 and m["sampling/samples_per_update"] == 6


def test_dynamic_sampling_keeps_groups_with_a_signal_and_draws_until_it_has_enough():
    # Prompts divisible by 3 have a signal (rewards 0, 1); the rest are all right (1, 1).
    sys_ = FakeSystem(lambda i, j: j if i % 3 == 0 else 1)
    run = _run(sys_)
    batch, scored, m = Acquisition(run, _plan(dynamic_rounds=5), 2).step(_timer())
    assert all(i % 3 == 0 for i in batch.indices) and len(batch.indices) == 2
    assert scored.rewards == [0.0, 1.0, 0.0, 1.0] and scored.rollout.prompt_ids == [[i] for i in batch.indices
                                                                                     for _ in range(2)]
    drawn = [run.task.position(g) for g in range(m["sampling/prompts_drawn"])]
    assert run.state.drawn == m["sampling/prompts_drawn"]  # the data position counts every drawn prompt
    kept = [i for i in drawn if i % 3 == 0]
    assert batch.indices == kept[:2]  # the first two with a signal, in draw order
    assert m["sampling/all_right"] == len(drawn) - len(kept) and m["sampling/all_wrong"] == 0
    assert m["sampling/rounds"] == len(sys_.seeds) >= 2 and m["sampling/short"] == 0.0
    assert len(set(sys_.seeds)) == len(sys_.seeds)  # each round samples with its own seed


def test_dynamic_sampling_that_runs_out_of_rounds_trains_on_what_it_has():
    task = FakeTask(100)
    only = task.position(5)  # the 6th prompt drawn is the only one with a signal
    sys_ = FakeSystem(lambda i, j: j if i == only else 0)
    run = _run(sys_, task)
    batch, scored, m = Acquisition(run, _plan(dynamic_rounds=2), 4).step(_timer())
    # round 1: 4 prompts, none kept; round 2: ceil(4 / 0.25) = 16 (at most 4 x 4) more, one kept
    assert m["sampling/short"] == 1.0 and m["sampling/rounds"] == 2 and run.state.drawn == 4 + 16
    assert batch.indices == [only] and m["sampling/groups_kept"] == 1 and scored.rewards == [0.0, 1.0]
    # no group with a signal in any round: the last round's groups, as plain GRPO would train on
    run = _run(FakeSystem(lambda i, j: 0), FakeTask(100))
    batch, scored, m = Acquisition(run, _plan(dynamic_rounds=2), 4).step(_timer())
    assert m["sampling/groups_kept"] == 0 and batch.indices == [run.task.position(g) for g in range(4, 20)]


def test_the_pool_skips_solved_and_failed_prompts_for_their_visits():
    task, skips = FakeTask(4), {}
    pool = PromptPool(skips, skip_solved=2, skip_failed=1)
    batch, pos, skipped = pool.draw(task, 0, 4)  # epoch 0: all four
    assert sorted(batch.indices) == [0, 1, 2, 3] and pos == 4 and skipped == {"right": 0, "wrong": 0}
    pool.record([0, 1, 2, 3], ["right", "wrong", None, None])
    batch, pos, skipped = pool.draw(task, 4, 2)  # epoch 1: 0 and 1 are skipped wherever they come
    assert set(batch.indices) <= {2, 3} and skipped == {"right": 1, "wrong": 1} and pos == 8 - 0
    assert skips == {"0": [1, "right"]}  # 1's one skip is spent; 0 has one more
    batch, pos, skipped = pool.draw(task, 8, 3)  # epoch 2: 0 skipped again (its last), then 1, 2, 3
    assert sorted(batch.indices) == [1, 2, 3] and skipped["right"] == 1 and skips == {}


def test_a_pool_that_skips_every_prompt_draws_once_the_skips_are_spent():
    task, skips = FakeTask(2), {"0": [3, "right"], "1": [3, "wrong"]}
    batch, pos, skipped = PromptPool(skips, skip_solved=3, skip_failed=3).draw(task, 0, 1)
    assert pos == 7 and skipped == {"right": 3, "wrong": 3} and len(batch.indices) == 1  # 3 epochs of 2 skipped


def test_a_step_resumed_from_the_saved_state_draws_what_the_uninterrupted_run_draws():
    """Three steps in a row vs one step, the state through JSON (as a checkpoint saves it), then two more."""
    import json
    from dataclasses import asdict

    reward = lambda i, j: (j if i % 4 == 0 else 1 if i % 4 == 1 else 0)  # noqa: E731  signal, right, wrong
    plan = _plan(dynamic_rounds=3, skip_solved=1, skip_failed=2)

    def steps(run, n):
        return [Acquisition(run, plan, 2).step(_timer())[0].indices for _ in range(n)]

    whole = _run(FakeSystem(reward), FakeTask(12))
    a = steps(whole, 3)
    first = _run(FakeSystem(reward), FakeTask(12))
    b = steps(first, 1)
    state = RunState(**json.loads(json.dumps(asdict(first.state))))
    again = _run(FakeSystem(reward), FakeTask(12), state)
    b += steps(again, 2)
    assert a == b and asdict(whole.state) == asdict(again.state)


def test_soft_overlong_shapes_the_reward_before_the_signal_is_judged():
    # Every answer is right (1) but sample 1 of each prompt runs to the 4-token limit: -1 -> a signal.
    sys_ = FakeSystem(lambda i, j: 1, length=lambda i, j: 4 if j == 1 else 2)
    run = _run(sys_)
    _, scored, m = Acquisition(run, _plan(dynamic_rounds=2, overlong="soft", overlong_buffer=2), 2).step(_timer())
    assert scored.rewards == [1.0, 0.0, 1.0, 0.0] and scored.components["overlong"] == [0.0, -1.0] * 2
    assert m["sampling/rounds"] == 1 and m["sampling/signal_frac"] == 1.0
    plain = shape_overlong(scored, Selection(), 4)
    assert plain is scored  # keep: unchanged


def test_the_config_names_every_estimator_and_only_those():
    import typing

    from common.config import AlgoConfig
    from learner.advantages import ESTIMATORS

    assert typing.get_args(AlgoConfig.model_fields["advantage"].annotation) == ESTIMATORS


def test_a_dead_actor_is_named_from_rays_error_and_its_task_wrapper():
    """trainer/run.py lost_actor: Ray's ActorDiedError, and a call whose argument came from the dead actor
    (RayTaskError(ActorDiedError), a subclass of both), name the actor; other errors are not an actor's death."""
    from trainer.run import lost_actor

    class ActorDiedError(RuntimeError):
        pass

    class Wrapped(ActorDiedError):  # what ray builds: RayTaskError(ActorDiedError)
        pass

    text = "The actor died.\n\tclass_name: Learner\n\tactor_id: ab12\n\tname: learner-0\n\tip: 10.0.0.1"
    assert lost_actor(ActorDiedError(text)) == "learner-0" == lost_actor(Wrapped("ray::VLLMEngine.update_weights\n" + text))
    assert lost_actor(ActorDiedError("class_name: Critic")) == "Critic"
    assert lost_actor(ValueError("name: x")) is None


def test_a_resume_drops_the_records_of_steps_after_its_checkpoint(tmp_path):
    import json

    from common.metrics_log import drop_after

    recs = [{"kind": "info", "message": "run dir"}, {"kind": "eval", "step": 0}, {"kind": "step", "step": 1},
            {"kind": "step", "step": 2}, {"kind": "eval", "step": 2}, {"kind": "info", "message": "stopped"},
            {"kind": "step", "step": 3}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert drop_after(path, 1) == 3 and drop_after(path, 1) == 0  # steps 2, 3 and the eval at 2 run again
    assert [json.loads(x) for x in path.read_text().splitlines()] == [recs[0], recs[1], recs[2], recs[5]]
    assert drop_after(tmp_path / "absent.jsonl", 0) == 0
