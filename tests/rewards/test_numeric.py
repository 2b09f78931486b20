"""Tests for rewards/numeric.py: number extraction, GSM8K golds, arithmetic problems, adversarial output."""

import doctest
import json
import operator
import re
import time
from decimal import Decimal

import pytest

from rewards import numeric as math_rewards
from rewards.numeric import (
    MAX_DIGITS,
    arithmetic_reward,
    extract_number,
    gsm8k_gold,
    gsm8k_reward,
    last_integer,
    last_number,
    make_arithmetic_problems,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12 - 7 = 5", "5"),  # last of three
        ("12-7=5", "5"),  # "-" after a digit is an operator, not a sign
        ("7 - 12 = -5", "-5"),  # "-" after "= " is a sign
        ("x=-5", "-5"),  # "-" after "=" is a sign
        ("(-5)", "-5"),  # "-" after "(" is a sign
        ("a-5", "5"),  # "-" after a letter is not a sign
        ("7 \u2212 12 = \u22125", "-5"),  # U+2212 minus sign
        ("$1,234.50", "1234.50"),  # dollar, thousands separator, decimals
        ("1,234,567", "1234567"),  # two separators
        ("1,2,3", "3"),  # a list, not thousands
        ("1,2345", "2345"),  # bad grouping: 1 and 2345
        ("1234,567", "567"),  # bad grouping: 1234 and 567
        ("50%", "50"),  # percent ignored
        ("It is 18.", "18"),  # sentence-ending period
        ("3.50", "3.5"),  # trailing zero, equal by value
        ("1.2.3", "1.2"),  # version-like: "3" after "." is not a number start
        ("1e5", "5"),  # no exponents
        ("١٢٣", None),  # Arabic-Indic digits do not count
        ("１２", None),  # fullwidth digits do not count
        ("", None),  # empty
        ("no numbers", None),  # nothing to find
        ("1 then " + "9" * (MAX_DIGITS + 1), None),  # the last number is too long: unparseable, no fallback
        ("9" * MAX_DIGITS, "9" * MAX_DIGITS),  # exactly at the cap
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == (None if expected is None else Decimal(expected))


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("So 3 + 4 = 7. The answer is $1,234.", "1234"),  # "answer is" cue, first number after it
        ("Answer: 3 apples, not 4", "3"),  # "Answer:" cue, first number after it
        ("the ANSWER = 12 and then 13", "12"),  # "answer =" any case
        ("The answer is:\n\n**42**", "42"),  # number on a later line, markdown bold
        ("answer is 1; answer is 2; 3", "2"),  # the last cue counts
        ("The answer is unclear. 5 apples", "5"),  # cue without a number: falls through to the last number
        ("First 5, then \\boxed{-2.50} and 9", "-2.5"),  # boxed beats the last number
        ("\\boxed{1} and \\boxed{2}", "2"),  # last boxed
        ("\\boxed{\\frac{3}{4}}", "3"),  # nested braces: first number inside
        ("\\boxed{x = 5} answer is 6", "5"),  # boxed beats the answer cue
        ("\\boxed{x} so 12 it is", "12"),  # boxed without a number falls through
        ("\\boxed{7", "7"),  # unclosed box: content runs to the end
        ("#### 18", "18"),  # GSM8K style
        ("The answer is 3.\n#### 18", "18"),  # #### beats the answer cue
        ("#### 1,234.", "1234"),  # thousands and a period
        ("####", None),  # cue with no number and nothing else
        ("The answer is " + "9" * 100, None),  # selected number too long
        ("The answer is ١٢٣", None),  # Unicode digits do not count
        ("", None),  # empty
    ],
)
def test_extract_number(completion, expected):
    assert extract_number(completion) == (None if expected is None else Decimal(expected))


@pytest.mark.parametrize(
    "answer_field, expected",
    [
        ("9 * 2 = $<<9*2=18>>18\n#### 18", 18),  # real layout
        ("#### 1,234", 1234),  # commas removed
        ("####  -3 ", -3),  # negative, whitespace
        ("#### 2.5", Decimal("2.5")),  # decimal gold
        ("a #### 1 b #### 2", 2),  # the last ####
    ],
)
def test_gsm8k_gold(answer_field, expected):
    assert gsm8k_gold(answer_field) == expected


@pytest.mark.parametrize(
    "answer_field",
    [
        "The answer is 18",  # no ####
        "",  # empty
        "#### ",  # nothing after ####
        "#### eighteen",  # words
        "#### 18 dollars",  # not a plain number
    ],
)
def test_gsm8k_gold_rejects_bad_data(answer_field):
    with pytest.raises(ValueError):
        gsm8k_gold(answer_field)


