"""The field's environments, agents and reward files trained as they are (docs/environments.md), on the real path
(local Ray, vLLM, the tiny policy on a warm fleet): verl's GSM8K Parquet with verl's own gsm8k.py reward file, and
TRL's `trl.rewards` functions (factories built from the config) in training and eval."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.real_path import records, train

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.fleet("tiny", late=True)]


def installed(package: str, why: str) -> Path:
    """The folder of an installed package (not imported: verl's __init__ wants its own dependencies); skips where it
    is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed ({why}); scripts/setup.sh installs it")
    return Path(list(spec.submodule_search_locations)[0])


def test_verl_gsm8k_parquet_and_verl_reward_file_train_unchanged(shared_data, tmp_path, tiny_policy_dir, fleets,
                                                                 monkeypatch):
    """docs/examples/verl_gsm8k: verl's Parquet columns as they are (chat `prompt`, `reward_model.ground_truth`,
    `extra_info`) and verl's verl/utils/reward_score/gsm8k.py, copied unchanged, called per sample with the names it
    takes (solution_str, ground_truth); 2 GRPO steps and an eval, its scores in metrics.jsonl and the records."""
    verl = installed("verl", "its gsm8k.py reward file is what this test trains with")
    folder = tmp_path / "verl_project"
    shutil.copytree(EXAMPLES / "verl_gsm8k", folder)
    shutil.copy(verl / "utils" / "reward_score" / "gsm8k.py", folder / "gsm8k.py")
    made = subprocess.run([sys.executable, "to_verl_parquet.py", str(shared_data / "gsm8k" / "test.jsonl"),
                           "gsm8k.parquet", "--limit", "40"], cwd=folder, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    monkeypatch.chdir(folder)
    train(fleets, "job.yaml", f"model.policy={tiny_policy_dir}", "train.phases.0.steps=2", "train.eval_every=2",
          "train.eval_at_start=false", "rollout.max_new_tokens=24", "rollout.kv_cache_gib=1")
    run = folder / "runs" / "verl-gsm8k"
    steps = records(run, "step")
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert "reward/gsm8k_verl" in r and r["reward/gsm8k_verl/errors"] == 0 and r["reward/unscored"] == 0
    assert "eval/gsm8k_verl" in records(run, "eval")[-1]
    from common import rollout_records

    df = rollout_records.read(run)
    assert len(df) == 2 * 4 * 4 and df["reward/gsm8k_verl"].notna().all()
    # the rows reached the reward as verl's columns hold them
    inputs = df["reward_inputs"].map(json.loads)
    assert inputs.map(lambda x: x["reward_model"]["style"] == "rule" and x["data_source"] == "openai/gsm8k").all()


def test_trls_reward_functions_train_and_evaluate_unchanged(shared_data, tmp_path, tiny_policy_dir, fleets,
                                                           monkeypatch, capsys):
    """The six functions of TRL 1.16's `trl.rewards`, named as modules (the three factories built from the
    component's params), on chat rows with TRL's `solution` column: 2 GRPO steps and an eval, every function's
    score and TRL's completion_ids-based ones in training and eval alike."""
    pytest.importorskip("trl", reason="TRL is raygrpo's [envs] extra (scripts/setup.sh installs it)")
    pytest.importorskip("math_verify", reason="trl.rewards' accuracy rewards need math-verify ([envs] extra)")
    folder = tmp_path / "trl_project"
    shutil.copytree(EXAMPLES / "trl_rewards", folder)
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:40]]
    (folder / "rows.jsonl").write_text("".join(json.dumps({"prompt": [{"role": "user", "content": r["question"] + " Put the answer in "
                                                     "\\boxed{}."}],
                                        "solution": "$" + r["answer"].rsplit("#### ", 1)[1].replace(",", "") + "$"})
                            + "\n" for r in rows))
    monkeypatch.chdir(folder)
    # 24 new tokens: the cosine and overlong factories built for 24 (their params, as the config names them)
    train(fleets, "job.yaml", f"model.policy={tiny_policy_dir}", "train.phases.0.steps=2", "train.eval_every=2",
          "train.eval_at_start=false", "rollout.max_new_tokens=24", "rollout.kv_cache_gib=1",
          "rewards.components.3.params.max_len=24", "rewards.components.5.params.max_completion_len=24",
          "rewards.components.5.params.soft_punish_cache=8")
    run = folder / "runs" / "trl-rewards"
    names = ("accuracy", "reasoning_accuracy", "think_format", "cosine", "repetition", "overlong")
    for r in records(run, "step"):
        for name in names:
            assert r[f"reward/{name}/errors"] == 0, (name, r)
        assert r["reward/repetition"] <= 0 and r["reward/overlong"] <= 0 and -1 <= r["reward/cosine"] <= 1
    last = records(run, "eval")[-1]
    assert all(f"eval/{name}" in last for name in ("think_format", "cosine", "repetition", "overlong")), last
    # what accuracy_reward logged with log_extra (its gold and parsed answers, text) is in the samples' records
    from common import rollout_records

    df = rollout_records.read(run)
    assert df["reward/accuracy/solution"].str.startswith("$").all()
    capsys.readouterr()
    from jobs.samples import main

    assert main([str(run), "-n", "1"]) == 0 and "accuracy/solution $" in capsys.readouterr().out


