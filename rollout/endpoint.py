"""An OpenAI-compatible endpoint over the run's engines: vLLM's own server (its FastAPI routers, request and response
models, chat rendering, tool and token-id extensions) over an engine client that hands each request to the run's
engines and records it in its session (rollout/sessions.py), token in, token out.

Served on 127.0.0.1 with a per-run token (vLLM's --api-key: `Authorization: Bearer <token>`), during a run only.
A session is told apart by its base_url, `http://127.0.0.1:<port>/s/<session>/v1` (vLLM's own X-Session-ID header
or `session_id` field work too). Routes: /v1/chat/completions, /v1/completions, /v1/models, vLLM's token-in-token-out
/inference/v1/generate, /tokenize, /detokenize. Responses carry vLLM's token-id extensions (`return_token_ids`:
prompt and sampled ids; `logprobs`; on /inference/v1/generate each logprob's token is also named `token_id:<id>`, as
clients written before vLLM 0.32's shape read it: `name_tokens`); the engines always compute the sampled tokens' logprobs, which the
learner needs.

Every request goes through `submit(session, prompt_ids, sampling_params)` (cluster/serving.py: requests of many
sessions batched per engine, a session kept on one engine for its prefix cache). A request without a seed gets one
from the run's seed, its session and its number in the session, so a rerun samples what the run did.
"""
from __future__ import annotations

import asyncio
import contextvars
import secrets
import socket
import threading
from typing import Awaitable, Callable

from common import seeds
from rollout.sessions import Session

SESSION_HEADER = b"x-session-id"
# the session of the request being served, from its path: it wins over a session id the client sends itself (verifiers
# sends its trace id as X-Session-ID), and reaches the engine client through the request's task
_PATH_SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("raygrpo_path_session", default=None)


class _SessionPaths:
    """ASGI: `/s/<session>/<rest>` served as `/<rest>` with the session in vLLM's X-Session-ID header."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope.get("type") == "http" and path.startswith("/s/"):
            sid, _, rest = path[3:].partition("/")
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != SESSION_HEADER]
            scope = dict(scope, path="/" + rest, raw_path=("/" + rest).encode(),
                         headers=[*headers, (SESSION_HEADER, sid.encode())])
            token = _PATH_SESSION.set(sid)
            try:
                await self.app(scope, receive, send)
            finally:
                _PATH_SESSION.reset(token)
            return
        await self.app(scope, receive, send)


def name_tokens(body: bytes) -> bytes:
    """A /inference/v1/generate answer with each logprob entry's token also named `token_id:<id>`: vLLM 0.32 writes
    the id alone (`token_id`), and clients written to the shape before it (verifiers 0.4's TrainClient, through
    `renderers`) read `token`. Additive: vLLM's own fields stay as they are.

    >>> name_tokens(b'{"choices": [{"logprobs": {"content": [{"token_id": 7, "logprob": -0.5}]}}]}')
    b'{"choices": [{"logprobs": {"content": [{"token_id": 7, "logprob": -0.5, "token": "token_id:7"}]}}]}'
    """
    import json

    answer = json.loads(body)
    for choice in answer.get("choices") or []:
        for entry in ((choice.get("logprobs") or {}).get("content") or []):
            for e in [entry, *(entry.get("top_logprobs") or [])]:
                if "token_id" in e and "token" not in e:
                    e["token"] = f"token_id:{e['token_id']}"
    return json.dumps(answer).encode()


class _TokenNames:
    """ASGI: JSON answers of /inference/v1/generate pass through `name_tokens` (a stream passes as it is)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or scope.get("path") != "/inference/v1/generate":
            return await self.app(scope, receive, send)
        start, chunks = None, []

        async def rewrite(message):
            nonlocal start
            if message["type"] == "http.response.start":
                if dict(message.get("headers", [])).get(b"content-type", b"").startswith(b"application/json"):
                    start = message
                    return
                return await send(message)
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = name_tokens(b"".join(chunks)) if start["status"] == 200 else b"".join(chunks)
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


def _engine_client(vllm_config, renderer, input_processor, generate):
    """vLLM's EngineClient protocol over `generate` (an async generator of RequestOutput), the rest inert: the
    engines' lifetime, weights and caches belong to the fleet, not to the server."""
    from vllm.engine.protocol import EngineClient

    async def nothing(*_a, **_k):
        return None

    class _Client(EngineClient):
        is_running = property(lambda self: True)
        is_stopped = property(lambda self: False)
        errored = property(lambda self: False)
        dead_error = property(lambda self: RuntimeError("the run's engines are gone"))

        def __init__(self):
            self.vllm_config, self.model_config = vllm_config, vllm_config.model_config
            self.renderer, self.input_processor = renderer, input_processor

        def generate(self, prompt, sampling_params, request_id, **kwargs):
            return generate(prompt, sampling_params, request_id, kwargs.get("session_id"))

        def encode(self, *a, **k):
            raise NotImplementedError("the rollout endpoint serves generation only")

        async def is_tracing_enabled(self):
            return False

        async def reset_prefix_cache(self, *a, **k):
            return True

        async def wake_up(self, *a, **k):
            return True

        async def is_sleeping(self):
            return False

        async def add_lora(self, *a, **k):
            return False

        async def is_paused(self):
            return False

        async def get_supported_tasks(self):
            return ("generate",)

        def shutdown(self, *a, **k):
            return None

        abort = do_log_stats = check_health = start_profile = stop_profile = reset_mm_cache = nothing
        reset_encoder_cache = sleep = release_kv_cache_memory = pause_generation = resume_generation = nothing
        notify_kv_transfer_request_rejected = nothing

    return _Client()


