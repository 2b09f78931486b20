"""Reward components from outside the project: a user's function (rewards/user.py, in a child process) and a reward
server (rewards/remote.py), with one error policy (rewards/external.py); hand-made files and a local stdlib server,
real child processes, no mocks of our own modules."""
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rewards.errors import RewardError
from rewards.registry import RewardScorer, component_metrics
from rewards.user import (FunctionSpec, IsolatedFunction, UserCodeError, UserRewardError, check_result,
                          check_signature, load_function, parse_spec)

REWARDS_PY = '''
import math, os, sys, time

def score(completions, prompts, answer, **kwargs):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]

def parts(completions, **kwargs):
    return {"rewards": [len(c) / 10 for c in completions], "long": [float(len(c) > 3) for c in completions]}

def some_none(completions, **kwargs):
    return [None if c == "skip" else 1.0 for c in completions]

def raises_on_boom(completions, **kwargs):
    print("noise on stdout must not reach the protocol")
    if any("boom" in c for c in completions):
        raise ValueError("cannot score " + repr([c for c in completions if "boom" in c][0]))
    return [0.5] * len(completions)

def hangs_on_slow(completions, **kwargs):
    if any(c == "slow" for c in completions):
        time.sleep(600)
    return [1.0] * len(completions)

def dies(completions, **kwargs):
    os._exit(7)

def nan(completions, **kwargs):
    return [math.nan] * len(completions)

def short(completions, **kwargs):
    return [1.0]

def words(completions, **kwargs):
    return ["good"] * len(completions)

def chat(completions, prompts, **kwargs):
    return [float(c[0]["role"] == "assistant" and p[-1]["role"] == "user") for c, p in zip(completions, prompts)]

def with_param(completions, scale, **kwargs):
    return [scale * len(c) for c in completions]

def ids(completions, completion_ids):
    return [float(len(x)) for x in completion_ids]

def positional_only(completions, /):
    return [0.0]

def needs_answr(completions, answr):
    return [0.0]

NOT_A_FUNCTION = 3
'''


@pytest.fixture
def rewards_file(tmp_path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARDS_PY)
    return path


def comp(path, name, **kw):
    return {"name": name, "fn": f"{path}:{name}", "weight": 1.0, "params": kw.pop("params", {}),
            "timeout_s": kw.pop("timeout_s", 30.0), "on_error": kw.pop("on_error", "raise"), **kw}


def score(components, completions, examples=None):
    examples = examples or [{"prompt": "q", "answer": "4"} for _ in completions]
    return RewardScorer(components).score(completions, [len(c) for c in completions], examples)


# ---- finding and checking a function (the driver, before any actor) -------------------------------------------

def test_specs_name_a_file_or_a_module(tmp_path):
    f = parse_spec("rewards/my.py:score", base=tmp_path)
    assert f.path == str((tmp_path / "rewards/my.py").resolve()) and f.relative == "rewards/my.py" and f.attr == "score"
    assert parse_spec("my_pkg.scoring:reward").module == "my_pkg.scoring"
    for bad in ("score", "file.py:", ":score", "file.py:not-a-name", "a b:score"):
        with pytest.raises(UserCodeError, match="write 'path/to/file.py:function'|neither a .py file"):
            parse_spec(bad)


def test_a_missing_file_function_or_module_is_named_with_the_fix(rewards_file, tmp_path):
    with pytest.raises(UserCodeError, match="reward file nope.py .* does not exist .* fix the path"):
        load_function(parse_spec("nope.py:score", base=tmp_path))
    with pytest.raises(UserCodeError, match="has no function 'scor'. Did you mean 'score'\\? It defines: chat, dies"):
        load_function(parse_spec(f"{rewards_file}:scor"))
    with pytest.raises(UserCodeError, match="'NOT_A_FUNCTION' is a int, not a function"):
        load_function(parse_spec(f"{rewards_file}:NOT_A_FUNCTION"))
    with pytest.raises(UserCodeError, match="module no_such_pkg.rewards .* cannot be imported .* install the package"):
        load_function(parse_spec("no_such_pkg.rewards:score"))
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    with pytest.raises(UserCodeError, match="importing it raised ModuleNotFoundError: No module named "
                                            "'no_such_module_here'; install no_such_module_here where the run runs"):
        load_function(parse_spec(f"{broken}:score"))
    buggy = tmp_path / "buggy.py"
    buggy.write_text("1 / 0\n")
    with pytest.raises(UserCodeError, match="importing it raised ZeroDivisionError: division by zero; fix the file"):
        load_function(parse_spec(f"{buggy}:score"))


