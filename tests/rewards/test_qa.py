"""Tests for rewards/qa.py against the official SQuAD v1.1 / MLQA test vectors (reference/qa-metric-rules.md)."""

import doctest
import itertools
import math
import platform
import random
import time

import pytest

from rewards import qa
from rewards.qa import (
    MLQA_LANGS,
    extract_answer,
    length_penalty,
    normalize_answer,
    normalize_answer_squad,
    punctuation_set,
    qa_reward,
    qa_scores,
    qa_scores_squad,
)

# Section 1.5 of the rules file: (lang, pred, gold, mlqa_norm_pred, mlqa_em, mlqa_f1, squad_em, squad_f1).
VECTORS = [
    ("en", "The Eiffel Tower!", "Eiffel tower", "eiffel tower", 1, 1.0, 1, 1.0),  # article + "!" removed
    ("en", "a cat and the dog", "cat dog", "cat and dog", 0, 0.8, 0, 0.8),  # P=2/3 R=1 -> 0.8
    ("en", "the the cat cat", "cat", "cat cat", 0, 0.666667, 0, 0.666667),  # multiset: P=1/2 R=1
    ("en", "the-end", "end", "theend", 0, 0.0, 0, 0.0),  # "-" deleted, not spaced
    ("en", "“Hello”", "hello", "hello", 1, 1.0, 0, 0.0),  # curly quotes are P* but not ASCII
    ("en", "$100", "100", "100", 1, 1.0, 1, 1.0),  # "$" is in string.punctuation
    ("en", "€100", "100", "€100", 0, 0.0, 0, 0.0),  # "€" is Sc, survives both
    ("en", "", "Paris", "", 0, 0.0, 0, 0.0),  # empty prediction
    ("en", "the", "an", "", 1, 0.0, 1, 0.0),  # both empty: EM 1, F1 0
    ("en", "Paris, France", "Paris", "paris france", 0, 0.666667, 0, 0.666667),  # P=1/2 R=1
    ("es", "El Museo del Prado", "museo del prado", "museo del prado", 1, 1.0, 0, 0.857143),  # squad P=3/4
    ("es", "¿Qué? «Hola»", "qué hola", "qué hola", 1, 1.0, 0, 0.0),  # ¿ « » not ASCII
    ("es", "unos libros", "libros", "libros", 1, 1.0, 0, 0.666667),  # squad keeps "unos"
    ("de", "Die Deutsche Bank", "deutsche Bank", "deutsche bank", 1, 1.0, 0, 0.8),  # squad keeps "die"
    ("de", "einem großen Haus", "großen haus", "großen haus", 1, 1.0, 0, 0.8),  # squad keeps "einem"
    ("de", "„Zitat“", "zitat", "zitat", 1, 1.0, 0, 0.0),  # German quotes are P*
    ("vi", "của Việt Nam", "Việt Nam", "việt nam", 1, 1.0, 0, 0.8),  # "của" in the vi list
    ("vi", "những chiếc xe", "xe", "xe", 1, 1.0, 0, 0.5),  # two vi "articles"; squad P=1/3 R=1
    ("ar", "الكتاب", "كتاب", "كتاب", 1, 1.0, 0, 0.0),  # leading "ال" removed
    ("ar", "مال", "م", "م", 1, 1.0, 0, 0.0),  # quirk: "ال" removed inside a word
    ("hi", "भारत।", "भारत", "भारत", 1, 1.0, 0, 0.0),  # danda is P*
    ("zh", "北京大学", "北京", "北 京 大 学", 0, 0.666667, 0, 0.0),  # char level: P=2/4 R=1
    ("zh", "2008年北京奥运会", "北京奥运会", "2008 年 北 京 奥 运 会", 0, 0.833333, 0, 0.0),  # P=5/7 R=1
    ("zh", "北京，中国", "北京", "北 京 中 国", 0, 0.666667, 0, 0.0),  # fullwidth comma removed
    ("zh", "iPhone 6手机", "iphone 6", "iphone 6 手 机", 0, 0.666667, 0, 0.5),  # squad: [iphone, 6手机]
]
VECTOR_IDS = [f"{row[0]}:{row[1]!r}" for row in VECTORS]

BRONCOS = ["Denver Broncos", "the Broncos", "Broncos"]


