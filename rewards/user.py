"""Reward functions from the user's own code, called the way TRL calls them.

A component `{fn: "path/to/my_rewards.py:score"}` (a file) or `{fn: "my_package.rewards:score"}` (an importable
module) names a function that scores a batch:

    def score(completions: list[str], prompts: list[str], **columns) -> list[float | None]

`completions` are the sampled answers (for a chat prompt, TRL's conversational form: `[{"role": "assistant",
"content": text}]` each), `prompts` the rows' prompts as the data file holds them (a string, or the list of chat
messages), `completion_ids` the sampled token ids, and every other column of the row arrives as a keyword argument
holding one value per sample (TRL: `reward_kwargs`). A function with `**kwargs` gets every field; one without gets
only the fields it names, so `def score(completions, answer)` works too. `params` of the component are passed as
further keyword arguments. It returns one score per sample, or `None` for a sample it does not score, or a dict
`{"rewards": [...], "<part>": [...]}` whose other lists are logged as `reward/<name>/<part>`. NaN, infinity, a
wrong length or a non-number are errors, never a silent zero.

The driver imports and checks each function before any actor starts (`check_function`: the file, the function and
its signature against the task's fields), exiting 2 with the fix. Reward actors call it in a child process of its
own (`IsolatedFunction`): a call that outlives `rewards.timeout_s` kills the child (the next call starts a new one),
and a crash of the child is an error naming the function, not a dead actor.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import math
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

FIXED_ARGS = ("completions", "prompts", "completion_ids")  # what every call passes besides the fields
RESULT_KEY = "rewards"  # a dict result's list of scores; its other keys are parts


class UserCodeError(ValueError):
    """A user's reward function cannot be used as given (file, function, signature); the message names the fix."""


