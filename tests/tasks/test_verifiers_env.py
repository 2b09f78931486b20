"""task.name: verifiers before any actor starts: the extra missing, an environment that does not load, params."""
import sys

import pytest

from tasks.verifiers_env import VerifiersParams, environment


def test_params_name_the_environment_as_verifiers_does():
    with pytest.raises(ValueError, match="env: {taskset: {id:"):
        VerifiersParams(env={})
    # this project's default runtime is a subprocess, not verifiers' remote sandbox
    assert VerifiersParams(env={"taskset": {"id": "x"}}).config()["agent"]["runtime"] == {"type": "subprocess"}
    assert VerifiersParams(env={"taskset": {"id": "x"}, "agent": {"runtime": {"type": "prime"}}}).config()[
        "agent"]["runtime"] == {"type": "prime"}


def test_the_extra_not_installed_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "verifiers", None)
    monkeypatch.setitem(sys.modules, "verifiers.v1", None)
    with pytest.raises(ImportError, match=r"envs. extra"):
        environment('{"taskset": {"id": "toy-absent-1"}}')


def test_a_module_without_a_taskset_is_named(tmp_path, monkeypatch):
    """A package that exports no Taskset (a module written to verifiers 0.1.x, say, with load_environment only)."""
    pytest.importorskip("verifiers.v1", reason="verifiers is raygrpo's [envs] extra")
    pkg = tmp_path / "old_style_env"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def load_environment(**kwargs):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="could not load environment 'old-style-env'"):
        environment('{"taskset": {"id": "old-style-env"}, "agent": {"runtime": {"type": "subprocess"}}}')
