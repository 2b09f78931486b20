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
    assert c.rewards.components is None and c.task.name == "mlqa"  # the task's own rewards:
    from tasks.registry import reward_components
    assert reward_components(c) == [{"name": "qa", "weight": 1.0, "params": {}}]
    assert [(p.kind, p.steps, p.reference) for p in c.train.phases] == [("grpo", 100, "phase_start")]
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
        load_config(overrides=["train.phases.0.steps=abc"])
    msg = str(err.value)
    assert "train.phases.0.steps" in msg and "integer" in msg and "'abc'" in msg


def test_out_of_range_names_the_bound():
    with pytest.raises(ConfigError, match=r"rollout\.top_p.*less than or equal to 1"):
        load_config(overrides=["rollout.top_p=1.5"])


@pytest.mark.parametrize("overrides, fix", [
    # 2000 + 64 > 2048
    (["rollout.max_prompt_tokens=2000"], "raise max_model_len or lower one of the two"),
    (["rollout.max_new_tokens=100", "rollout.max_model_len=600"], "raise max_model_len"),  # 512 + 100 > 600
    (["cluster.weight_sync=collective", "cluster.backend=inprocess"], "with cluster.backend=inprocess use weight_sync"),
    (["algo.kl_kind=full", "algo.beta=0"], "set beta > 0"),
    (["rollout.tensor_parallel_size=2"], "with no GPUs (cluster.gpus_per_rollout_actor=0) vLLM's CPU backend runs "
                                         "one worker per engine: set it to 1 and add engines"),
    (["rollout.tensor_parallel_size=2", "cluster.gpus_per_rollout_actor=1"], "needs cluster.gpus_per_rollout_actor=2"),
    (["rollout.tensor_parallel_size=2", "cluster.gpus_per_rollout_actor=2", "rollout.engine=hf"],
     "the hf engine has no tensor parallelism"),
    (["learner.workers=2", "cluster.backend=inprocess"], "needs Ray: drop --inprocess"),
    (["learner.workers=2", "learner.lora={rank: 8}"], "with learner.lora is not supported yet"),
    (["learner.workers=2", "learner.reference_workers=3"], "set learner.reference_workers <= 2"),
    (["learner.critic_workers=2"], "set learner.critic_workers <= 1"),
    # a phase's own override meets the same rule as the top-level section (issue 30: it slipped past before)
    (["train.max_staleness=2", "train.phases.0.algo.old_logprobs=learner", "algo.tis_cap=null"],
     "train.phases.0 (grpo): train.max_staleness=2 trains on samples of older weights"),
    (["train.max_staleness=1", "algo.tis_cap=null"], "set algo.tis_cap (e.g. 2) or algo.old_logprobs=engine"),
    (["train.overlap=true", "train.max_staleness=2"], "keep only max_staleness"),
    (["train.overlap=2"], "must be true or false"),
    (["learner.offload=true"], "set learner.sharding=fsdp"),
    (["learner.sharding=fsdp", "cluster.backend=inprocess"], "needs Ray: drop --inprocess"),
    (["learner.sharding=fsdp", "learner.lora={rank: 8}"], "use learner.sharding=replicate"),
    (["learner.workers=2", "algo.kl_kind=full"], "which learner.sharding=fsdp does not shard"),
    # multi-turn rollouts: a turn ends in a tool call
    (["tools.use=[{name: search}]"], "set rollout.max_turns (e.g. 4) or drop tools.use"),
    (["rollout.max_turns=3"], "add one (e.g. tools.use=[{name: search}]) or set rollout.max_turns=1"),
    (["rollout.max_turns=3", "tools.use=[{name: calculate}]", "rollout.engine=hf"], "rollout.engine=vllm"),
    (["rollout.max_turns=3", "tools.use=[{name: calculate}]", "rollout.max_total_tokens=1500"], "a last turn could "
                                                                                               "not fit"),
    (["rollout.max_turns=3", "tools.use=[{name: weather}]"], "give your tool's fn"),
])
def test_cross_field_checks_name_the_fix(overrides, fix):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert fix in str(err.value)


@pytest.mark.parametrize("kind", ["grpo", "ppo", "dpo", "rs_sft"])
def test_every_sampled_phase_takes_multi_turn_samples(kind):
    """Their losses count the policy's tokens only (learner/, tests/learner/test_policy_mask.py)."""
    c = load_config(overrides=["rollout.max_turns=3", "tools.use=[{name: calculate}]",
                               f"train.phases=[{{kind: sft, steps: 1}}, {{kind: {kind}, steps: 1}}]"])
    assert c.rollout.max_turns == 3


def test_sharding_defaults_to_fsdp_with_several_workers():
    assert load_config(overrides=["learner.workers=2"]).learner.sharded() == "fsdp"
    assert load_config(overrides=[]).learner.sharded() == "replicate"
    assert load_config(overrides=["learner.workers=2", "learner.sharding=replicate",
                                  "algo.kl_kind=full"]).learner.sharded() == "replicate"


def test_cross_field_boundary_is_allowed():
    c = load_config(overrides=["rollout.max_prompt_tokens=1984"])  # 1984 + 64 == 2048: fits exactly
    assert c.rollout.max_prompt_tokens == 1984


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["train.eval_every"])
    with pytest.raises(ConfigError, match="'eval_every' is a value"):
        load_config(overrides=["train.eval_every=2", "train.eval_every.x=1"])


# --- overrides and files --------------------------------------------------------------------------------------

