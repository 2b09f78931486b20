"""GLUE-style label rewards (PPO-on-GLUE recipe): the answer sits in the last ``<Judgement>...</Judgement>``.

Classification tasks score 1.0 for the gold label, 0.0 for another label and -1.0 for a wrong format (no
judgement block, or no single unnegated label in it). STS-B scores ``2.5 - |prediction - gold|`` for a
prediction in [0, 5] and -2.5 for a wrong format, so both reward ranges are symmetric around 0.

Label matching (``match_label``): case-insensitive; a label's words may be separated by any run of
non-alphanumeric characters (punctuation, "_", "-", whitespace), so "Not-Entailment." names not_entailment,
and a label must stand between non-alphanumerics ("positively" holds no "positive", "unacceptable" no
"acceptable"). Labels are tried longest first at each position, so "not entailment" is the rte label and
not a negated "entailment". Exactly one distinct label must be named, never right after the word "not":
"not acceptable" is None, not "unacceptable" (we do not interpret negation), as is "not_entailment" for
mnli, where it is a negated "entailment".

STS-B number rule (``stsb_reward``): the judgement must contain exactly one number, ASCII digits with an
optional "-" and decimal point ("4", "4.", ".5", "3.75"); it must lie in [0, 5]. "3.5 out of 5", "3,5",
"1e0", "nan", "inf", negative numbers, Unicode digits and numbers over ``MAX_DIGITS`` digits are a wrong
format. All regexes are linear time; only the standard library (and the tag helper) is imported. Our own
bugs (an unknown task, a gold label outside the task's set, a gold score outside [0, 5]) raise ValueError.
"""

import itertools
import math
import re
from decimal import Decimal
from functools import cache

from rewards.countdown import last_tag_content

MAX_DIGITS = 64
WRONG_FORMAT = -1.0
STSB_WRONG_FORMAT = -2.5

# Label strings as used in the prompts; GLUE's MRPC/QQP classes (equivalent/duplicate) are asked as yes/no.
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "sst2": ("positive", "negative"),
    "cola": ("acceptable", "unacceptable"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "rte": ("entailment", "not_entailment"),
    "qnli": ("entailment", "not_entailment"),
    "wnli": ("entailment", "not_entailment"),
    "mrpc": ("yes", "no"),
    "qqp": ("yes", "no"),
}

_NON_ALNUM = re.compile(r"[\W_]+")
_STSB_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def extract_judgement(completion: str) -> str | None:
    """Stripped text of the last complete ``<Judgement>...</Judgement>`` block (tag any case), or None.

    >>> extract_judgement("<judgement>no</judgement> on reflection <Judgement> Yes. </JUDGEMENT>")
    'Yes.'
    >>> extract_judgement("Judgement: yes") is None
    True
    """
    content = last_tag_content(completion, "judgement")
    return None if content is None else content.strip()


def _normalise(text: str) -> str:
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def _check_task(task: str) -> tuple[str, ...]:
    if task not in TASK_LABELS:
        hint = "; use stsb_reward for stsb" if task == "stsb" else ""
        raise ValueError(f"unknown NLU task {task!r}; expected one of {', '.join(TASK_LABELS)}{hint}")
    return TASK_LABELS[task]


@cache
def _label_pattern(labels: tuple[str, ...]) -> tuple[dict[str, str], re.Pattern[str]]:
    # Over the lowercased text: a label's words separated by non-alphanumeric runs, or "not" + such a label,
    # between non-alphanumerics. Label phrases are tried first, so "not entailment" is the rte label and
    # not a negated "entailment". Scanning the raw text avoids rewriting a huge judgement first.
    phrase_label = {_normalise(label): label for label in labels}
    phrases = sorted(phrase_label, key=len, reverse=True)
    alternation = "|".join(r"[\W_]+".join(map(re.escape, phrase.split())) for phrase in phrases)
    pattern = re.compile(rf"(?<![^\W_])(?:({alternation})|not[\W_]+(?:{alternation}))(?![^\W_])")
    return phrase_label, pattern


def match_label(judgement: str, task: str) -> str | None:
    """The one label of ``task`` named in ``judgement``, or None if none, several or a negated one.

    >>> match_label("Not-Entailment.", "rte")
    'not_entailment'
    >>> match_label("The sentence is unacceptable", "cola")
    'unacceptable'
    >>> match_label("yes or no", "qqp") is None
    True
    >>> match_label("not positive", "sst2") is None
    True
    """
    phrase_label, pattern = _label_pattern(_check_task(task))
    found = set()
    for match in pattern.finditer(judgement.lower()):
        if match.group(1) is None:  # the "not <label>" branch
            return None
        found.add(phrase_label[_normalise(match.group(1))])
        if len(found) > 1:
            return None
    return found.pop() if found else None


def label_reward(completion: str, label: str, task: str) -> float:
    """1.0 for the gold label, 0.0 for another label, -1.0 for a wrong format.

    Raises ValueError for an unknown task or a gold ``label`` not in ``TASK_LABELS[task]``.

    >>> label_reward("<Judgement>Positive</Judgement>", "positive", "sst2")
    1.0
    >>> label_reward("<Judgement>negative</Judgement>", "positive", "sst2")
    0.0
    >>> label_reward("It is positive.", "positive", "sst2")  # no tag
    -1.0
    """
    labels = _check_task(task)
    if label not in labels:
        raise ValueError(f"gold label {label!r} is not a {task} label; expected one of {labels}")
    judgement = extract_judgement(completion)
    predicted = None if judgement is None else match_label(judgement, task)
    if predicted is None:
        return WRONG_FORMAT
    return float(predicted == label)


def stsb_prediction(completion: str) -> Decimal | None:
    """The STS-B score in the judgement, or None for a wrong format (rules in the module docstring).

    >>> stsb_prediction("<Judgement>3.75</Judgement>")
    Decimal('3.75')
    >>> stsb_prediction("<Judgement>3.5 out of 5</Judgement>") is None
    True
    """
    judgement = extract_judgement(completion)
    if judgement is None:
        return None
    numbers = [match.group() for match in itertools.islice(_STSB_NUMBER.finditer(judgement), 2)]
    if len(numbers) != 1 or sum(char.isdigit() for char in numbers[0]) > MAX_DIGITS:
        return None
    value = Decimal(numbers[0])
    return value if 0 <= value <= 5 else None


def stsb_reward(completion: str, score: float) -> float:
    """``2.5 - |prediction - score|`` in [-2.5, 2.5]; -2.5 for a wrong format. ``score`` must be in [0, 5].

    >>> stsb_reward("<Judgement>3.5</Judgement>", 4.0)
    2.0
    >>> stsb_reward("<Judgement>similarity: 0</Judgement>", 5.0)  # the worst valid answer ties wrong format
    -2.5
    >>> stsb_reward("<Judgement>7</Judgement>", 4.0)  # outside [0, 5]
    -2.5
    """
    is_number = isinstance(score, (int, float)) and not isinstance(score, bool)
    if not (is_number and math.isfinite(score) and 0 <= score <= 5):
        raise ValueError(f"gold STS-B score must be a finite number in [0, 5], got {score!r}")
    prediction = stsb_prediction(completion)
    if prediction is None:
        return STSB_WRONG_FORMAT
    return 2.5 - abs(float(prediction) - score)
