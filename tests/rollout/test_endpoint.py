"""The rollout endpoint (rollout/endpoint.py) with the openai client: vLLM's server over a real vLLM engine (the tiny
policy, in-process), requests batched by cluster/serving.py, sessions recorded token in, token out."""
import asyncio

import pytest

pytest.importorskip("openai")


@pytest.fixture(scope="module")
def served(tiny_policy_dir):
    from cluster.groups import ActorGroup
    from cluster.serving import EngineDispatch
    from rollout.endpoint import Endpoint
    from rollout.engine import VLLMEngine

    engine = VLLMEngine(tiny_policy_dir, max_model_len=512, kv_cache_gib=1, dtype="fp32")
    dispatch = EngineDispatch(ActorGroup("rollout", [engine], "inprocess"))
    endpoint = Endpoint(tiny_policy_dir, "policy", 512, dispatch.submit, max_tokens=24, seed=3)
    endpoint.start()
    yield endpoint, dispatch, engine
    endpoint.stop()
    # the in-process engine's memory goes back now, whatever still refers to the app (the suite's later fleets need it)
    dispatch.worker.shutdown(wait=True)
    dispatch.group.members.clear()
    engine.llm = None
    del engine
    import gc

    gc.collect()


def client(endpoint, sid=None, key=None):
    import openai

    return openai.AsyncOpenAI(base_url=endpoint.base_url(sid), api_key=key or endpoint.token, max_retries=0,
                              timeout=120)


def run(coro):
    return asyncio.run(coro)


def test_models_chat_and_completions_with_token_ids(served):
    endpoint, _, engine = served

    async def go():
        c = client(endpoint)
        models = await c.models.list()
        chat = await c.chat.completions.create(
            model="policy", messages=[{"role": "user", "content": "Say hi"}], n=3, max_tokens=8,
            logprobs=True, extra_body={"return_token_ids": True})
        comp = await c.completions.create(model="policy", prompt="The capital of France is", max_tokens=6,
                                          stop=["\n"], extra_body={"return_token_ids": True})
        return models, chat, comp

    models, chat, comp = run(go())
    assert [m.id for m in models.data] == ["policy"]
    assert len(chat.choices) == 3
    for ch in chat.choices:
        ids = ch.model_extra["token_ids"]
        assert 0 < len(ids) <= 8 and len(ch.logprobs.content) == len(ids)
        # the text is the decode of the sampled ids (special tokens left out, as vLLM's server does)
        assert ch.message.content == engine.tokenizer.decode(ids, skip_special_tokens=True)
    c0 = comp.choices[0]
    assert c0.model_extra["prompt_token_ids"] == engine.tokenizer.encode("The capital of France is")
    assert len(c0.model_extra["token_ids"]) <= 6 and "\n" not in c0.text


def test_token_in_token_out_generate(served):
    import httpx

    endpoint, _, _ = served
    r = httpx.post(f"http://127.0.0.1:{endpoint.port}/inference/v1/generate",
                   headers={"Authorization": f"Bearer {endpoint.token}"},
                   json={"model": "policy", "token_ids": [1, 520, 9531, 198], "sampling_params": {"max_tokens": 5}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 < len(body["choices"][0]["token_ids"]) <= 5


def test_a_wrong_token_is_refused(served):
    import openai

    endpoint, _, _ = served
    with pytest.raises(openai.AuthenticationError):
        async def go():
            return await client(endpoint, key="wrong").models.list()

        run(go())


def test_two_turn_session_records_the_engines_ids_and_the_observation(served):
    endpoint, _, engine = served
    tok = engine.tokenizer
    url = endpoint.open("s-two")

    async def go():
        import openai

        c = openai.AsyncOpenAI(base_url=url, api_key=endpoint.token, max_retries=0, timeout=120)
        msgs = [{"role": "user", "content": "Look it up"}]
        first = await c.chat.completions.create(model="policy", messages=msgs, max_tokens=10,
                                                extra_body={"return_token_ids": True})
        msgs += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "tool", "content": "Paris is the capital.", "tool_call_id": "1"}]
        second = await c.chat.completions.create(model="policy", messages=msgs, max_tokens=10,
                                                 extra_body={"return_token_ids": True})
        return first, second

    first, second = run(go())
    s = endpoint.close("s-two")
    assert s.requests == 2 and s.rerendered == 0
    a, b = (x.choices[0].model_extra["token_ids"] for x in (first, second))
    p1 = first.choices[0].model_extra.get("prompt_token_ids") or s.prompt
    assert s.prompt == p1
    # the sample is the first prompt, the engine's sampled ids, what the second request added, its sampled ids
    assert s.ids[:len(a)] == a and s.ids[-len(b):] == b
    between = s.ids[len(a):-len(b)]
    assert set(s.mask[len(a):-len(b)]) == {0} and s.mask[:len(a)] == [1] * len(a)
    assert "Paris is the capital." in tok.decode(between)
    # sampled ids are never re-tokenized: the engine consumed the history's own ids
    assert (s.prompt + s.ids)[: len(s.prompt) + len(a)] == s.prompt + a


def test_a_template_that_rewrites_an_earlier_turn_is_counted(served):
    endpoint, _, _ = served
    url = endpoint.open("s-re")

    async def go():
        import openai

        c = openai.AsyncOpenAI(base_url=url, api_key=endpoint.token, max_retries=0, timeout=120)
        await c.chat.completions.create(model="policy", messages=[{"role": "user", "content": "one"}], max_tokens=4)
        # the second request does not continue the first: another user turn replaces history
        await c.chat.completions.create(model="policy", messages=[{"role": "user", "content": "two"}], max_tokens=4)

    run(go())
    s = endpoint.close("s-re")
    assert s.requests == 2 and s.rerendered == 1 and s.dropped_tokens > 0
    assert [t["role"] for t in s.turns] == ["policy", "restart", "policy"]


def test_concurrent_sessions_are_batched(served):
    endpoint, dispatch, _ = served
    dispatch.batches.clear()
    urls = [endpoint.open(f"c{i}") for i in range(8)]

    async def one(url):
        import openai

        c = openai.AsyncOpenAI(base_url=url, api_key=endpoint.token, max_retries=0, timeout=120)
        return await c.chat.completions.create(model="policy", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=6)

    async def go():
        return await asyncio.gather(*(one(u) for u in urls))

    outs = run(go())
    assert len(outs) == 8
    assert max(dispatch.batches) > 1, dispatch.batches  # not one engine call per request
    for i in range(8):
        endpoint.close(f"c{i}")


def test_tools_are_parsed_with_the_configured_parser(served, tiny_policy_dir):
    """rollout.tool_call_parser: a request with tools (tool_choice auto) is served, not refused; without a parser
    vLLM refuses it, naming --enable-auto-tool-choice."""
    import openai

    from rollout.endpoint import Endpoint

    _, dispatch, _ = served
    tools = [{"type": "function", "function": {"name": "add", "description": "add two numbers", "parameters": {
        "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}]
    with_parser = Endpoint(tiny_policy_dir, "policy", 512, dispatch.submit, max_tokens=8, tool_call_parser="hermes")
    with_parser.start()
    try:
        async def go(endpoint):
            c = client(endpoint)
            return await c.chat.completions.create(model="policy", messages=[{"role": "user", "content": "2+3?"}],
                                                   tools=tools, tool_choice="auto", max_tokens=8)

        reply = run(go(with_parser))
        assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
        with pytest.raises(openai.BadRequestError, match="enable-auto-tool-choice"):
            run(go(served[0]))
    finally:
        with_parser.stop()