@pytest.mark.parametrize("lang, pred, gold, norm, em, f1, squad_em, squad_f1", VECTORS, ids=VECTOR_IDS)
def test_mlqa_vectors(lang, pred, gold, norm, em, f1, squad_em, squad_f1):
    assert normalize_answer(pred, lang) == norm
    got_em, got_f1 = qa_scores(pred, [gold], lang)
    assert got_em == em
    assert got_f1 == pytest.approx(f1, abs=1e-6)


@pytest.mark.parametrize("lang, pred, gold, norm, em, f1, squad_em, squad_f1", VECTORS, ids=VECTOR_IDS)
def test_squad_vectors(lang, pred, gold, norm, em, f1, squad_em, squad_f1):
    got_em, got_f1 = qa_scores_squad(pred, [gold])
    assert got_em == squad_em
    assert got_f1 == pytest.approx(squad_f1, abs=1e-6)


@pytest.mark.parametrize(
    "pred, em, f1",
    [
        ("Broncos", 1.0, 1.0),  # exact match with the third gold
        ("Denver", 0.0, 0.666667),  # best is "Denver Broncos": P=1 R=1/2
        ("Carolina Panthers", 0.0, 0.0),  # no overlap with any gold
    ],
)
def test_multiple_golds(pred, em, f1):
    got_em, got_f1 = qa_scores(pred, BRONCOS, "en")
    assert got_em == em
    assert got_f1 == pytest.approx(f1, abs=1e-6)


def test_em_and_f1_maximised_independently():
    # EM comes from gold "" (both normalise to ""), F1 from "cat" (P=1/2 R=1 -> 2/3).
    assert qa_scores("the cat", ["the", "cat dog"], "en") == (0.0, pytest.approx(2 / 3))
    assert qa_scores("a", ["the", "a cat"], "en") == (1.0, 0.0)  # EM 1 from "the"; F1 0 everywhere


@pytest.mark.parametrize("bad", ["fr", "EN", "", "english"])
def test_unknown_language_raises(bad):
    with pytest.raises(ValueError, match="expected one of en, es, de, vi, zh, ar, hi"):
        normalize_answer("Paris", bad)
    with pytest.raises(ValueError, match="unknown MLQA language"):
        qa_scores("Paris", ["Paris"], bad)


def test_empty_golds_raise():
    with pytest.raises(ValueError, match="golds is empty"):
        qa_scores("Paris", [], "en")
    with pytest.raises(ValueError, match="golds is empty"):
        qa_scores_squad("Paris", [])


def test_single_string_golds_raise():
    with pytest.raises(TypeError, match="not a single str"):
        qa_scores("P", "Paris", "en")


@pytest.mark.parametrize(
    "lang, pred, norm",
    [
        ("en", "Ａn apple", "ａn apple"),  # fullwidth "Ａ" lowers to "ａ" (U+FF41): not the article "an"
        ("zh", "㐀北", "㐀 北"),  # U+3400 (Ext A) is outside the split range but a separate run here
        ("zh", "鿦鿦", "鿦鿦"),  # U+9FE6 > U+9FA5: not split per char
        ("zh", "abc def北", "abc def 北"),  # non-CJK runs split on whitespace
        ("hi", "एक the किताब", "एक the किताब"),  # hi removes no articles, not even English ones
        ("de", "Der, die, das.", ""),  # all three are German articles
        ("es", "La casa", "casa"),  # es article
        ("ar", "ال ال", ""),  # every "ال" becomes a space
    ],
)
def test_normalize_edge_cases(lang, pred, norm):
    assert normalize_answer(pred, lang) == norm


