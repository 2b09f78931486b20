"""ActorGroup on the in-process backend, and the few Ray behaviours the job tests cannot pin down."""
import pytest

from cluster.groups import ActorGroup, ActorRestarted, get, shard


class Echo:
    def __init__(self, tag):
        self.tag = tag

    def twice(self, xs):
        return [(self.tag, 2 * x) for x in xs]


@pytest.mark.parametrize("n_items,n_shards", [(0, 3), (1, 3), (5, 2), (16, 4), (7, 7), (3, 8)])
def test_shard_is_an_ordered_partition(n_items, n_shards):
    items = list(range(n_items))
    parts = shard(items, n_shards)
    assert [x for p in parts for x in p] == items
    assert len(parts) <= max(1, n_shards)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_map_shards_keeps_order_and_uses_every_member():
    g = ActorGroup.create("echo", Echo, 2, "inprocess", args=("t",))
    parts = shard(list(range(5)), 2)
    out = get(g.map_shards(Echo.twice, [(p,) for p in parts]))
    assert [v for part in out for _, v in part] == [0, 2, 4, 6, 8]
    assert len(get(g.call_all(Echo.twice, [1]))) == 2


def test_peak_rss_of_in_process_members_and_of_a_process():
    import os

    from cluster.groups import ActorGroup, process_peak_rss_gib

    big = bytearray(64 * 2**20)  # touched: 64 MiB resident
    big[::4096] = b"x" * len(big[::4096])
    group = ActorGroup.create("g", dict, 2, "inprocess")
    peaks = group.peak_rss_gib()
    assert len(peaks) == 2 and peaks[0] == peaks[1] and peaks[0] > 64 / 1024
    assert process_peak_rss_gib(os.getpid()) >= peaks[0] - 1e-3
    assert process_peak_rss_gib(None) is None and process_peak_rss_gib(2**31 - 1) is None  # no such process


class Sleeper:
    def nap(self, seconds):
        import time

        time.sleep(seconds)
        return seconds


@pytest.mark.ray
def test_a_call_that_hangs_becomes_an_error_naming_the_actor_and_stage(ray_session):
    group = ActorGroup.create("slow", Sleeper, 1, "ray", num_cpus=0.1)
    try:
        assert group.alive(timeout=120)  # started (a worker process takes seconds)
        group.timeout = 1.0
        assert group.run(Sleeper.nap, 0) == 0
        with pytest.raises(TimeoutError, match=r"slow-0\.nap did not answer within 1 s \(cluster.call_timeout_s\)"):
            group.run(Sleeper.nap, 30)
    finally:
        group.kill()


def test_a_call_names_a_method_object_of_the_members_class():
    g = ActorGroup.create("echo", Echo, 1, "inprocess", args=("t",))
    with pytest.raises(TypeError, match="call a method object"):
        g.run("twice", [1])  # a string would fail only at runtime after a rename
    with pytest.raises(TypeError, match=r"Sleeper.nap is not a method of Echo"):
        g.run(Sleeper.nap, 0)
    assert g.run(Echo.twice, [2]) == [("t", 4)]


def test_no_actor_method_is_called_by_a_string():
    """grep: every .run/.call/.call_all/.map_shards/retried in the library and the scripts names a method object."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    call = re.compile(r"\.(run|call|call_all|map_shards|retried)\(\s*(\w+\s*,\s*)?[\"']")
    found = [f"{p.relative_to(root)}:{i}" for folder in ("cluster", "jobs", "trainer", "bench")
             for p in sorted((root / folder).rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if call.search(line)]
    assert not found, f"actor methods called by a string: {found}"


class Pid(Echo):
    def pid(self):
        import os

        return os.getpid()

    def close(self):
        pass


@pytest.mark.ray
def test_a_member_ray_restarts_between_calls_refuses_them_until_built_for_the_run_again(ray_session):
    """Ray restarts a member with the arguments it was created with (a fleet's first run's). One killed between two
    calls must not answer the next with them: it refuses (ActorRestarted); Recovery.retried counts that like a death,
    has it built with the run's arguments (`restored`: cluster/fleet.py Fleet.restored) and calls again."""
    import os
    import signal

    from cluster.recovery import Recovery

    group = ActorGroup.create("reward", Pid, 1, "ray", args=("first run",), num_cpus=0.1, max_restarts=1,
                              rebuilt_after_restart=True)
    rebuilt = []
    recovery = Recovery(1, 120, "ray", restored=lambda g: (rebuilt.append(g.name), g.reinit(("second run",))))
    try:
        assert group.alive(timeout=120)
        group.reinit(("second run",))  # a later run borrows it
        assert group.run(Echo.twice, [1]) == [("second run", 2)]
        os.kill(group.run(Pid.pid), signal.SIGKILL)
        recovery.await_restart(group)  # back, built from its first arguments, before the next call
        with pytest.raises(ActorRestarted, match=r"reward-0 was restarted by Ray since this run built it.*twice"):
            group.run(Echo.twice, [1])
        assert recovery.retried(group, Echo.twice, [([1],)]) == [[("second run", 2)]]
        assert recovery.restarts == 1 and rebuilt == ["reward"]
    finally:
        group.kill()
