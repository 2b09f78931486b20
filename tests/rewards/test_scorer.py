"""RewardScorer: the weighted batch scorer served by reward actors, and per-component metrics."""
import pytest

from rewards.registry import RewardError, RewardScorer, component_metrics, missing_fields

QA = [{"name": "qa"}]


def ex(*answers, lang="en"):
    return {"answers": list(answers), "lang": lang}


def test_scores_a_batch_with_components():
    s = RewardScorer(QA)
    rewards, comps = s.score(
        ["Answer: Paris", "It is Paris, France.", "", "x " * 100],
        [3, 6, 0, 100], [ex("Paris")] * 4)
    assert rewards[0] == pytest.approx(1.0)                     # EM 1, F1 1, no penalty
    assert rewards[1] == pytest.approx(0.7 * 0.4)               # 4 tokens, 1 shared: P 1/4, R 1, F1 0.4
    assert comps["qa/empty"] == [0.0, 0.0, 1.0, 0.0]            # empty model output is counted, scores 0
    assert rewards[2] == 0.0
    assert comps["qa/length_penalty"][3] == pytest.approx(0.036)   # 0.001 * (100 - 64)
    assert rewards[3] == pytest.approx(-0.036)
    assert comps["qa"] == rewards                               # one component of weight 1: the total


def test_reward_function_that_raises_fails_loudly_with_the_sample():
    s = RewardScorer(QA)
    with pytest.raises(RewardError, match="reward 'qa' raised on sample 1.*completion='oops'.*'lang': 'xx'"):
        s.score(["Paris", "oops"], [1, 1], [ex("Paris"), ex("Paris", lang="xx")])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_reward_that_returns_nan_or_inf_fails_loudly_with_the_sample(monkeypatch, value):
    from rewards.registry import QAReward

    monkeypatch.setattr(QAReward, "_one", lambda self, text, n, example: (value if text == "bad" else 1.0, {}))
    with pytest.raises(RewardError, match=rf"reward 'qa' returned {value} on sample 1; a reward must be a finite "
                                          r"number\. completion='bad'"):
        RewardScorer(QA).score(["Paris", "bad"], [1, 1], [ex("Paris"), ex("Paris")])


def test_weights_come_from_params():
    s = RewardScorer([{"name": "qa", "params": dict(f1_weight=1.0, em_weight=0.0, length_free_tokens=0,
                                                     length_coef=0.5)}])
    rewards, _ = s.score(["Paris"], [2], [ex("Paris")])
    assert rewards == [pytest.approx(1.0 - 1.0)]


def test_weighted_sum_of_two_components():
    s = RewardScorer([{"name": "qa", "weight": 2.0}, {"name": "arithmetic", "weight": 0.5}])
    rewards, comps = s.score(["7", "Paris"], [1, 1], [{**ex("7"), "answer": 7}, {**ex("Paris"), "answer": 7}])
    assert comps["qa"] == [1.0, 1.0] and comps["arithmetic"] == [1.0, 0.0]
    assert rewards == [pytest.approx(2.0 + 0.5), pytest.approx(2.0)]   # 2*1 + 0.5*1; 2*1 + 0.5*0
    assert comps["arithmetic/unparsed"] == [0.0, 1.0]                  # "Paris" has no integer: counted


def test_simple_metric_is_selectable():
    official = RewardScorer([{"name": "qa", "params": {"metric": "official"}}])
    simple = RewardScorer([{"name": "qa", "params": {"metric": "simple"}}])
    assert official.score(["Paris."], [1], [ex("Paris")])[0] == [pytest.approx(1.0)]
    assert simple.score(["Paris."], [1], [ex("Paris")])[0] == [0.0]    # no punctuation stripping


def test_mismatched_batch_raises():
    with pytest.raises(ValueError, match="must match"):
        RewardScorer(QA).score(["a", "b"], [1], [ex("a")])


def test_component_metrics_hand_computed():
    comps = {"qa": [1.0, 1.0, 0.0, 0.5, 0.2, 0.2], "qa/em": [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]}
    m = component_metrics(comps, group_size=2)
    assert m["qa"] == pytest.approx(2.9 / 6)
    assert m["qa/zero_var_frac"] == pytest.approx(2 / 3)    # groups (1,1) and (.2,.2) are flat; (0,.5) is not
    assert m["qa/em"] == pytest.approx(1 / 3)
    assert "qa/em/zero_var_frac" not in m                    # parts get a mean only


def test_missing_fields_name_what_a_task_lacks():
    assert missing_fields("qa", {"answers", "lang"}) == []
    assert missing_fields("countdown", {"answers", "lang"}) == ["target", "numbers"]
    assert missing_fields("similarity", {"answers"}) == []     # reference or answers
    assert missing_fields("similarity", {"lang"}) == ["reference|answers"]
