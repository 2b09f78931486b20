"""QAScorer: the batch scorer served by reward actors."""
import pytest

from rewards.scorer import QARewardParams, QAScorer, RewardError


def test_scores_a_batch_with_components():
    s = QAScorer()
    rewards, comps = s.score(
        ["Answer: Paris", "It is Paris, France.", "", "x " * 100],
        [3, 6, 0, 100], [["Paris"]] * 4, ["en"] * 4)
    assert rewards[0] == pytest.approx(1.0)                     # EM 1, F1 1, no penalty
    assert rewards[1] == pytest.approx(0.7 * 0.4)               # 4 tokens, 1 shared: P 1/4, R 1, F1 0.4
    assert comps["empty"] == [0.0, 0.0, 1.0, 0.0]               # empty model output is counted, scores 0
    assert rewards[2] == 0.0
    assert comps["length_penalty"][3] == pytest.approx(0.036)   # 0.001 * (100 - 64)
    assert rewards[3] == pytest.approx(-0.036)


def test_reward_function_that_raises_fails_loudly_with_the_sample():
    s = QAScorer()
    with pytest.raises(RewardError, match="sample 1.*completion='oops'.*lang='xx'"):
        s.score(["Paris", "oops"], [1, 1], [["Paris"], ["Paris"]], ["en", "xx"])


def test_weights_come_from_params():
    s = QAScorer(QARewardParams(f1_weight=1.0, em_weight=0.0, length_free_tokens=0, length_coef=0.5))
    rewards, _ = s.score(["Paris"], [2], [["Paris"]], ["en"])
    assert rewards == [pytest.approx(1.0 - 1.0)]
