"""reasoning-gym's verifiers as a reward (the `reasoning_gym` component of the reasoning_gym task): the answer inside
the completion's last <answer>...</answer> (reasoning-gym's own `extract_answer`), scored by the generator's own
`score_answer` against the problem's entry (its question, answer and metadata, as reasoning-gym made it). The package
is raygrpo's `envs` extra; it is imported where a score is computed, so the project runs without it."""
from __future__ import annotations

import json
from typing import Any, Mapping

MISSING = ("reasoning-gym is not installed here; install it with pip install 'raygrpo[envs]' (or pip install "
           "reasoning-gym) where the run runs")


def require() -> Any:
    """The reasoning_gym module; ImportError naming the install otherwise."""
    try:
        import reasoning_gym
    except ImportError as err:
        raise ImportError(MISSING) from err
    return reasoning_gym


def score(text: str, entry: Mapping[str, Any] | str, tag: str = "answer") -> tuple[float, bool]:
    """(the generator's score of the completion's answer in [0, 1], whether it wrote one in <tag> tags)."""
    rg = require()
    from reasoning_gym.utils import extract_answer

    entry = json.loads(entry) if isinstance(entry, str) else dict(entry)
    answer = extract_answer(text, tag_name=tag)
    if answer is None:
        return 0.0, False
    scorer = rg.get_score_answer_fn(entry["metadata"]["source_dataset"])
    return float(scorer(answer, entry)), True
