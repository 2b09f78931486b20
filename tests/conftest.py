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
