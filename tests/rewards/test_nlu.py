"""Tests for rewards/nlu.py: judgement extraction, label matching, GLUE label and STS-B rewards."""

import doctest
import time
from decimal import Decimal

import pytest

from rewards import nlu
from rewards.nlu import (
    MAX_DIGITS,
    TASK_LABELS,
    extract_judgement,
    label_reward,
    match_label,
    stsb_prediction,
    stsb_reward,
)


@pytest.mark.parametrize(
    "completion, judgement",
    [
        ("<Judgement>positive</Judgement>", "positive"),  # plain
        ("<judgement>  Yes.\n</JUDGEMENT>", "Yes."),  # any case, stripped
        ("<Judgement>no</Judgement> hmm <Judgement>yes</Judgement>", "yes"),  # the last block
        ("<Judgement>no</Judgement><Judgement>yes", "no"),  # a trailing unclosed tag is ignored
        ("<Judgement></Judgement>", ""),  # empty block
        ("Judgement: yes", None),  # no tag
        ("<Judgment>yes</Judgment>", None),  # the other spelling is not the tag
        ("", None),  # empty
    ],
)
def test_extract_judgement(completion, judgement):
    assert extract_judgement(completion) == judgement


@pytest.mark.parametrize(
    "judgement, task, label",
    [
        ("positive", "sst2", "positive"),  # exact
        ("  NEGATIVE!! ", "sst2", "negative"),  # case, punctuation, whitespace
        ("The sentiment is positive.", "sst2", "positive"),  # label inside a sentence
        ("positive, positive", "sst2", "positive"),  # repeated, still one label
        ("positive or negative", "sst2", None),  # two labels: ambiguous
        ("not positive", "sst2", None),  # negated label
        ("neutral", "sst2", None),  # not an sst2 label
        ("positively", "sst2", None),  # whole words only
        ("unacceptable", "cola", "unacceptable"),  # contains "acceptable" as letters, not as a word
        ("acceptable", "cola", "acceptable"),  # the short label
        ("not acceptable", "cola", None),  # negation is not interpreted as "unacceptable"
        ("acceptable-ish", "cola", "acceptable"),  # "-" splits words
        ("not_entailment", "rte", "not_entailment"),  # canonical
        ("Not entailment", "rte", "not_entailment"),  # space
        ("not-entailment.", "qnli", "not_entailment"),  # hyphen
        ("NOT_ENTAILMENT", "wnli", "not_entailment"),  # upper case
        ("entailment", "rte", "entailment"),  # the short label
        ("entailment, not not_entailment", "rte", None),  # both, and a negation
        ("not not_entailment", "rte", None),  # a negated label
        ("contradiction", "mnli", "contradiction"),  # mnli
        ("Neutral.", "mnli", "neutral"),  # mnli, punctuation
        ("not_entailment", "mnli", None),  # "not entailment" is a negated mnli "entailment"
        ("entailment or neutral", "mnli", None),  # two mnli labels
        ("Yes", "mrpc", "yes"),  # yes/no task
        ("No.", "qqp", "no"),  # yes/no task
        ("yes or no", "qqp", None),  # both
        ("there is no doubt: yes", "qqp", None),  # "no" is a word here too: ambiguous
        ("nope", "qqp", None),  # not a whole word "no"
        ("", "sst2", None),  # empty
    ],
)
def test_match_label(judgement, task, label):
    assert match_label(judgement, task) == label


@pytest.mark.parametrize("task", sorted(TASK_LABELS))
def test_every_label_matches_itself(task):
    for label in TASK_LABELS[task]:
        spellings = (label, label.upper(), label.replace("_", " "), label.replace("_", "-"), f" {label}. ")
        for spelling in spellings:
            assert match_label(spelling, task) == label


@pytest.mark.parametrize(
    "completion, label, task, reward",
    [
        ("<Judgement>Positive</Judgement>", "positive", "sst2", 1.0),  # right
        ("<Judgement>negative</Judgement>", "positive", "sst2", 0.0),  # wrong label
        ("It is positive.", "positive", "sst2", -1.0),  # no tag
        ("<Judgement>happy</Judgement>", "positive", "sst2", -1.0),  # no label
        ("<Judgement>positive or negative</Judgement>", "positive", "sst2", -1.0),  # ambiguous
        ("<Judgement>unacceptable</Judgement>", "acceptable", "cola", 0.0),  # the other cola label
        ("<Judgement>not entailment</Judgement>", "not_entailment", "rte", 1.0),  # spaced label
        ("<Judgement>not entailment</Judgement>", "entailment", "rte", 0.0),  # not the short label
        ("<Judgement>yes</Judgement> <Judgement>no</Judgement>", "no", "mrpc", 1.0),  # the last block
        ("<Judgement>yes</Judgement> I said no", "yes", "qqp", 1.0),  # text outside the tag is ignored
    ],
)
def test_label_reward(completion, label, task, reward):
    assert label_reward(completion, label, task) == reward


@pytest.mark.parametrize(
    "label, task, message",
    [
        ("positive", "sst-2", "unknown NLU task"),  # misspelt task
        ("positive", "stsb", "use stsb_reward"),  # regression task
        ("Positive", "sst2", "not a sst2 label"),  # gold labels are canonical
        ("not entailment", "rte", "not a rte label"),  # gold labels are canonical
        ("neutral", "rte", "not a rte label"),  # mnli label on rte
    ],
)
def test_label_reward_rejects_our_bugs(label, task, message):
    with pytest.raises(ValueError, match=message):
        label_reward("<Judgement>positive</Judgement>", label, task)