def test_overrides_parse_yaml_scalars():
    tree = parse_overrides(["train.save_every=3", "algo.beta=0.5", "data.source=null", "train.eval_at_start=false",
                            "train.run_name=", "task.params.lang=de", "cluster.num_cpus=~"])
    assert tree == {
        "train": {"save_every": 3, "eval_at_start": False, "run_name": None},  # "" -> None
        "algo": {"beta": 0.5},
        "data": {"source": None},
        "task": {"params": {"lang": "de"}},
        "cluster": {"num_cpus": None},  # YAML's ~ is null
    }
    assert type(tree["train"]["save_every"]) is int and type(tree["algo"]["beta"]) is float


def test_overrides_apply_on_top_of_the_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  phases:\n    - {kind: sft}\n    - {kind: grpo, steps: 7}\n  eval_every: 3\n"
                    "learner:\n  lr: 2.0e-5\n")
    c = load_config(path, ["train.phases.1.steps=9", "learner.lr=1e-6", "train.eval_at_start=no"])
    assert c.train.phases[1].steps == 9  # override wins, reaching into the YAML's list
    assert c.train.phases[0].kind == "sft" and len(c.train.phases) == 2
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


def test_retrieval_section():
    c = load_config(overrides=["retrieval.enabled=true"])
    assert (c.retrieval.k, c.retrieval.chunk_tokens, c.retrieval.use_in) == (3, 256, "eval")
    with pytest.raises(ConfigError, match="overlap .* must be below"):
        load_config(overrides=["retrieval.overlap=300"])


# --- phases ---------------------------------------------------------------------------------------------------

def test_phases_have_their_own_hyperparameters():
    c = load_config(overrides=["algo.clip_eps=0.25", "rollout.temperature=0.8", "train.phases=["
                               "{kind: sft, epochs: 1, lr: 2e-5, batch_size: 2},"
                               "{kind: grpo, steps: 5, lr: 5e-6, algo: {beta: 0.05, kl_kind: k2, advantage: mean_only},"
                               " sampling: {temperature: 0.7}},"
                               "{kind: rs_sft, prompts: 8, threshold: 0.5},"
                               "{kind: grpo, steps: 3, reference: initial}]"])
    sft, grpo1, rs, grpo2 = c.train.phases
    assert c.train.phase_names() == ["sft", "grpo1", "rs_sft", "grpo2"]  # a repeated kind is numbered
    assert (sft.epochs, sft.lr, sft.batch_size) == (1, 2e-5, 2)
    a1, a2 = c.algo_for(grpo1), c.algo_for(grpo2)
    assert (a1.beta, a1.kl_kind, a1.advantage, a1.clip_eps) == (0.05, "k2", "mean_only", 0.25)  # unset: the top level's
    assert (a2.beta, a2.kl_kind, a2.advantage) == (0.04, "k3", "grpo")                     # the defaults
    assert c.rollout_for(grpo1).temperature == 0.7 and c.rollout_for(grpo2).temperature == 0.8
    assert (rs.prompts, rs.threshold) == (8, 0.5) and grpo2.reference == "initial"


@pytest.mark.parametrize("overrides, message", [
    (["train.phases=[]"], "train.phases is empty"),
    (["train.run_name=../elsewhere"], "must be a plain folder name"),
    (["train.run_name=.."], "may not leave it"),
    (["train.phases=[{kind: grpo}, {kind: grpo, name: grpo1}]"], "phase names ['grpo1'] repeat"),
    (["train.phases=[{kind: sftt}]"], "a phase needs kind: one of sft, grpo, rs_sft"),
    (["train.phases=[{steps: 3}]"], "a phase needs kind"),
    (["train.phases.0.stepz=3"], "Did you mean 'train.phases.0.steps'?"),
    (["train.phases.0.algo.clipeps=0.3"], "Did you mean 'train.phases.0.algo.clip_eps'?"),
    (["train.phases.0.sampling.temperature=0"], "train.phases.0.sampling.temperature: Input should be greater than 0"),
    (["train.phases.0.algo.kl_kind=full", "algo.beta=0"], "train.phases.0 (grpo): algo.kl_kind=full with algo.beta=0"),
    (["train.phases.0.sampling.max_new_tokens=2000"], "train.phases.0 (grpo)) exceeds rollout.max_model_len"),
    (["train.phases.2.steps=1"], "the list has 1 items"),
    (["train.phases=[{kind: grpo, name: 'a/b'}]"], "must be letters, digits"),
])
def test_bad_phase_lists_name_the_fix(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert message in str(err.value)


@pytest.mark.parametrize("key, where", [
    ("train.steps=3", "train.phases.<i>.steps"), ("train.sft_epochs=1", "{kind: sft, epochs: N}"),
    ("model.reference=x", "train.phases.<i>.reference"), ("data.lang=de", "task.params.lang"),
])
def test_moved_keys_say_where_they_went(key, where):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[key])
    assert "has moved" in str(err.value) and where in str(err.value)


def test_a_saved_config_loads_back(tmp_path):
    import yaml

    from common.config import config_to_dict

    c = load_config(overrides=["train.phases=[{kind: sft}, {kind: grpo, algo: {beta: 0.1}}]"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(c)))
    assert load_config(path) == c


def test_micro_batches_need_a_bound():
    c = load_config(None, [])
    assert (c.learner.micro_batch_size, c.learner.max_tokens_per_micro_batch) == (None, "auto")
    assert load_config(None, ["learner.max_tokens_per_micro_batch=4096"]).learner.max_tokens_per_micro_batch == 4096
    with pytest.raises(ConfigError, match="both None"):
        load_config(None, ["learner.max_tokens_per_micro_batch=null"])
    assert load_config(None, ["learner.max_tokens_per_micro_batch=null", "learner.micro_batch_size=4"])
    with pytest.raises(ConfigError, match="below one short sequence"):
        load_config(None, ["learner.max_tokens_per_micro_batch=8"])
