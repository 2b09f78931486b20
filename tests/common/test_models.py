"""Model folders that cannot be loaded say why, before any actor starts."""
import pytest

from common.models import resolve_model


def test_a_folder_with_a_config_but_no_weights_names_the_problem(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has a config.json but no weights"):
        resolve_model(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())


def test_a_folder_without_a_config_and_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist; pass an existing HF model folder"):
        resolve_model(str(tmp_path / "nope"))


def test_remote_code_is_off_unless_the_config_turns_it_on(monkeypatch):
    """transformers and vLLM get trust_remote_code=False unless model.trust_remote_code is set; then the driver
    and every actor (through runtime.actor_env) get True."""
    import transformers

    from cluster.runtime import actor_env
    from common import models

    seen = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda path, **kw: seen.append(kw["trust_remote_code"]) or type("T", (), {"pad_token_id": 0})())
    monkeypatch.delenv(models.TRUST_ENV, raising=False)
    models.load_tokenizer("x")
    assert seen == [False] and models.TRUST_ENV not in actor_env(1, 1.0)
    monkeypatch.setenv(models.TRUST_ENV, "1")
    models.load_tokenizer("x")
    assert seen == [False, True] and actor_env(1, 1.0)[models.TRUST_ENV] == "1"


def test_a_custom_architecture_is_refused_without_trust(tmp_path, monkeypatch):
    """A folder whose config maps to its own Python code (auto_map) does not load unless trusted."""
    import json

    from common import models

    monkeypatch.delenv(models.TRUST_ENV, raising=False)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mine", "auto_map": {
        "AutoConfig": "my_code.MyConfig", "AutoModelForCausalLM": "my_code.MyModel"}}))
    (tmp_path / "my_code.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ValueError, match="trust_remote_code"):
        models.is_seq2seq(str(tmp_path))
