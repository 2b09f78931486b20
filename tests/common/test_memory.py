"""The memory plan (common/memory.py) before any actor starts: a run that would not fit stops naming the actor, the
figures and the setting that makes it fit (the learner, the engine's KV space, a learner and an engine colocated on
one GPU); `auto` takes the largest token budget that fits; the command line exits 2 with it before any actor.
docs/memory_plan.md compares the figures with measured peaks (bench/memory_plan.py)."""
import json

import pytest

from common.config import load_config
from common.memory import MemoryPlan, ModelShape, WouldNotFit, check_memory, memory_plan, plan_memory
from common.plan import make_plan

# Llama-3.1-8B's shape: its config alone (a meta-device build counts its parameters; no weights exist)
LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 128256, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16"}


@pytest.fixture(scope="module")
def llama_8b(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama8b")
    (folder / "config.json").write_text(json.dumps(LLAMA_8B))
    return str(folder)


@pytest.fixture(scope="module")
def shape_8b(llama_8b):
    return ModelShape.of(llama_8b)


def test_the_shape_counts_an_8b_model_from_its_config_alone(shape_8b):
    assert 8.0e9 < shape_8b.params < 8.1e9  # Llama-3.1-8B: 8.03 B
    assert (shape_8b.hidden, shape_8b.layers, shape_8b.vocab) == (4096, 32, 128256)


def _plan(overrides, shape, node_gib=24.0, gpu_gib=None):
    cfg = load_config(None, overrides)
    return cfg, plan_memory(cfg, make_plan(cfg), shape, node_gib, gpu_gib)


def test_a_learner_that_would_not_fit_the_node_stops_naming_it_and_the_fix(shape_8b):
    _, plan = _plan(["learner.precision=bf16"], shape_8b)
    learner = next(a for a in plan.actors if a.role == "learner")
    assert learner.parts["optimizer"] > 55  # 8 B parameters x 8 bytes of AdamW moments
    with pytest.raises(WouldNotFit) as err:
        check_memory(plan)
    msg = str(err.value)
    assert "learner" in msg and "of this node's 24.0 GiB" in msg
    assert "learner.workers=2" in msg and "learner.lora" in msg  # the settings that shrink it

    # sharded over 16 workers with LoRA off, still too big for one 24 GiB node: the message says so again
    _, plan = _plan(["learner.workers=16", "learner.precision=bf16"], shape_8b)
    assert plan.problems()


def test_the_engines_kv_space_is_part_of_the_plan_and_named_when_it_does_not_fit(tiny_policy_dir):
    shape = ModelShape.of(tiny_policy_dir)
    _, plan = _plan(["rollout.kv_cache_gib=30"], shape)
    engine = next(a for a in plan.actors if a.role == "engine")
    assert engine.parts["KV cache"] == 30
    problems = plan.problems()
    assert problems and "engine" in problems[0] and "rollout.kv_cache_gib=15" in problems[0]
    _, plan = _plan(["rollout.kv_cache_gib=4"], shape)
    assert plan.problems() == []  # the tiny policy and 4 GiB of cache fit


def test_a_learner_and_an_engine_colocated_on_one_gpu_must_fit_it_together(shape_8b):
    gpu = ["cluster.gpus_per_learner=1", "cluster.gpus_per_rollout_actor=1", "cluster.placement=colocated",
           "learner.workers=8", "learner.precision=bf16", "learner.max_tokens_per_micro_batch=4096"]
    # 8 sharded workers: the learner's part alone fits an 80 GiB GPU, beside an engine holding 0.5 of it, not
    _, plan = _plan([*gpu, "rollout.sleep='off'", "rollout.gpu_memory_utilization=0.5"], shape_8b, 1e4, 80.0)
    learner = next(a for a in plan.actors if a.role == "learner")
    assert learner.device_gib() < 0.9 * 80
    problems = plan.problems()
    assert len(problems) == 1 and "colocated on one GPU" in problems[0] and "rollout.sleep=auto" in problems[0]
    # the engine sleeping while the learner trains: the larger of the two, which fits
    _, plan = _plan([*gpu, "rollout.sleep=level1", "rollout.gpu_memory_utilization=0.5"], shape_8b, 1e4, 80.0)
    assert plan.problems() == []


def test_auto_takes_the_largest_token_budget_that_fits(tiny_policy_dir):
    shape = ModelShape.of(tiny_policy_dir)
    cfg = load_config(None, ["learner.max_tokens_per_micro_batch=auto", "learner.precision=fp32"])
    roomy = plan_memory(cfg, make_plan(cfg), shape, node_gib=24.0)
    assert roomy.budget == 1024 and not roomy.notes  # the CPU's default fits
    big = ModelShape(**{**shape.__dict__, "params": 200_000_000, "hidden": 2048, "inter": 8192, "layers": 24})
    at = {b: plan_memory(load_config(None, [f"learner.max_tokens_per_micro_batch={b}", "learner.precision=fp32"]),
                         make_plan(cfg), big, None).host_gib() for b in (256, 1024)}
    node = (at[256] + at[1024]) / 2 / 0.9  # a node where 1024 tokens would not fit and 256 would
    tight = plan_memory(cfg, make_plan(cfg), big, node_gib=node)
    assert 256 <= tight.budget < 1024 and tight.problems() == [] and "would not fit" in tight.notes[0]
    # and the figure follows the budget: the activations part halves with it
    learner = {b: next(a for a in plan_memory(load_config(None, [f"learner.max_tokens_per_micro_batch={b}",
                                                                 "learner.precision=fp32"]),
                                              make_plan(cfg), big, 64.0).actors if a.role == "learner")
               for b in (2048, 4096)}  # above the longest sequence (a longer one runs alone)
    assert learner[4096].parts["activations"] == pytest.approx(2 * learner[2048].parts["activations"])


def test_the_run_log_lines_name_every_actor_and_the_node(tiny_policy_dir):
    cfg = load_config(None, [f"model.policy={tiny_policy_dir}"])
    plan = memory_plan(cfg, tiny_policy_dir, node_gib=24.0)
    lines = plan.describe()
    assert [line.split()[0] for line in lines[:3]] == ["learner", "reference", "engine"]
    assert lines[-1].startswith("node: ") and "of 24.0 GiB" in lines[-1]
    assert isinstance(plan, MemoryPlan)


def test_the_command_line_stops_before_any_actor_with_the_fix(tiny_policy_dir, shared_data, tmp_path, capsys):
    from trainer.run import main

    code = main(["--config", "jobs/configs/smoke.yaml", f"model.policy={tiny_policy_dir}",
                 f"train.output_dir={tmp_path}", "rollout.kv_cache_gib=40", "cluster.backend=inprocess"])
    err = capsys.readouterr().err
    assert code == 2 and "would not fit in memory" in err and "rollout.kv_cache_gib=20" in err
    assert not any(tmp_path.iterdir())  # no run folder: it stopped before anything started