@pytest.mark.parametrize(
    "judgement, prediction",
    [
        ("3.75", "3.75"),  # plain
        (" 4 ", "4"),  # integer, whitespace
        ("4.", "4"),  # trailing point
        (".5", "0.5"),  # leading point
        ("Similarity: 0", "0"),  # words around a single number
        ("5.0", "5"),  # upper bound
        ("5.01", None),  # above the range
        ("-0.5", None),  # below the range
        ("-0", "0"),  # negative zero is zero
        ("3.5 out of 5", None),  # two numbers
        ("3,5", None),  # European decimal: two numbers
        ("1e0", None),  # exponent: two numbers
        ("1.2.3", None),  # two numbers
        ("nan", None),  # not a number
        ("inf", None),  # not a number
        ("٣", None),  # Arabic-Indic digit
        ("", None),  # empty
        ("0." + "0" * (MAX_DIGITS - 1), "0"),  # exactly MAX_DIGITS digits
        ("0." + "0" * MAX_DIGITS, None),  # one digit over the cap
    ],
)
def test_stsb_prediction(judgement, prediction):
    expected = None if prediction is None else Decimal(prediction)
    assert stsb_prediction(f"<Judgement>{judgement}</Judgement>") == expected


@pytest.mark.parametrize(
    "completion, score, reward",
    [
        ("<Judgement>3.5</Judgement>", 4.0, 2.0),  # 2.5 - 0.5
        ("<Judgement>4</Judgement>", 4.0, 2.5),  # exact
        ("<Judgement>0</Judgement>", 5.0, -2.5),  # worst valid: 2.5 - 5
        ("<Judgement>5</Judgement>", 2.5, 0.0),  # 2.5 - 2.5
        ("<Judgement>1.25</Judgement>", 0, 1.25),  # int gold: 2.5 - 1.25
        ("<Judgement>7</Judgement>", 4.0, -2.5),  # outside [0, 5]
        ("<Judgement>high</Judgement>", 4.0, -2.5),  # no number
        ("The score is 4", 4.0, -2.5),  # no tag
    ],
)
def test_stsb_reward(completion, score, reward):
    assert stsb_reward(completion, score) == pytest.approx(reward)


@pytest.mark.parametrize("score", [-0.1, 5.1, float("nan"), float("inf"), "4", True, None])
def test_stsb_reward_rejects_bad_gold(score):
    with pytest.raises(ValueError, match="gold STS-B score"):
        stsb_reward("<Judgement>4</Judgement>", score)


def _judged(text: str) -> str:
    return f"<Judgement>{text}</Judgement>"


@pytest.mark.parametrize(
    "prefix, suffix",
    [
        ("", ""),  # bare
        ("<think>It could be negative, 2 reasons</think>\n", ""),  # reasoning with another label and a number
        ("   ", "\n\n"),  # whitespace
        ("Final: ", " I am 100% sure (no doubt)."),  # text after the tag with a label word and a number
    ],
)
def test_rewards_unchanged_by_text_outside_the_tag(prefix, suffix):
    for body in map(_judged, ["positive", "negative", "?"]):
        expected = label_reward(body, "positive", "sst2")
        assert label_reward(prefix + body + suffix, "positive", "sst2") == expected
    for body in map(_judged, ["3.5", "6", "x"]):
        assert stsb_reward(prefix + body + suffix, 4.0) == stsb_reward(body, 4.0)


ADVERSARIAL = [
    _judged("9" * 10_000),  # a 10,000-digit number
    _judged("__import__('os').system('echo hi')"),  # code injection
    _judged("().__class__.__bases__[0].__subclasses__()"),  # sandbox escape
    _judged("9**9**9"),  # power tower: three numbers
    _judged("2**100"),  # two numbers
    _judged("(" * 10_000 + "1" + ")" * 10_000),  # 10,000-deep nesting
    _judged("1" * 10_000),  # 10,000 digits
    _judged("()" * 500_000),  # 1,000,000 chars of parentheses
    _judged("yes " * 250_000),  # 1,000,000 chars of one label
    _judged("not " * 250_000),  # 1,000,000 chars of negations
    _judged("1 " * 500_000),  # 500,000 numbers
    "<Judgement>" * 100_000,  # unclosed open tags
    "</Judgement>" * 100_000,  # close tags only
    "<Judgement>yes</Judgement>" * 30_000,  # 780,000 chars of blocks
    _judged("\ud800"),  # lone surrogate
    _judged("yes\x00"),  # NUL byte
    _judged("\x01\x1b[31m\x7f"),  # control chars
    _judged("Ã©Ã¨"),  # mojibake
    _judged("١٢٣"),  # Arabic-Indic digits
    _judged("1/0"),  # division by zero: two numbers
    _judged("NaN"),  # not a number
    _judged("-inf"),  # not a number
    "",  # empty
]
ADVERSARIAL_IDS = [f"{i}:{s[11:31]!r}" for i, s in enumerate(ADVERSARIAL)]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("completion", ADVERSARIAL, ids=ADVERSARIAL_IDS)
def test_adversarial_output_scores_quickly(completion):
    start = time.perf_counter()
    labels = [label_reward(completion, gold, task) for task, golds in TASK_LABELS.items() for gold in golds]
    stsb = [stsb_reward(completion, 0.0), stsb_reward(completion, 5.0)]
    elapsed = time.perf_counter() - start
    assert all(reward in (-1.0, 0.0, 1.0) for reward in labels)
    assert all(isinstance(reward, float) and -2.5 <= reward <= 2.5 for reward in stsb)
    assert elapsed < 5.0, f"{elapsed:.2f}s for a {len(completion)}-char input"


def test_docstring_examples():
    result = doctest.testmod(nlu)
    assert result.attempted > 0
    assert result.failed == 0
