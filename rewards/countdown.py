"""Countdown reward: reach a target with the given numbers, each used at most once, using + - * /.

The final answer is the expression in the LAST complete ``<answer>...</answer>`` block (tags any case), e.g.
``<answer>(25 - 5) * 3</answer>``. Reward tiers (TinyZero-style format/answer split, with graded misses):

==========  ===========================================================================================
1.0         valid expression, numbers a sub-multiset of the given ones, value exactly the target
0.8 .. 0.3  valid and allowed, but misses: relative error e = |value - target| / max(1, |target|),
            e <= 0.05 -> 0.8, <= 0.1 -> 0.7, <= 0.2 -> 0.6, <= 0.3 -> 0.5, <= 0.5 -> 0.4, else 0.3
0.1         an answer block is present, but the expression is invalid, uses a number not given or more
            often than given, or divides by zero
0.0         no complete ``<answer>...</answer>`` block
==========  ===========================================================================================

Deliberate choices:
- Numbers may be left unused (TinyZero requires all of them); "at most once" is a multiset check.
- Never ``eval``: the text is first limited to ``max_chars`` characters from ``0-9 + - * / ( )`` and ASCII
  spaces, tabs and newlines, its parenthesis depth is bounded, then ``ast.parse(mode="eval")`` runs under
  a node whitelist (Expression, BinOp with Add/Sub/Mult/Div, non-negative int Constant). Pow, FloorDiv,
  names, calls, attributes, floats and "=" are all invalid. The character filter runs first, so hostile
  text never reaches the parser.
- Unary minus/plus are invalid: every target reachable with them is reachable without (-a + b == b - a,
  and by induction |value| of any signed expression is reachable), and the game is binary operations.
- ASCII digits only; "١٢٣" or "×" are invalid. Arithmetic is exact (``Fraction``): 7 / 2 * 2 is 7.
- Every intermediate numerator and denominator must stay within ``MAX_MAGNITUDE`` so a multiplication or
  division chain cannot build huge values.

Statuses for counting (``countdown_score``): "correct", "miss", "invalid", "no_format".
"""

import ast
import operator
import random
import re
from collections import Counter
from fractions import Fraction

MAX_MAGNITUDE = 10**12
STATUSES = ("correct", "miss", "invalid", "no_format")

# (max relative error, reward) for a valid expression that misses the target; the first tier that fits wins.
# Exact Fraction bounds: the float 0.3 is just below 3/10, so an error of exactly 0.3 would miss its tier.
MISS_TIERS = tuple((Fraction(bound), reward) for bound, reward in
                   (("0.05", 0.8), ("0.1", 0.7), ("0.2", 0.6), ("0.3", 0.5), ("0.5", 0.4)))
MISS_FLOOR = 0.3
INVALID_REWARD = 0.1

_ALLOWED_CHARS = re.compile(r"[0-9+\-*/() \t\n\r]*")  # ASCII only: no Unicode spaces or digits
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_OP_SYMBOLS = {"+": ast.Add, "-": ast.Sub, "*": ast.Mult, "/": ast.Div}
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.Constant, *_OPS)


class ExpressionError(Exception):
    """The answer expression is not a valid Countdown expression (model output: scores INVALID_REWARD)."""


def last_tag_content(text: str, tag: str) -> str | None:
    """Content of the last complete ``<tag>...</tag>`` block (tag case-insensitive), or None.

    An open tag pairs with the first close tag after it; a later unclosed open tag is ignored. Linear time:
    one scan over the tag tokens, no lazy ``.*?`` that would rescan from every unclosed open tag.

    >>> last_tag_content("<answer>1+2</answer> then <ANSWER> 3*4 </Answer>", "answer")
    ' 3*4 '
    >>> last_tag_content("<answer>1+2</answer><answer>unclosed", "answer")
    '1+2'
    >>> last_tag_content("<answer>no close", "answer") is None
    True
    """
    tokens = re.compile(f"<(/?){re.escape(tag)}>", re.IGNORECASE)
    open_end, block = None, None
    for match in tokens.finditer(text):
        if not match.group(1):
            open_end = match.end()
        elif open_end is not None:
            block, open_end = (open_end, match.start()), None
    return None if block is None else text[block[0]:block[1]]