# Composite reward: reward = 0.7 * F1 + 0.3 * EM - 0.001 * max(0, tokens - 64).
@pytest.mark.parametrize(
    "pred, golds, tokens, reward, f1, em, penalty",
    [
        ("a cat and the dog", ["cat dog"], 70, 0.554, 0.8, 0.0, 0.006),  # 0.7*0.8 - 0.001*6 = 0.56 - 0.006
        ("Paris", ["Paris"], 10, 1.0, 1.0, 1.0, 0.0),  # 0.7 + 0.3, under the free budget
        ("Paris", ["Paris"], 64, 1.0, 1.0, 1.0, 0.0),  # exactly at the budget: no penalty
        ("Paris", ["Paris"], 164, 0.9, 1.0, 1.0, 0.1),  # 1.0 - 0.001*100
        ("the", ["an"], 0, 0.3, 0.0, 1.0, 0.0),  # EM 1, F1 0 -> 0.3
        ("Berlin", ["Paris"], 1064, -1.0, 0.0, 0.0, 1.0),  # wrong and 1000 tokens over: 0 - 1.0
    ],
)
def test_qa_reward_hand_computed(pred, golds, tokens, reward, f1, em, penalty):
    got, metrics = qa_reward(pred, golds, "en", num_tokens=tokens)
    assert got == pytest.approx(reward)
    assert metrics == {"f1": pytest.approx(f1), "em": em, "length_penalty": pytest.approx(penalty)}


def test_qa_reward_custom_weights():
    # F1 2/3, EM 0: 0.5 * 2/3 + 1.0 * 0 - 0.01 * (20 - 10) = 1/3 - 0.1
    got, _ = qa_reward("Paris France", ["Paris"], "en", 20, f1_weight=0.5, em_weight=1.0,
                       max_free_tokens=10, length_coef=0.01)
    assert got == pytest.approx(1 / 3 - 0.1)


@pytest.mark.parametrize(
    "tokens, free, coef, penalty",
    [
        (0, 64, 0.001, 0.0),  # nothing generated
        (65, 64, 0.001, 0.001),  # one token over
        (100, 0, 0.5, 50.0),  # no free budget
        (10**9, 64, 0.001, 0.001 * (10**9 - 64)),  # huge but finite
    ],
)
def test_length_penalty(tokens, free, coef, penalty):
    assert length_penalty(tokens, free, coef) == pytest.approx(penalty)


@pytest.mark.parametrize("args", [(-1, 64, 0.001), (10, -1, 0.001), (10, 64, -0.1)])
def test_length_penalty_rejects_negative(args):
    with pytest.raises(ValueError, match="non-negative"):
        length_penalty(*args)


@pytest.mark.parametrize(
    "completion, answer",
    [
        ("Paris", "Paris"),  # nothing to strip
        ("  Paris \n", "Paris"),  # surrounding whitespace
        ("Answer: Paris", "Paris"),  # English label
        ("ANSWER :  Paris", "Paris"),  # any case, space before the colon
        ("answer：Paris", "Paris"),  # fullwidth colon
        ("答案：北京", "北京"),  # Chinese label
        ("答案: 北京", "北京"),  # Chinese label, ASCII colon
        ("Answer: Answer: Paris", "Answer: Paris"),  # only one label is removed
        ("The answer: Paris", "The answer: Paris"),  # label must lead
        ("Answers: Paris", "Answers: Paris"),  # not the label
        ("Answer Paris", "Answer Paris"),  # no colon, no label
        ("Paris\nIt is the capital.", "Paris\nIt is the capital."),  # no first-line truncation
        ("Answer:", ""),  # label only
        ("", ""),  # empty completion
    ],
)
def test_extract_answer(completion, answer):
    assert extract_answer(completion) == answer


ADVERSARIAL = [
    "(" * 10_000,  # all punctuation -> empty
    "__import__('os')" * 700,  # code-looking text is just text
    "9" * 10_000,  # huge number as a single token
    "1e308 " * 2_000,  # float-looking tokens
    "\udcff",  # lone surrogate
    "\udcff" * 10_000,  # many lone surrogates
    "\x00",  # NUL
    "\x00\x01\x1b[31m\x7f" * 2_000,  # control characters and an ANSI escape
    "the " * 2_500,  # all articles
    "a" * 10_000,  # article-like letter run: \b(a|an|the)\b must stay linear
    "an" * 5_000 + "!",  # near-miss article run
    "ال" * 5_000,  # Arabic article run
    "北" * 10_000,  # 10k CJK chars -> 10k tokens
    "Answer:" * 1_500,  # label repeated
    "answer" + " " * 10_000 + "x",  # label without colon after many spaces
    "\u200b\ufeff\u2028" * 3_000,  # zero-width and line-separator characters
]
ADVERSARIAL_IDS = [f"{i}:{s[:12]!r}" for i, s in enumerate(ADVERSARIAL)]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=ADVERSARIAL_IDS)
@pytest.mark.parametrize("lang", MLQA_LANGS)
def test_adversarial_prediction_scores_in_range_quickly(text, lang):
    punctuation_set()  # warm the one-off cache outside the timing
    start = time.perf_counter()
    em, f1 = qa_scores(extract_answer(text), ["Paris", text[:50]], lang)
    reward, _ = qa_reward(extract_answer(text), ["Paris"], lang, num_tokens=len(text))
    elapsed = time.perf_counter() - start
    assert em in (0.0, 1.0)
    assert 0.0 <= f1 <= 1.0
    assert math.isfinite(reward) and reward <= 1.0
    assert elapsed < 1.0, f"{elapsed:.2f}s for a {len(text)}-char input"


