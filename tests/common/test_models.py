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