def _paren_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _tree_depth(tree: ast.AST) -> int:
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def parse_expression(
    text: str, max_chars: int = 200, max_depth: int = 20, max_nodes: int = 64
) -> ast.Expression:
    """Parse a Countdown expression under the whitelist; raise ExpressionError on anything else.

    ``max_depth`` bounds both the parenthesis nesting and the AST depth; ``max_nodes`` counts every AST node
    (operators included: "1 + 2" has 5).

    >>> ast.dump(parse_expression(" 6 / 3 "))
    'Expression(body=BinOp(left=Constant(value=6), op=Div(), right=Constant(value=3)))'
    >>> parse_expression("2 ** 100")
    Traceback (most recent call last):
    ...
    rewards.countdown.ExpressionError: operator Pow is not allowed
    >>> parse_expression("__import__('os')")
    Traceback (most recent call last):
    ...
    rewards.countdown.ExpressionError: only digits, + - * / ( ) and ASCII whitespace are allowed
    """
    if len(text) > max_chars:
        raise ExpressionError(f"expression longer than {max_chars} characters")
    if not _ALLOWED_CHARS.fullmatch(text):
        raise ExpressionError("only digits, + - * / ( ) and ASCII whitespace are allowed")
    if _paren_depth(text) > max_depth:
        raise ExpressionError(f"parentheses nested deeper than {max_depth}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise ExpressionError(f"not an expression: {type(err).__name__}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > max_nodes:
        raise ExpressionError(f"more than {max_nodes} AST nodes")
    if _tree_depth(tree) > max_depth:
        raise ExpressionError(f"expression deeper than {max_depth}")
    for node in nodes:
        if isinstance(node, ast.operator) and not isinstance(node, tuple(_OPS)):
            raise ExpressionError(f"operator {type(node).__name__} is not allowed")
        if not isinstance(node, _ALLOWED_NODES):
            raise ExpressionError(f"{type(node).__name__} is not allowed")
        if isinstance(node, ast.Constant) and type(node.value) is not int:
            raise ExpressionError(f"constant {node.value!r} is not an int")
    return tree


def _checked(value: Fraction) -> Fraction:
    if abs(value.numerator) > MAX_MAGNITUDE or value.denominator > MAX_MAGNITUDE:
        raise ExpressionError(f"intermediate value beyond {MAX_MAGNITUDE}")
    return value


def evaluate(node: ast.AST) -> Fraction:
    """Exact value of a whitelisted expression tree; ExpressionError on division by zero or huge values.

    >>> evaluate(parse_expression("7 / 2 * 2"))
    Fraction(7, 1)
    >>> evaluate(parse_expression("1 / (3 - 3)"))
    Traceback (most recent call last):
    ...
    rewards.countdown.ExpressionError: division by zero
    """
    if isinstance(node, ast.Expression):
        return evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return _checked(Fraction(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = evaluate(node.left), evaluate(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ExpressionError("division by zero")
        return _checked(_OPS[type(node.op)](left, right))
    raise ExpressionError(f"{type(node).__name__} is not allowed")


def _miss_reward(value: Fraction, target: int) -> float:
    error = abs(value - target) / max(1, abs(target))  # a Fraction: exact comparisons
    for bound, reward in MISS_TIERS:
        if error <= bound:
            return reward
    return MISS_FLOOR


def _check_problem(target: int, numbers: list[int]) -> None:
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target must be an int, got {type(target).__name__}")
    if not numbers or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in numbers):
        raise ValueError(f"numbers must be a non-empty list of non-negative ints, got {numbers!r}")


def countdown_score(completion: str, target: int, numbers: list[int]) -> tuple[float, str]:
    """``(reward, status)`` with status in STATUSES; tiers in the module docstring.

    >>> countdown_score("<think>...</think><answer>(25 - 5) * 3</answer>", 60, [3, 5, 25])
    (1.0, 'correct')
    >>> countdown_score("<answer>25 * 3 - 5</answer>", 60, [3, 5, 25])  # 70: e = 10/60 <= 0.2
    (0.6, 'miss')
    >>> countdown_score("<answer>25 * 3 - 5 - 5</answer>", 60, [3, 5, 25])  # 5 used twice
    (0.1, 'invalid')
    >>> countdown_score("(25 - 5) * 3", 60, [3, 5, 25])
    (0.0, 'no_format')
    """
    _check_problem(target, numbers)
    answer = last_tag_content(completion, "answer")
    if answer is None:
        return 0.0, "no_format"
    try:
        tree = parse_expression(answer)
        used = Counter(node.value for node in ast.walk(tree) if isinstance(node, ast.Constant))
        if used - Counter(numbers):
            raise ExpressionError(f"uses numbers not given: {sorted((used - Counter(numbers)).elements())}")
        value = evaluate(tree)
    except ExpressionError:
        return INVALID_REWARD, "invalid"
    if value == target:
        return 1.0, "correct"
    return _miss_reward(value, target), "miss"


def countdown_reward(completion: str, target: int, numbers: list[int]) -> float:
    """The Countdown reward in [0, 1] (tiers in the module docstring); see ``countdown_score`` for status.

    >>> countdown_reward("<answer>(25 - 5) * 3</answer>", 60, [3, 5, 25])
    1.0
    >>> countdown_reward("<answer>25 + 5 * 3</answer>", 60, [3, 5, 25])  # 40: e = 1/3 <= 0.5
    0.4
    >>> countdown_reward("<answer>1 / 0</answer>", 60, [0, 1])
    0.1
    """
    return countdown_score(completion, target, numbers)[0]


def _combine(rng: random.Random, a: tuple[int, str], b: tuple[int, str]) -> tuple[int, str] | None:
    # Integer, non-negative, bounded results only: exact division, larger minus smaller. None: draw again
    # ("-" always succeeds, so the caller's retry loop ends).
    (x, x_text), (y, y_text) = a, b
    op = rng.choice("+-*/")
    if op == "-" and x < y:
        (x, x_text), (y, y_text) = (y, y_text), (x, x_text)
    if op == "/" and (y == 0 or x % y):
        return None
    value = _OPS[_OP_SYMBOLS[op]](x, y)
    if value > MAX_MAGNITUDE:
        return None
    return int(value), f"({x_text} {op} {y_text})"


def _random_solution(rng: random.Random, numbers: list[int]) -> tuple[int, str]:
    pool = [(x, str(x)) for x in numbers]
    while len(pool) > 1:
        a, b = pool.pop(rng.randrange(len(pool))), pool.pop(rng.randrange(len(pool)))
        combined = None
        while combined is None:
            combined = _combine(rng, a, b)
        pool.append(combined)
    value, text = pool[0]
    return value, text[1:-1] if len(numbers) > 1 else text


def make_countdown_problems(
    n: int,
    seed: int,
    sizes: tuple[int, ...] = (3, 4),
    number_range: tuple[int, int] = (1, 99),
    max_target: int = 1000,
) -> list[dict]:
    """``n`` solvable problems ``{"numbers", "target", "solution", "question"}``, the same for the same seed.

    A problem draws ``rng.choice(sizes)`` numbers from ``number_range`` (inclusive), then combines random
    pairs with random operators (integer results only) until one value is left; it is redrawn until the
    target lies in ``1..max_target``. ``solution`` uses every number once and scores 1.0.

    >>> problem = make_countdown_problems(1, seed=0)[0]
    >>> countdown_reward(f"<answer>{problem['solution']}</answer>", problem["target"], problem["numbers"])
    1.0
    """
    low, high = number_range
    bounds_ok = 1 <= low <= high <= MAX_MAGNITUDE and 1 <= max_target <= MAX_MAGNITUDE
    if n < 0 or not sizes or min(sizes) < 2 or max(sizes) > 8 or not bounds_ok:
        raise ValueError(
            f"need n >= 0, sizes within 2..8, 1 <= low <= high <= MAX_MAGNITUDE, 1 <= max_target <= "
            f"MAX_MAGNITUDE; got n={n}, "
            f"sizes={sizes!r}, number_range={number_range!r}, max_target={max_target}"
        )
    rng = random.Random(seed)
    problems = []
    while len(problems) < n:
        numbers = [rng.randint(low, high) for _ in range(rng.choice(sizes))]
        target, solution = _random_solution(rng, numbers)
        if not 1 <= target <= max_target:
            continue
        question = (
            f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
            "arithmetic operations (+, -, *, /) and each number can be used at most once. Return the final "
            "expression in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
        )
        problems.append({"numbers": numbers, "target": target, "solution": solution, "question": question})
    return problems
