"""Extractive-QA reward: the official SQuAD v1.1 / MLQA exact match and F1, plus a length penalty.

The metric follows `shared/reference/qa-metric-rules.md` (our own re-implementation of the official
evaluation scripts; the MLQA script itself is CC BY-NC and is not copied). Evaluation and the training reward
use the same code, so the reward optimises exactly what we report.

Deliberate details, all inherited from the official MLQA script:
- Punctuation is every Unicode ``P*`` code point plus ``string.punctuation``; symbols such as ``€`` survive.
- Arabic "article removal" replaces *every* "ال" with a space, inside words too (the script's first regex
  alternative ``\\sال^`` can never match, so only the plain "ال" alternative acts).
- Chinese is split into single characters (U+4E00..U+9FA5 only), so zh F1 is character level.
- F1 is 0 whenever the token overlap is 0, even when both strings normalise to empty (where EM is 1).

Everything here is a pure function of strings and numbers; only the standard library is imported. Model
output of any shape (huge, control characters, lone surrogates) scores in [0, 1]; our own bugs (unknown
language, empty gold list, negative token count) raise.
"""

import re
import string
import sys
import unicodedata
from collections import Counter
from functools import cache

MLQA_LANGS = ("en", "es", "de", "vi", "zh", "ar", "hi")

# Article rules, verbatim word lists from the MLQA script. None = no removal. Every pattern is a plain
# alternation of literals between word boundaries: linear time, no backtracking blow-up.
_ARTICLES: dict[str, re.Pattern[str] | None] = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "ar": re.compile("ال"),
    "hi": None,
    "zh": None,
}
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SQUAD_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_CJK_CHAR = re.compile("([\u4e00-\u9fa5])")
_ANSWER_LABEL = re.compile(r"(?:answer|答案)\s*[:：]", re.IGNORECASE)


@cache
def punctuation_set() -> frozenset[str]:
    """The MLQA punctuation set: Unicode ``P*`` code points below ``sys.maxunicode`` plus ASCII punctuation.

    Computed once, on first use rather than at import: the scan over 1.1M code points takes ~0.1 s and
    pure modules must import in milliseconds. The size depends on the Unicode database of the Python build
    (828 on CPython 3.11.7, Unicode 14.0.0).

    >>> {"¿", "«", "。", "$", "~"} <= punctuation_set()
    True
    >>> "€" in punctuation_set() or "°" in punctuation_set()
    False
    """
    category = unicodedata.category
    unicode_punct = (c for c in map(chr, range(sys.maxunicode)) if category(c).startswith("P"))
    return frozenset(unicode_punct).union(string.punctuation)


@cache
def _mlqa_punct_table() -> dict[int, None]:
    return dict.fromkeys(map(ord, punctuation_set()))


def _check_lang(lang: str) -> None:
    if lang not in _ARTICLES:
        raise ValueError(f"unknown MLQA language {lang!r}; expected one of {', '.join(MLQA_LANGS)}")


def normalize_answer(s: str, lang: str) -> str:
    """MLQA normalisation: lower -> delete punctuation -> articles to a space -> whitespace/zh segmentation.

    Raises ValueError for a language outside MLQA_LANGS.

    >>> normalize_answer("The Eiffel Tower!", "en")
    'eiffel tower'
    >>> normalize_answer("the-end", "en")  # punctuation is deleted, not spaced, so "the" survives
    'theend'
    >>> normalize_answer("الكتاب", "ar")
    'كتاب'
    >>> normalize_answer("2008年北京奥运会", "zh")
    '2008 年 北 京 奥 运 会'
    """
    _check_lang(lang)
    text = s.lower().translate(_mlqa_punct_table())
    articles = _ARTICLES[lang]
    if articles is not None:
        text = articles.sub(" ", text)
    if lang == "zh":
        # Mixed segmentation: each CJK char is its own token, other runs split on whitespace. The script
        # also splits punctuation per char, but punctuation is already gone at this point.
        text = _CJK_CHAR.sub(r" \1 ", text)
    return " ".join(text.split())


def normalize_answer_squad(s: str) -> str:
    """SQuAD v1.1 normalisation: lower -> delete ASCII punctuation -> English articles -> whitespace.

    >>> normalize_answer_squad("The Eiffel Tower!")
    'eiffel tower'
    >>> normalize_answer_squad("“Hello”")  # curly quotes are not ASCII punctuation
    '“hello”'
    """
    text = s.lower().translate(_SQUAD_PUNCT_TABLE)
    text = _SQUAD_ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _best_em_f1(pred_norm: str, gold_norms: list[str]) -> tuple[float, float]:
    # EM and F1 are maximised independently: they may come from different golds, as in the official scripts.
    pred_tokens = pred_norm.split()
    em = max(float(pred_norm == gold) for gold in gold_norms)
    f1 = max(_f1(pred_tokens, gold.split()) for gold in gold_norms)
    return em, f1


def _check_golds(golds: list[str]) -> None:
    if isinstance(golds, str):
        raise TypeError("golds must be a list of answer strings, not a single str (it would be iterated by char)")
    if not golds:
        raise ValueError("golds is empty: every QA example needs at least one gold answer (data bug)")


