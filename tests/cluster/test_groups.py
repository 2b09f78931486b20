"""ActorGroup on the in-process backend (the Ray backend is exercised by the job tests)."""
import pytest

from cluster.groups import ActorGroup, get, shard


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
    out = get(g.map_shards("twice", [(p,) for p in parts]))
    assert [v for part in out for _, v in part] == [0, 2, 4, 6, 8]
    assert len(get(g.call_all("twice", [1]))) == 2
