"""reasoning-gym as a task (tasks/reasoning_gym.py) and its verifier as a reward (rewards/procedural.py): one
generator or a weighted mix, held-out problems from seeds train never used and no question on two sides, the
generator's own score_answer, and the errors a user meets (an unknown generator, a config it refuses, the package
not installed)."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("reasoning_gym", reason="reasoning-gym is raygrpo's [envs] extra (scripts/setup.sh installs it)")

from common.config import ConfigError  # noqa: E402
from trainer.run import load_job, load_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MIX = ("{datasets: [{name: basic_arithmetic, weight: 3, config: {min_terms: 2, max_terms: 2, min_digits: 1, "
       "max_digits: 1}}, {name: chain_sum, weight: 1, config: {min_terms: 2, max_terms: 2, min_digits: 1, "
       "max_digits: 1}}], size: 200}")


def task_of(tiny_llama_dir, params: str, *extra: str):
    cfg = load_job(None, ["task.name=reasoning_gym", f"task.params={params}", f"model.policy={tiny_llama_dir}",
                          "data.eval_size=40", *extra])
    return load_task(cfg)[1]


def test_a_mix_held_out_from_other_seeds_scored_by_the_generators(tiny_llama_dir):
    task = task_of(tiny_llama_dir, MIX, "data.test_size=30")
    train, eval_, test = (task.splits[k] for k in ("train", "eval", "test"))
    assert len(train) == 200 and 0 < len(eval_) <= 40 and 0 < len(test) <= 30
    qs = [{p.question for p in split} for split in (train, eval_, test)]
    assert not (qs[0] & qs[1]) and not (qs[0] & qs[2]) and not (qs[1] & qs[2])
    assert len(qs[1]) == len(eval_)  # one copy of each held-out problem
    assert {p.source for p in train} == {"basic_arithmetic", "chain_sum"}
    gold = task.score([f"thinking... <answer>{p.answer}</answer>" for p in eval_], eval_)
    assert gold["accuracy"] == [1.0] * len(eval_) and gold["formatted"] == [1.0] * len(eval_)
    wrong = task.score(["<answer>nonsense</answer>"] * len(eval_), eval_)
    assert wrong["accuracy"] == [0.0] * len(eval_)
    bare = task.score([p.answer for p in eval_], eval_)  # no tags: not an answer
    assert bare["accuracy"] == [0.0] * len(eval_) and bare["formatted"] == [0.0] * len(eval_)
    if len({p.source for p in eval_}) > 1:
        assert {"accuracy/basic_arithmetic", "accuracy/chain_sum"} <= set(gold)
    # the prompt is the question after reasoning-gym's system prompt asking for <answer> tags
    text = task.tokenizer.decode(task.prompts("train")[0])
    assert "<answer>answer here</answer>" in text and train[0].question in text


def test_the_reward_in_a_reward_actor_is_the_generators_score(tiny_llama_dir):
    from rewards.registry import RewardScorer

    task = task_of(tiny_llama_dir, "{dataset: basic_arithmetic, config: {min_terms: 2, max_terms: 2}, size: 50}")
    p = task.splits["eval"][0]
    scorer = RewardScorer([{"name": "reasoning_gym", "weight": 1.0, "params": {}}])
    totals, parts = scorer.score([f"<answer>{p.answer}</answer>", "<answer>x</answer>", "no tags"], [3, 3, 2],
                                 [task.reward_inputs(p)] * 3)
    assert totals == [1.0, 0.0, 0.0] and parts["reasoning_gym/formatted"] == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("params, message", [
    ("{dataset: basic_arithmatic}", "no generator 'basic_arithmatic'; did you mean basic_arithmetic"),
    ("{dataset: basic_arithmetic, config: {min_terms: 0}}", "refused the config of basic_arithmetic"),
    ("{dataset: basic_arithmetic, datasets: [{name: chain_sum}]}", "not both"),
    ("{datasets: [{name: chain_sum, level: 3}]}", "entries are \\{name, weight, config\\}"),
])
def test_a_bad_generator_or_config_is_named_before_any_actor(tiny_llama_dir, params, message):
    with pytest.raises((ValueError, ConfigError), match=message):
        task_of(tiny_llama_dir, params)


def test_without_the_package_the_job_stops_naming_the_install(tiny_llama_dir, tmp_path):
    """reasoning_gym made unimportable in a fresh process: raygrpo train exits 2 naming the extra."""
    code = ("import sys; sys.modules['reasoning_gym'] = None; from trainer.run import main; "
            f"sys.exit(main(['task.name=reasoning_gym', 'task.params={{dataset: chain_sum}}', "
            f"'model.policy={tiny_llama_dir}', 'train.output_dir={tmp_path}', '--inprocess']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "pip install 'raygrpo[envs]'" in out.stderr and "Traceback" not in out.stderr
