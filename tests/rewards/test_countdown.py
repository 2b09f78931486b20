"""Tests for rewards/countdown.py: parser whitelist, exact arithmetic, tiers, generator, hostile output."""

import ast
import doctest
import random
import time
from fractions import Fraction

import pytest

from rewards import countdown
from rewards.countdown import (
    STATUSES,
    MAX_MAGNITUDE,
    ExpressionError,
    countdown_reward,
    countdown_score,
    evaluate,
    last_tag_content,
    make_countdown_problems,
    parse_expression,
)


@pytest.mark.parametrize(
    "text, content",
    [
        ("<answer>1+2</answer>", "1+2"),  # one block
        ("<answer>1</answer><answer>2</answer>", "2"),  # the last block
        ("<answer>1</answer><answer>2", "1"),  # a later unclosed open tag is ignored
        ("<answer>1<answer>2</answer>", "2"),  # the nearest open tag before the close
        ("<ANSWER>1</Answer>", "1"),  # any case
        ("<answer></answer>", ""),  # empty block
        ("</answer><answer>", None),  # close before open
        ("<answer>1", None),  # unclosed
        ("answer: 1", None),  # no tags
        ("", None),  # empty
    ],
)
def test_last_tag_content(text, content):
    assert last_tag_content(text, "answer") == content


@pytest.mark.parametrize(
    "text, value",
    [
        ("1 + 2", Fraction(3)),  # plain
        ("(25 - 5) * 3", Fraction(60)),  # parentheses
        ("7 / 2", Fraction(7, 2)),  # exact, not 3.5 float or 3
        ("7 / 2 * 2", Fraction(7)),  # fraction intermediate cancels exactly
        ("1 / 3 + 1 / 3 + 1 / 3", Fraction(1)),  # no float rounding
        ("3 - 5", Fraction(-2)),  # negative results are fine (binary minus)
        ("  \n 8 \t", Fraction(8)),  # surrounding whitespace, a lone number
        ("((((1))))", Fraction(1)),  # redundant parentheses
        ("0 * 5", Fraction(0)),  # zero
    ],
)
def test_parse_and_evaluate(text, value):
    assert evaluate(parse_expression(text)) == value


@pytest.mark.parametrize(
    "text, message",
    [
        ("-5 + 10", "UnaryOp is not allowed"),  # unary minus is not part of the game
        ("+5", "UnaryOp is not allowed"),  # unary plus
        ("2 ** 10", "operator Pow is not allowed"),  # power
        ("7 // 2", "operator FloorDiv is not allowed"),  # floor division
        ("7 % 2", "only digits"),  # "%" is not an allowed character
        ("1.5 * 2", "only digits"),  # floats
        ("1_000", "only digits"),  # digit separators
        ("0x10", "only digits"),  # hex
        ("1 + 2 = 3", "only digits"),  # equations
        ("abs(1)", "only digits"),  # names and calls
        ("2 × 3", "only digits"),  # Unicode operators
        ("١ + ٢", "only digits"),  # Unicode digits
        ("\u3000 3", "only digits"),  # Unicode whitespace (Python's tokenizer rejects it between tokens)
        ("(1 + 2", "not an expression: SyntaxError"),  # unbalanced
        ("", "not an expression: SyntaxError"),  # empty
        ("1 2", "not an expression: SyntaxError"),  # juxtaposition
        ("01 + 2", "not an expression: SyntaxError"),  # leading zero
        ("(" * 21 + "1" + ")" * 21, "parentheses nested deeper than 20"),  # paren depth
        ("+".join(["1"] * 20), "expression deeper than 20"),  # 19 chained BinOps + Constant + Expression
        ("1" + " " * 200, "longer than 200"),  # length checked first
        ("(1)" * 3, "Call is not allowed"),  # "(1)(1)(1)" parses as calls of the constant 1
    ],
)
def test_parse_rejects(text, message):
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(")):
        parse_expression(text)


def test_parse_limits_are_parameters():
    text = "+".join(["1"] * 10)  # 10 Constants + 9 BinOps + 9 Add + 1 Expression = 29 nodes
    assert evaluate(parse_expression(text)) == 10
    with pytest.raises(ExpressionError, match="more than 28 AST nodes"):
        parse_expression(text, max_nodes=28)
    with pytest.raises(ExpressionError, match="longer than 18"):
        parse_expression(text, max_chars=18)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 / 0", "division by zero"),  # literal zero
        ("5 / (3 - 3)", "division by zero"),  # computed zero
        ("1000000 * 1000000 * 10", "beyond"),  # 10**13 > MAX_MAGNITUDE
        ("1 / 1000000 / 1000000 / 10", "beyond"),  # denominator 10**13
    ],
)
def test_evaluate_rejects(text, message):
    with pytest.raises(ExpressionError, match=message):
        evaluate(parse_expression(text))


