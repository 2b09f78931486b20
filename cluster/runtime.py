"""Where the job runs: a Ray cluster (the job's own under `ray job submit`, an address, or a new
single-node one) or in-process plain objects for debugging.

Ray 2.60 removed `ray.init(local_mode=True)`; "local" here means a real single-node Ray started by
this process. Env vars every actor needs (in-process vLLM, KV cache size, thread counts) travel in the
runtime_env so they are set before the worker imports anything.
"""
from __future__ import annotations

import os


def actor_threads(threads: int | None) -> int:
    """Threads of every actor's torch/OpenMP (cluster.threads; None = every core: stages run in turn)."""
    return threads or os.cpu_count() or 1


def actor_env(threads: int | None, kv_cache_gib: float, log_dir=None) -> dict[str, str]:
    """What every actor's process needs before it imports anything; `log_dir`: where its output goes (default: the
    folder common/console.py attached)."""
    from common.console import actor_env as console_env
    from common.models import TRUST_ENV

    n = str(actor_threads(threads))
    return {
        **console_env(log_dir),  # quiet console: the actor's output goes to the run folder's logs/
        **({TRUST_ENV: "1"} if os.environ.get(TRUST_ENV) == "1" else {}),  # model.trust_remote_code
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(int(max(1, round(kv_cache_gib)))),
        # Stages run one after another on a small machine, so each may use every core.
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "TOKENIZERS_PARALLELISM": "false",
    }


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A Ray address that does not answer fails now, naming the fix (ray.init would retry for minutes)."""
    import socket

    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"cluster.address {address!r} is not host:port (e.g. 127.0.0.1:6379 or ray://host:10001)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as err:
        raise ConnectionError(f"no Ray cluster answers at cluster.address={address} ({err}); start one with "
                              "`ray start --head` there, fix the address, or drop cluster.address to start a local "
                              "one (--local)") from err


def joins_cluster(address: str | None) -> bool:
    """Whether start() joins a running cluster (an address, or RAY_ADDRESS under `ray job submit`) rather than
    starting a local one."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def start(backend: str, address: str | None, num_cpus: int | None, env: dict[str, str],
          metrics_export_port: int | None = None) -> bool:
    """Connect to or start Ray (no-op for the in-process backend, and where this process is connected already);
    True when this call connected (its caller then owns the connection and `shutdown`s it)."""
    if backend == "inprocess":
        os.environ.update(env)
        return False
    import ray

    if ray.is_initialized():
        return False
    from common.console import is_quiet, quiet_library_loggers

    runtime_env = {"env_vars": env}
    # Quiet console: Ray's own driver logs go to the run folder's driver.log, actor output to logs/<actor>.log.
    logs = dict(configure_logging=not is_quiet(), log_to_driver=not is_quiet())
    if is_quiet():
        quiet_library_loggers()
    if joins_cluster(address):
        # Under `ray job submit` RAY_ADDRESS is set and the job's runtime_env (working_dir) is inherited.
        ray.init(address=address or os.environ["RAY_ADDRESS"], runtime_env=runtime_env, **logs)
    else:
        # address="local": a new single-node cluster of this process's own, even where `ray start` runs one on
        # this machine (ray.init() would join that one, and refuse num_cpus)
        ports = {"_metrics_export_port": metrics_export_port} if metrics_export_port else {}
        ray.init(address="local", num_cpus=num_cpus, runtime_env=runtime_env, include_dashboard=False, **ports,
                 **logs)
    if is_quiet():
        quiet_library_loggers()
    return True


def shutdown(backend: str) -> None:
    if backend == "ray":
        import ray

        if ray.is_initialized():
            ray.shutdown()