def test_a_module_function_loads_from_an_installed_package():
    fn = load_function(parse_spec("rewards.numeric:gsm8k_reward"))
    assert fn("#### 18", "18") == 1.0


@pytest.mark.parametrize("name, fields, params, message", [
    ("needs_answr", ["answer", "id"], {}, "needs argument 'answr', which no call passes.*Did you mean 'answer'"),
    ("positional_only", [], {}, "positional-only"),
    ("score", ["id"], {}, "needs argument 'answer'"),          # the column is not in this data
    ("with_param", ["answer"], {}, "needs argument 'scale'"),  # ... nor in params
    ("needs_answr", ["answr"], {"answr": 1}, "params \\['answr'\\] have the names of fields"),
])
def test_signatures_that_cannot_be_called_trls_way_are_named(rewards_file, name, fields, params, message):
    spec = parse_spec(f"{rewards_file}:{name}")
    with pytest.raises(UserCodeError, match=message):
        check_signature(load_function(spec), spec, fields, params)


def test_signatures_that_fit(rewards_file):
    spec = parse_spec(f"{rewards_file}:score")
    assert check_signature(load_function(spec), spec, ["answer"], {}) is None  # **kwargs: gets every field
    spec = parse_spec(f"{rewards_file}:ids")
    assert check_signature(load_function(spec), spec, [], {}) == ("completions", "completion_ids")
    spec = parse_spec(f"{rewards_file}:with_param")
    check_signature(load_function(spec), spec, [], {"scale": 2})


# ---- results ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("result, n, message", [
    ([1.0], 2, "returned 1 scores for 2 completions"),
    ([math.nan], 1, "returned nan for sample 0; a score must be finite"),
    ([math.inf], 1, "returned inf"),
    (["good"], 1, "returned 'good' \\(str\\) for sample 0; a score is a number"),
    (3.0, 1, "returned a float; return a list"),
    ({"scores": [1.0]}, 1, "a dict without 'rewards'"),
    ({"rewards": [1.0], "errors": [0.0]}, 1, "part named 'errors'"),
    ({"rewards": [1.0], "fmt": [1.0, 2.0]}, 1, "part 'fmt'.*returned 2 scores for 1"),
])
def test_results_that_break_the_contract_are_errors(result, n, message):
    with pytest.raises(UserRewardError, match=message):
        check_result(result, n, "f")


# ---- the child process -----------------------------------------------------------------------------------------

def test_the_child_answers_raises_times_out_and_dies_as_named(rewards_file):
    fn = IsolatedFunction(parse_spec(f"{rewards_file}:raises_on_boom"), timeout_s=20)
    assert fn({"completions": ["a", "b"], "prompts": ["p", "p"]}) == [0.5, 0.5]  # stdout noise did not corrupt it
    with pytest.raises(UserRewardError, match="raised ValueError: cannot score 'boom'") as err:
        fn({"completions": ["a", "boom"], "prompts": ["p", "p"]})
    assert err.value.kind == "raised" and "raises_on_boom" in err.value.traceback
    assert fn({"completions": ["c"], "prompts": ["p"]}) == [0.5]  # the same child goes on
    fn.close()
    slow = IsolatedFunction(parse_spec(f"{rewards_file}:hangs_on_slow"), timeout_s=1.5)
    assert slow({"completions": ["x"]}) == [1.0]
    t = time.monotonic()
    with pytest.raises(UserRewardError, match="did not return within rewards.timeout_s=1.5 s") as err:
        slow({"completions": ["slow"]})
    assert err.value.kind == "timeout" and time.monotonic() - t < 10
    assert slow.proc is None and slow({"completions": ["x"]}) == [1.0]  # killed, and a new child serves the next
    slow.close()
    with pytest.raises(UserRewardError, match="its process died \\(exit code 7\\)") as err:
        IsolatedFunction(parse_spec(f"{rewards_file}:dies"), timeout_s=20)({"completions": ["x"]})
    assert err.value.kind == "died"


