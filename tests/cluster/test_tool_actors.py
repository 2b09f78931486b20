"""Tool actors on local Ray (tools/toolbox.py held by an ActorGroup, called as TrainingSystem.run_tools calls them): a
user tool that raises and one that hangs come back as counted error observations and the batch goes on; a tool
actor that dies is restarted and the call retried. (The turn loop around them: tests/rollout/test_turns.py; the
search recipe on the real path: tests/jobs/test_search.py.)"""
import os
import signal

import pytest

pytestmark = pytest.mark.ray

TOOL = '''import time


class Weather:
    def __init__(self, unit="C", index_dir=None):
        self.unit, self.index_dir = unit, index_dir

    def call(self, arg):
        if arg == "boom":
            raise RuntimeError("the weather service is down")
        if arg == "slow":
            time.sleep(600)
        return f"12 {self.unit} in {arg}"
'''


def test_tool_failures_are_counted_observations_and_a_dead_tool_actor_is_restarted(tiny_policy_dir, tmp_path,
                                                                                  ray_session):
    import ray

    from cluster.groups import ActorGroup, shard
    from cluster.recovery import Recovery
    from tools.toolbox import ToolBox, summarize

    (tmp_path / "weather.py").write_text(TOOL)
    specs = [{"name": "weather", "fn": f"{tmp_path / 'weather.py'}:Weather", "params": {"unit": "F"}},
             {"name": "calculate"}]
    group = None
    try:
        group = ActorGroup.create("tools", ToolBox, 2, "ray", args=(specs, tiny_policy_dir, 3.0), num_cpus=0.1,
                                  max_restarts=1)
        recovery = Recovery(1, 120.0, "ray")

        def run(calls):  # as TrainingSystem.run_tools: calls sharded over the actors, in order
            parts = shard(calls, len(group.members))
            return [o for part in recovery.retried(group, ToolBox.run, [(p,) for p in parts]) for o in part]

        calls = [("weather", "Oslo"), ("weather", "boom"), ("calculate", "6 * 7"), ("weather", "slow"),
                 ("weather", None), ("weather", "Rome")]
        obs = run(calls)
        assert [o.status for o in obs] == ["ok", "error", "ok", "timeout", "malformed", "ok"]
        assert "12 F in Oslo" in obs[0].text and "the weather service is down" in obs[1].text  # params reached it
        assert "did not return within tools.timeout_s=3 s" in obs[3].text and "<information>42</information>" in obs[2].text
        assert summarize(obs)["tools/errors"] == 3
        # a tool actor's process killed between calls: Ray restarts it, the call runs again on the new one
        pid = ray.get(group.members[0].__ray_call__.remote(lambda self: os.getpid()))
        os.kill(pid, signal.SIGKILL)
        again = run([("weather", "Paris"), ("weather", "Lima")])
        assert [o.status for o in again] == ["ok", "ok"] and recovery.restarts == 1
    finally:
        if group is not None:
            group.kill()


def test_a_user_tools_params_are_its_constructor_arguments(tmp_path):
    from common.usercode import UserCodeError
    from tools.toolbox import check_user_tool, needs_index

    (tmp_path / "weather.py").write_text(TOOL + "\n\ndef plain(arg):\n    return arg\n")
    fn = f"{tmp_path / 'weather.py'}:Weather"
    check_user_tool({"name": "weather", "fn": fn, "params": {"unit": "K"}})
    assert needs_index({"name": "weather", "fn": fn}) and needs_index({"name": "search"})
    assert not needs_index({"name": "p", "fn": f"{tmp_path / 'weather.py'}:plain"})
    assert not needs_index({"name": "calculate"})
    from common.usercode import load_function, target
    from tools.toolbox import build_tool

    tool = build_tool({"name": "weather", "fn": fn, "params": {"unit": "K"}, "max_output_tokens": 9}, 2.0, "/idx", None)
    assert dict(tool.fns[0].spec.init) == {"unit": "K"} and tool.max_output_tokens == 9
    made = target(tool.fns[0].spec, load_function(tool.fns[0].spec)).__self__  # what the tool's child process builds
    assert (made.unit, made.index_dir) == ("K", "/idx")  # the index offered, taken since the class names it
    (tmp_path / "other.py").write_text("class Echo:\n    def call(self, arg):\n        return arg\n")
    echo = build_tool({"name": "echo", "fn": f"{tmp_path / 'other.py'}:Echo"}, 2.0, "/idx", None)
    assert target(echo.fns[0].spec, load_function(echo.fns[0].spec))("hi") == "hi"  # not offered to a class without it
    with pytest.raises(UserCodeError, match=r"Weather.__init__ takes no colour \(it takes: unit, index_dir\)"):
        check_user_tool({"name": "weather", "fn": fn, "params": {"colour": "red"}})
    with pytest.raises(UserCodeError, match="plain is a function; make it a class"):
        check_user_tool({"name": "p", "fn": f"{tmp_path / 'weather.py'}:plain", "params": {"unit": "K"}})