class UserRewardError(RuntimeError):
    """A user's reward function failed on a batch (it raised, timed out, died, or returned something unusable)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind  # raised | timeout | died | result


@dataclass(frozen=True)
class FunctionSpec:
    """Where a user function lives: a file (`path`, absolute, with `relative` as written) or a module."""
    text: str              # as the config writes it
    attr: str              # the function's name in its file or module
    path: str | None = None
    relative: str | None = None
    module: str | None = None

    @property
    def where(self) -> str:
        return f"reward file {self.relative or self.path}" if self.path else f"module {self.module}"


def parse_spec(text: str, base: Path | None = None) -> FunctionSpec:
    """'path/to/file.py:name' (relative to `base`, default the working directory) or 'package.module:name'.

    >>> parse_spec("my_pkg.rewards:score").module
    'my_pkg.rewards'
    >>> parse_spec("/tmp/r.py:score").path
    '/tmp/r.py'
    """
    where, sep, attr = text.rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise UserCodeError(f"reward fn {text!r}: write 'path/to/file.py:function' or 'package.module:function'")
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = Path(where).expanduser()
        full = path if path.is_absolute() else (base or Path.cwd()) / path
        return FunctionSpec(text, attr, path=str(full.resolve()), relative=where)
    if not all(part.isidentifier() for part in where.split(".")):
        raise UserCodeError(f"reward fn {text!r}: {where!r} is neither a .py file nor a dotted module name")
    return FunctionSpec(text, attr, module=where)


def load_function(spec: FunctionSpec) -> Callable:
    """The function `spec` names, imported in this process (its file's folder on sys.path, so sibling modules
    import); UserCodeError naming the fix otherwise."""
    if spec.path is not None:
        path = Path(spec.path)
        if not path.is_file():
            raise UserCodeError(f"{spec.where} (reward fn {spec.text!r}) does not exist (looked at {path}); fix the "
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
            except Exception as err:
                raise UserCodeError(f"{spec.where}: importing it raised {type(err).__name__}: {err}; fix the file "
                                    "(the traceback shows where when you run `python " + str(path) + "`)") from err
            sys.modules[name] = module
    else:
        try:
            module = importlib.import_module(spec.module)
        except ModuleNotFoundError as err:
            raise UserCodeError(f"{spec.where} (reward fn {spec.text!r}) cannot be imported ({err}); install the "
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
        raise UserCodeError(f"{spec.where}: {spec.attr!r} is a {type(fn).__name__}, not a function; name a function "
                            "that takes (completions, prompts, **columns) and returns a list of scores")
    return fn


def check_signature(fn: Callable, spec: FunctionSpec, fields: Sequence[str],
                       params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The keyword arguments a call passes `fn` (None: all of them, it takes **kwargs), after checking that it can
    be called TRL's way with the task's `fields` and the component's `params`; UserCodeError naming the fix."""
    label = f"{spec.where}: function {spec.attr}"
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise UserCodeError(f"{label}: its signature cannot be read ({err})") from err
    kinds = {p.name: p for p in sig.parameters.values()}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in kinds.values())
    named = [n for n, p in kinds.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    given = set(FIXED_ARGS) | set(fields) | set(params)
    clash = sorted(set(params) & (set(fields) | set(FIXED_ARGS)))
    if clash:
        raise UserCodeError(f"{label}: params {clash} have the names of fields every call passes already; rename "
                            "them in the component's params")
    positional = [n for n, p in kinds.items() if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if positional:
        raise UserCodeError(f"{label}{sig}: parameters {positional} are positional-only, and reward functions are "
                            "called with keyword arguments (TRL's convention); drop the '/' from the signature")
    if "completions" not in named and not var_kw:
        raise UserCodeError(f"{label}{sig} does not take 'completions'; write it as "
                            f"def {spec.attr}(completions, prompts, **kwargs) -> list[float]")
    for name, p in kinds.items():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and name not in given:
            close = difflib.get_close_matches(name, sorted(given), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserCodeError(
                f"{label}{sig} needs argument {name!r}, which no call passes: the task provides the fields "
                f"{', '.join(sorted(fields)) or '(none)'} besides {', '.join(FIXED_ARGS)}.{hint} Rename the parameter, "
                "give it a default, add the column to the data, or pass it in the component's params")
    unknown = [k for k in params if k not in named and not var_kw]
    if unknown:
        raise UserCodeError(f"{label}{sig} takes no arguments {unknown} (the component's params); add them to the "
                            "signature or drop them from params")
    return None if var_kw else tuple(named)


def call_arguments(completions: list, prompts: list, completion_ids: list | None,
                   examples: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of one batched call: the fixed ones, one list per field, the params (the child passes the
    function the ones it takes: `takes`)."""
    columns = {k: [ex.get(k) for ex in examples] for k in dict.fromkeys(k for ex in examples for k in ex)
               if k != "prompt"}
    kwargs: dict[str, Any] = {"completions": completions, "prompts": prompts, **columns, **params}
    if completion_ids is not None:
        kwargs["completion_ids"] = completion_ids
    return kwargs


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


def _scores(values: Any, n: int, what: str) -> list[float | None]:
    if not isinstance(values, list):
        raise UserRewardError(f"{what} returned a {type(values).__name__}; return a list of {n} scores (float, or "
                              f"None for a sample it does not score), or a dict with '{RESULT_KEY}'", "result")
    if len(values) != n:
        raise UserRewardError(f"{what} returned {len(values)} scores for {n} completions; return one per "
                              "completion (None where it has none)", "result")
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UserRewardError(f"{what} returned {v!r} ({type(v).__name__}) for sample {i}; a score is a number "
                                  "or None", "result")
        if not math.isfinite(v):
            raise UserRewardError(f"{what} returned {v} for sample {i}; a score must be finite (None means 'no "
                                  "reward for this sample')", "result")
        out.append(float(v))
    return out


def check_result(result: Any, n: int, what: str) -> tuple[list[float | None], dict[str, list[float | None]]]:
    """([n] scores, {part: [n]}) of a function's (plain) result; UserRewardError naming the fix otherwise.

    >>> check_result([1.0, None], 2, "f")
    ([1.0, None], {})
    >>> check_result({"rewards": [0.5], "format": [1]}, 1, "f")
    ([0.5], {'format': [1.0]})
    """
    if isinstance(result, dict):
        if RESULT_KEY not in result:
            raise UserRewardError(f"{what} returned a dict without '{RESULT_KEY}' (keys: {sorted(result)}); a dict "
                                  f"result holds the scores under '{RESULT_KEY}' and named parts beside them", "result")
        if "errors" in result:
            raise UserRewardError(f"{what} returned a part named 'errors', which is the name of the count of samples "
                                  "its failures dropped; rename the part", "result")
        parts = {k: _scores(v, n, f"{what} (part {k!r})") for k, v in result.items() if k != RESULT_KEY}
        return _scores(result[RESULT_KEY], n, what), parts
    return _scores(result, n, what), {}


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
    """The child: import the function once, then answer calls on the protocol pipe until stdin closes. The
    function's own prints go to stderr (the actor's log), never into the protocol."""
    import traceback

    out_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        fn = load_function(spec)
    except Exception as err:  # noqa: BLE001 -- reported to the parent, which raises it
        _write_frame(out_fd, ("error", type(err).__name__, str(err), ""))
        return
    _write_frame(out_fd, ("ready",))
    accepts = takes(fn)
    while True:
        try:
            kwargs = _read_frame(0)
        except EOFError:
            return
        try:
            if accepts is not None:
                kwargs = {k: v for k, v in kwargs.items() if k in accepts}
            _write_frame(out_fd, ("ok", plain(fn(**kwargs))))
        except Exception as err:  # noqa: BLE001 -- the user's exception, sent back whole
            tb = "".join(traceback.format_exception(type(err), err, err.__traceback__.tb_next))  # from the user's frame
            _write_frame(out_fd, ("error", type(err).__name__, str(err), tb))


class IsolatedFunction:
    """A user function in a child process of its own, started on first use and again after a timeout or crash."""

    def __init__(self, spec: FunctionSpec, timeout_s: float):
        self.spec, self.timeout_s = spec, timeout_s
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys, pickle; from rewards.user import _serve; "
                                      "_serve(pickle.loads(bytes.fromhex(sys.argv[1])))", pickle.dumps(self.spec).hex()],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=os.getcwd())
        try:
            msg = _read_frame(self.proc.stdout.fileno(), time.monotonic() + max(60.0, self.timeout_s))
        except (TimeoutError, EOFError) as err:
            self.close()
            raise UserRewardError(f"{self.spec.where}: the process that runs function {self.spec.attr} did not start "
                                  f"({type(err).__name__}); its output is in this actor's log", "died") from err
        if msg[0] == "error":
            self.close()
            raise UserRewardError(f"{self.spec.where}: {msg[2]}", "raised")

    def __call__(self, kwargs: dict[str, Any]) -> Any:
        """The function's plain result; UserRewardError (kind raised | timeout | died) otherwise."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        fd = self.proc.stdout.fileno()
        try:
            _write_frame(self.proc.stdin.fileno(), kwargs)
            msg = _read_frame(fd, time.monotonic() + self.timeout_s)
        except TimeoutError:
            self.close()
            raise UserRewardError(f"reward function {self.spec.attr} ({self.spec.where}) did not return within "
                                  f"rewards.timeout_s={self.timeout_s:g} s (its process was killed)", "timeout") from None
        except (EOFError, BrokenPipeError, OSError):
            code = self.proc.wait(timeout=5)
            self.proc = None
            raise UserRewardError(f"reward function {self.spec.attr} ({self.spec.where}): its process died (exit code "
                                  f"{code}) during the call", "died") from None
        if msg[0] == "error":
            _, kind, text, tb = msg
            err = UserRewardError(f"reward function {self.spec.attr} ({self.spec.where}) raised {kind}: {text}",
                                  "raised")
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
