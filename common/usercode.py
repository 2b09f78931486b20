"""User code the project calls: a function or class named `file.py:name` or `package.module:name`, imported in the
driver to check it before any actor starts, and run by actors in a child process of its own (`IsolatedFunction`):
a call that outlives its deadline kills the child (the next call starts a new one), and a crash of the child is an
error naming the code, not a dead actor. A user's reward functions (rewards/user.py) and tools (tools/) run here.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping


class UserCodeError(ValueError):
    """A user's reward function cannot be used as given (file, function, signature); the message names the fix."""


class UserCallError(RuntimeError):
    """A call of user code failed (it raised, timed out, its process died, or it returned something unusable)."""

    def __init__(self, message: str, kind: str, reason: str | None = None):
        super().__init__(message)
        self.kind = kind  # raised | timeout | died | result
        self.reason = reason or message  # what went wrong without where the code lives (a tool's observation)


@dataclass(frozen=True)
class FunctionSpec:
    """Where a user function lives: a file (`path`, absolute, with `relative` as written) or a module."""
    text: str              # as the config writes it
    attr: str              # the function's name in its file or module
    path: str | None = None
    relative: str | None = None
    module: str | None = None
    method: str | None = None  # call this method of the object (a class is instantiated first), else the object
    init: tuple = ()           # (name, value) pairs: the keyword arguments a class is instantiated with
    offer: tuple = ()          # (name, value) pairs given too where the class's constructor names them
    adapter: str | None = None  # 'module:function' the child wraps the object with: adapter(obj, dict(init))
    role: str = "reward"       # whose code: reward | tool (in messages)

    @property
    def where(self) -> str:
        return f"{self.role} file {self.relative or self.path}" if self.path else f"module {self.module}"


def parse_spec(text: str, base: Path | None = None, method: str | None = None) -> FunctionSpec:
    """'path/to/file.py:name' (relative to `base`, default the working directory) or 'package.module:name'.

    >>> parse_spec("my_pkg.rewards:score").module
    'my_pkg.rewards'
    >>> parse_spec("/tmp/r.py:score").path
    '/tmp/r.py'
    """
    where, sep, attr = text.rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise UserCodeError(f"{text!r}: write 'path/to/file.py:function' or 'package.module:function'")
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = Path(where).expanduser()
        full = path if path.is_absolute() else (base or Path.cwd()) / path
        return FunctionSpec(text, attr, path=str(full.resolve()), relative=where, method=method)
    if not all(part.isidentifier() for part in where.split(".")):
        raise UserCodeError(f"{text!r}: {where!r} is neither a .py file nor a dotted module name")
    return FunctionSpec(text, attr, module=where, method=method)


