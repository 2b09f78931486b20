"""Sentence splitting, the one rule of the repetition reward, domain QA's references and QNLI's sentences."""
import pytest

from rewards.semantic import sentences
from rewards.sentences import containing_sentence, split_sentences


@pytest.mark.parametrize("text, expected", [
    ("It rains. It pours!\nThe end", ["It rains.", "It pours!", "The end"]),   # . ! and a newline
    ("Is it? Yes.  ", ["Is it?", "Yes."]),                                      # ? ends one; trailing space
    ("3.5 million people", ["3.5 million people"]),                            # no space after the dot
    ("第一句。第二句！第三句？", ["第一句。", "第二句！", "第三句？"]),                 # CJK stops need no space
    ("पहला वाक्य। दूसरा वाक्य।", ["पहला वाक्य।", "दूसरा वाक्य।"]),                      # the danda, then a space
    ("", []),                                                                   # nothing
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_the_reward_splits_by_the_same_rule_and_caps():
    assert sentences("第一句。第一句。") == ["第一句。", "第一句。"]  # no space after the stop: still two, so the repeat counts
    assert len(sentences("Sentence one. " * 800)) == 32
    assert sentences("x" * 5000) == ["x" * 1000]


@pytest.mark.parametrize("context, start, length, sentence", [
    ("Ann met Bob. Bob met Cy in Rome. The end.", 21, 2, "Bob met Cy in Rome."),   # the middle sentence
    ("Ann met Bob. Bob met Cy in Rome. The end.", 0, 3, "Ann met Bob."),           # the first
    ("Ann met Bob. Bob met Cy", 17, 3, "Bob met Cy"),                              # no final stop
    ("Ann met Bob. Bob met Cy.", 8, 8, "Ann met Bob. Bob met Cy."),                # a span across the boundary
    ("Line one\nLine two here", 14, 3, "Line two here"),                           # newlines end sentences
    ("中文第一句。 第二句在这里。", 7, 3, "第二句在这里。"),                           # CJK full stop
])
def test_containing_sentence(context, start, length, sentence):
    assert containing_sentence(context, start, length) == sentence
