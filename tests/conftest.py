"""Shared test fixtures: where the project's shared data lives."""

import os
from pathlib import Path

import pytest

# The repo sits beside shared/ (…/main and …/shared); CI clones it the same way.
SHARED_DATA_ENV = "RAYGRPO_SHARED_DATA"


def shared_data_dir() -> Path:
    override = os.environ.get(SHARED_DATA_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to shared/data; skips the test when it is absent (override with $RAYGRPO_SHARED_DATA)."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set {SHARED_DATA_ENV} to its location)")
    return path


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory) -> str:
    """A small random Llama with the embedded policy's tokenizer and chat template (tests/tiny_models.py
    `tiny_policy`), built once a session: the real path (local Ray, vLLM, real tasks and data) for tests whose
    point is the system (faults, overlap, resume, recipe plumbing), where the 135M weights add minutes and nothing
    else. The real model keeps its own real-path tests (smoke with two engines, the MLQA recipe, the pinned
    regression run, job submit, eval)."""
    from tests.tiny_models import tiny_policy

    return tiny_policy(tmp_path_factory.mktemp("tiny_policy"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """A tiny random Llama (seed 0) with a character tokenizer, saved once a session: the recipe engine in-process
    with the HF engine in seconds (tests/tiny_models.py)."""
    from tests.tiny_models import char_tokenizer, tiny_llama

    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama(seed=0).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


WEIGHT_FILE_BYTES = 50 * 2**20  # checkpoints of the embedded model are ~0.5 GB each


_PEAK_RAISED: list[tuple[float, str]] = []  # (GiB, test): the tests that raised the test process's peak memory


@pytest.fixture(autouse=True)
def _peak_memory_of_the_test_process(request):
    """Which tests raise this process's peak resident memory (the real-path jobs' driver runs here, beside the
    fleets' actors): the session's summary names the largest raises."""
    before = _rss_gib()[1]
    yield
    raised = _rss_gib()[1] - before
    if raised > 0.25:
        _PEAK_RAISED.append((raised, request.node.nodeid))


@pytest.fixture(autouse=True)
def _drop_checkpoint_weights(request):
    """After every test, delete weight files over 50 MB under its tmp_path, passed or failed.

    A failed test's folder is kept for its logs and metrics; its checkpoints' weights would fill the disk
    (the suite writes ~50 GB of them). Module-scoped model folders live elsewhere and are untouched.
    """
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is None or not Path(tmp).is_dir():
        return
    for path in Path(tmp).rglob("*"):
        try:
            if path.is_file() and path.stat().st_size > WEIGHT_FILE_BYTES:
                path.unlink()
        except OSError:
            pass


# ---- the session's Ray cluster and its warm fleets (cluster/fleet.py) ------------------------------------------------
class RaySession:
    """The test session's local Ray cluster: its address (a job in a subprocess joins it with cluster.address=...) and
    its Prometheus port."""

    def __init__(self, address: str, metrics_port: int):
        self.address, self.metrics_port = address, metrics_port


_SESSION: dict = {}


def start_ray_session() -> RaySession:
    """Ray for the rest of the session (started once; a test that needs a cluster of its own ends it first with
    `end_ray_session`, and the next test that needs it starts it again)."""
    if "ray" in _SESSION:
        return _SESSION["ray"]
    import ray

    from cluster import runtime
    from common.collective import free_port

    if ray.is_initialized():
        ray.shutdown()
    # metrics exported every 0.5 s, not 10: a tiny-policy job ends seconds after its first step (tests/jobs/test_recipes)
    os.environ["RAY_metrics_report_interval_ms"] = "500"
    port = free_port()
    # slots, not cores: several warm fleets are placed at once, each asking ~2 (cluster/fleet.py FleetSpec.cpus)
    ray.init(address="local", num_cpus=16, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=port, runtime_env={"env_vars": runtime.actor_env(None, 1.0)})
    _SESSION["ray"] = RaySession(ray.get_runtime_context().gcs_address, port)
    return _SESSION["ray"]


def end_ray_session() -> None:
    """The session's fleets closed and its Ray cluster ended (a test about to start a cluster of its own)."""
    pool = _SESSION.pop("fleets", None)
    if pool is not None:
        pool.close()
    if _SESSION.pop("ray", None) is not None:
        import ray

        ray.shutdown()


@pytest.fixture
def ray_session() -> RaySession:
    """The session's local Ray cluster (joined, never ended, by the test)."""
    return start_ray_session()


def _release_driver_memory() -> None:
    """The test process's freed objects collected and its heap's free pages given back to the node (glibc keeps them
    otherwise): the in-process tests before the real-path jobs leave GiBs the jobs' actors need."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rss_gib() -> tuple[float, float]:
    """This process's resident memory now and at its peak (GiB)."""
    import resource

    now = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@pytest.fixture
def fleets(ray_session, request):
    """The session's warm fleets (cluster/fleet.py FleetPool): a real-path job borrows the one of its spec, whose
    actors (vLLM engines, learner, reference, critic, reward and tool actors) were started by an earlier job and reset
    to this job's start. Three at most are kept, fewer where the node's memory runs short (FleetPool.reserve_gib); the
    reference and critic are held for every fleet, so GRPO, PPO and DPO runs of one model and engine share one.
    A test marked `fleet(..., alone=True)` (the embedded model's search run: ~17 GiB of actors at its peak) has the
    node to itself: the other groups' fleets are closed before it (its group runs last, so none is needed again)."""
    from cluster.fleet import FleetPool

    _release_driver_memory()
    mark = request.node.get_closest_marker("fleet")
    if mark is not None and mark.kwargs.get("alone") and "fleets" in _SESSION:
        _SESSION["fleets"].close()
    if "fleets" not in _SESSION:
        def widen(spec):
            from dataclasses import replace

            return replace(spec, references=spec.references or spec.learners, critics=spec.critics or spec.learners)

        _SESSION["fleets"] = FleetPool(keep=3, widen=widen)
    return _SESSION["fleets"]


@pytest.fixture
def own_ray():
    """For a test that starts (and ends) a Ray cluster of its own: the session's is ended first."""
    end_ray_session()
    yield


def pytest_sessionfinish(session, exitstatus):
    pool = _SESSION.get("fleets")
    lines = []
    if pool is not None:  # how well the warm fleets served (each start costs ~30 s: docs/testing.md)
        lines = [f"warm fleets: {pool.started} started, {pool.lent} runs on a warm one, {pool.regrouped} on warm "
                 "engines with training groups built anew"]
        lines += [f"  started {text}" for text in pool.starts]
    now, peak = _rss_gib()  # the test process's share of the node beside the fleets' actors
    lines.append(f"test process memory: {now:.1f} GiB resident at the end, {peak:.1f} GiB at its peak")
    lines += [f"  its peak raised {gib:.1f} GiB by {test}" for gib, test in sorted(_PEAK_RAISED, reverse=True)[:5]]
    session.config._fleet_report = lines
    end_ray_session()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for line in getattr(config, "_fleet_report", []):
        terminalreporter.write_line(line)


def pytest_collection_modifyitems(session, config, items):
    """Tests that start a Ray cluster of their own (the `own_ray` fixture or marker) first, before the session's exists; then every other
    test in its place; then the tests that borrow warm fleets, grouped by their `fleet` marker (jobs of one model and
    settings one after another, so each group starts its fleets once)."""
    own = [i for i in items if "own_ray" in getattr(i, "fixturenames", ()) or i.get_closest_marker("own_ray")]
    groups: dict[str, list] = {}
    rest = []
    for item in items:
        if item in own:
            continue
        mark = item.get_closest_marker("fleet")
        if mark is not None:
            groups.setdefault(mark.args[0], []).append(item)
        else:
            rest.append(item)
    # in a group, the runs that need engines only (an eval) after the training runs: they borrow a training fleet
    # (its learners idle), where first they would start an engines-only fleet that no training run can use; a test
    # that breaks its fleet (kills a learner) last of all
    # and a test whose fleet covers the group's others (`widest`: the search run's, with its tool actor) first, so
    # that they borrow it instead of starting one without
    def last(item):
        kw = item.get_closest_marker("fleet").kwargs
        # `late`: after the group's other runs (the environments': their extras-heavy runs never build the group's
        # fleet; a reward actor Ray restarts is rebuilt for each run either way, cluster/groups.py ActorRestarted)
        return not kw.get("widest"), bool(kw.get("late")), bool(kw.get("breaks")), bool(kw.get("engines_only"))

    # a group with a run marked `alone` last of all (its run closes the other fleets, which no later group needs then)
    alone = [name for name, group in groups.items() if any(i.get_closest_marker("fleet").kwargs.get("alone")
                                                              for i in group)]
    order = [name for name in groups if name not in alone] + alone
    items[:] = own + rest + [i for name in order for i in sorted(groups[name], key=last)]