def test_a_reasoning_gym_mix_trains_with_the_generators_verifiers(tmp_path, tiny_policy_dir, fleets):
    """jobs/configs/reasoning_gym_grpo.yaml, 2 SFT and 2 GRPO steps on local Ray: the verifier's score and the format
    part in every GRPO step, accuracy and the format rate at eval, the mix's generators named in the run's log."""
    pytest.importorskip("reasoning_gym", reason="reasoning-gym is raygrpo's [envs] extra (scripts/setup.sh installs it)")
    train(fleets, str(ROOT / "jobs" / "configs" / "reasoning_gym_grpo.yaml"), f"train.output_dir={tmp_path}",
          f"model.policy={tiny_policy_dir}", "train.phases=[{kind: sft, steps: 2, batch_size: 4}, {kind: grpo, "
          "steps: 2}]", "train.prompts_per_step=4", "train.eval_every=2", "train.eval_at_start=false",
          "task.params.size=200", "data.eval_size=20", "data.test_size=null", "rollout.max_new_tokens=16",
          "rollout.kv_cache_gib=1")
    run = tmp_path / "rg-grpo"
    steps = records(run, "step")
    assert [r["phase"] for r in steps] == ["sft", "sft", "grpo", "grpo"]  # SFT toward the answers in the tags first
    for r in steps[2:]:
        assert 0 <= r["reward/reasoning_gym"] <= 1 and "reward/reasoning_gym/formatted" in r
    last = records(run, "eval")[-1]
    assert "eval/accuracy" in last and "eval/formatted" in last
    info = next(r for r in records(run, "info") if r.get("data", {}).get("generators"))
    assert info["data"]["generators"] == "basic_arithmetic, chain_sum"


CHAOS_AGENT = '''
import asyncio, math

async def run(client, row, model="policy"):
    kind = row["kind"]
    if kind == "silent":
        return 1.0                      # never calls the model
    reply = await client.chat.completions.create(model=model, max_tokens=8,
                                                 messages=[{"role": "user", "content": row["question"]}])
    if kind == "raise":
        raise RuntimeError("the agent's own bug")
    if kind == "hang":
        await asyncio.sleep(3600)
    if kind == "nan":
        return math.nan
    return {"short": float(len(reply.choices[0].message.content) < 20), "one": 1.0}
'''


