"""The tools a multi-turn rollout can call (rollout.max_turns > 1, `tools.use`), held by stateless tool actors.

The policy calls a tool by writing `<name>argument</name>`; the engine stops at the closing tag, the driver sends the
call to a tool actor, and the tool's answer comes back as an observation, `tools.template` around its text
("<information>...</information>"), already tokenized with the policy's tokenizer: the driver appends those ids to
the sample's own, never re-tokenizing the history (rollout/turns.py). A tool's text is cut to its max_output_tokens.

Tools: `search` (top-k passages of the task's dense index), `calculate` (exact arithmetic), and yours:
`{name: weather, fn: "my_tools.py:Weather", params: {...}}`, a class whose `call(arg: str) -> str` answers
(instantiated once with `params` as keyword arguments, in its own child process, common/usercode.py; a constructor
argument `index_dir` receives the run's dense index, built for it as for `search`) or a plain function
`(arg: str) -> str`. A call that raises, outlives
tools.timeout_s (a user tool's process is killed) or cannot be parsed (an empty argument, a malformed expression)
returns an error observation the policy reads, counted per step (`tools/errors`); it never stops the step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

BUILTIN = ("search", "calculate")
STATUSES = ("ok", "malformed", "error", "timeout")


CHARS_PER_TOKEN = 64  # a tool's text is cut to max_output_tokens * this many characters before it is tokenized


@dataclass(frozen=True)
class Observation:
    ids: list[int]                 # what is appended to the sample (the template around the tool's text)
    text: str                      # the same, as text: always the decode of `ids` where they were cut
    status: str                    # ok | malformed | error | timeout
    seconds: float                 # the call and its tokenization
    meta: dict = field(default_factory=dict)  # what the tool says about the call (search: the hits' doc ids)
    cut: bool = False              # cut at the sample's room (rollout.max_total_tokens): the sample ends there


class UserTool:
    """A user's tool in child processes of its own, up to `concurrency` calls at once, one process each (a deadline
    kills the process of its call; the next call there starts a new one)."""

    concurrent = True  # ToolBox.run runs its calls of a step at once

    def __init__(self, name: str, fn: str, timeout_s: float, max_output_tokens: int = 256, params: dict | None = None,
                 index_dir: str | None = None, concurrency: int = 8):
        import queue
        from dataclasses import replace

        from common.usercode import IsolatedFunction, parse_spec

        self.name, self.max_output_tokens, self.meta = name, max_output_tokens, {}
        spec = replace(parse_spec(fn, method="call"), init=tuple(sorted((params or {}).items())), role="tool",
                       offer=(("index_dir", index_dir),) if index_dir is not None else ())  # if the class takes it
        self.concurrency = concurrency
        self.idle: queue.Queue = queue.Queue()
        self.fns = [IsolatedFunction(spec, timeout_s, label="tool", timeout_key="tools.timeout_s")
                    for _ in range(concurrency)]  # each starts its process at its first call
        for f in self.fns:
            self.idle.put(f)

    def call(self, arg: str) -> str:
        fn = self.idle.get()
        try:
            out = fn(None, arg)
        finally:
            self.idle.put(fn)
        if not isinstance(out, str):
            raise TypeError(f"tool {self.name} returned a {type(out).__name__}; a tool returns the text the policy reads")
        return out


def build_tool(spec: dict, timeout_s: float, index_dir: str | None, encoder: str | None):
    """One tool from its config dict {name, fn, params, max_output_tokens}."""
    params = dict(spec.get("params") or {})
    if spec.get("max_output_tokens"):
        params["max_output_tokens"] = spec["max_output_tokens"]
    if spec.get("fn"):
        limit = params.pop("max_output_tokens", 256)
        return UserTool(spec["name"], spec["fn"], timeout_s, limit, params, index_dir, spec.get("concurrency") or 8)
    from tools.builtin import CalculateTool, SearchTool

    if spec["name"] == "search":
        if index_dir is None:
            raise ValueError("tool search needs the task's dense index (a QA task: mlqa, domain_qa)")
        return SearchTool(index_dir, encoder, **params)
    if spec["name"] == "calculate":
        return CalculateTool(**params)
    raise ValueError(f"unknown tool {spec['name']!r}; built in: {', '.join(BUILTIN)}, or give fn: 'file.py:Class'")


def needs_index(spec: dict) -> bool:
    """Whether a tool reads the run's dense index: the built-in search, or a user tool whose class's constructor
    names `index_dir` (imports the user's file: the driver's check, before any actor starts)."""
    import inspect

    from common.usercode import load_function, parse_spec, takes

    if not spec.get("fn"):
        return spec["name"] == "search"
    obj = load_function(parse_spec(spec["fn"], method="call"))
    return inspect.isclass(obj) and "index_dir" in (takes(obj) or ())


def check_user_tool(spec: dict) -> None:
    """Before any actor starts: a user tool's file and class (or function) import, its `params` are its class's
    constructor arguments, and it can be called with one argument; UserCodeError naming the fix otherwise."""
    import inspect

    from common.usercode import UserCodeError, load_function, parse_spec, takes

    fs = parse_spec(spec["fn"], method="call")
    obj = load_function(fs)
    fn = getattr(obj, "call", None) if inspect.isclass(obj) else obj
    if not callable(fn):
        raise UserCodeError(f"{fs.where}: class {fs.attr} has no method call(self, arg) -> str")
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    if not params:
        raise UserCodeError(f"{fs.where}: {fs.attr}.call takes no argument; write call(self, arg: str) -> str")
    given = set(spec.get("params") or {}) - {"max_output_tokens"}
    if given and not inspect.isclass(obj):
        raise UserCodeError(f"{fs.where}: params {sorted(given)} are a class's constructor arguments, and "
                            f"{fs.attr} is a function; make it a class with __init__({', '.join(sorted(given))}) "
                            "and call(self, arg)")
    if not inspect.isclass(obj):
        return
    named = takes(obj)  # None: it takes **kwargs
    unknown = sorted(given - set(named)) if named is not None else []
    if unknown:
        raise UserCodeError(f"{fs.where}: {fs.attr}.__init__ takes no {', '.join(unknown)} (it takes: "
                            f"{', '.join(named) or 'nothing'}); fix tools.use params")
    missing = [p.name for p in inspect.signature(obj).parameters.values() if p.default is p.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in given | {"index_dir"}]
    if missing:
        raise UserCodeError(f"{fs.where}: {fs.attr}.__init__ needs {', '.join(missing)}; give them in the tool's "
                            "params")


class ToolBox:
    """The job's tools, held by each tool actor: `run` answers a batch of calls with tokenized observations."""

    def __init__(self, specs: list[dict], tokenizer_path: str, timeout_s: float = 30.0,
                 template: str = "\n<information>{text}</information>\n", index_dir: str | None = None,
                 encoder: str | None = None):
        from common.models import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_path)
        self.template = template
        self.tools = {s["name"]: build_tool(s, timeout_s, index_dir, encoder) for s in specs}

    def _observation(self, text: str, limit: int, status: str, t0: float, meta: dict,
                     room: int | None) -> Observation:
        """The tool's text cut to `limit` tokens (its characters bounded first: a 5 MB answer is not tokenized
        whole), wrapped in the template, then cut to the sample's `room`; its text always the decode of its ids."""
        bound = limit * CHARS_PER_TOKEN
        cut_chars = len(text) > bound
        ids = self.tokenizer.encode(text[:bound], add_special_tokens=False)
        if len(ids) > limit or cut_chars:  # cut the tool's own text, then wrap it
            text = self.tokenizer.decode(ids[:limit]).rstrip("\ufffd") + " ..."
        full = self.template.format(text=text)
        ids = list(self.tokenizer.encode(full, add_special_tokens=False))
        cut = room is not None and len(ids) > room
        if cut:  # what the policy will see of it: the ids that fit, and their text
            ids = ids[:max(room, 0)]
            full = self.tokenizer.decode(ids)
        return Observation(ids, full, status, time.perf_counter() - t0, meta, cut)

    def _answer(self, name: str, arg: str | None) -> tuple[str, str, dict, str | None]:
        """(text, status, meta, what failed: for the console) of one call."""
        from common.usercode import UserCallError

        tool = self.tools.get(name)
        if tool is None or arg is None:
            why = f"no tool {name!r}" if tool is None else f"no argument between <{name}> and </{name}>"
            return f"could not parse the call: {why}", "malformed", {}, None
        try:
            text = tool.call(arg)
            meta, tool.meta = dict(tool.meta), {}
            return text, "ok", meta, None
        except ValueError as err:
            return f"could not parse {arg[:80]!r} for {name}: {err}", "malformed", {}, None
        except UserCallError as err:  # the policy reads what went wrong, never where the code lives
            status = "timeout" if err.kind == "timeout" else "error"
            return f"the tool {name} failed: {err.reason}", status, {}, str(err)
        except Exception as err:  # noqa: BLE001 -- a tool's failure is the policy's observation, never the step's
            return f"the tool {name} failed: {type(err).__name__}: {err}", "error", {}, \
                f"tool {name}: {type(err).__name__}: {err}"

    def run(self, calls: list[tuple[str, str | None]], rooms: list[int | None] | None = None) -> list[Observation]:
        """[(tool name, argument)] -> observations, each cut to its sample's room (tokens left; None: no cut); an
        argument None is a call that could not be parsed. A user tool's calls run at once (up to its concurrency),
        built-in ones in turn. A failed call's full message (the tool's file, the exception) is in this actor's log
        and on the observation's `meta["failure"]`; the policy reads the exception alone."""
        from concurrent.futures import ThreadPoolExecutor

        rooms = rooms if rooms is not None else [None] * len(calls)
        starts = [time.perf_counter()] * len(calls)
        answers: list = [None] * len(calls)
        at_once = [i for i, (name, arg) in enumerate(calls) if getattr(self.tools.get(name), "concurrent", False)
                   and arg is not None]
        workers = max((self.tools[calls[i][0]].concurrency for i in at_once), default=1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {i: pool.submit(self._answer, *calls[i]) for i in at_once}
            for i, call in enumerate(calls):
                if i not in futures:
                    starts[i] = time.perf_counter()
                    answers[i] = self._answer(*call)
            for i, f in futures.items():
                answers[i] = f.result()
        out = []
        for i, (text, status, meta, failure) in enumerate(answers):
            if failure is not None:
                print(f"[tools] {failure}", flush=True)
                meta = {"failure": failure[:500]}
            limit = self.tools[calls[i][0]].max_output_tokens if status == "ok" else 96
            out.append(self._observation(text, limit, status, starts[i], meta, rooms[i]))
        return out


def summarize(observations: list[Any]) -> dict[str, float]:
    """tools/calls, tools/errors (not ok), and a count per status, for a step's metrics."""
    counts = {s: sum(o.status == s for o in observations) for s in STATUSES}
    return {"tools/calls": len(observations), "tools/errors": len(observations) - counts["ok"],
            **{f"tools/{s}": n for s, n in counts.items() if s != "ok"},
            "tools/seconds": sum(o.seconds for o in observations)}