def qa_scores(prediction: str, golds: list[str], lang: str) -> tuple[float, float]:
    """(EM, F1) of a prediction against the gold answers under the official MLQA rules.

    Each score is the max over golds, taken independently. Raises ValueError on an empty gold list or an
    unknown language.

    >>> qa_scores("a cat and the dog", ["cat dog"], "en")
    (0.0, 0.8)
    >>> qa_scores("Denver", ["Denver Broncos", "the Broncos", "Broncos"], "en")  # doctest: +ELLIPSIS
    (0.0, 0.666...)
    >>> qa_scores("the", ["an"], "en")  # both normalise to "": EM 1 but F1 0
    (1.0, 0.0)
    """
    _check_golds(golds)
    _check_lang(lang)
    gold_norms = [normalize_answer(gold, lang) for gold in golds]
    return _best_em_f1(normalize_answer(prediction, lang), gold_norms)


def qa_scores_squad(prediction: str, golds: list[str]) -> tuple[float, float]:
    """(EM, F1) under the SQuAD v1.1 rules (ASCII punctuation, English articles, whitespace tokens).

    >>> qa_scores_squad("El Museo del Prado", ["museo del prado"])  # doctest: +ELLIPSIS
    (0.0, 0.857...)
    """
    _check_golds(golds)
    gold_norms = [normalize_answer_squad(gold) for gold in golds]
    return _best_em_f1(normalize_answer_squad(prediction), gold_norms)


def qa_scores_simple(prediction: str, golds: list[str]) -> tuple[float, float]:
    """(EM, F1) under the source paper's simplified metric: lowercase, strip, whitespace tokens.

    A documented deviation, offered as `rewards.components[].params.metric=simple` to reproduce the paper's
    own numbers: no punctuation or article removal, so "Paris." does not match "Paris".

    >>> qa_scores_simple("Paris", ["paris"])
    (1.0, 1.0)
    >>> qa_scores_simple("Paris.", ["Paris"])
    (0.0, 0.0)
    >>> qa_scores_simple("the Eiffel Tower", ["Eiffel Tower"])  # doctest: +ELLIPSIS
    (0.0, 0.8)
    """
    _check_golds(golds)
    return _best_em_f1(" ".join(prediction.lower().split()), [" ".join(g.lower().split()) for g in golds])


QA_METRICS = ("official", "squad", "simple")


def qa_metric(prediction: str, golds: list[str], lang: str, metric: str = "official") -> tuple[float, float]:
    """(EM, F1) under the named metric: official MLQA rules for `lang`, SQuAD v1.1, or the simplified one."""
    if metric == "official":
        return qa_scores(prediction, golds, lang)
    if metric == "squad":
        return qa_scores_squad(prediction, golds)
    if metric == "simple":
        return qa_scores_simple(prediction, golds)
    raise ValueError(f"unknown QA metric {metric!r}; choose one of {QA_METRICS}")


def length_penalty(num_tokens: int, max_free_tokens: int = 64, coef: float = 0.001) -> float:
    """Linear penalty ``coef * max(0, num_tokens - max_free_tokens)`` on completion length.

    >>> length_penalty(70)  # 0.001 * (70 - 64)
    0.006
    >>> length_penalty(10)
    0.0
    """
    if num_tokens < 0 or max_free_tokens < 0 or coef < 0:
        raise ValueError(
            f"length_penalty needs non-negative arguments, got num_tokens={num_tokens}, "
            f"max_free_tokens={max_free_tokens}, coef={coef}"
        )
    return coef * max(0, num_tokens - max_free_tokens)


def qa_reward(
    prediction: str,
    golds: list[str],
    lang: str,
    num_tokens: int,
    f1_weight: float = 0.7,
    em_weight: float = 0.3,
    max_free_tokens: int = 64,
    length_coef: float = 0.001,
    metric: str = "official",
) -> tuple[float, dict[str, float]]:
    """Reward ``f1_weight * F1 + em_weight * EM - length_penalty`` and its parts.

    ``prediction`` is the extracted answer (see ``extract_answer``); ``num_tokens`` is the completion's token
    count. With the default weights the reward lies in ``[-penalty, 1]``.

    >>> qa_reward("Paris, France", ["Paris"], "en", num_tokens=5)  # doctest: +ELLIPSIS
    (0.466..., {'f1': 0.666..., 'em': 0.0, 'length_penalty': 0.0})
    """
    em, f1 = qa_metric(prediction, golds, lang, metric)
    penalty = length_penalty(num_tokens, max_free_tokens, length_coef)
    reward = f1_weight * f1 + em_weight * em - penalty
    return reward, {"f1": f1, "em": em, "length_penalty": penalty}


def extract_answer(completion: str) -> str:
    """The part of a model completion that is scored as the prediction.

    Rule: strip surrounding whitespace; if the text starts with the label "answer" (any case) or "答案",
    optionally followed by whitespace, then ":" or "：", drop that one label and strip again. Everything else
    is kept, including later lines: we do not truncate to the first line, because the model has to learn to
    answer concisely and the F1 reward (plus the length penalty) is what teaches it.

    >>> extract_answer("  Answer: Paris\\n")
    'Paris'
    >>> extract_answer("答案：北京")
    '北京'
    >>> extract_answer("Paris\\nbecause it is the capital")
    'Paris\\nbecause it is the capital'
    >>> extract_answer("The answer: Paris")  # only a leading label is removed
    'The answer: Paris'
    """
    text = completion.strip()
    label = _ANSWER_LABEL.match(text)
    if label is not None:
        text = text[label.end():].strip()
    return text