def agent_project(shared_data, folder: Path, rows: int, monkeypatch) -> Path:
    """docs/examples/agent copied to `folder` (the working directory now), with `rows` GSM8K rows made by its script."""
    shutil.copytree(EXAMPLES / "agent", folder)
    made = subprocess.run([sys.executable, "make_rows.py", str(shared_data / "gsm8k" / "test.jsonl"), "rows.jsonl",
                           "--limit", str(rows)], cwd=folder, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    monkeypatch.chdir(folder)
    return folder


def test_an_agent_on_an_openai_client_trains_unchanged(shared_data, tmp_path, tiny_policy_dir, fleets, monkeypatch,
                                                       capsys):
    """docs/examples/agent: a plain agent loop on openai.AsyncOpenAI (a calculator tool between turns), each sample a
    session of the run's endpoint: 3 GRPO steps with sessions run up to 2 updates ahead (train.max_staleness=2) and
    an eval while they run, its reward parts in metrics.jsonl, its sessions' ids in the rollout Parquet as the
    engines consumed and sampled them (policy tokens masked in, the rest out), each token's weights version."""
    folder = agent_project(shared_data, tmp_path / "agent_project", 36, monkeypatch)
    train(fleets, "job.yaml", f"model.policy={tiny_policy_dir}", "train.phases.0.steps=3", "train.eval_every=2",
          "train.eval_at_start=false", "rollout.max_new_tokens=24", "rollout.agent_params.max_tokens=24",
          "rollout.kv_cache_gib=1", "train.max_staleness=2")
    run = folder / "runs" / "calc-agent"
    steps = records(run, "step")
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[0]["rollout/staleness"] == 0 and all(r["rollout/staleness"] <= 2 for r in steps)
    for r in steps:
        assert r["agent/sessions"] == 16 and r["agent/errors"] == 0 and r["agent/timeouts"] == 0, r
        assert r["agent/requests_per_session"] >= 1 and "reward/agent/correct" in r and "reward/agent/format" in r
        assert r["reward/unscored"] == 0
    from common import rollout_records

    df = rollout_records.read(run)
    assert len(df) == 3 * 16
    ages = df["learner_version"] - df["weights_versions"].map(lambda v: min(x for x in v if x >= 0))
    assert ages.max() <= 2 and (ages == df["staleness_max"]).all()
    # the sample is what the engines consumed and sampled: policy tokens masked in, chat scaffolding masked out
    assert df["completion_ids"].map(len).equals(df["policy_mask"].map(len))
    assert df["policy_mask"].map(lambda m: 0 < sum(m) <= len(m)).all()


def test_an_agent_written_with_the_openai_agents_sdk_trains_unchanged(shared_data, tmp_path, tiny_policy_dir, fleets,
                                                                      monkeypatch):
    """docs/examples/agent/openai_agents_run.py: the OpenAI Agents SDK's Agent and Runner over the session's client,
    two GRPO steps and an eval; every session's requests reached the endpoint and its return is the reward."""
    pytest.importorskip("agents", reason="openai-agents is raygrpo's [envs] extra (scripts/setup.sh installs it)")
    folder = agent_project(shared_data, tmp_path / "sdk_project", 12, monkeypatch)
    train(fleets, "job.yaml", f"model.policy={tiny_policy_dir}", "rollout.agent=openai_agents_run.py:run",
          "rollout.agent_params={max_turns: 2}", "train.phases.0.steps=2", "train.eval_every=2", "data.eval_size=2",
          "train.eval_at_start=false", "rollout.max_new_tokens=16", "rollout.group_size=2", "train.prompts_per_step=4",
          "rollout.kv_cache_gib=1", "train.run_name=sdk-agent")
    steps = records(folder / "runs" / "sdk-agent", "step")
    assert [s["step"] for s in steps] == [1, 2]
    for step in steps:
        assert step["agent/sessions"] == 8 and step["agent/errors"] == 0 and step["agent/requests_per_session"] >= 1
        assert step["reward/unscored"] == 0 and "reward/agent/format" in step
    assert records(folder / "runs" / "sdk-agent", "eval")[-1]["eval/agent/sessions"] == 2


def test_agents_that_raise_hang_never_call_or_return_nan_are_counted_not_zero(tmp_path, tiny_policy_dir, fleets,
                                                                            monkeypatch, capsys):
    """One run whose agent misbehaves by row: each failure gets no reward (the sample leaves its group's statistics),
    is counted by kind in agent/*, and the first is named on the console; the run goes on."""
    (tmp_path / "chaos.py").write_text(CHAOS_AGENT)
    kinds = ["ok", "raise", "hang", "silent", "nan", "ok"]  # 12 rows: 2 held out, 6 drawn
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"prompt": f"Q{i}", "question": f"Q{i}", "kind": k}) + "\n"
                                                 for i, k in enumerate(kinds * 2)))
    monkeypatch.chdir(tmp_path)
    train(fleets, None, "task.name=prompts", "data.source=rows.jsonl", "data.eval_size=2",
          f"model.policy={tiny_policy_dir}", "rollout.agent=chaos.py:run", "rollout.agent_timeout_s=3",
          "rollout.group_size=2", "train.prompts_per_step=6", "train.phases=[{kind: grpo, steps: 1}]",
          "train.eval_at_start=false", "rollout.max_new_tokens=8", "rollout.kv_cache_gib=1",
          "train.run_name=chaos")
    step = records(tmp_path / "runs" / "chaos", "step")[0]
    from common import rollout_records

    df = rollout_records.read(tmp_path / "runs" / "chaos")
    kinds = df["reward_inputs"].map(lambda x: json.loads(x)["kind"])  # the rows this step drew, 2 sessions each
    expected = {k: int((kinds == k).sum()) for k in ("raise", "hang", "silent", "nan")}
    assert (step["agent/errors"], step["agent/timeouts"], step["agent/no_requests"], step["agent/bad_results"]) \
        == (expected["raise"], expected["hang"], expected["silent"], expected["nan"]), step
    failed = sum(expected.values())
    assert step["reward/unscored"] == failed and df["reward"].isna().sum() == failed
    assert df.loc[kinds == "ok", "reward"].notna().all()
    statuses = df["turns"].map(lambda t: json.loads(t)[-1]["status"])
    assert set(statuses[kinds == "hang"]) <= {"timeout"} and set(statuses[kinds == "silent"]) <= {"no_requests"}
    if failed:
        assert f"{failed} of 12 agent session(s) got no reward, the first: agent session" in capsys.readouterr().out