# ---- the error policy through the scorer ----------------------------------------------------------------------

def test_values_parts_and_none_through_the_scorer(rewards_file):
    totals, comps = score([comp(rewards_file, "score"), comp(rewards_file, "parts", weight=2.0)], ["4", "five"])
    assert comps["score"] == [1.0, 0.0] and comps["parts"] == [0.1, 0.4] and comps["parts/long"] == [0.0, 1.0]
    assert totals == pytest.approx([1.2, 0.8]) and comps["score/errors"] == [0.0, 0.0]
    totals, comps = score([comp(rewards_file, "some_none")], ["a", "skip"])
    assert totals == [1.0, None] and comps["some_none"] == [1.0, None]
    # beside a registry reward, a None leaves the sum of the others (TRL's convention for several functions)
    totals, _ = score([comp(rewards_file, "some_none"), {"name": "arithmetic", "weight": 0.5, "params": {}}],
                      ["4", "skip"], [{"prompt": "q", "answer": 4}] * 2)
    assert totals == [1.5, 0.0]
    m = component_metrics({**comps, "some_none/errors": [0.0, 0.0]}, 2)
    assert m["some_none"] == 1.0 and m["some_none/unscored"] == 1 and m["some_none/zero_var_frac"] == 1.0


def test_a_function_that_raises_stops_naming_it_the_exception_and_the_sample(rewards_file):
    with pytest.raises(RewardError, match=r"(?s)reward 'raises_on_boom': reward function raises_on_boom \(reward file "
                                          r".*my_rewards.py\) raised ValueError: cannot score 'boom!', on sample 2 of 3: "
                                          r"completion='boom!'.*fix the function \(or the server\), or set rewards.on_error=skip"):
        score([comp(rewards_file, "raises_on_boom")], ["a", "b", "boom!"])


def test_a_batch_that_raises_where_no_sample_does_alone_is_named(rewards_file, tmp_path):
    (tmp_path / "pairs.py").write_text("def pairs(completions, **kw):\n    if len(completions) > 1:\n"
                                       "        raise ValueError('only one at a time')\n    return [1.0]\n")
    with pytest.raises(RewardError, match="raised ValueError: only one at a time, on a batch of 2"):
        score([comp(tmp_path / "pairs.py", "pairs")], ["a", "b"])
    assert score([comp(tmp_path / "pairs.py", "pairs", on_error="skip")], ["a", "b"])[0] == [1.0, 1.0]


def test_on_error_skip_drops_the_samples_it_fails_on_and_counts_them(rewards_file):
    totals, comps = score([comp(rewards_file, "raises_on_boom", on_error="skip")], ["a", "boom", "c", "boom"])
    assert totals == [0.5, None, 0.5, None] and comps["raises_on_boom/errors"] == [0.0, 1.0, 0.0, 1.0]
    assert component_metrics(comps, 2)["raises_on_boom/errors"] == 2.0  # a count per step, not a mean
    t = time.monotonic()
    totals, comps = score([comp(rewards_file, "hangs_on_slow", on_error="skip", timeout_s=1.0)], ["a", "slow"])
    assert totals == [None, None] and comps["hangs_on_slow/errors"] == [1.0, 1.0] and time.monotonic() - t < 15