@pytest.mark.parametrize("text", ADVERSARIAL, ids=ADVERSARIAL_IDS)
def test_adversarial_gold_side_squad(text):
    em, f1 = qa_scores_squad(text, [text, "Paris"])
    assert em == 1.0  # a string always matches itself
    assert 0.0 <= f1 <= 1.0


@pytest.mark.parametrize(
    "pred, golds, lang",
    [
        ("Denver", BRONCOS, "en"),  # partial match
        ("the Broncos", BRONCOS, "en"),  # exact match on one gold
        ("北京大学", ["北京", "大学", "北京大学生"], "zh"),  # char-level overlaps
        ("El Museo", ["museo", "el prado", "Museo del Prado"], "es"),  # es articles
    ],
)
def test_qa_scores_is_symmetric_in_gold_order(pred, golds, lang):
    expected = qa_scores(pred, golds, lang)
    for perm in itertools.permutations(golds):
        assert qa_scores(pred, list(perm), lang) == expected


@pytest.mark.parametrize(
    "pred, golds, lang",
    [
        ("Denver", BRONCOS, "en"),  # F1 max from the first gold
        ("the cat", ["the", "cat dog", "dog"], "en"),  # EM and F1 from different golds
        ("北京大学", ["北京", "大学", "北京大学生"], "zh"),  # char level
    ],
)
def test_qa_scores_is_max_over_single_golds(pred, golds, lang):
    singles = [qa_scores(pred, [gold], lang) for gold in golds]
    assert qa_scores(pred, golds, lang) == (max(s[0] for s in singles), max(s[1] for s in singles))


@pytest.mark.skipif(
    platform.python_version() != "3.11.7",
    reason="828 was measured on CPython 3.11.7 (Unicode 14.0.0); the P* set depends on the Unicode database",
)
def test_punctuation_set_size_on_pinned_python():
    assert len(punctuation_set()) == 828


def test_punctuation_set_adds_ascii_symbols():
    # The 9 ASCII symbols that string.punctuation adds on top of the Unicode P* categories.
    assert set("$+<=>^`|~") <= punctuation_set()
    assert not {"€", "°", "×"} & punctuation_set()  # Sc, So, Sm stay


def test_squad_normalization_keeps_non_ascii_punctuation():
    assert normalize_answer_squad("¿Qué? «Hola»") == "¿qué «hola»"


def test_docstring_examples():
    result = doctest.testmod(qa, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def _mixed_segmentation_loop(text: str) -> str:
    # Plain char walk as the rules describe it: CJK (U+4E00..U+9FA5) or punctuation chars are their own
    # tokens; buffered runs of other chars are whitespace-split.
    tokens, run = [], ""
    for char in text:
        if "\u4e00" <= char <= "\u9fa5" or char in punctuation_set():
            tokens.extend(run.split())
            tokens.append(char)
            run = ""
        else:
            run += char
    tokens.extend(run.split())
    return " ".join(t for t in tokens if t.strip())


@pytest.mark.parametrize("seed", range(20))
def test_zh_segmentation_matches_plain_loop(seed):
    rng = random.Random(seed)
    alphabet = "北京大学鿦㐀 \t\nabcA1，。!?ال€"  # CJK, out-of-range CJK, spaces, Latin, punctuation, symbols
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
    no_punct = "".join(c for c in text.lower() if c not in punctuation_set())
    assert normalize_answer(text, "zh") == _mixed_segmentation_loop(no_punct)