VF_TASKSET = '''
import verifiers.v1 as vf

ROWS = [(a, b) for a in range(2, 9) for b in range(3, 6)]


class ToyArithData(vf.TaskData):
    answer: str


class ToyArithTask(vf.Task[ToyArithData]):
    @vf.reward(weight=1.0)
    async def correct(self, trace: vf.Trace) -> float:
        return float(trace.last_reply.strip() == self.data.answer)

    @vf.reward(weight=0.5)
    async def short(self, trace: vf.Trace) -> float:
        return float(len(trace.last_reply) < 12)

    @vf.metric
    async def reply_chars(self, trace: vf.Trace) -> float:
        return float(len(trace.last_reply))


class ToyArithConfig(vf.TasksetConfig):
    num_tasks: int = 21


class ToyArithTaskset(vf.Taskset[ToyArithTask, ToyArithConfig]):
    def load(self) -> list[ToyArithTask]:
        return [ToyArithTask(ToyArithData(prompt=f"What is {a} + {b}? Answer with the number.",
                                          system_prompt="You add numbers.", answer=str(a + b)), self.config.task)
                for a, b in ROWS[: self.config.num_tasks]]
'''

VF_HARNESS = '''
import openai
import verifiers.v1 as vf


class ToyArithHarnessConfig(vf.HarnessConfig):
    turns: int = 2


class ToyArithHarness(vf.Harness[ToyArithHarnessConfig]):
    APPENDS_SYSTEM_PROMPT = True
    NEEDS_CONTAINER = False  # it runs in-process: the chat loop below, no program of its own
    EXECUTES_CODE = False

    async def launch(self, ctx, trace, runtime, endpoint, secret, mcp_urls, data):
        system, prompt = self.resolve_prompt(data)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        async with openai.AsyncOpenAI(base_url=endpoint, api_key=secret, max_retries=0) as client:
            for turn in range(self.config.turns):
                reply = await client.chat.completions.create(model=ctx.model, messages=messages)
                text = reply.choices[0].message.content or ""
                messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "Sure? Only the number."}]
        return vf.ProgramResult(exit_code=0, stdout=text, stderr="")
'''


