"""Multi-turn rollouts (rollout/turns.py, cluster/turns.py, tools/): token in, token out — the learner's ids are the
engine's sampled ids and the tool's observation ids, nothing decoded and re-encoded; the stop rules; tool failures
as observations; and on real vLLM with the tiny policy, the engine's own logprobs of the whole transcript equal what
it sampled at every policy token."""
import pytest

from cluster.turns import generate_turns
from common.types import Rollout, Sampling
from rollout.turns import Turns, tool_call, turn_metrics
from tools.toolbox import Observation, ToolBox


class FakeEngine:
    """Each turn: every input gets the canned ids of its turn (text = the ids' words), and records what it was fed."""

    def __init__(self, script):
        self.script, self.inputs = script, []  # script[turn] = (ids, text, finish) for every sample

    def __call__(self, prompt_ids, sampling, seed, stop=None):
        self.inputs.append([list(p) for p in prompt_ids])
        ids, text, finish = self.script[len(self.inputs) - 1]
        n = sampling.group_size
        rows = [list(p) for p in prompt_ids for _ in range(n)]
        return Rollout(rows, [list(ids) for _ in rows], [[-0.5] * len(ids) for _ in rows], [text] * len(rows),
                       [finish] * len(rows), n)


def decode(ids):
    """The fake engine's tokenizer: a token's text is its number."""
    return " ".join(map(str, ids))


def fixed_tools(ids):
    def run(calls, rooms):  # as ToolBox.run: each observation cut to its sample's room, its text the kept ids'
        return [Observation(list(ids), "<information>obs</information>", "ok", 0.01, {"doc_ids": [7]})
                if room >= len(ids) else Observation(list(ids)[:room], decode(list(ids)[:room]), "ok", 0.01, {}, True)
                for _, room in zip(calls, rooms, strict=True)]
    return run


def test_the_learners_ids_are_the_sampled_ids_and_the_observation_ids():
    engine = FakeEngine([([11, 12, 13], "think <search>q</search>", "stop"), ([21, 22], "<answer>x</answer>", "stop")])
    out = generate_turns(engine, fixed_tools([91, 92, 93, 94]), [[1, 2], [3]], Sampling(2, 1.0, 1.0, 8), 0,
                         ("search",), 3, 100, decode)
    # turn 2 continues from exactly prompt + turn 1's ids + the observation's ids
    assert engine.inputs[1] == [[1, 2, 11, 12, 13, 91, 92, 93, 94]] * 2 + [[3, 11, 12, 13, 91, 92, 93, 94]] * 2
    assert out.completion_ids == [[11, 12, 13, 91, 92, 93, 94, 21, 22]] * 4
    assert out.policy_mask == [[1, 1, 1, 0, 0, 0, 0, 1, 1]] * 4
    assert out.old_logprobs[0] == [-0.5] * 3 + [0.0] * 4 + [-0.5] * 2  # the engine's, placeholders at observations
    assert out.finish_reasons == ["stop"] * 4 and out.group_size == 2
    assert out.texts[0] == "think <search>q</search><information>obs</information><answer>x</answer>"
    roles = [(t["role"], t.get("tool"), t.get("arg"), t["tokens"]) for t in out.turns[0]]
    assert roles == [("policy", None, None, 3), ("tool", "search", "q", 4), ("policy", None, None, 2)]
    m = turn_metrics(out)
    assert m["rollout/turns_mean"] == 2 and m["tools/calls_per_sample"] == 1 and m["rollout/observation_tokens"] == 4
    assert m["rollout/policy_tokens_mean"] == 5 and m["tools/errors"] == 0


def test_a_sample_ends_at_its_answer_its_last_turn_or_its_budget():
    calls = FakeEngine([([5, 6], "<search>a</search>", "stop")] * 3)
    out = generate_turns(calls, fixed_tools([9]), [[1]], Sampling(1, 1.0, 1.0, 8), 0, ("search",), 2, 100, decode)
    assert out.finish_reasons == ["max_turns"] and len(calls.inputs) == 2  # the second call is not answered
    assert turn_metrics(out)["tools/unanswered"] == 1 and out.policy_mask == [[1, 1, 0, 1, 1]]
    budget = FakeEngine([([5, 6, 7], "<search>a</search>", "stop")] * 3)
    out = generate_turns(budget, fixed_tools([9, 9, 9]), [[1]], Sampling(1, 1.0, 1.0, 8), 0, ("search",), 4, 7, decode)
    assert out.finish_reasons == ["length"] and len(out.completion_ids[0]) == 7  # 3 + 3 observed, 1 token left
    # the last turn's text is what its one kept token says, not the engine's whole turn
    assert out.texts[0] == "<search>a</search><information>obs</information>5" and out.turns[0][-1]["text"] == "5"
    short = FakeEngine([([5, 6, 7], "<search>a</search>", "stop")] * 2)
    out = generate_turns(short, fixed_tools([9, 9, 9]), [[1]], Sampling(1, 1.0, 1.0, 8), 0, ("search",), 4, 5, decode)
    # the observation cut at the 2 tokens left: its text is theirs, and the sample ends there
    assert out.completion_ids == [[5, 6, 7, 9, 9]] and out.texts[0] == "<search>a</search>9 9"
    assert out.finish_reasons == ["length"] and out.turns[0][-1]["text"] == "9 9"
    cut = FakeEngine([([5, 6], "<search>a", "length")])
    out = generate_turns(cut, fixed_tools([9]), [[1]], Sampling(1, 1.0, 1.0, 8), 0, ("search",), 3, 100, decode)
    assert out.finish_reasons == ["length"] and out.policy_mask == [[1, 1]]


