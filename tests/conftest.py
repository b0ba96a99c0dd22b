"""Fixtures of the tests: the real evaluation data of ../shared/data, when present (the
fixtures shared with benches/ are in the repository's root conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import heatsearch as hs

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


@pytest.fixture(scope="session")
def holidays(shared_data: Path):
    """The paper authors' 1491 Holidays HeW descriptors ``X (1491, 512)`` float32 (as stored,
    not normalised), the 500 query rows ``qidx`` and the ground truth (0-based)."""
    pytest.importorskip("scipy.io", reason="scipy loads the MATLAB files")
    folder = shared_data / "holidays"
    if not (folder / "vecs_ho.mat").exists() or not (folder / "gnd_holidays.mat").exists():
        pytest.skip(f"Holidays files not found in {folder}")
    X = hs.load_descriptors(folder / "vecs_ho.mat")  # tests/eval/test_ground_truth.py checks the loaders
    gt = hs.load_ground_truth(folder / "gnd_holidays.mat")
    qidx, gnd = gt.query_indices, gt.protocol("classic")
    assert X.shape == (1491, 512) and X.dtype == np.float32 and len(qidx) == 500
    return X, qidx, gnd
