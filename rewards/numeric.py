"""Math rewards: synthetic integer arithmetic and GSM8K final-answer match.

Both rewards are 1.0 when the model's final number equals the gold number exactly (``decimal.Decimal``, so
"3.50" equals 3.5 and nothing is rounded through a float), else 0.0.

Number syntax, shared by every extractor here (``_NUMBER``):
- ASCII digits only. Other Unicode digits ("١٢٣", fullwidth "１２") are not numbers: ``re``'s ``\\d``
  would accept them, and a model that answers in another script is not answering in the requested format.
- Thousands separators must group by three ("1,234,567"); "1,2,3" is three numbers, "1,2345" is 1 and 2345.
- A decimal part needs a digit after the point, so a sentence-ending "18." is 18. "1.2.3" yields only 1.2.
- A leading "-" (or U+2212 "−") is a sign only when it does not follow a word character or a closing
  bracket, so "12-7" is 12 and 7 while "= -5" and "(-5)" are -5. No "+" sign, no exponents ("1e5" is 1, 5).
- "$", "%" and other adjacent symbols are ignored ("$1,234.50" is 1234.50, "50%" is 50).
- A number with more than ``MAX_DIGITS`` digits is unparseable: the extractor returns None (not a match)
  instead of building a huge value; ``int()`` itself raises past 4300 digits.

Every regex is linear time: no nested quantifiers, and each alternative fails after a bounded look at a
start position, so a 1M-character completion is scanned once. Only the standard library is imported.
Model output of any shape scores 0.0 or 1.0; a malformed gold (our data) raises ValueError.
"""

import random
import re
from decimal import Decimal

MAX_DIGITS = 64

# Sign: "-" or "−" not after a word char or closing bracket. Integer part: comma-grouped thousands (the
# lookahead stops "1,2345" from being read as 1,234 + 5) or a plain run. Optional ".digits".
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])[-\u2212])?(?<![0-9.])"
    r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)"
    r"(?:\.[0-9]+)?"
)
_ANSWER_CUE = re.compile(r"answer\s{0,10}(?:is|:|=)", re.IGNORECASE)
_BOXED = "\\boxed{"
_ARITHMETIC_OPS = ("+", "-", "*", "/")


def _to_decimal(token: str) -> Decimal | None:
    digits = sum(char.isdigit() for char in token)
    if digits > MAX_DIGITS:
        return None
    return Decimal(token.replace(",", "").replace("\u2212", "-"))


def last_number(text: str) -> Decimal | None:
    """The last number in ``text`` (syntax in the module docstring); None if there is none or it is too long.

    >>> last_number("12 - 7 = 5.")
    Decimal('5')
    >>> last_number("It costs $1,234.50 in total")
    Decimal('1234.50')
    >>> last_number("7 - 12 = -5") == -5
    True
    >>> last_number("no digits here") is None
    True
    """
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return None if last is None else _to_decimal(last.group())


def _first_token(text: str, pos: int = 0) -> str | None:
    match = _NUMBER.search(text, pos)
    return None if match is None else match.group()


def _boxed_content(text: str) -> str | None:
    # Last \boxed{...}; braces are counted so \boxed{\frac{1}{2}} keeps its inner groups. Unclosed: to end.
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    start += len(_BOXED)
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:]


def extract_number(completion: str) -> Decimal | None:
    """The model's final numeric answer, or None when there is none (count those as unparsed).

    Cues in priority order, each giving the FIRST number after it; a cue with no number after it falls
    through to the next: the last ``\\boxed{...}``, then the last ``####``, then the last "answer is" /
    "answer:" / "answer =" (any case), else the last number in the text. A selected number over
    ``MAX_DIGITS`` digits gives None.

    >>> extract_number("So 3 + 4 = 7. The answer is $1,234.")
    Decimal('1234')
    >>> extract_number("First 5, then \\\\boxed{-2.50} and 9")
    Decimal('-2.50')
    >>> extract_number("She has 9 eggs.\\n#### 18")
    Decimal('18')
    >>> extract_number("Answer: 3 apples, not 4")
    Decimal('3')
    >>> extract_number("\\\\boxed{x} so 12 it is")  # boxed without a number falls through to the last number
    Decimal('12')
    >>> extract_number("١٢٣") is None  # Arabic-Indic digits are not numbers here
    True
    """
    boxed = _boxed_content(completion)
    token = None if boxed is None else _first_token(boxed)
    hashes = completion.rfind("####")
    if token is None and hashes >= 0:
        token = _first_token(completion, hashes + 4)
    if token is None:
        cue = None
        for cue in _ANSWER_CUE.finditer(completion):
            pass
        token = None if cue is None else _first_token(completion, cue.end())
    return last_number(completion) if token is None else _to_decimal(token)


