"""Shared test fixtures: where the project's shared data lives."""

import os
from pathlib import Path

import pytest

# The repo sits beside shared/ (…/main and …/shared); CI clones it the same way.
SHARED_DATA_ENV = "RAYGRPO_SHARED_DATA"


def shared_data_dir() -> Path:
    override = os.environ.get(SHARED_DATA_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to shared/data; skips the test when it is absent (override with $RAYGRPO_SHARED_DATA)."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set {SHARED_DATA_ENV} to its location)")
    return path


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory) -> str:
    """A small random Llama with the embedded policy's tokenizer and chat template (tests/tiny_models.py
    `tiny_policy`), built once a session: the real path (local Ray, vLLM, real tasks and data) for tests whose
    point is the system (faults, overlap, resume, recipe plumbing), where the 135M weights add minutes and nothing
    else. The real model keeps its own real-path tests (smoke with two engines, the MLQA recipe, the pinned
    regression run, job submit, eval)."""
    from tests.tiny_models import tiny_policy

    return tiny_policy(tmp_path_factory.mktemp("tiny_policy"))


WEIGHT_FILE_BYTES = 50 * 2**20  # checkpoints of the embedded model are ~0.5 GB each


@pytest.fixture(autouse=True)
def _drop_checkpoint_weights(request):
    """After every test, delete weight files over 50 MB under its tmp_path, passed or failed.

    A failed test's folder is kept for its logs and metrics; its checkpoints' weights would fill the disk
    (the suite writes ~50 GB of them). Module-scoped model folders live elsewhere and are untouched.
    """
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is None or not Path(tmp).is_dir():
        return
    for path in Path(tmp).rglob("*"):
        try:
            if path.is_file() and path.stat().st_size > WEIGHT_FILE_BYTES:
                path.unlink()
        except OSError:
            pass
