"""Tests for common.config: the paper's defaults, frozen, errors that name the field and the fix, overrides,
the shipped presets, and the job script failing fast on a typo."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.config import ConfigError, JobConfig, load_config, parse_overrides

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))


def test_defaults_are_the_papers():
    c = JobConfig()
    assert c.rollout.group_size == 4  # K
    assert c.rollout.temperature == 0.8
    assert c.rollout.top_p == 0.9
    assert c.algo.clip_eps == 0.2
    assert c.algo.beta == 0.04
    assert c.learner.lr == 1e-5
    assert c.train.prompts_per_step == 4
    assert c.learner.warmup_ratio == 0.1
    assert c.learner.schedule == "cosine"
    assert c.learner.grad_clip == 1.0
    assert c.rollout.max_prompt_tokens == 512
    assert c.rollout.max_new_tokens == 64
    assert [(r.name, r.weight, r.params) for r in c.rewards.components] == [("qa", 1.0, {})]
    from rewards.registry import QAReward
    assert (QAReward().f1_weight, QAReward().em_weight) == (0.7, 0.3)
    assert (QAReward().length_coef, QAReward().length_free_tokens) == (0.001, 64)
    assert c.data.split_seed == 42
    assert load_config() == c  # no YAML, no overrides: the defaults


def test_config_is_frozen():
    c = load_config()
    with pytest.raises(ValidationError, match="frozen"):
        c.rollout.temperature = 0.5
    with pytest.raises(ValidationError, match="frozen"):
        c.rollout = c.rollout
    assert c.rollout.temperature == 0.8


# --- errors name the field and the fix ------------------------------------------------------------------------

def test_unknown_key_suggests_the_close_match():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["rollout.temprature=0.7"])
    msg = str(err.value)
    assert "'rollout.temprature'" in msg
    assert "Did you mean 'rollout.temperature'?" in msg


def test_unknown_section():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["rollouts.temperature=0.7"])
    msg = str(err.value)
    assert "'rollouts'" in msg
    assert "Did you mean 'rollout'?" in msg
    assert "learner" in msg  # the allowed sections are listed


def test_bad_literal_names_the_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["algo.kl_kind=k5"])
    msg = str(err.value)
    assert "algo.kl_kind" in msg and "'k5'" in msg
    for allowed in ("k3", "k1", "k2", "abs", "full"):
        assert f"'{allowed}'" in msg


def test_bad_type_names_the_field():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["train.steps=abc"])
    msg = str(err.value)
    assert "train.steps" in msg and "integer" in msg and "'abc'" in msg


def test_out_of_range_names_the_bound():
    with pytest.raises(ConfigError, match=r"rollout\.top_p.*less than or equal to 1"):
        load_config(overrides=["rollout.top_p=1.5"])


@pytest.mark.parametrize("overrides, fix", [
    # 2000 + 64 > 2048
    (["rollout.max_prompt_tokens=2000"], "raise max_model_len or lower one of the two"),
    (["rollout.max_new_tokens=100", "rollout.max_model_len=600"], "raise max_model_len"),  # 512 + 100 > 600
    (["cluster.weight_sync=collective"], "use weight_sync=object_store on CPU"),
    (["algo.kl_kind=full", "algo.beta=0"], "set beta > 0"),
])
def test_cross_field_checks_name_the_fix(overrides, fix):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert fix in str(err.value)


def test_cross_field_boundary_is_allowed():
    c = load_config(overrides=["rollout.max_prompt_tokens=1984"])  # 1984 + 64 == 2048: fits exactly
    assert c.rollout.max_prompt_tokens == 1984


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["train.steps"])
    with pytest.raises(ConfigError, match="'steps' is a value"):
        load_config(overrides=["train.steps=2", "train.steps.x=1"])


# --- overrides and files --------------------------------------------------------------------------------------

def test_overrides_parse_yaml_scalars():
    tree = parse_overrides(["train.steps=3", "algo.beta=0.5", "model.reference=null", "train.eval_at_start=false",
                            "train.run_name=", "data.lang=de", "cluster.num_cpus=~"])
    assert tree == {
        "train": {"steps": 3, "eval_at_start": False, "run_name": None},  # "" -> None
        "algo": {"beta": 0.5},
        "model": {"reference": None},
        "data": {"lang": "de"},
        "cluster": {"num_cpus": None},  # YAML's ~ is null
    }
    assert type(tree["train"]["steps"]) is int and type(tree["algo"]["beta"]) is float


def test_overrides_apply_on_top_of_the_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  steps: 7\n  eval_every: 3\nlearner:\n  lr: 2.0e-5\n")
    c = load_config(path, ["train.steps=9", "learner.lr=1e-6", "train.eval_at_start=no"])
    assert c.train.steps == 9  # override wins
    assert c.train.eval_every == 3  # the YAML's sibling survives the merge
    assert c.learner.lr == 1e-6  # PyYAML reads 1e-6 as a string; pydantic still parses it as a float
    assert c.train.eval_at_start is False  # YAML 1.1: no -> False
    assert c.rollout == JobConfig().rollout  # untouched sections keep the defaults


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_every_preset_validates(path):
    assert isinstance(load_config(path), JobConfig)


def test_presets_exist():
    assert {p.name for p in PRESETS} >= {"smoke.yaml", "xquad_en_grpo.yaml"}


def test_missing_yaml_names_the_presets_folder(tmp_path):
    with pytest.raises(ConfigError, match="jobs/configs"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(path)


# --- the job script fails fast --------------------------------------------------------------------------------

def test_job_script_rejects_a_typo_before_doing_anything():
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "jobs/grpo_mlqa.py", "--inprocess", "rollout.temprature=0.7"],
                          cwd=REPO, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert "rollout.temprature" in proc.stderr and "rollout.temperature" in proc.stderr
    assert proc.stdout == ""
    assert time.monotonic() - t < 20


def test_reward_components_are_validated_with_a_fix():
    ok = load_config(overrides=["rewards.components=[{name: qa, weight: 1.0}, {name: similarity, weight: 0.5}]"])
    assert [(r.name, r.weight) for r in ok.rewards.components] == [("qa", 1.0), ("similarity", 0.5)]
    with pytest.raises(ConfigError, match="unknown reward 'simlarity'. Did you mean 'similarity'"):
        load_config(overrides=["rewards.components=[{name: simlarity}]"])
    with pytest.raises(ConfigError, match="has no param 'f1_wieght'. Did you mean 'f1_weight'"):
        load_config(overrides=["rewards.components=[{name: qa, params: {f1_wieght: 1}}]"])
    with pytest.raises(ConfigError, match="metric must be one of"):
        load_config(overrides=["rewards.components=[{name: qa, params: {metric: fuzzy}}]"])
    with pytest.raises(ConfigError, match="names a reward twice"):
        load_config(overrides=["rewards.components=[{name: qa}, {name: qa}]"])
    with pytest.raises(ConfigError, match="Did you mean 'rewards.components.0.weight'"):
        load_config(overrides=["rewards.components=[{name: qa, wieght: 2}]"])


def test_retrieval_section():
    c = load_config(overrides=["retrieval.enabled=true"])
    assert (c.retrieval.k, c.retrieval.chunk_tokens, c.retrieval.use_in) == (3, 256, "eval")
    with pytest.raises(ConfigError, match="overlap .* must be below"):
        load_config(overrides=["retrieval.overlap=300"])
