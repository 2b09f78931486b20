"""GSM8K's reward as a user function: 1.0 when the completion's final number equals the gold one after '####'.

The final number is the first number inside the last \\boxed{...}, else after the last '####', else after the last
"answer is" / "answer:" / "answer =", else the last number of the text (the built-in `gsm8k` reward's rules,
rewards/numeric.py, written again with the standard library only).
"""
import re
from decimal import Decimal

NUMBER = re.compile(r"(?:(?<![\w)\]}])[-\u2212])?(?<![0-9.])(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?")
CUE = re.compile(r"answer\s{0,10}(?:is|:|=)", re.IGNORECASE)


def value(token):
    return None if sum(ch.isdigit() for ch in token) > 64 else Decimal(token.replace(",", "").replace("\u2212", "-"))


def boxed(text):
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, start = 1, start + len("\\boxed{")
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]


def final_number(text):
    inside = boxed(text)
    match = NUMBER.search(inside) if inside is not None else None
    if match is None and "####" in text:
        match = NUMBER.search(text, text.rfind("####") + 4)
    if match is None:
        cues = list(CUE.finditer(text))
        match = NUMBER.search(text, cues[-1].end()) if cues else None
    if match is None:
        numbers = list(NUMBER.finditer(text))
        match = numbers[-1] if numbers else None
    return None if match is None else value(match.group())


def gsm8k(completions, answer, **kwargs):
    gold = [Decimal(a.rpartition("####")[2].strip().replace(",", "")) for a in answer]
    return [float(final_number(c) == g) for c, g in zip(completions, gold)]