@pytest.mark.parametrize(
    "completion, gold, reward",
    [
        ("The answer is 18.00", "18", 1.0),  # 18.00 == 18
        ("\\boxed{1234}", "1,234", 1.0),  # comma in the gold
        ("\\boxed{1,234}", 1234, 1.0),  # comma in the output, int gold
        ("I think 17 or 18", 17, 0.0),  # the last number counts
        ("The answer is -3", Decimal("-3"), 1.0),  # Decimal gold, negative
        ("0.5", "0.50", 1.0),  # decimals compare by value
        ("no idea", "18", 0.0),  # unparsed
        ("#### 18", "9 * 2 = <<9*2=18>>18\n#### 18", 1.0),  # gold given as the whole answer field
        ("The answer is 1234", "#### 1,234", 1.0),  # answer field with commas
    ],
)
def test_gsm8k_reward(completion, gold, reward):
    assert gsm8k_reward(completion, gold) == reward


@pytest.mark.parametrize(
    "gold, error",
    [
        ("Half is 18.\n#### eighteen", ValueError),  # an answer field without a number after ####
        ("18 dollars", ValueError),  # not a plain number
        ("abc", ValueError),  # not a number
        (18.0, TypeError),  # floats are inexact golds
        (True, TypeError),  # bool is not a number here
    ],
)
def test_gsm8k_reward_rejects_bad_gold(gold, error):
    with pytest.raises(error):
        gsm8k_reward("18", gold)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12 - 7 = 5", 5),  # last number
        ("-5.0", -5),  # integral decimal
        ("-0", 0),  # negative zero
        ("1.5", None),  # not an integer: unparsed, not 5
        ("1,234", 1234),  # thousands separator
        ("9" * MAX_DIGITS, int("9" * MAX_DIGITS)),  # at the cap
        ("9" * (MAX_DIGITS + 1), None),  # over the cap
        ("", None),  # empty
    ],
)
def test_last_integer(text, expected):
    assert last_integer(text) == expected


@pytest.mark.parametrize(
    "completion, answer, reward",
    [
        ("12 - 7 = 5", 5, 1.0),  # last number
        ("5", 5, 1.0),  # bare
        ("The result is 5.", 5, 1.0),  # sentence period
        ("7 - 12 = -5", -5, 1.0),  # negative
        ("7 - 12 = 5", -5, 0.0),  # sign missing
        ("-5.0", -5, 1.0),  # decimal equal by value
        ("12 / 8 = 1.5", 5, 0.0),  # the "5" of 1.5 is not an integer of its own
        ("5 is my answer, from 3 + 2", 5, 0.0),  # last number is 2
        ("1,234", 1234, 1.0),  # thousands separator
        ("", 0, 0.0),  # empty: unparsed
        ("٥", 5, 0.0),  # Arabic-Indic five does not count
    ],
)
def test_arithmetic_reward(completion, answer, reward):
    assert arithmetic_reward(completion, answer) == reward


def test_arithmetic_reward_rejects_non_int_answer():
    with pytest.raises(TypeError):
        arithmetic_reward("5", 5.0)


_QUESTION = re.compile(r"What is (\d+) ([-+*/]) (\d+)\? Answer with an integer\.")
_INT_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "ops, digits",
    [
        (("+", "-", "*", "/"), (1, 2)),  # the defaults
        (("/",), (1, 1)),  # one-digit divisions: divisor 1..9
        (("-", "*"), (3, 3)),  # three-digit operands
    ],
)
def test_arithmetic_problems_are_right(seed, ops, digits):
    for problem in make_arithmetic_problems(200, seed, ops, digits):
        a, op, b = _QUESTION.fullmatch(problem["question"]).groups()
        a, b = int(a), int(b)
        assert op in ops
        assert problem["answer"] == _INT_OPS[op](a, b)
        if op == "/":
            assert b != 0 and a % b == 0  # exact division, never by zero
        else:
            assert digits[0] <= len(str(a)) <= digits[1] and digits[0] <= len(str(b)) <= digits[1]
        assert arithmetic_reward(f"{a} {op} {b} = {problem['answer']}", problem["answer"]) == 1.0


