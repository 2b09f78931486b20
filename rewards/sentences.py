"""Sentences of a text, by one rule for the rewards and the tasks.

Readers: rewards/semantic.py (the repetition reward compares a completion's sentences), tasks/squad.py (a QA
example's reference answer is the context sentence holding its gold span: domain QA, QNLI) and tasks/labels.py
(QNLI's other sentences of a paragraph).

The rule (the one tasks/domain_qa.py used; issue 17 merged the two that existed into it): a sentence ends at
. ! ? or the Devanagari danda followed by white space, at a CJK full stop with or without white space after it
(Chinese and Japanese put none), and at a newline. The rewards' former rule needed white space after a CJK stop
and knew no danda; on every text without a danda and without a CJK stop directly followed by text, the two
split alike.
"""
from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?।])\s+|(?<=[。！？])\s*|\n+")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, empty ones dropped.

    >>> split_sentences("Ann met Bob. Bob met Cy in Rome.\\nThe end")
    ['Ann met Bob.', 'Bob met Cy in Rome.', 'The end']
    >>> split_sentences("第一句。第二句！ Dies ist gut.")
    ['第一句。', '第二句！', 'Dies ist gut.']
    """
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def containing_sentence(text: str, start: int, length: int) -> str:
    """The sentence of `text` that holds the span [start, start + length), stripped; a span across a boundary
    takes every sentence it touches.

    >>> containing_sentence("Ann met Bob. Bob met Cy in Rome. The end.", 21, 2)
    'Bob met Cy in Rome.'
    """
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]  # where each sentence begins
    end = max(start, start + length - 1)
    first = max(i for i, b in enumerate(starts) if b <= start)
    last = max(i for i, b in enumerate(starts) if b <= end)
    stop = starts[last + 1] if last + 1 < len(starts) else len(text)
    return text[starts[first]:stop].strip()
