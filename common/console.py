"""What the console shows: the job's own lines (steps, evals, ETA, where things were written). Engine and library
logs (vLLM, transformers, Ray, Python warnings) go to files in the run folder; `--verbose` shows everything.

    quiet()                  at process start, before heavy imports: library logs are held in memory
    attach(run / "logs")     once the run folder exists: logs/driver.log gets them (and everything after);
                             actors started from here on write theirs to logs/<actor name>.log
    redirect_actor_output()  first thing in every actor's process (cluster/groups.py does it)

Actors learn the folder from RAYGRPO_ACTOR_LOG_DIR in their environment (runtime.actor_env passes it on), so
the quiet console holds under `ray job submit` too; on a multi-node cluster each node writes its actors' logs
under the same path on its own disk. What an actor's process prints before its class is built (Ray's worker
start-up) stays in Ray's session logs.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

LOG_DIR_ENV = "RAYGRPO_ACTOR_LOG_DIR"
VERBOSE_ENV = "RAYGRPO_VERBOSE"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Environment for this process and every actor: library progress bars and advisory chatter off.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "VLLM_CONFIGURE_LOGGING": "0"}

_buffer: logging.handlers.MemoryHandler | None = None
_log_dir: Path | None = None


def is_quiet() -> bool:
    return _buffer is not None or _log_dir is not None


def quiet(verbose: bool = False) -> None:
    """Route library logs away from the console (held until `attach`); no-op with verbose or RAYGRPO_VERBOSE=1."""
    global _buffer
    if verbose or os.environ.get(VERBOSE_ENV) == "1":
        os.environ[VERBOSE_ENV] = "1"
        return
    os.environ.update(QUIET_ENV)
    root = logging.getLogger()
    if _buffer is None:
        _buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        root.addHandler(_buffer)
    root.setLevel(logging.INFO)
    for h in list(root.handlers):  # a console handler someone installed (logging.basicConfig) goes
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            root.removeHandler(h)
    errors = logging.StreamHandler(sys.stderr)  # errors still reach a person
    errors.setLevel(logging.ERROR)
    errors.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(errors)
    logging.captureWarnings(True)
    quiet_library_loggers()


def quiet_library_loggers() -> None:
    """Libraries that install their own console handlers: send their records to the root logger instead."""
    for name in ("ray", "vllm", "transformers", "datasets", "huggingface_hub", "mlflow", "alembic"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = True
    try:
        import transformers.utils.logging as tl

        tl.disable_progress_bar()
        tl.set_verbosity_info()  # records reach driver.log; the console sees none of them
        tl.disable_default_handler()
        tl.enable_propagation()
    except ImportError:
        pass


def attach(log_dir: Path) -> Path | None:
    """Write the held and all later library logs to <log_dir>/driver.log; actors started from now on write to
    <log_dir>/<actor name>.log. Returns the driver log's path, or None when verbose."""
    global _log_dir
    if not is_quiet():
        return None
    log_dir = Path(log_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    _log_dir = log_dir
    os.environ[LOG_DIR_ENV] = str(log_dir)
    handler = logging.FileHandler(log_dir / "driver.log")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler._raygrpo_run = True
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_raygrpo_run", False)]:  # an earlier run of this process
        root.removeHandler(h)  # writes its own folder's log no more
        h.close()
    root.addHandler(handler)
    if _buffer is not None:
        _buffer.setTarget(handler)
        _buffer.flush()
        root.removeHandler(_buffer)
        _buffer.close()
    quiet_library_loggers()  # libraries imported since quiet() may have added handlers again
    return log_dir / "driver.log"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def actor_env(log_dir: str | Path | None = None) -> dict[str, str]:
    """What an actor's environment needs to follow this process's console mode: unless verbose, library chatter
    off and its output to <log_dir> (default: the folder `attach` set)."""
    log_dir = log_dir or os.environ.get(LOG_DIR_ENV)
    if log_dir and not verbose():
        return {**QUIET_ENV, LOG_DIR_ENV: str(log_dir)}
    return {}


def redirect_actor_output(name: str, log_dir: str | None = None) -> Path | None:
    """In an actor's own process: its stdout and stderr (Python and C++ alike: vLLM, torch, NUMA warnings) go to
    <log_dir>/<name>.log, appended (a restarted actor continues its file). `log_dir` None: the one its environment
    names (RAYGRPO_ACTOR_LOG_DIR); a fleet's actor is pointed at each run's folder in turn."""
    log_dir = log_dir or os.environ.get(LOG_DIR_ENV)
    if not log_dir or os.environ.get(VERBOSE_ENV) == "1":
        return None
    os.environ[LOG_DIR_ENV] = str(log_dir)
    path = Path(log_dir) / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    import time

    # where this process's lines start (a fleet's actor serves run after run, each in its own folder)
    print(f"[raygrpo] {name} (pid {os.getpid()}) writes here from {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(getattr(h, "_raygrpo", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h._raygrpo = True
        h.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(h)
    logging.captureWarnings(True)
    return path