class Endpoint:
    """vLLM's OpenAI server for `model_path`'s tokenizer and config, its requests answered by `submit`."""

    def __init__(self, model_path: str, served_name: str | list[str], max_model_len: int,
                 submit: Callable[[Session | None, list[int], object], Awaitable], max_tokens: int | None = None,
                 seed: int = 0, trust_remote_code: bool = False, defaults: dict | None = None,
                 tool_call_parser: str | None = None):
        """`served_name`: the model name(s) requests may give (the first is /v1/models'); `max_tokens`: the most
        tokens one request may sample (rollout.max_new_tokens), whatever it asks; `defaults`: the sampling of a
        request that sets none (vLLM's override_generation_config: temperature, top_p, max_new_tokens);
        `tool_call_parser`: vLLM's, for requests that pass tools (tool_choice auto)."""
        self.tool_call_parser = tool_call_parser
        self.names = [served_name] if isinstance(served_name, str) else list(dict.fromkeys(served_name))
        self.model_path, self.max_model_len, self.defaults = model_path, max_model_len, defaults
        self.submit, self.max_tokens, self.seed = submit, max_tokens, seed
        self.trust_remote_code = trust_remote_code
        self.token = secrets.token_hex(16)
        self.sessions: dict[str, Session] = {}
        self.unrecorded = 0  # requests outside any session the run opened
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # ---- sessions -----------------------------------------------------------------------------------------
    def open(self, sid: str) -> str:
        """A new session; its base_url."""
        self.sessions[sid] = Session(sid)
        return self.base_url(sid)

    def close(self, sid: str) -> Session:
        return self.sessions.pop(sid)

    def base_url(self, sid: str | None = None) -> str:
        return f"http://127.0.0.1:{self.port}" + (f"/s/{sid}" if sid else "") + "/v1"

    # ---- serving ------------------------------------------------------------------------------------------
    async def _generate(self, prompt, params, request_id: str, sid: str | None):
        sid = _PATH_SESSION.get() or sid
        session = self.sessions.get(sid) if sid else None
        rendered = list(prompt["prompt_token_ids"])
        tok = self._tokenizer
        ids = rendered if session is None else session.engine_input(
            rendered, lambda x: tok.decode(x, skip_special_tokens=False),
            lambda text: tok.encode(text, add_special_tokens=False))
        if params.seed is None:
            params.seed = seeds.session_request(self.seed, sid, session.requests if session else request_id)
        if self.max_tokens is not None:
            params.max_tokens = min(params.max_tokens or self.max_tokens, self.max_tokens)
        if session is None:
            self.unrecorded += 1
        out = await self.submit(session, ids, params)
        out.request_id = request_id
        if session is not None:
            first = out.outputs[0]
            lps = [step[t].logprob for step, t in zip(first.logprobs, first.token_ids)]
            session.record(list(out.prompt_token_ids), list(first.token_ids), lps, first.text,
                           first.finish_reason or "length", len(out.outputs))
        yield out

    def _app(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.app import build_app
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.renderers import renderer_from_config
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        from vllm.v1.engine.input_processor import InputProcessor

        import json

        argv = ["--model", self.model_path, "--served-model-name", *self.names, "--max-model-len",
                str(self.max_model_len), "--api-key", self.token, "--enable-scale-out", "--disable-log-stats",
                "--disable-fastapi-docs"]
        if self.defaults:
            argv += ["--generation-config", "vllm", "--override-generation-config", json.dumps(self.defaults)]
        if self.trust_remote_code:
            argv.append("--trust-remote-code")
        if self.tool_call_parser:
            argv += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_call_parser]
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
        config = AsyncEngineArgs.from_cli_args(args).create_engine_config()
        renderer = renderer_from_config(config)
        self._tokenizer = renderer.tokenizer
        client = _engine_client(config, renderer, InputProcessor(config, renderer), self._generate)
        app = build_app(args, ("generate",))
        return app, client, args

    def start(self, timeout: float = 120.0) -> str:
        """Serve in a thread of this process (its own event loop); the base URL without a session."""
        import uvicorn

        app, client, args = self._app()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(_SessionPaths(_TokenNames(app)), host="127.0.0.1", port=self.port,
                                                     log_level="warning", access_log=False, lifespan="off",
                                                     # uvicorn's own dictConfig would close every handler of the
                                                     # process (the run's driver.log included)
                                                     log_config=None))
        ready = threading.Event()
        failed: list[BaseException] = []

        async def main():
            from vllm.entrypoints.launchers.api_server.app_state import init_app_state

            self.loop = asyncio.get_running_loop()
            try:
                await init_app_state(client, app.state, args, ("generate",))
            except BaseException as err:  # noqa: BLE001 - handed to the caller below
                failed.append(err)
                ready.set()
                return
            serving = self._serving = asyncio.ensure_future(self._server.serve())
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.02)
            ready.set()
            await serving

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), name="raygrpo-endpoint", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"the rollout endpoint did not start within {timeout:.0f} s")
        if failed:
            raise RuntimeError(f"the rollout endpoint could not start: {failed[0]}") from failed[0]
        if not self._server.started:
            raise RuntimeError(f"the rollout endpoint could not listen on 127.0.0.1:{self.port}")
        return self.base_url()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