def test_arithmetic_problems_deterministic_per_seed():
    assert make_arithmetic_problems(50, seed=3) == make_arithmetic_problems(50, seed=3)
    assert make_arithmetic_problems(50, seed=3) != make_arithmetic_problems(50, seed=4)
    assert make_arithmetic_problems(0, seed=3) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1},  # negative count
        {"ops": ()},  # no operators
        {"ops": ("**",)},  # unknown operator
        {"digits": (0, 2)},  # zero-digit operands
        {"digits": (3, 2)},  # low > high
    ],
)
def test_arithmetic_problems_reject_bad_args(kwargs):
    args = {"n": 5, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        make_arithmetic_problems(**args)


def test_every_gsm8k_test_gold_scores_itself(shared_data):
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 1319
    for row in rows:
        gold = gsm8k_gold(row["answer"])
        gold_text = row["answer"].rpartition("####")[2].strip()  # as written, e.g. "1,234"
        assert gsm8k_reward(row["answer"], gold) == 1.0, row["answer"]
        assert gsm8k_reward(row["answer"], gold_text) == 1.0
        assert gsm8k_reward(f"The answer is {gold_text}.", gold) == 1.0
        assert gsm8k_reward(f"\\boxed{{{gold_text}}}", gold) == 1.0
        assert gsm8k_reward(f"The answer is {gold + 1}.", gold) == 0.0


@pytest.mark.parametrize(
    "prefix, suffix",
    [
        ("", ""),  # bare
        ("Let me think step by step.\n", ""),  # leading prose without numbers
        ("   \n\t", "  \n"),  # surrounding whitespace
        ("<think>hmm</think>", " Done!"),  # tags and a closing remark without numbers
    ],
)
def test_reward_unchanged_by_number_free_surroundings(prefix, suffix):
    bodies = [("#### 18", "18"), ("The answer is -3", "-3"), ("\\boxed{1,234}", "1234"), ("x 7", "8")]
    for body, gold in bodies:
        assert gsm8k_reward(prefix + body + suffix, gold) == gsm8k_reward(body, gold)
        assert arithmetic_reward(prefix + body + suffix, int(gold)) == arithmetic_reward(body, int(gold))


ADVERSARIAL = [
    "9" * 10_000,  # a 10,000-digit number
    "The answer is " + "9" * 10_000,  # the same after a cue
    "\\boxed{" + "9" * 10_000 + "}",  # the same boxed
    "#### " + "1," * 5_000 + "000",  # a 10k-char malformed thousands run
    "1,000" * 2_000,  # thousands groups glued together
    "__import__('os').system('echo hi')",  # code is just text
    "().__class__.__bases__[0].__subclasses__()",  # no numbers at all
    "9**9**9",  # only the last 9 counts
    "2**100",  # 100
    "(" * 10_000 + "1" + ")" * 10_000,  # deep nesting
    "\\boxed{" * 5_000,  # unclosed boxes
    "{" * 10_000 + "\\boxed{" + "{" * 10_000,  # brace flood after the last box
    "####" * 2_500,  # cue flood
    "answer is " * 1_000,  # answer-cue flood
    "answer" + " " * 10_000 + "is 5",  # cue broken by a long space run
    "12" * 5_000,  # 10,000 chars of digits
    "-" * 10_000 + "1",  # sign flood
    "1." * 5_000,  # decimal-point flood
    "()" * 500_000,  # 1,000,000 chars of parentheses
    "7" * 1_000_000,  # 1,000,000 digits
    "1 " * 500_000,  # 500,000 small numbers
    "\ud800",  # lone surrogate
    "\ud800" * 1_000 + "5",  # surrogates then a number
    "\x00\x01\x1b[31m\x7f5",  # NUL, control chars, ANSI escape
    "Ã©Ã¨ 5",  # mojibake
    "",  # empty
    "١٢٣",  # Arabic-Indic digits
    "1/0",  # division by zero is just text here
]
ADVERSARIAL_IDS = [f"{i}:{s[:12]!r}" for i, s in enumerate(ADVERSARIAL)]


def _score_all(text: str):
    start = time.perf_counter()
    value = extract_number(text)
    integer = last_integer(text)
    rewards = [gsm8k_reward(text, "5"), gsm8k_reward(text, "-12")]
    rewards += [arithmetic_reward(text, 5), arithmetic_reward(text, 0)]
    return value, integer, rewards, time.perf_counter() - start


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", ADVERSARIAL, ids=ADVERSARIAL_IDS)
def test_adversarial_output_scores_quickly(text):
    value, integer, rewards, elapsed = _score_all(text)
    assert value is None or (isinstance(value, Decimal) and value.is_finite())
    assert integer is None or isinstance(integer, int)
    assert all(reward in (0.0, 1.0) and isinstance(reward, float) for reward in rewards)
    # Linear time, measured on this machine rather than against a wall-clock bound that depends on the CPU: a
    # tenth of a long input must take about a tenth of the time (x10 would be quadratic; 3x slack for noise).
    if len(text) >= 100_000:
        tenth = min(_score_all(text[: len(text) // 10])[3] for _ in range(3))
        assert elapsed < max(0.3, 30 * tenth), f"{elapsed:.2f}s for {len(text)} chars vs {tenth:.3f}s for a tenth"
    assert elapsed < 8.0, f"{elapsed:.2f}s for a {len(text)}-char input"


def test_docstring_examples():
    result = doctest.testmod(math_rewards)
    assert result.attempted > 0
    assert result.failed == 0
