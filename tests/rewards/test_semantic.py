"""Semantic rewards: similarity to a reference and repetition, with a hash encoder and the real MiniLM."""
import numpy as np
import pytest

from rewards import semantic
from rewards.registry import RewardScorer
from tests.fakes import HashEncoder

ENC = HashEncoder(dim=256)
ADVERSARIAL = [
    "",                                    # empty completion
    "9" * 10_000,                          # a 10k-digit number
    "(" * 5_000 + "1" + ")" * 5_000,       # deeply nested parentheses
    "__import__('os').system('echo hi')",  # code in the answer is just text here
    "\ud800\udfff lone surrogates \x00 NUL \x1b[31m",
    "Ã©Ã¨ mojibake Ã¼",
    "word " * 2_000,                       # 10k characters of one word
    "Sentence one. " * 800,                # 800 identical sentences (capped at MAX_SENTENCES)
]


@pytest.mark.parametrize("a, b, expected", [
    ("the cat sat", "the cat sat", 1.0),   # identical word multisets: cosine 1
    ("cat sat", "cat", 1 / np.sqrt(2)),     # (1,1).(1,0) / (sqrt2 * 1) if the two words hash apart
])
def test_similarity_hand_computed(a, b, expected):
    got = semantic.similarity(ENC, [a], [b])[0]
    assert got == pytest.approx(expected, abs=1e-6)


def test_empty_completion_scores_zero_similarity():
    assert semantic.similarity(ENC, ["", "  \n"], ["Paris", "Paris"]) == [0.0, 0.0]


@pytest.mark.parametrize("text, n, expected", [
    ("a b c a b c", 3, 0.25),        # trigrams abc bca cab abc: 3 distinct of 4
    ("a a a a", 1, 0.75),            # one distinct unigram of 4
    ("a b c d", 2, 0.0),             # no repeats
    ("a b", 3, 0.0),                 # fewer words than n
    ("", 2, 0.0),                    # empty
])
def test_ngram_repetition_hand_computed(text, n, expected):
    assert semantic.ngram_repetition(text, n) == pytest.approx(expected)


def test_sentence_repetition_rescales_above_threshold():
    # Two identical sentences: max cosine 1 -> penalty 1; one sentence: 0; unrelated sentences: below 0.8.
    got = semantic.sentence_repetition(ENC, ["Paris is big. Paris is big.", "Paris is big.",
                                             "Paris is big. Lyon has rivers."], threshold=0.8)
    assert got[0] == pytest.approx(1.0)
    assert got[1] == 0.0
    assert got[2] == 0.0


def test_sentence_repetition_is_batch_invariant():
    texts = ["A b. A b.", "Nothing repeats here. Really nothing.", "x. y. x."]
    batch = semantic.sentence_repetition(ENC, texts)
    assert batch == [semantic.sentence_repetition(ENC, [t])[0] for t in texts]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text", ADVERSARIAL)
def test_adversarial_outputs_score_in_range(text):
    sim = semantic.similarity(ENC, [text], ["Paris"])[0]
    rep = semantic.sentence_repetition(ENC, [text])[0]
    assert -1.0 <= sim <= 1.0 and 0.0 <= rep <= 1.0
    assert 0.0 <= semantic.ngram_repetition(text, 3) <= 1.0


@pytest.fixture(scope="module")
def minilm():
    from retrieval.encoder import load_encoder

    return load_encoder(None)


def test_real_encoder_similarity_orders_paraphrase_above_unrelated(minilm):
    sims = semantic.similarity(minilm, ["The capital of France is Paris.", "Stock markets fell sharply."],
                               ["Paris is France's capital city."] * 2)
    assert sims[0] > 0.6 > sims[1]


def test_real_encoder_catches_paraphrased_repetition(minilm):
    rep = semantic.sentence_repetition(minilm, [
        "The treaty was signed in 1648. The treaty got signed in the year 1648.",
        "The treaty was signed in 1648. It ended the Thirty Years' War."], threshold=0.8)
    assert rep[0] > 0.3 and rep[1] == 0.0
    assert semantic.ngram_repetition("The treaty was signed in 1648. The treaty got signed in the year 1648.") < 0.2


@pytest.mark.timeout(120)
def test_real_encoder_survives_adversarial_outputs(minilm):
    sims = semantic.similarity(minilm, ADVERSARIAL, ["Paris"] * len(ADVERSARIAL))
    reps = semantic.sentence_repetition(minilm, ADVERSARIAL)
    assert all(-1.0 <= s <= 1.0 for s in sims) and all(0.0 <= r <= 1.0 for r in reps)
    assert reps[-1] == pytest.approx(1.0, abs=1e-5)   # 800 identical sentences: maximal repetition


def test_scorer_mixes_qa_and_similarity_with_the_packaged_encoder():
    s = RewardScorer([{"name": "qa", "weight": 1.0}, {"name": "similarity", "weight": 0.5},
                      {"name": "repetition", "weight": 1.0}])
    rewards, comps = s.score(["Paris", "Stock markets fell. Stock markets fell."], [1, 8],
                             [{"answers": ["Paris"], "lang": "en"}] * 2)
    assert comps["similarity"][0] == pytest.approx(1.0, abs=1e-5)      # identical to the reference
    assert comps["repetition"][0] == 0.0 and comps["repetition"][1] < -0.4
    assert rewards[0] == pytest.approx(1.0 + 0.5 * comps["similarity"][0])
    assert rewards[1] == pytest.approx(0.5 * comps["similarity"][1] + comps["repetition"][1])
    assert set(comps) >= {"qa", "qa/f1", "similarity", "repetition", "repetition/ngram", "repetition/sentence"}


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A randomly initialised one-layer BERT cross-encoder with the MiniLM tokenizer (no hub needed)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from retrieval.encoder import packaged_encoder_dir

    path = tmp_path_factory.mktemp("cross")
    tok = AutoTokenizer.from_pretrained(packaged_encoder_dir())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_cross_encoder_option_scores_pairs_as_the_model_does(tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    comps, refs = ["Paris", "a long answer about Lyon", ""], ["Paris", "Paris", "Paris"]
    s = RewardScorer([{"name": "similarity", "params": {"cross_encoder": tiny_cross_encoder}}])
    _, parts = s.score(comps, [1, 5, 0], [{"reference": r} for r in refs])
    direct = CrossEncoder(tiny_cross_encoder, device="cpu").predict(list(zip(comps, refs)))
    assert parts["similarity"][:2] == pytest.approx([float(x) for x in direct[:2]], abs=1e-6)
    assert parts["similarity"][2] == 0.0   # empty completion: 0 whatever the model says
