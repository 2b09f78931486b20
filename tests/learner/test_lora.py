"""LoRA on the learner: only adapters train, the engines get merged weights (a plain model loaded with them
gives the learner's logprobs), the reference is the model with adapters disabled, phases fold adapters in,
checkpoints resume exactly; an engine that missed a sync shows in the logprob gap. Adafactor beside AdamW."""
import pytest
import torch

from common.config import load_config
from common.models import load_lm
from common.types import TrainBatch
from learner.lora import LoraSpec
from learner.policy import AlgoParams, Learner
from learner.logprobs import sequence_logprobs
from tests.learner.test_policy import make_batch
from tests.tiny_models import save_model, tiny_llama

SPEC = LoraSpec(rank=4, alpha=8.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_model(tiny_llama(seed=0), tmp_path_factory.mktemp("tiny_llama_lora"))


@pytest.fixture(scope="module")
def tied_folder(tmp_path_factory):
    """Tied input and output embeddings, as the embedded SmolLM2: one tensor under two names."""
    return save_model(tiny_llama(seed=1, tie_word_embeddings=True), tmp_path_factory.mktemp("tiny_llama_tied"))


def lora_learner(path, lr=1e-2, **kw):
    return Learner(path, lr=lr, total_steps=10, warmup_ratio=0.0, schedule="constant", threads=1, lora=SPEC, **kw)


def plain_model_with(path, state):
    """An 'engine': the plain HF model, loaded with the weights a sync would send."""
    model = load_lm(str(path))
    model.load_state_dict({k: v.clone() for k, v in state.items()}, strict=False)
    return model.eval()


def max_gap(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def train(learner, steps=3):
    for seed in range(steps):
        batch = make_batch(learner, seed=seed, old_noise=0.0)
        learner.train_step(batch, AlgoParams(beta=0.0))


def test_only_adapters_train_and_the_synced_weights_reproduce_the_policy(folder):
    learner = lora_learner(folder)
    trainable = [n for n, p in learner.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    base_before = {k: v.clone() for k, v in learner.model.get_base_model().state_dict().items() if "lora_" not in k}
    train(learner)
    base_after = {k: v for k, v in learner.model.get_base_model().state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)  # frozen base
    batch = make_batch(learner, seed=9)
    engine = plain_model_with(folder, learner.state())
    synced = sequence_logprobs(engine, batch.prompt_ids, batch.completion_ids, learner.pad_id, 4)
    stale = sequence_logprobs(load_lm(str(folder)).eval(), batch.prompt_ids, batch.completion_ids, learner.pad_id, 4)
    mine = learner.logprobs(batch.prompt_ids, batch.completion_ids)
    assert max_gap(synced, mine) < 1e-5        # merged weights = the adapted policy
    assert max_gap(stale, mine) > 1e-3         # an engine left on the base model is far off


def test_an_engine_that_missed_the_sync_is_caught_by_the_logprob_gap(folder):
    learner = lora_learner(folder)
    engine = plain_model_with(folder, learner.state())
    train(learner)  # the learner moves; this engine is not told
    batch = make_batch(learner, seed=5)
    old = sequence_logprobs(engine, batch.prompt_ids, batch.completion_ids, learner.pad_id, 4)
    stale = learner.train_step(TrainBatch(batch.prompt_ids, batch.completion_ids, old, [], batch.advantages),
                               AlgoParams(beta=0.0))
    assert stale["logprob_diff_max"] > 1e-3
    engine = plain_model_with(folder, learner.state())  # now synced
    old = sequence_logprobs(engine, batch.prompt_ids, batch.completion_ids, learner.pad_id, 4)
    fresh = learner.train_step(TrainBatch(batch.prompt_ids, batch.completion_ids, old, [], batch.advantages),
                               AlgoParams(beta=0.0))
    assert fresh["logprob_diff_max"] < 1e-5 and fresh["clip_frac_first"] == 0.0


def test_reference_is_the_model_with_adapters_disabled_and_phases_fold_adapters_in(folder):
    learner = lora_learner(folder)
    batch = make_batch(learner, seed=3)
    initial = sequence_logprobs(load_lm(str(folder)).eval(), batch.prompt_ids, batch.completion_ids,
                                learner.pad_id, 4)
    train(learner)
    assert max_gap(learner.ref_logprobs(batch.prompt_ids, batch.completion_ids), initial) < 1e-6
    policy = learner.logprobs(batch.prompt_ids, batch.completion_ids)
    learner.start_phase_reference()  # a new phase: its reference is the policy now
    assert max_gap(learner.logprobs(batch.prompt_ids, batch.completion_ids), policy) < 1e-5  # policy unchanged
    assert max_gap(learner.ref_logprobs(batch.prompt_ids, batch.completion_ids), policy) < 1e-5


@pytest.mark.parametrize("tied", [False, True])
def test_a_lora_checkpoint_is_a_plain_model_and_resumes_exactly(folder, tied_folder, tmp_path, tied):
    folder = tied_folder if tied else folder
    learner = lora_learner(folder)
    train(learner, 2)
    learner.start_phase_reference()
    train(learner, 1)
    learner.save(str(tmp_path / "ck"), with_optimizer=True)
    batch = make_batch(learner, seed=7)
    plain = load_lm(str(tmp_path / "ck")).eval()  # what eval and the engines load
    mine = learner.logprobs(batch.prompt_ids, batch.completion_ids)
    assert max_gap(sequence_logprobs(plain, batch.prompt_ids, batch.completion_ids, learner.pad_id, 4), mine) < 1e-5
    again = lora_learner(folder)
    again.load_trainer_state(str(tmp_path / "ck"))
    assert max_gap(again.logprobs(batch.prompt_ids, batch.completion_ids), mine) == 0.0
    assert max_gap(again.ref_logprobs(batch.prompt_ids, batch.completion_ids),
                   learner.ref_logprobs(batch.prompt_ids, batch.completion_ids)) == 0.0
    a = learner.train_step(batch, AlgoParams(beta=0.0))
    b = again.train_step(batch, AlgoParams(beta=0.0))
    assert a["pg_loss"] == b["pg_loss"]
    assert max_gap(again.logprobs(batch.prompt_ids, batch.completion_ids),
                   learner.logprobs(batch.prompt_ids, batch.completion_ids)) == 0.0  # same optimizer state


def test_adafactor_trains(folder):
    learner = Learner(str(folder), lr=1e-2, total_steps=10, warmup_ratio=0.0, schedule="constant", threads=1,
                      optimizer="adafactor")
    assert type(learner.opt).__name__ == "Adafactor"
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    train(learner, 1)
    assert any(not torch.equal(before[n], p) for n, p in learner.model.named_parameters())


def test_wrong_target_modules_name_the_model_layers(folder):
    with pytest.raises(ValueError, match="its linear layers are called"):
        Learner(str(folder), lr=1e-3, total_steps=1, threads=1, lora=LoraSpec(target_modules=("query",)))


def test_config_refuses_a_lora_reference_other_than_the_phase_start():
    ok = load_config(None, ["learner.lora={rank: 16}"])
    assert ok.learner.lora.rank == 16 and ok.learner.lora.dropout == 0.0
    with pytest.raises(Exception, match="adapters"):
        load_config(None, ["learner.lora={rank: 8}", "train.phases=[{kind: sft}, {kind: grpo, reference: initial}]"])
