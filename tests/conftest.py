"""Fixtures of the tests: the real evaluation data of ../shared/data, when present (the
fixtures shared with benches/ are in the repository's root conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``$HEATSEARCH_SHARED_DATA``, else ``../shared/data`` beside the project root."""
    env = os.environ.get("HEATSEARCH_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests using it are skipped (with the reason) when absent."""
    path = shared_data_dir()
    if not (path / "README.md").exists():
        pytest.skip(
            f"real evaluation data not found at {path} "
            "(set HEATSEARCH_SHARED_DATA to the folder holding gnd/, holidays/, ...)"
        )
    return path

