"""Every model an actor holds goes to the device Ray gave the actor (common/device.py). The rule is tested here on
any machine; where a GPU exists (`-m gpu`), every model class is checked to land on it."""
import pytest
import torch

from common import device


@pytest.mark.parametrize("cuda,want", [(False, "cpu"), (True, "cuda")])
def test_the_rule(cuda, want, monkeypatch):
    assert device.device_for(cuda) == want
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)  # what Ray's CUDA_VISIBLE_DEVICES decides
    assert device.device_for() == want and device.pick_device().type == want


def test_every_model_follows_the_rule(tmp_path, monkeypatch):
    """Each class asks the rule (here: the CPU, as an actor Ray gave no GPU sees it)."""
    from learner.critic import Critic
    from learner.policy import Learner, Reference
    from rollout.engine import HFEngine
    from tests.tiny_models import save_model, tiny_llama

    path = save_model(tiny_llama(seed=0), tmp_path)
    asked = []
    real = device.device_for
    monkeypatch.setattr(device, "device_for", lambda cuda_available=None: asked.append(1) or real(False))
    for make in (lambda: HFEngine(path), lambda: Learner(path, lr=1e-3, total_steps=1), lambda: Reference(path),
                 lambda: Critic(path)):
        n = len(asked)
        obj = make()
        model = obj.model
        assert len(asked) > n and next(model.parameters()).device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_on_a_gpu_every_model_is_on_it(tmp_path):
    from learner.critic import Critic
    from learner.policy import Learner, Reference
    from retrieval.encoder import load_encoder
    from rollout.engine import HFEngine
    from tests.tiny_models import save_model, tiny_llama

    path = save_model(tiny_llama(seed=0), tmp_path)
    for obj in (HFEngine(path), Learner(path, lr=1e-3, total_steps=1), Reference(path), Critic(path)):
        assert next(obj.model.parameters()).device.type == "cuda", type(obj).__name__
    assert HFEngine(path).generate([[5, 6, 7]], 2, 1.0, 1.0, 4, seed=0).completion_ids  # and it samples there
    assert load_encoder(None).model.device.type == "cuda"
