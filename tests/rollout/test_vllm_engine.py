"""The real vLLM engine with the embedded model: sampled-token logprobs equal the learner's, and a
weight sync shows up in that gap (a sync that did not take effect would leave it large)."""
import os

import pytest
import torch

from cluster.system import PROBE
from common.models import resolve_model
from learner.policy import Learner

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def pair():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from rollout.engine import VLLMEngine

    path = resolve_model("embedded:smollm2-135m-instruct")
    learner = Learner(path, lr=1e-5, total_steps=1)
    engine = VLLMEngine(path, max_model_len=1024, kv_cache_gib=1)
    msgs = [[{"role": "user", "content": f"Name a city in country number {i}."}] for i in range(3)]
    prompts = [learner.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in msgs]
    ids = [learner.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    return learner, engine, ids


def _gap(learner, rollout) -> float:
    mine = learner.logprobs(rollout.prompt_ids, rollout.completion_ids)
    return max(abs(a - b) for r1, r2 in zip(mine, rollout.old_logprobs) for a, b in zip(r1, r2))


def test_sampling_shapes_and_logprob_agreement(pair):
    learner, engine, ids = pair
    r = engine.generate(ids, n=4, temperature=0.8, top_p=0.9, max_new_tokens=16, seed=3)
    assert len(r.completion_ids) == 12 and r.group_size == 4
    assert r.prompt_ids[0] == r.prompt_ids[3] == ids[0] and r.prompt_ids[4] == ids[1]
    assert all(len(c) == len(lp) and 0 < len(c) <= 16 for c, lp in zip(r.completion_ids, r.old_logprobs))
    assert _gap(learner, r) < 1e-3  # fp32 engine vs fp32 learner
    # the sync check's probe: prompt logprobs of a fixed sequence, the same as the learner's
    probe = learner.logprobs([PROBE[:8]], [PROBE[8:]])[0]
    assert max(abs(a - b) for a, b in zip(engine.probe_logprobs(PROBE[:8], PROBE[8:]), probe)) < 1e-4
    again = engine.generate(ids, n=4, temperature=0.8, top_p=0.9, max_new_tokens=16, seed=3)
    assert again.completion_ids == r.completion_ids  # seeded sampling is reproducible


def test_weight_sync_shows_in_the_gap(pair):
    learner, engine, ids = pair
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    stale = engine.generate(ids, n=2, temperature=0.8, top_p=0.9, max_new_tokens=16, seed=5)
    assert _gap(learner, stale) > 1e-2  # the engine still has the old weights: a visible gap
    probe_gap = lambda: max(abs(a - b) for a, b in zip(engine.probe_logprobs(PROBE[:8], PROBE[8:]),  # noqa: E731
                                                           learner.logprobs([PROBE[:8]], [PROBE[8:]])[0]))
    assert probe_gap() > 1e-2  # the sync check sees it too
    engine.update_weights(learner.named_arrays())
    assert probe_gap() < 1e-4
    fresh = engine.generate(ids, n=2, temperature=0.8, top_p=0.9, max_new_tokens=16, seed=5)
    assert _gap(learner, fresh) < 1e-3  # after the sync the engine samples from the learner's weights


def test_seeded_sampling_of_a_batch_larger_than_one_prefill_step(pair):
    """40 prompts of ~300 tokens exceed one step's token budget (8192). With chunked prefill vLLM 0.32 on CPU
    crashed here ("CPU Generator does not use offset"); the engine prefills whole prompts instead, and a
    request's samples do not depend on what else is in the batch."""
    learner, engine, _ = pair
    text = " ".join(f"word{i}" for i in range(120))
    ids = [learner.tokenizer.encode(f"{i} {text}", add_special_tokens=False) for i in range(40)]
    assert sum(map(len, ids)) > 8192
    big = engine.generate(ids, n=2, temperature=0.8, top_p=0.9, max_new_tokens=3, seed=11)
    small = engine.generate(ids[:2], n=2, temperature=0.8, top_p=0.9, max_new_tokens=3, seed=11)
    assert len(big.completion_ids) == 80 and big.completion_ids[:4] == small.completion_ids