def test_a_hang_with_on_error_raise_names_the_deadline(rewards_file):
    with pytest.raises(RewardError, match="(?s)did not return within rewards.timeout_s=1 s .*, on a batch of 2 .*"
                                          "raise rewards.timeout_s.*rewards.on_error=skip"):
        score([comp(rewards_file, "hangs_on_slow", timeout_s=1.0)], ["a", "slow"])


@pytest.mark.parametrize("name, message", [
    ("nan", "returned nan for sample 0"), ("short", "returned 1 scores for 2"), ("words", "'good' \\(str\\)")])
def test_bad_results_are_errors_even_with_skip(rewards_file, name, message):
    with pytest.raises(RewardError, match=message):
        score([comp(rewards_file, name, on_error="skip")], ["a", "b"])


def test_chat_prompts_get_conversational_completions_params_and_ids(rewards_file):
    chat = [{"prompt": [{"role": "user", "content": "hi"}]}]
    assert score([comp(rewards_file, "chat")], ["hello"], chat)[0] == [1.0]
    assert score([comp(rewards_file, "with_param", params={"scale": 0.5})], ["abcd"])[0] == [2.0]
    scorer = RewardScorer([comp(rewards_file, "ids")])
    assert scorer.score(["ab"], [2], [{"prompt": "q"}], completion_ids=[[5, 6, 7]])[0] == [3.0]


# ---- a reward server -------------------------------------------------------------------------------------------

class Server:
    """A local stdlib reward server: `answer(body) -> (status, json)`; records the bodies it got."""

    def __init__(self, answer):
        self.bodies, outer = [], self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                status, out = answer(body)
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/score"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def server_comp(url, **kw):
    return {"name": "server", "url": url, "weight": 1.0, "params": kw.pop("params", {"retries": 2}),
            "timeout_s": kw.pop("timeout_s", 10.0), "on_error": kw.pop("on_error", "raise")}


def test_a_server_scores_a_batch_with_parts_and_retries_a_failing_answer():
    calls = []

    def answer(body):
        calls.append(1)
        if len(calls) == 1:
            return 503, {"error": "warming up"}  # retried
        return 200, {"rewards": [float(c == a) for c, a in zip(body["completions"], body["fields"]["answer"])],
                     "extra_logs": {"short": [float(len(c) < 3) for c in body["completions"]]}}

    srv = Server(answer)
    try:
        totals, comps = score([server_comp(srv.url)], ["4", "four"])
        assert totals == [1.0, 0.0] and comps["server/short"] == [1.0, 0.0] and len(calls) == 2
        body = srv.bodies[-1]
        assert body["prompts"] == ["q", "q"] and body["fields"] == {"answer": ["4", "4"]}
    finally:
        srv.close()


def test_a_server_written_for_openrlhf_answers_unchanged():
    """OpenRLHF's reward servers read `query` (prompt + response text) and `labels`, and answer `rewards` (or
    `scores`) with `extra_logs`."""
    def answer(body):  # as an OpenRLHF reward server's handler reads its request
        queries, labels = body["query"], body["labels"]
        return 200, {"scores": [float(q.endswith(lab)) for q, lab in zip(queries, labels)],
                     "extra_logs": {"chars": [float(len(q)) for q in queries]}}

    srv = Server(answer)
    try:
        comp = server_comp(srv.url)
        scorer = RewardScorer([comp])
        totals, comps = scorer.score(["4", "five"], [1, 1], [{"prompt": "2+2=", "label": "4"}] * 2)
        assert totals == [1.0, 0.0] and comps["server/chars"] == [5.0, 8.0]
        assert srv.bodies[-1]["query"] == ["2+2=4", "2+2=five"]
        assert srv.bodies[-1]["labels"] == ["4", "4"]
    finally:
        srv.close()