def test_evaluate_rejects_non_whitelisted_trees():
    # Defence in depth: evaluate refuses nodes parse_expression would never let through.
    for text in ["2 ** 3", "-1", "x", "1.5", "True"]:
        with pytest.raises(ExpressionError):
            evaluate(ast.parse(text, mode="eval"))


# Target 60 from [3, 5, 25]; e = |value - 60| / 60.
@pytest.mark.parametrize(
    "answer, reward, status",
    [
        ("(25 - 5) * 3", 1.0, "correct"),  # 20 * 3
        ("3 * 25 - 5", 0.6, "miss"),  # 70: e = 1/6 -> <= 0.2
        ("25 + 5 * 3", 0.4, "miss"),  # 40: e = 1/3 -> <= 0.5
        ("25 + 5", 0.4, "miss"),  # 30: e = 1/2, a subset of the numbers -> <= 0.5 boundary
        ("3", 0.3, "miss"),  # 3: e = 57/60 -> floor
        ("25 / 3", 0.3, "miss"),  # 25/3: e = 155/180 -> floor, fractions allowed
        ("25 * 3 - 5 - 5", 0.1, "invalid"),  # 5 used twice
        ("(25 - 5) * 3 + 0", 0.1, "invalid"),  # 0 not given
        ("60", 0.1, "invalid"),  # the target itself is not a given number
        ("3 / (5 - 5)", 0.1, "invalid"),  # 5 twice and a zero division
        ("-3 + 63", 0.1, "invalid"),  # unary minus
        ("(25 - 5) * 3 = 60", 0.1, "invalid"),  # "=" is not allowed
        ("", 0.1, "invalid"),  # empty block
    ],
)
def test_countdown_tiers(answer, reward, status):
    assert countdown_score(f"<answer>{answer}</answer>", 60, [3, 5, 25]) == (reward, status)
    assert countdown_reward(f"<answer>{answer}</answer>", 60, [3, 5, 25]) == reward


# Target 100 from [100, 1, 5, 10, 20, 30, 50]: every tier boundary exactly, then one past it.
@pytest.mark.parametrize(
    "answer, reward",
    [
        ("100 - 5", 0.8),  # e = 5/100 = 0.05 exactly
        ("100 + 5", 0.8),  # above the target: e = 0.05
        ("100 - 5 - 1", 0.7),  # e = 0.06
        ("100 - 10", 0.7),  # e = 0.1
        ("100 - 10 - 1", 0.6),  # e = 0.11
        ("100 - 20", 0.6),  # e = 0.2
        ("100 - 20 - 1", 0.5),  # e = 0.21
        ("100 - 30", 0.5),  # e = 0.3 (a float bound 0.3 would miss this tier)
        ("100 - 30 - 1", 0.4),  # e = 0.31
        ("100 - 50", 0.4),  # e = 0.5
        ("100 - 50 - 1", 0.3),  # e = 0.51
        ("100 * 20", 0.3),  # e = 19
    ],
)
def test_countdown_tier_boundaries(answer, reward):
    assert countdown_reward(f"<answer>{answer}</answer>", 100, [100, 1, 5, 10, 20, 30, 50]) == reward


