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