def test_a_server_that_refuses_or_never_answers_is_named():
    srv = Server(lambda body: (400, {"error": "bad field"}))
    try:
        with pytest.raises(RewardError, match="reward server .* refused the batch: HTTP 400"):
            score([server_comp(srv.url)], ["a"])
    finally:
        srv.close()
    with pytest.raises(RewardError, match="did not answer after 2 tries"):
        score([server_comp("http://127.0.0.1:9/score", params={"retries": 1})], ["a"])
    totals, comps = score([server_comp("http://127.0.0.1:9/score", params={"retries": 0}, on_error="skip")], ["a"])
    assert totals == [None] and comps["server/errors"] == [1.0]


def test_a_server_that_answers_500_every_time_is_its_own_failure_not_an_absent_server():
    srv = Server(lambda body: (500, {"error": "KeyError: 'answer'"}))
    try:
        with pytest.raises(RewardError, match=r"answered with an error 2 times \(last: HTTP 500: .*KeyError.*\); see "
                                              r"the server's own log") as err:
            score([server_comp(srv.url, params={"retries": 1})], ["a"])
        assert "is it running" not in str(err.value) and "on sample 0 of 1" in str(err.value)
    finally:
        srv.close()


def test_a_server_list_answer_with_nulls():
    srv = Server(lambda body: (200, [None, 0.25]))
    try:
        assert score([server_comp(srv.url)], ["a", "b"])[0] == [None, 0.25]
    finally:
        srv.close()


def test_function_spec_is_what_travels_to_the_actors(rewards_file):
    import pickle

    spec = parse_spec(f"{rewards_file}:score")
    assert pickle.loads(pickle.dumps(spec)) == spec and isinstance(spec, FunctionSpec)


# ---- TRL's whole convention, factories and verl's -----------------------------------------------------------------

CONVENTIONS_PY = '''
import asyncio, re

def compute_score(solution_str, ground_truth, method="strict", format_score=0.0, score=1.0):
    """verl's GSM8K shape: no data_source, no extra_info"""
    m = re.findall(r"#### (\\-?[0-9\\.\\,]+)", solution_str)
    return score if m and m[-1] == ground_truth else format_score

def verl_dict(data_source, solution_str, ground_truth, extra_info=None):
    return {"score": float(solution_str.strip() == ground_truth), "exact": solution_str == ground_truth,
            "source": data_source, "index": extra_info["index"]}

def verl_no_score(solution_str, ground_truth):
    return {"acc": 1.0}

def verl_needs(solution_str, ground_truth, tolerance):
    return 1.0

def length_factory(scale=1.0):
    def length(completions, **kwargs):
        return [scale * len(c) for c in completions]
    return length

class Repetition:
    def __init__(self, ngram_size=2):
        self.n = ngram_size
    def __call__(self, completion_ids, **kwargs):
        grams = [list(zip(*[ids[i:] for i in range(self.n)])) for ids in completion_ids]
        return [-float(len(g) > len(set(g))) for g in grams]

def not_a_factory(prompts, answer):
    return [1.0]

async def async_bools(completions, **kwargs):
    await asyncio.sleep(0)
    return [c.startswith("y") for c in completions]

def with_trainer(completions, trainer_state, log_metric, log_extra, **kwargs):
    log_metric("progress", trainer_state.global_step / trainer_state.max_steps)
    log_extra("verdict", ["long" if len(c) > 3 else "short" for c in completions])
    return [float(trainer_state.phase == "grpo")] * len(completions)
'''

VERL_ROW = {"prompt": [{"role": "user", "content": "q"}], "data_source": "openai/gsm8k", "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": "72"}, "extra_info": {"index": 3, "split": "test"}}
STATE = {"global_step": 3, "max_steps": 4, "phase": "grpo"}


@pytest.fixture
def conventions_file(tmp_path):
    path = tmp_path / "conventions.py"
    path.write_text(CONVENTIONS_PY)
    return path


def _reward(path, name, params=None):
    from rewards.external import FunctionReward

    return FunctionReward(name, 30.0, "raise", spec=parse_spec(f"{path}:{name}"), params=dict(params or {}))