def _gold_decimal(gold: str | int | Decimal) -> Decimal:
    if isinstance(gold, bool) or not isinstance(gold, (str, int, Decimal)):
        raise TypeError(f"gold must be a str, int or Decimal number, got {type(gold).__name__}")
    text = str(gold).strip().replace(",", "")
    if not re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", text):
        raise ValueError(f"gold {gold!r} is not a plain number (data bug)")
    return Decimal(text)


def gsm8k_gold(answer_field: str) -> Decimal:
    """The gold number after ``####`` in a GSM8K answer field; commas are thousands separators.

    Raises ValueError when there is no ``####`` or what follows is not a plain number: that is our data.

    >>> gsm8k_gold("She makes 9 * 2 = $<<9*2=18>>18.\\n#### 18")
    Decimal('18')
    >>> gsm8k_gold("#### 1,234")
    Decimal('1234')
    >>> gsm8k_gold("#### -3")
    Decimal('-3')
    """
    _, sep, tail = answer_field.rpartition("####")
    if not sep:
        raise ValueError(f"GSM8K gold has no '####' final answer (data bug): {answer_field[-200:]!r}")
    return _gold_decimal(tail)


def gsm8k_reward(completion: str, gold: str | int | Decimal) -> float:
    """1.0 if ``extract_number(completion)`` equals the gold number exactly, else 0.0.

    ``gold`` is either the final number ("1,234", 18, ``gsm8k_gold(row["answer"])``) or a whole GSM8K
    answer field, recognised by its ``####``. Anything else raises ValueError.

    >>> gsm8k_reward("The answer is 18.00", "18")
    1.0
    >>> gsm8k_reward("\\\\boxed{1234}", "1,234")
    1.0
    >>> gsm8k_reward("I think 17 or 18", 17)  # the last number counts
    0.0
    >>> gsm8k_reward("#### 18", "Half of 36 is <<36/2=18>>18.\\n#### 18")  # a whole answer field
    1.0
    """
    is_field = isinstance(gold, str) and "####" in gold
    gold_value = gsm8k_gold(gold) if is_field else _gold_decimal(gold)
    value = extract_number(completion)
    return float(value is not None and value == gold_value)


def last_integer(text: str) -> int | None:
    """The last number in ``text`` if its value is an integer ("5.0" is 5), else None (count as unparsed).

    A decimal token is one number: "1.5" gives None, not the 5 after its point.

    >>> last_integer("7 - 12 = -5.0")
    -5
    >>> last_integer("12 / 8 = 1.5") is None
    True
    """
    value = last_number(text)
    return int(value) if value is not None and value == value.to_integral_value() else None


def arithmetic_reward(completion: str, answer: int) -> float:
    """1.0 if ``last_integer(completion)`` equals the integer ``answer``, else 0.0.

    >>> arithmetic_reward("12 - 7 = 5", 5)
    1.0
    >>> arithmetic_reward("7 - 12 = -5.0", -5)
    1.0
    >>> arithmetic_reward("12 / 8 = 1.5", 5)
    0.0
    """
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise TypeError(f"answer must be an int, got {type(answer).__name__}")
    return float(last_integer(completion) == answer)


def _operand(rng: random.Random, digits: int, minimum: int = 0) -> int:
    low = 10 ** (digits - 1) if digits > 1 else minimum
    return rng.randint(low, 10**digits - 1)


def make_arithmetic_problems(
    n: int,
    seed: int,
    ops: tuple[str, ...] = _ARITHMETIC_OPS,
    digits: tuple[int, int] = (1, 2),
) -> list[dict]:
    """``n`` problems ``{"question", "answer"}``; operands have ``digits[0]..digits[1]`` digits each.

    Division is exact: the divisor b (never 0) and quotient q are drawn and a = b * q, so a may have more
    digits. Subtraction may go negative. The same seed gives the same list (``random.Random(seed)``).

    >>> make_arithmetic_problems(1, seed=0, ops=("-",), digits=(2, 2))
    [{'question': 'What is 15 - 75? Answer with an integer.', 'answer': -60}]
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if not ops or not set(ops) <= set(_ARITHMETIC_OPS):
        raise ValueError(f"ops must be a non-empty subset of {_ARITHMETIC_OPS}, got {ops!r}")
    low, high = digits
    if not 1 <= low <= high:
        raise ValueError(f"digits must be (low, high) with 1 <= low <= high, got {digits!r}")
    rng = random.Random(seed)
    problems = []
    for _ in range(n):
        op = rng.choice(ops)
        if op == "/":
            b = _operand(rng, rng.randint(low, high), minimum=1)
            quotient = _operand(rng, rng.randint(low, high))
            a, answer = b * quotient, quotient
        else:
            a = _operand(rng, rng.randint(low, high))
            b = _operand(rng, rng.randint(low, high))
            answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        problems.append({"question": f"What is {a} {op} {b}? Answer with an integer.", "answer": answer})
    return problems