@pytest.mark.parametrize(
    "completion, target, numbers, reward",
    [
        ("<answer>0 - 3</answer>", 0, [0, 3], 0.3),  # target 0: e = 3 / max(1, 0) = 3
        ("<answer>1</answer>", 0, [1], 0.3),  # e = 1 / 1 = 1
        ("<answer>7 / 2 * 2</answer>", 7, [7, 2, 2], 1.0),  # exact fractions, 2 given twice
        ("<answer>(1 / 3) * 3</answer>", 1, [1, 3, 3], 1.0),  # a 1/3 intermediate
        ("<answer>4 + 4</answer>", 8, [4], 0.1),  # one 4 given, two used
        ("<answer>1000000 * 1000000 * 10</answer>", 10**13, [10**6, 10**6, 10], 0.1),  # beyond the magnitude
    ],
)
def test_countdown_edge_cases(completion, target, numbers, reward):
    assert countdown_reward(completion, target, numbers) == reward


@pytest.mark.parametrize(
    "completion, reward, status",
    [
        ("(25 - 5) * 3", 0.0, "no_format"),  # no tags
        ("<answer>(25 - 5) * 3", 0.0, "no_format"),  # unclosed
        ("</answer>(25 - 5) * 3<answer>", 0.0, "no_format"),  # reversed tags
        ("<answer >(25 - 5) * 3</answer>", 0.0, "no_format"),  # not exactly the tag
        ("", 0.0, "no_format"),  # empty
        ("<Answer>(25 - 5) * 3</ANSWER>", 1.0, "correct"),  # tags in any case
        ("<answer>25</answer> wait <answer>(25 - 5) * 3</answer>", 1.0, "correct"),  # the last block
        ("<answer>(25 - 5) * 3</answer> wait <answer>25 - 5 - 5</answer>", 0.1, "invalid"),  # the last block
        ("<answer>(25 - 5) * 3</answer><answer>oops", 1.0, "correct"),  # trailing unclosed tag ignored
    ],
)
def test_countdown_format(completion, reward, status):
    assert countdown_score(completion, 60, [3, 5, 25]) == (reward, status)


@pytest.mark.parametrize(
    "prefix, suffix, inner",
    [
        ("", "", "(25 - 5) * 3"),  # bare
        ("<think>25 * 3 = 75, too big</think>\n", "", "(25 - 5) * 3"),  # reasoning before
        ("", "\nThat is my final answer (60).", "(25 - 5) * 3"),  # text after, with numbers
        ("  ", "  ", " \n(25-5)*3\t"),  # whitespace around and inside
    ],
)
def test_reward_unchanged_by_surroundings(prefix, suffix, inner):
    for numbers in ([3, 5, 25], [25, 3, 5], [5, 25, 3, 99]):  # order and unused extras do not matter
        assert countdown_reward(f"{prefix}<answer>{inner}</answer>{suffix}", 60, numbers) == 1.0


@pytest.mark.parametrize(
    "target, numbers, error",
    [
        (60.0, [3, 5, 25], TypeError),  # float target
        (True, [3, 5, 25], TypeError),  # bool target
        (60, [], ValueError),  # no numbers
        (60, [3, -5], ValueError),  # negative number
        (60, [3, 2.5], ValueError),  # float number
    ],
)
def test_countdown_rejects_bad_problem(target, numbers, error):
    with pytest.raises(error):
        countdown_reward("<answer>3</answer>", target, numbers)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("sizes, number_range", [((3, 4), (1, 99)), ((2,), (1, 9)), ((5, 6, 7, 8), (1, 999))])
def test_generated_problems_are_solvable(seed, sizes, number_range):
    problems = make_countdown_problems(200, seed, sizes, number_range)
    assert len(problems) == 200
    for problem in problems:
        numbers, target = problem["numbers"], problem["target"]
        assert len(numbers) in sizes
        assert all(number_range[0] <= x <= number_range[1] for x in numbers)
        assert 1 <= target <= 1000
        assert str(numbers) in problem["question"] and str(target) in problem["question"]
        assert "<answer>" in problem["question"]
        assert countdown_score(f"<answer>{problem['solution']}</answer>", target, numbers) == (1.0, "correct")


