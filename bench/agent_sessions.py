"""16 concurrent two-turn agent sessions whose tool waits 1 s, against the same sessions one after the other, on the
rollout endpoint (rollout/endpoint.py over a vLLM engine, requests batched per engine by cluster/serving.py).

    python bench/agent_sessions.py [--model embedded:smollm2-135m-instruct] [--sessions 16] [--repeats 3]

Writes docs/agent_sessions.md: the machine, wall seconds of each mode per repeat (median and range), the requests
per engine batch. Each session: a chat request, a 1-second tool (asyncio.sleep, as a sandbox or a judge would take),
its result as a tool message, a second request (token in, token out through the session).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def session(endpoint, sid: str, tokens: int) -> int:
    import openai

    async with openai.AsyncOpenAI(base_url=endpoint.open(sid), api_key=endpoint.token, max_retries=0) as c:
        msgs = [{"role": "user", "content": "What is the capital of France? Look it up first."}]
        first = await c.chat.completions.create(model="policy", messages=msgs, max_tokens=tokens)
        await asyncio.sleep(1.0)  # the tool
        msgs += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "tool", "content": "Paris is the capital of France.", "tool_call_id": "1"}]
        await c.chat.completions.create(model="policy", messages=msgs, max_tokens=tokens)
    return endpoint.close(sid).requests


async def concurrent(endpoint, n: int, tokens: int, tag: str) -> None:
    await asyncio.gather(*(session(endpoint, f"{tag}-{i}", tokens) for i in range(n)))


async def sequential(endpoint, n: int, tokens: int, tag: str) -> None:
    for i in range(n):
        await session(endpoint, f"{tag}-{i}", tokens)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "docs" / "agent_sessions.md"))
    args = ap.parse_args(argv)

    from bench.report import machine
    from cluster.groups import ActorGroup
    from cluster.serving import EngineDispatch
    from common.models import resolve_model
    from rollout.endpoint import Endpoint
    from rollout.engine import VLLMEngine

    path = resolve_model(args.model)
    engine = VLLMEngine(path, max_model_len=1024, kv_cache_gib=1, dtype="auto")
    dispatch = EngineDispatch(ActorGroup("rollout", [engine], "inprocess"))
    endpoint = Endpoint(path, "policy", 1024, dispatch.submit, max_tokens=args.tokens)
    endpoint.start()
    times: dict[str, list[float]] = {"concurrent": [], "sequential": []}
    batches: list[int] = []
    for r in range(args.repeats + 1):  # the first round warms the engine and is not counted
        for mode, fn in (("concurrent", concurrent), ("sequential", sequential)):
            dispatch.batches.clear()
            t = time.perf_counter()
            asyncio.run(fn(endpoint, args.sessions, args.tokens, f"{mode}{r}"))
            if r:
                times[mode].append(time.perf_counter() - t)
                if mode == "concurrent":
                    batches += dispatch.batches
            print(f"round {r} {mode}: {time.perf_counter() - t:.1f} s", flush=True)
    endpoint.stop()
    c, s = times["concurrent"], times["sequential"]
    lines = [
        "# Agent sessions on the rollout endpoint: concurrent vs one after the other",
        "",
        f"`python bench/agent_sessions.py --sessions {args.sessions} --repeats {args.repeats}` — "
        f"{time.strftime('%Y-%m-%d')}, {machine()}; model {args.model} ({engine.precision}), one vLLM engine "
        "in-process.",
        "",
        f"{args.sessions} two-turn sessions (chat request, a tool that waits 1 s, a second request; at most "
        f"{args.tokens} new tokens each), {args.repeats} repeats after a warm-up round:",
        "",
        "| mode | wall s (median) | range | per session |",
        "|---|---|---|---|",
        f"| concurrent | {statistics.median(c):.1f} | {min(c):.1f}-{max(c):.1f} | "
        f"{statistics.median(c) / args.sessions:.2f} |",
        f"| one after the other | {statistics.median(s):.1f} | {min(s):.1f}-{max(s):.1f} | "
        f"{statistics.median(s) / args.sessions:.2f} |",
        "",
        f"Speed-up {statistics.median(s) / statistics.median(c):.1f}x. The engine served the concurrent rounds' "
        f"{sum(batches)} requests in {len(batches)} batches (mean {sum(batches) / max(1, len(batches)):.1f} requests "
        "a batch): requests that arrive while a batch runs go together in the next (cluster/serving.py), and the "
        "sessions' tool waits overlap.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