def test_tool_calls_are_read_off_the_closing_tag():
    assert tool_call("a <calculate> 2+2 </calculate>", ("search", "calculate")) == ("calculate", "2+2")
    assert tool_call("<search></search>", ("search",)) == ("search", None)  # an empty call: a malformed one
    assert tool_call("<search>x</search> and more", ("search",)) is None


@pytest.fixture(scope="module")
def toolbox(tiny_policy_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tools")
    (folder / "my_tools.py").write_text(
        "import time\n\nclass Weather:\n    def call(self, arg):\n        if arg == 'boom':\n            raise "
        "RuntimeError('no data')\n        if arg == 'slow':\n            time.sleep(600)\n        if arg == 'wait':\n"
        "            time.sleep(1)\n        if arg == 'huge':\n            return 'x y ' * 2_500_000\n"
        "        return 'sunny in ' + arg\n")
    specs = [{"name": "calculate"}, {"name": "weather", "fn": f"{folder / 'my_tools.py'}:Weather",
                                     "max_output_tokens": 8}]
    box = ToolBox(specs, tiny_policy_dir, timeout_s=2.0)
    yield box
    for fn in box.tools["weather"].fns:
        fn.close()


def test_tools_answer_and_their_failures_are_observations(toolbox):
    obs = toolbox.run([("calculate", "12 * (3 + 4)"), ("calculate", "2 ** 8"), ("weather", "Oslo"),
                       ("weather", "boom"), ("weather", "slow"), ("search", "x"), ("calculate", None),
                       ("weather", "a very long place name " * 20)])
    status = [o.status for o in obs]
    assert status == ["ok", "malformed", "ok", "error", "timeout", "malformed", "malformed", "ok"]
    assert obs[0].text == "\n<information>84</information>\n" and "sunny in Oslo" in obs[2].text
    assert "operator Pow is not allowed" in obs[1].text and "no data" in obs[3].text
    assert "did not return within tools.timeout_s=2 s" in obs[4].text and "no tool 'search'" in obs[5].text
    tok = toolbox.tokenizer
    assert obs[0].ids == tok.encode(obs[0].text, add_special_tokens=False)  # the ids are the observation's text
    assert obs[7].text.endswith(" ...</information>\n")  # cut to the tool's max_output_tokens
    assert toolbox.run([("weather", "Rome")])[0].status == "ok"  # a new child after the timeout
    # the policy reads the exception, not where the tool's file lives; the console and the records get both
    assert "tool file" not in obs[3].text and "my_tools.py" not in obs[3].text
    assert "tool file" in obs[3].meta["failure"] and "RuntimeError: no data" in obs[3].meta["failure"]


def test_tool_observations_fit_the_room_left_and_big_outputs_are_bounded_before_tokenizing(toolbox):
    tok = toolbox.tokenizer
    (cut,) = toolbox.run([("weather", "Oslo")], [3])
    assert len(cut.ids) == 3 and cut.cut and cut.text == tok.decode(cut.ids)
    (whole,) = toolbox.run([("weather", "Oslo")], [1000])
    assert not whole.cut and whole.ids == tok.encode(whole.text, add_special_tokens=False)
    (huge,) = toolbox.run([("weather", "huge")])  # 10 MB of text: cut in characters first, then in tokens
    assert huge.status == "ok" and huge.text.endswith(" ...</information>\n") and huge.seconds < 10


def test_a_steps_calls_of_a_tool_run_at_once(toolbox):
    import time

    t = time.perf_counter()
    obs = toolbox.run([("weather", "wait")] * 4 + [("calculate", "1+1")])
    wall = time.perf_counter() - t
    assert [o.status for o in obs] == ["ok"] * 5 and obs[-1].text == "\n<information>2</information>\n"
    assert wall < 3.0 and min(o.seconds for o in obs[:4]) >= 1.0  # 4 calls of 1 s each, at once


@pytest.mark.slow
def test_on_vllm_the_transcript_scores_like_it_was_sampled(tiny_policy_dir, toolbox):
    """The real engine, a real tool: every policy token's sampled logprob equals the engine's logprob of the whole
    transcript at that position (fp32), so the ids it continued from are the ids the learner gets."""
    from common.models import load_tokenizer
    from rollout.engine import VLLMEngine

    engine = VLLMEngine(tiny_policy_dir, max_model_len=512, kv_cache_gib=1, dtype="fp32")
    tok = load_tokenizer(tiny_policy_dir)
    from common.data import encode_prompt, render_prompt

    prompt = encode_prompt(tok, render_prompt(tok, "What is 2 + 2? Use <calculate>."))
    calls = {"n": 0}

    def generate(prompt_ids, sampling, seed, stop=None):  # the first turn is forced to call the tool
        out = engine.generate(prompt_ids, sampling.group_size, 1.0, 1.0, 6, seed, stop)
        if calls["n"] == 0:
            forced = tok.encode(" <calculate>2+2</calculate>", add_special_tokens=False)
            ids = [c[:3] + forced for c in out.completion_ids]
            lps = [engine.probe_logprobs(p, c) for p, c in zip(out.prompt_ids, ids)]
            out = Rollout(out.prompt_ids, ids, lps, [tok.decode(c) for c in ids], ["stop"] * len(ids), out.group_size)
        calls["n"] += 1
        return out

    out = generate_turns(generate, toolbox.run, [prompt], Sampling(2, 1.0, 1.0, 6), 3, ("calculate",), 3, 200,
                         tok.decode)
    for p, ids, lps, mask in zip(out.prompt_ids, out.completion_ids, out.old_logprobs, out.policy_mask):
        assert 0 in mask and mask.count(1) > len(mask) - mask.count(1) - 20
        again = engine.probe_logprobs(p, ids)
        for a, b, m in zip(lps, again, mask):
            if m:
                assert a == pytest.approx(b, abs=1e-4)
    assert all(t["status"] == "ok" for ts in out.turns for t in ts if t["role"] == "tool")


def test_the_records_keep_the_turns_and_samples_prints_them(tmp_path):
    from common import rollout_records
    from jobs.samples import show

    engine = FakeEngine([([11, 12, 13], "think <search>q</search>", "stop"), ([21, 22], "<answer>x</answer>", "stop")])
    out = generate_turns(engine, fixed_tools([91, 92, 93, 94]), [[1, 2]], Sampling(2, 1.0, 1.0, 8), 0,
                         ("search",), 3, 100, decode)
    rows = rollout_records.step_rows(1, "grpo", 2, [0], ["p"], [{}], out.texts, out.completion_ids, out.finish_reasons,
                                     [1.0, 0.0], {}, [0.5, -0.5], out.old_logprobs, [], out.policy_mask, out.turns)
    assert rows[0]["policy_tokens"] == 5 and rows[0]["logprob_mean"] == -0.5  # the engine's, policy tokens only
    rollout_records.write_step(tmp_path, 1, rows)
    text = "\n".join(show(rollout_records.read(tmp_path, 1), 1, 80))
    assert "turn 1 policy (3 tokens)  think <search>q</search>" in text
    assert "turn 1 search(q) -> ok (4 tokens)" in text and "turn 2 policy (2 tokens)  <answer>x</answer>" in text


def test_a_sync_between_two_turns_gives_each_span_its_own_version():
    """With samples generated ahead (train.max_staleness), a weight sync may land between two turns of a sample: the
    turn after it is sampled by the new version and says so, token by token; the observation between them was
    sampled by none (-1). Its staleness is counted from its oldest span."""
    engine = FakeEngine([([11, 12, 13], "think <search>q</search>", "stop"), ([21, 22], "<answer>x</answer>", "stop")])
    versions = iter([4, 5])  # the engines' weights version at each turn's call: a sync came in between

    def generate(*args, **kwargs):
        return engine(*args, **kwargs).sampled_by(next(versions))

    out = generate_turns(generate, fixed_tools([91, 92]), [[1, 2]], Sampling(2, 1.0, 1.0, 8), 0, ("search",), 3, 100,
                         decode)
    assert out.versions == [[4, 4, 4, -1, -1, 5, 5]] * 2
    assert out.staleness(6) == [2, 2, 2, 1, 1] * 2
    both = Rollout.concat([out, out.take([0, 1], 2)])
    assert both.versions == out.versions * 2 and both.take([3], 1).versions == [out.versions[1]]