def test_generated_problems_deterministic_per_seed():
    assert make_countdown_problems(50, seed=1) == make_countdown_problems(50, seed=1)
    assert make_countdown_problems(50, seed=1) != make_countdown_problems(50, seed=2)
    assert make_countdown_problems(0, seed=1) == []
    assert all(p["target"] <= 10 for p in make_countdown_problems(50, seed=1, max_target=10))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1},  # negative count
        {"sizes": ()},  # no sizes
        {"sizes": (1,)},  # a single number is no game
        {"sizes": (9,)},  # beyond the parser's comfortable bounds
        {"number_range": (0, 9)},  # zero numbers
        {"number_range": (9, 1)},  # low > high
        {"number_range": (1, MAX_MAGNITUDE + 1)},  # beyond the evaluator's magnitude
        {"max_target": 0},  # no reachable positive target
    ],
)
def test_generator_rejects_bad_args(kwargs):
    with pytest.raises(ValueError):
        make_countdown_problems(**{"n": 5, "seed": 0, **kwargs})


ADVERSARIAL = [
    "<answer>" + "9" * 10_000 + "</answer>",  # a 10,000-digit number
    "<answer>" + "9" * 199 + "</answer>",  # a 199-digit number under the length cap
    "<answer>__import__('os').system('echo hi')</answer>",  # code injection
    "<answer>().__class__.__bases__[0].__subclasses__()</answer>",  # sandbox escape
    "<answer>9**9**9</answer>",  # power tower
    "<answer>2**100</answer>",  # power
    "<answer>" + "(" * 10_000 + "1" + ")" * 10_000 + "</answer>",  # 10,000-deep nesting
    "<answer>" + "(" * 99 + "1" + ")" * 99 + "</answer>",  # 99-deep nesting under the length cap
    "<answer>" + "-" * 150 + "3</answer>",  # a unary-minus chain
    "<answer>" + "*".join(["99"] * 66) + "</answer>",  # a multiplication chain under 200 chars
    "<answer>" + "1" * 10_000 + "</answer>",  # 10,000 chars of digits
    "<answer>" + "()" * 500_000 + "</answer>",  # 1,000,000 chars of parentheses
    "<answer>" * 100_000,  # 800,000 chars of unclosed open tags
    "</answer>" * 100_000,  # close tags only
    "<answer>1</answer>" * 50_000,  # 900,000 chars of blocks
    "7" * 1_000_000,  # 1,000,000 digits, no tags
    "<answer>\ud800</answer>",  # lone surrogate
    "<answer>1\x00+2</answer>",  # NUL byte
    "<answer>\x01\x1b[31m\x7f</answer>",  # control chars
    "<answer>Ã©Ã¨</answer>",  # mojibake
    "<answer>\u2028 3 \u3000</answer>",  # Unicode line separator and ideographic space
    "<answer>١٢٣</answer>",  # Arabic-Indic digits
    "<answer>1/0</answer>",  # division by zero
    "<answer>3 * 3</answer>",  # 3 given once
    "<answer>7 + 8</answer>",  # numbers not given
    "<answer>lambda: 0</answer>",  # lambda
    "<answer>[x for x in (1,)]</answer>",  # comprehension
    "<answer>f'{1}'</answer>",  # f-string
    "<answer>1 if 1 else 2</answer>",  # conditional
    "",  # empty
]
ADVERSARIAL_IDS = [f"{i}:{s[:20]!r}" for i, s in enumerate(ADVERSARIAL)]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("completion", ADVERSARIAL, ids=ADVERSARIAL_IDS)
def test_adversarial_output_scores_quickly(completion):
    start = time.perf_counter()
    reward, status = countdown_score(completion, 24, [3, 5, 25, 0])
    elapsed = time.perf_counter() - start
    assert isinstance(reward, float) and 0.0 <= reward <= 1.0
    assert status in STATUSES
    assert reward in (0.0, 0.1)  # none of these reaches a valid expression
    assert elapsed < 2.0, f"{elapsed:.2f}s for a {len(completion)}-char input"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("seed", range(20))
def test_random_strings_never_raise(seed):
    rng = random.Random(seed)
    alphabet = "0123456789+-*/() <>answer/**.x_[]{}'\"\\=\x00\ud800"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        reward, status = countdown_score(f"<answer>{text}</answer>", 24, [3, 5, 8, 1])
        assert status in STATUSES and 0.0 <= reward <= 1.0


def test_docstring_examples():
    result = doctest.testmod(countdown)
    assert result.attempted > 0
    assert result.failed == 0
