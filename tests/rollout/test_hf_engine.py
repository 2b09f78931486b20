"""Tests for rollout.engine.HFEngine (transformers generate) on a tiny random T5 and a tiny random Llama:
rollout layout, logprobs == a teacher-forced forward pass, determinism, greedy, weight updates."""

import pytest
import torch

from rollout.engine import HFEngine
from tests.tiny_models import EOS, PAD, save_model, tiny_llama, tiny_t5, tiny_tokenizer

KINDS = ["llama", "t5"]
# Unequal lengths, so the batch is left-padded.
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
SAMPLING = dict(n=3, temperature=1.0, top_p=1.0, max_new_tokens=6)


def build(kind: str, seed: int = 0):
    return tiny_llama(seed=seed) if kind == "llama" else tiny_t5(seed=seed)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.set_num_threads(1)
    return {k: save_model(build(k), tmp_path_factory.mktemp(k)) for k in KINDS}


@pytest.fixture(scope="module")
def engines(folders):
    return {k: HFEngine(folders[k]) for k in KINDS}


@torch.no_grad()
def teacher_forced_logits(model, seq2seq: bool, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """[n, V] logits that predict each completion token, from one unpadded forward pass."""
    if seq2seq:
        start = model.config.decoder_start_token_id
        return model(input_ids=torch.tensor([prompt]),
                     decoder_input_ids=torch.tensor([[start] + completion[:-1]])).logits[0]
    seq = torch.tensor([prompt + completion])  # [1, L]
    return model(input_ids=seq).logits[0, len(prompt) - 1: len(prompt) + len(completion) - 1]


def teacher_forced_logprobs(model, seq2seq, prompt, completion) -> list[float]:
    logits = teacher_forced_logits(model, seq2seq, prompt, completion)  # [n, V]
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_generate_layout(engines, kind):
    r = engines[kind].generate(PROMPTS, seed=0, **SAMPLING)
    assert r.group_size == 3 and len(r.prompt_ids) == 3 * len(PROMPTS)
    assert r.prompt_ids == [p for p in PROMPTS for _ in range(3)]  # group-contiguous: sample j of i at 3i+j
    assert [len(lp) for lp in r.old_logprobs] == [len(c) for c in r.completion_ids]
    assert all(1 <= len(c) <= 6 for c in r.completion_ids)
    assert all(x <= 0.0 for lp in r.old_logprobs for x in lp)
    for c, reason in zip(r.completion_ids, r.finish_reasons):
        stops = (EOS, PAD) if kind == "t5" else (EOS,)
        assert reason == ("stop" if c[-1] in stops else "length")
        assert not any(t in stops for t in c[:-1])  # nothing after the stop token
        assert len(c) == 6 or reason == "stop"
    assert r.texts == [tiny_tokenizer().decode(c, skip_special_tokens=True) for c in r.completion_ids]


@pytest.mark.parametrize("kind", KINDS)
def test_logprobs_equal_teacher_forcing(engines, kind):
    eng = engines[kind]
    r = eng.generate(PROMPTS, seed=1, **SAMPLING)
    for p, c, lp in zip(r.prompt_ids, r.completion_ids, r.old_logprobs):
        assert lp == pytest.approx(teacher_forced_logprobs(eng.model, eng.seq2seq, p, c), abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_logprobs_are_temperature_one(engines, kind):
    """Sampling at T=0.5, top-p 0.9 shapes which tokens come out, not the logprobs reported for them."""
    eng = engines[kind]
    r = eng.generate(PROMPTS, n=2, temperature=0.5, top_p=0.9, max_new_tokens=4, seed=2)
    for p, c, lp in zip(r.prompt_ids, r.completion_ids, r.old_logprobs):
        assert lp == pytest.approx(teacher_forced_logprobs(eng.model, eng.seq2seq, p, c), abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_rollout(engines, kind):
    a = engines[kind].generate(PROMPTS, seed=3, **SAMPLING)
    b = engines[kind].generate(PROMPTS, seed=3, **SAMPLING)
    c = engines[kind].generate(PROMPTS, seed=4, **SAMPLING)
    assert a == b
    assert a.completion_ids != c.completion_ids  # 9 samples of 6 tokens from ~95 words: never all equal


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_is_the_argmax_chain(engines, kind):
    eng, tok = engines[kind], tiny_tokenizer()
    texts = eng.greedy(PROMPTS, max_new_tokens=5)
    assert len(texts) == len(PROMPTS) and all(isinstance(t, str) for t in texts)
    stops = (EOS, PAD) if kind == "t5" else (EOS,)
    for p, text in zip(PROMPTS, texts):
        ids = tok(text).input_ids  # word-level vocabulary: the text round-trips to the ids
        chain = teacher_forced_logits(eng.model, eng.seq2seq, p, ids + [EOS]).argmax(-1).tolist()
        assert chain[: len(ids)] == ids
        assert len(ids) == 5 or chain[len(ids)] in stops
    # left padding changes nothing: each prompt alone gives the same text
    assert [eng.greedy([p], max_new_tokens=5)[0] for p in PROMPTS] == texts


@pytest.mark.parametrize("kind", KINDS)
def test_update_weights(folders, kind):
    eng = HFEngine(folders[kind])
    before = eng.generate(PROMPTS, seed=5, **SAMPLING)
    perturbed = build(kind)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in perturbed.parameters():  # parameters() visits tied weights once
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    eng.update_weights([(k, v.detach().numpy().copy()) for k, v in perturbed.state_dict().items()])
    after = eng.generate(PROMPTS, seed=5, **SAMPLING)
    for p, c, lp in zip(after.prompt_ids, after.completion_ids, after.old_logprobs):
        assert lp == pytest.approx(teacher_forced_logprobs(perturbed, eng.seq2seq, p, c), abs=1e-4)
    original = build(kind)
    p, c = before.prompt_ids[0], before.completion_ids[0]
    assert before.old_logprobs[0] == pytest.approx(teacher_forced_logprobs(original, eng.seq2seq, p, c), abs=1e-4)
    assert after.old_logprobs != before.old_logprobs
    with pytest.raises(ValueError, match="unexpected"):
        eng.update_weights([("no.such.weight", torch.zeros(3).numpy())])
