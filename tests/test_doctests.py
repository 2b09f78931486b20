"""Docstring examples are part of the documentation: they must stay true."""
import doctest
import importlib

import pytest

MODULES = ["common.device", "rollout.turns", "common.metrics_log", "tasks.base", "rewards.user", "rewards.registry", "learner.advantages", "learner.losses", "rewards.semantic", "rewards.sentences", "common.stats", "common.precision", "retrieval.metrics", "retrieval.retriever"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