def verifiers_env(tmp_path) -> Path:
    """An environment made as verifiers' users make one: `vf-init toy-arith -H` (a taskset and a harness), filled in."""
    pytest.importorskip("verifiers.v1", reason="verifiers is raygrpo's [envs] extra (scripts/setup.sh installs it)")
    init = Path(sys.executable).with_name("vf-init")
    made = subprocess.run([str(init), "toy-arith", "-H", "--path", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    pkg = tmp_path / "toy_arith" / "toy_arith"
    (pkg / "taskset.py").write_text(VF_TASKSET)
    (pkg / "harness.py").write_text(VF_HARNESS)
    return tmp_path / "toy_arith"


def test_a_verifiers_environment_trains_with_its_rubric(tmp_path, tiny_policy_dir, fleets, monkeypatch):
    """A verifiers v1 environment from outside the repo (vf-init's template): its taskset as the data, its harness
    driving the model through the run's endpoint with verifiers' TrainClient (token in, token out), its rubric as
    the reward: 2 GRPO steps on local Ray, each reward function's score a part in metrics.jsonl, and an eval."""
    folder = verifiers_env(tmp_path)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(tmp_path)
    train(fleets, None, "task.name=verifiers",
          "task.params={env: {taskset: {id: toy-arith}, agent: {harness: {id: toy-arith}}}}", "data.eval_size=4",
          f"model.policy={tiny_policy_dir}", "rollout.group_size=2", "train.prompts_per_step=4",
          "train.phases=[{kind: grpo, steps: 2}]", "train.eval_every=2", "train.eval_at_start=false",
          "rollout.max_new_tokens=8", "rollout.kv_cache_gib=1", "train.run_name=vf")
    run = tmp_path / "runs" / "vf"
    steps = records(run, "step")
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["agent/sessions"] == 8 and r["agent/errors"] == 0, r
        assert r["agent/requests_per_session"] == 2  # the harness's two turns, each a recorded request
        assert "reward/agent/correct" in r and 0.0 <= r["reward/agent/short"] <= 0.5
        assert "reward/agent/metric/reply_chars" in r and r["reward/unscored"] == 0
    ev = records(run, "eval")[-1]
    assert ev["eval/agent/sessions"] == 4 and "eval/agent" in ev
    from common import rollout_records

    df = rollout_records.read(run)
    turns = df["turns"].map(json.loads)
    # two policy turns each, the second request continuing the first (token in, token out)
    assert turns.map(lambda t: sum(x["role"] == "policy" for x in t)).eq(2).all()
    assert df["policy_mask"].map(lambda m: 0 < sum(m) < len(m)).all()


def test_a_verifiers_env_that_cannot_load_is_named_before_any_actor(tmp_path, monkeypatch):
    from common.config import ConfigError
    from trainer.run import load_job, load_task

    pytest.importorskip("verifiers.v1", reason="verifiers is raygrpo's [envs] extra")
    monkeypatch.chdir(tmp_path)
    cfg = load_job(None, ["task.name=verifiers", "task.params={env: {taskset: {id: no-such-env}}}"])
    with pytest.raises((ConfigError, ValueError), match="no-such-env.*cannot be imported|could not load"):
        load_task(cfg)
