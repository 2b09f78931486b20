"""Actor groups over two backends: Ray actors, or plain objects in this process.

The job talks to `ActorGroup`s only: `run`/`call` (one member), `call_all` (same call on every member),
`map_shards` (split a list across members, concatenate results in order) and `get`. A Ray actor is the plain
class itself under `ray.remote`, so the dashboard shows VLLMEngine, Learner, Reference, RewardScorer by name.

A call names the method object, not a string: `group.run(Learner.train_step, batch, algo)`. A renamed method is
an AttributeError where the call is written (and a type checker's error), and a method of another class is a
TypeError before anything is sent.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

R = TypeVar("R")


@dataclass
class _Done:
    value: Any


def get(futures, timeout: float | None = None, what: str = "a remote call"):
    """Resolve one future or a list of futures from either backend; on Ray, a call that has not answered within
    `timeout` seconds becomes a TimeoutError naming `what` (actor and stage)."""
    single = not isinstance(futures, list)
    items = [futures] if single else futures
    if items and not isinstance(items[0], _Done):
        import ray

        try:
            values = ray.get(items, timeout=timeout)
        except ray.exceptions.GetTimeoutError as err:
            for f in items:
                try:  # drop what has not started; a running call of a threaded actor cannot be stopped
                    ray.cancel(f, force=False)
                except Exception:  # noqa: BLE001
                    pass
            raise TimeoutError(f"{what} did not answer within {timeout:.0f} s (cluster.call_timeout_s): the actor "
                               "hangs or the machine is overloaded; its log is in the run folder's logs/") from err
    else:
        values = [f.value for f in items]
    return values[0] if single else values


def handoff(future):
    """A result passed on to another actor's call without coming to the driver: the ObjectRef on Ray (the
    object store moves it), the value itself in-process."""
    return future.value if isinstance(future, _Done) else future


class ActorGroup:
    def __init__(self, name: str, members: list, backend: str, timeout: float | None = None,
                 cls: type | None = None):
        self.name, self.members, self.backend = name, members, backend
        self.timeout = timeout  # seconds a `run` may take (None: no deadline)
        self.cls = cls  # the members' class: every called method must be one of its methods
        # sharded training workers (learner/fsdp.py) gather weights together: a call without an explicit member
        # index reaches every member (worker 0 answers); with one, the caller addresses each member itself
        self.lockstep = False
        self.pids: list[int | None] = []  # each member's process id, learned at a run's start (learn_pids)

    @classmethod
    def create(cls, name: str, factory: Callable, n: int, backend: str, args: tuple = (), kwargs=None,
               num_cpus: float = 0.5, num_gpus: float | list[float] = 0.0, placement=None,
               max_restarts: int = 0, env: dict[str, str] | None = None,
               namespace: str | None = None, rebuilt_after_restart: bool = False) -> "ActorGroup":
        """n members named <name>-<i>; on Ray, a member whose process dies is restarted (its __init__ runs again,
        with these arguments) up to `max_restarts` times, and the call it was running fails for the caller to retry.
        `num_gpus`: one figure for every member, or one each. `env`: the members' environment (cluster/runtime.py
        actor_env), set before their process imports anything; Ray merges it over the job's. `namespace`: where the
        names live (a fleet's own, so two fleets on one cluster each have a rollout-0). `rebuilt_after_restart`: a
        member Ray restarted refuses every call (ActorRestarted) until the caller has built it again for the current
        run (ActorGroup.reinit): Ray restarts it with these arguments, a later run's are others (cluster/fleet.py)."""
        kwargs = kwargs or {}
        if backend == "inprocess":
            return cls(name, [factory(*args, **kwargs) for _ in range(n)], backend, cls=factory)
        import ray

        remote = ray.remote(_logged(factory, rebuilt_after_restart))
        members = []
        for i in range(n):
            gpus = num_gpus[i] if isinstance(num_gpus, list) else num_gpus
            opts = dict(num_cpus=num_cpus, num_gpus=gpus, name=f"{name}-{i}", max_concurrency=1,
                        max_restarts=max_restarts, max_task_retries=0)
            if env:
                opts["runtime_env"] = {"env_vars": dict(env)}
            if namespace:
                opts["namespace"] = namespace
            if placement is not None:
                opts["scheduling_strategy"] = placement(i)
            members.append(remote.options(**opts).remote(*args, **kwargs))
        return cls(name, members, backend, cls=factory)

    def on_each(self, fn: Callable, *args, timeout: float | None = 120.0) -> list:
        """`fn(member instance, *args)` in every member's own process (Ray's __ray_call__), resolved."""
        if self.backend == "inprocess":
            return [fn(m, *args) for m in self.members]
        return get([m.__ray_call__.remote(fn, *args) for m in self.members], timeout=timeout,
                   what=f"{self.name}.{getattr(fn, '__name__', 'call')}")

    def reinit(self, args: tuple = (), kwargs: dict | None = None, timeout: float | None = None) -> None:
        """Every member becomes what its class builds from these arguments, in the process it has (a fleet's next
        run: the process, its imports and caches stay; the object's state is built anew). A member's `close()`
        runs first (a user function's child process, a tool's)."""
        self.on_each(reinit, tuple(args), dict(kwargs or {}), timeout=timeout)

    def enter(self, log_dir: str | None, cwd: str | None = None) -> None:
        """A run starts on these members (a fleet's): each one's output from now on to <log_dir>/<member name>.log,
        and its working directory `cwd` where that folder exists on its node (a user's reward or tool reads files
        relative to where the run was started, as the run's own actors would)."""
        if self.backend != "inprocess" and (log_dir or cwd):
            self.on_each(_enter, log_dir, cwd)

    def alive(self, timeout: float = 30.0) -> bool:
        """Whether every member answers (none died, none is restarting)."""
        if self.backend == "inprocess":
            return True
        import ray

        try:
            ray.get([m.__ray_call__.remote(_answer) for m in self.members], timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 -- dead, restarting, or hung: not a member to build a run on
            return False

    def kill(self) -> None:
        """End every member's process (Ray); in-process members are closed."""
        if self.backend == "inprocess":
            for m in self.members:
                if callable(getattr(m, "close", None)):
                    m.close()
            return
        import ray

        for m in self.members:
            try:
                ray.kill(m, no_restart=True)
            except Exception:  # noqa: BLE001 -- already gone
                pass

    def method_name(self, method: Callable) -> str:
        """The name to call `method` (a function defined on a class) by, after checking the members have it."""
        name = getattr(method, "__name__", None)
        if not callable(method) or name is None or isinstance(method, str):
            raise TypeError(f"{self.name}: call a method object (e.g. Learner.train_step), not {method!r}")
        if self.cls is not None and not callable(getattr(self.cls, name, None)):
            raise TypeError(f"{self.name}: {getattr(method, '__qualname__', name)} is not a method of "
                            f"{self.cls.__name__}")
        return name

    def _call(self, member, method: Callable, *args, **kwargs):
        name = self.method_name(method)
        if self.backend == "inprocess":
            return _Done(getattr(member, name)(*args, **kwargs))
        return getattr(member, name).remote(*args, **kwargs)

    def call(self, method: Callable, *args, index: int | None = None, **kwargs):
        """Member `index`'s call (default 0); a lockstep group without an index: every member's, member 0's future
        returned (the others run alongside; a failure among them stops member 0's collectives too)."""
        if self.lockstep and index is None:
            return self.call_all(method, *args, **kwargs)[0]
        return self._call(self.members[index or 0], method, *args, **kwargs)

    def run(self, method: Callable[..., R], *args, index: int | None = None, **kwargs) -> R:
        """`call` resolved, within the group's deadline (`self.timeout`, cluster.call_timeout_s): a hang becomes a
        TimeoutError naming <group>-<index>.<method>. A lockstep group without an index waits for every member."""
        if self.lockstep and index is None:
            return get(self.call_all(method, *args, **kwargs), timeout=self.timeout,
                       what=f"{self.name}.{method.__name__} on {len(self.members)} workers")[0]
        return get(self.call(method, *args, index=index or 0, **kwargs), timeout=self.timeout,
                   what=f"{self.name}-{index or 0}.{method.__name__}")

    def call_all(self, method: Callable, *args, **kwargs) -> list:
        return [self._call(m, method, *args, **kwargs) for m in self.members]

    def map_shards(self, method: Callable, shard_args: list[tuple], **kwargs) -> list:
        """One call per shard, shards dealt round-robin over members; results in shard order."""
        return [self._call(self.members[i % len(self.members)], method, *a, **kwargs)
                for i, a in enumerate(shard_args)]


    def learn_pids(self, timeout: float = 30.0) -> None:
        """Each member's process id (at a run's start, the members idle): `peak_rss_now` then reads their memory
        from /proc without calling them, never waiting behind a generation."""
        if self.backend == "inprocess":
            self.pids = [None] * len(self.members)
            return
        try:
            self.pids = self.on_each(_own_pid, timeout=timeout)
        except Exception:  # noqa: BLE001 -- memory is a report, never a failure
            self.pids = [None] * len(self.members)

    def peak_rss_now(self) -> list[float | None]:
        """Peak resident memory (VmHWM, GiB) of each member's process read from this node's /proc (None for a
        member on another node, or not learned); in-process members are this process."""
        if self.backend == "inprocess":
            return [process_peak_rss_gib("self")] * len(self.members)
        return [process_peak_rss_gib(pid) if pid is not None and _is_ray_worker(pid) else None for pid in self.pids]

    def peak_rss_gib(self) -> list[float | None]:
        """Peak resident memory (VmHWM) of each member's process in GiB, read by the member itself (any node);
        None where it cannot be read. In-process members share this process, so each reports its peak."""
        if self.backend == "inprocess":
            return [process_peak_rss_gib("self")] * len(self.members)
        import ray

        try:  # __ray_call__ runs a function on the actor's instance, in its process
            return ray.get([m.__ray_call__.remote(_own_peak_rss_gib) for m in self.members], timeout=60)
        except Exception:  # memory is a report, never a failure
            return [None] * len(self.members)


WORKDIR_ENV = "RAYGRPO_ACTOR_WORKDIR"  # where the run that started an actor was started (cluster/fleet.py)


class ActorRestarted(RuntimeError):
    """A member Ray restarted since its caller built it for the current run: it holds its first arguments (another
    run's reward components, tools) and refuses to be called until it is built again (ActorGroup.reinit)."""


_RESTARTED = "_raygrpo_restarted"  # on an instance Ray's restart built; ActorGroup.reinit clears the instance


def _refusing(fn: Callable) -> Callable:
    import functools

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        if self.__dict__.get(_RESTARTED):
            raise ActorRestarted(f"{_actor_name(type(self))} was restarted by Ray since this run built it: it must be "
                                 f"built again with the run's arguments before {fn.__name__}")
        return fn(self, *args, **kwargs)

    return call


def _logged(factory: type, rebuilt_after_restart: bool = False) -> type:
    """`factory` as a Ray actor class whose process first moves its output (engine and library logs) to the run
    folder's logs/<actor name>.log (common/console.py); same name on the dashboard. `rebuilt_after_restart`: an
    instance Ray restarted refuses its methods (ActorRestarted) until ActorGroup.reinit builds it again."""

    class Actor(factory):
        def __init__(self, *args, **kwargs):
            import ray

            from common.console import redirect_actor_output

            redirect_actor_output(_actor_name(factory))
            workdir = os.environ.get(WORKDIR_ENV)
            if workdir and os.path.isdir(workdir):  # before the constructor reads a user's file relative to it
                os.chdir(workdir)
            super().__init__(*args, **kwargs)
            if rebuilt_after_restart and ray.get_runtime_context().was_current_actor_reconstructed:
                self.__dict__[_RESTARTED] = True

    if rebuilt_after_restart:  # close() stays callable: reinit runs it before building the instance again
        import inspect

        for name, fn in inspect.getmembers(factory, inspect.isfunction):  # its bases' methods too
            plain = not isinstance(inspect.getattr_static(factory, name), (staticmethod, classmethod))
            if plain and not name.startswith("_") and name != "close":
                setattr(Actor, name, _refusing(fn))
    Actor.__name__ = Actor.__qualname__ = factory.__name__
    Actor.__doc__ = factory.__doc__
    Actor._raygrpo_class = factory
    return Actor


def _actor_name(factory: type) -> str:
    import ray

    return ray.get_runtime_context().get_actor_name() or f"{factory.__name__}-{os.getpid()}"


def reinit(instance, args: tuple, kwargs: dict):
    """`instance` rebuilt in place by its own class's constructor (ActorGroup.reinit)."""
    if callable(getattr(instance, "close", None)):
        instance.close()
    cls = getattr(type(instance), "_raygrpo_class", type(instance))
    instance.__dict__.clear()
    cls.__init__(instance, *args, **kwargs)


def _enter(instance, log_dir: str | None, cwd: str | None):
    from common.console import redirect_actor_output

    if log_dir:
        redirect_actor_output(_actor_name(type(instance)), log_dir)
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)


def _answer(_instance) -> bool:
    return True


def _own_pid(_instance) -> int:
    return os.getpid()


def _is_ray_worker(pid: int) -> bool:
    """Whether process `pid` on this node is still a Ray worker (not a reused id)."""
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"ray::")
    except OSError:
        return False


def _own_peak_rss_gib(_instance) -> float | None:
    return process_peak_rss_gib("self")


def process_peak_rss_gib(pid) -> float | None:
    """VmHWM of /proc/<pid>/status in GiB (Linux), else None."""
    from pathlib import Path

    status = Path(f"/proc/{pid}/status")
    if pid is None or not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    return None


def member_died_errors(backend: str) -> tuple[type[BaseException], ...]:
    """The errors that mean a member's process died (the call is retried once Ray restarted it): Ray's on Ray,
    none in-process, where Ray need not even be installed."""
    if backend != "ray":
        return ()
    from ray.exceptions import RayActorError

    return (RayActorError,)


def shard(items: list, n: int) -> list[list]:
    """Split into n contiguous near-equal shards (fewer if items are fewer)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out
