"""rollout.agent's checks before any actor starts, and what an agent's return becomes (cluster/agents.py)."""
import pytest

from cluster.agents import load_agent, outcomes_rollout, reward_of, with_agent_rewards, Outcome
from common.usercode import UserCodeError
from rollout.sessions import Session


def write(tmp_path, text):
    (tmp_path / "agent.py").write_text(text)
    return str(tmp_path / "agent.py") + ":run"


@pytest.mark.parametrize("text, fix", [
    ("def run(client, row):\n    return 1.0\n", "is not an async function"),          # sync function
    ("async def run(client):\n    return 1.0\n", "fewer than two arguments"),          # no row
    ("async def main(client, row):\n    return 1.0\n", "has no function 'run'.*defines: main"),  # misnamed
    ("import not_a_package_xyz\nasync def run(client, row):\n    pass\n", "install not_a_package_xyz"),
])
def test_a_bad_agent_is_named_with_its_fix(tmp_path, text, fix):
    with pytest.raises(UserCodeError, match=fix):
        load_agent(write(tmp_path, text), {})


def test_agent_params_must_be_taken(tmp_path):
    spec = write(tmp_path, "async def run(client, row, turns=2):\n    return 1.0\n")
    assert load_agent(spec, {"turns": 3})
    with pytest.raises(UserCodeError, match=r"does not take rollout.agent_params \['model'\]"):
        load_agent(spec, {"model": "x"})


def test_a_missing_agent_file_is_named(tmp_path):
    with pytest.raises(UserCodeError, match="agent file"):
        load_agent(str(tmp_path / "nope.py") + ":run", {})


@pytest.mark.parametrize("result, expected", [
    (0.5, ("ok", 0.5, {})),                                   # a number
    (True, ("ok", 1.0, {})),                                  # a bool counts as 1
    (None, ("ok", None, {})),                                 # the reward components score it
    ({"a": 1, "b": 0.25}, ("ok", 1.25, {"a": 1.0, "b": 0.25})),  # parts, summed
    (float("inf"), ("bad_result", None, {})),                 # never a silent zero
    ({"a": "x"}, ("bad_result", None, {})),
])
def test_what_an_agent_returns(result, expected):
    assert reward_of(result)[:3] == expected


def test_failed_sessions_get_no_reward_and_returns_win_over_components():
    def session(sid, n):
        s = Session(sid)
        if n:
            s.record([1, 2], [3, 4], [-0.5, -0.25], "hi", "stop")
        return s

    outs = [Outcome(session("a", 1), "ok", 2.0, {"x": 2.0}), Outcome(session("b", 1), "ok", None, {}),
            Outcome(session("c", 1), "raised", None, {}, "raised RuntimeError: boom"),
            Outcome(session("d", 0), "no_requests", None, {}, "never called the model")]
    rollout = outcomes_rollout(outs, 2, filler=0)
    assert rollout.policy_mask[3] == [0] and rollout.completion_ids[0] == [3, 4]
    rewards, comps = with_agent_rewards(rollout, [0.1, 0.2, 0.3, 0.4], {"len": [0.1, 0.2, 0.3, 0.4]})
    assert rewards == [2.0, 0.2, None, None]
    assert comps["agent"] == [2.0, None, None, None] and comps["agent/x"] == [2.0, None, None, None]
    assert rollout.turns[2][-1]["agent_failure"] == "agent session c raised RuntimeError: boom"


def test_an_agent_run_without_openai_installed_names_the_extra(tmp_path, monkeypatch):
    import sys

    from common.config import ConfigError
    from trainer.run import check_agent, load_job

    monkeypatch.chdir(tmp_path)
    write(tmp_path, "async def run(client, row):\n    return 1.0\n")
    cfg = load_job(None, ["task.name=prompts", "rollout.agent=agent.py:run"])
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ConfigError, match=r"pip install 'raygrpo\[envs\]'"):
        check_agent(cfg)


def test_sessions_stay_on_their_engine_and_new_ones_go_to_the_least_loaded():
    """cluster/serving.py: a session's requests go to the engine that holds its prefix; new sessions spread."""
    from cluster.groups import ActorGroup
    from cluster.serving import EngineDispatch

    d = EngineDispatch(ActorGroup("rollout", [object(), object()], "inprocess"))
    assert [d.place(s) for s in ("a", "b", "c")] == [0, 1, 0]
    assert d.place("b") == 1 and d.place("a") == 0   # kept
    d.release("a"), d.release("c")
    assert d.place("d") == 0                          # engine 0 has none open now