def load_function(spec: FunctionSpec) -> Callable:
    """The function `spec` names, imported in this process (its file's folder on sys.path, so sibling modules
    import); UserCodeError naming the fix otherwise."""
    if spec.path is not None:
        path = Path(spec.path)
        if not path.is_file():
            raise UserCodeError(f"{spec.where} ({spec.text!r}) does not exist (looked at {path}); fix the "
                                "path, which is relative to the directory you run from")
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        name = f"raygrpo_user_{path.stem}_{abs(hash(str(path))) % 10**8}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            try:
                loader_spec.loader.exec_module(module)
            except ModuleNotFoundError as err:  # a package the file imports is not installed here
                raise UserCodeError(f"{spec.where}: importing it raised ModuleNotFoundError: {err}; install "
                                    f"{err.name or 'that package'} where the run runs (pip install ...; on a "
                                    "cluster, in the job's runtime_env), or remove the import") from err
            except Exception as err:
                raise UserCodeError(f"{spec.where}: importing it raised {type(err).__name__}: {err}; fix the file "
                                    "(the traceback shows where when you run `python " + str(path) + "`)") from err
            sys.modules[name] = module
    else:
        try:
            module = importlib.import_module(spec.module)
        except ModuleNotFoundError as err:
            raise UserCodeError(f"{spec.where} ({spec.text!r}) cannot be imported ({err}); install the "
                                "package that holds it, or give a file: 'path/to/file.py:function'") from err
        except Exception as err:
            raise UserCodeError(f"{spec.where}: importing it raised {type(err).__name__}: {err}") from err
    fn = getattr(module, spec.attr, None)
    if fn is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        close = difflib.get_close_matches(spec.attr, defined, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UserCodeError(f"{spec.where} has no function {spec.attr!r}.{hint} It defines: "
                            f"{', '.join(defined) or '(no functions)'}")
    if not callable(fn):
        raise UserCodeError(f"{spec.where}: {spec.attr!r} is a {type(fn).__name__}, not a function or class")
    return fn


def target(spec: FunctionSpec, obj: Callable) -> Callable:
    """What a call of `spec` runs: the object, or its `spec.method` (of an instance, for a class); with an adapter,
    what the adapter makes of it (the calling convention of the code that calls it, e.g. rewards/user.py `adapt`)."""
    if spec.adapter:
        return load_function(parse_spec(spec.adapter))(obj, dict(spec.init))
    if spec.method is None or not (inspect.isclass(obj) or hasattr(obj, spec.method)):
        return obj  # a function is called itself
    if inspect.isclass(obj):
        named = takes(obj) or ()
        owner = obj(**{k: v for k, v in spec.offer if k in named}, **dict(spec.init))
    else:
        owner = obj
    fn = getattr(owner, spec.method, None)
    if not callable(fn):
        raise UserCodeError(f"{spec.where}: {spec.attr} has no method {spec.method}()")
    return fn


def takes(fn: Callable) -> tuple[str, ...] | None:
    """The keyword arguments `fn` takes by name; None when it takes **kwargs (then all of them)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def plain(result: Any) -> Any:
    """A function's result as plain Python: arrays and tensors become lists (done in the child, which has
    whatever the function used)."""
    if isinstance(result, Mapping):
        return {str(k): plain(v) for k, v in result.items()}
    if hasattr(result, "tolist") and not isinstance(result, (str, bytes)):
        return result.tolist()
    if isinstance(result, (list, tuple)):
        return [x.item() if hasattr(x, "item") and not isinstance(x, (str, bytes)) else x for x in result]
    return result


def awaited(result: Any) -> Any:
    """The result of a call, run to its end where the function is `async` (a coroutine came back)."""
    if inspect.isawaitable(result):
        import asyncio

        async def wait():
            return await result

        return asyncio.run(wait())
    return result


# ---- the child process ----------------------------------------------------------------------------------

def _write_frame(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj)
    os.write(fd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None = None) -> Any:
    (size,) = struct.unpack("<Q", _read_exact(fd, 8, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


def _serve(spec: FunctionSpec) -> None:
    """The child: import the code once, then answer calls (args, kwargs) on the protocol pipe until stdin closes
    (keyword arguments the function does not take are left out). Its own prints go to stderr (the actor's log),
    never into the protocol."""
    import traceback

    out_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        fn = target(spec, load_function(spec))
    except Exception as err:  # noqa: BLE001 -- reported to the parent, which raises it
        _write_frame(out_fd, ("error", type(err).__name__, str(err), ""))
        return
    _write_frame(out_fd, ("ready",))
    accepts = takes(fn)
    while True:
        try:
            args, kwargs = _read_frame(0)
        except EOFError:
            return
        try:
            if accepts is not None:
                kwargs = {k: v for k, v in kwargs.items() if k in accepts}
            _write_frame(out_fd, ("ok", plain(awaited(fn(*args, **kwargs)))))
        except Exception as err:  # noqa: BLE001 -- the user's exception, sent back whole
            tb = "".join(traceback.format_exception(type(err), err, err.__traceback__.tb_next))  # from the user's frame
            _write_frame(out_fd, ("error", type(err).__name__, str(err), tb))


class IsolatedFunction:
    """A user function in a child process of its own, started on first use and again after a timeout or crash."""

    def __init__(self, spec: FunctionSpec, timeout_s: float, label: str = "reward function",
                 timeout_key: str = "rewards.timeout_s"):
        self.spec, self.timeout_s, self.label, self.timeout_key = spec, timeout_s, label, timeout_key
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys, pickle; from common.usercode import _serve; "
                                      "_serve(pickle.loads(bytes.fromhex(sys.argv[1])))", pickle.dumps(self.spec).hex()],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=os.getcwd())
        try:
            msg = _read_frame(self.proc.stdout.fileno(), time.monotonic() + max(60.0, self.timeout_s))
        except (TimeoutError, EOFError) as err:
            self.close()
            raise UserCallError(f"{self.spec.where}: the process that runs function {self.spec.attr} did not start "
                                  f"({type(err).__name__}); its output is in this actor's log", "died") from err
        if msg[0] == "error":
            self.close()
            raise UserCallError(f"{self.spec.where}: {msg[2]}", "raised")

    def __call__(self, kwargs: dict[str, Any] | None = None, *args: Any) -> Any:
        """The plain result of `fn(*args, **kwargs)`; UserCallError (kind raised | timeout | died) otherwise."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        fd = self.proc.stdout.fileno()
        try:
            _write_frame(self.proc.stdin.fileno(), (args, kwargs or {}))
            msg = _read_frame(fd, time.monotonic() + self.timeout_s)
        except TimeoutError:
            self.close()
            within = f"did not return within {self.timeout_key}={self.timeout_s:g} s"
            raise UserCallError(f"{self.label} {self.spec.attr} ({self.spec.where}) {within} (its process was killed)",
                                "timeout", within) from None
        except (EOFError, BrokenPipeError, OSError):
            code = self.proc.wait(timeout=5)
            self.proc = None
            raise UserCallError(f"{self.label} {self.spec.attr} ({self.spec.where}): its process died (exit code "
                                  f"{code}) during the call", "died", f"its process died (exit code {code})") from None
        if msg[0] == "error":
            _, kind, text, tb = msg
            err = UserCallError(f"{self.label} {self.spec.attr} ({self.spec.where}) raised {kind}: {text}",
                                  "raised", f"{kind}: {text}")
            err.traceback = tb
            raise err
        return msg[1]

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            for pipe in (self.proc.stdin, self.proc.stdout):
                pipe.close()
            self.proc = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- interpreter shutdown
            pass