def test_conventions_are_told_apart_by_signature(conventions_file):
    from rewards.user import check_function

    kinds = {}
    for name, params in [("compute_score", {}), ("verl_dict", {}), ("length_factory", {"scale": 2.0}),
                         ("Repetition", {"ngram_size": 2}), ("async_bools", {}), ("with_trainer", {})]:
        spec = parse_spec(f"{conventions_file}:{name}")
        kinds[name] = check_function(load_function(spec), spec, ["data_source", "reward_model", "extra_info"], params)
    assert kinds == {"compute_score": "verl", "verl_dict": "verl", "length_factory": "factory",
                     "Repetition": "factory", "async_bools": "trl", "with_trainer": "trl"}


@pytest.mark.parametrize("name, fields, params, message", [
    ("verl_needs", ["reward_model"], {}, "verl's convention: it names solution_str.*needs argument 'tolerance'"),
    ("compute_score", ["answer"], {}, "reads ground_truth, and the rows have neither verl's reward_model column"),
    ("not_a_factory", ["answer"], {}, "does not take 'completions', so it is read as a factory.*raised TypeError"),
    ("length_factory", [], {"size": 2}, "read as a factory.*raised TypeError"),
])
def test_conventions_that_cannot_be_called_are_named(conventions_file, name, fields, params, message):
    from rewards.user import check_function

    spec = parse_spec(f"{conventions_file}:{name}")
    with pytest.raises(UserCodeError, match=message):
        check_function(load_function(spec), spec, fields, params)


def test_verl_compute_score_per_sample_with_its_ground_truth_and_parts(conventions_file):
    gsm = _reward(conventions_file, "compute_score")
    values, parts = gsm(["so #### 72", "#### 7", "no answer"], [3, 2, 2], [VERL_ROW] * 3, [[1], [2], [3]], STATE)
    assert values == [1.0, 0.0, 0.0] and parts == {"errors": [0.0] * 3}
    values, parts = _reward(conventions_file, "verl_dict")(["72", "x"], [1, 1], [VERL_ROW] * 2)
    # the dict's score is the reward, its other numbers parts (bools too), its text left out
    assert values == [1.0, 0.0] and parts == {"exact": [1.0, 0.0], "index": [3.0, 3.0], "errors": [0.0, 0.0]}
    with pytest.raises(RewardError, match="without 'score'"):
        _reward(conventions_file, "verl_no_score")(["72"], [1], [VERL_ROW])


def test_factories_async_bools_trainer_state_and_logs(conventions_file):
    values, _ = _reward(conventions_file, "length_factory", {"scale": 2.0})(["ab", "abcd"], [1, 1], [{}] * 2)
    assert values == [4.0, 8.0]  # built once with the params: the params are not passed to each call
    values, _ = _reward(conventions_file, "Repetition")(["a", "b"], [3, 3], [{}] * 2, [[1, 2, 1, 2], [1, 2, 3]])
    assert values == [-1.0, 0.0]
    values, _ = _reward(conventions_file, "async_bools")(["yes", "no"], [1, 1], [{}] * 2)
    assert values == [1.0, 0.0]
    values, parts = _reward(conventions_file, "with_trainer")(["abcd", "ab"], [1, 1], [{}] * 2, None, STATE)
    assert values == [1.0, 1.0] and parts["progress"] == [0.75, 0.75] and parts["verdict"] == ["long", "short"]
    # through the scorer: the logged metric is a part's mean, the text column stays in the samples' components only
    from rewards.registry import RewardScorer

    scorer = RewardScorer([{"name": "t", "fn": f"{conventions_file}:with_trainer", "timeout_s": 30,
                            "on_error": "raise"}])
    totals, comps = scorer.score(["abcd", "ab"], [1, 1], [{}] * 2, None, STATE)
    metrics = component_metrics(comps, 2)
    assert metrics["t/progress"] == 0.75 and "t/verdict" not in metrics and comps["t/verdict"] == ["long", "short"]
