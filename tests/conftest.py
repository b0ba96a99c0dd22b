"""Fixtures of the tests: the real evaluation data of ../shared/data, when present (the
fixtures shared with benches/ are in the repository's root conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session")
def holidays(shared_data: Path):
    """The paper authors' 1491 Holidays HeW descriptors ``X (1491, 512)`` float32 (as stored,
    not normalised), the 500 query rows ``qidx`` and the ground truth (0-based)."""
    sio = pytest.importorskip("scipy.io", reason="scipy loads the MATLAB files")
    folder = shared_data / "holidays"
    if not (folder / "vecs_ho.mat").exists() or not (folder / "gnd_holidays.mat").exists():
        pytest.skip(f"Holidays files not found in {folder}")
    cells = sio.loadmat(str(folder / "vecs_ho.mat"))["vecs_ho"]
    X = np.stack([np.asarray(c, dtype=np.float32).ravel() for c in cells[0]])
    g = sio.loadmat(str(folder / "gnd_holidays.mat"))
    qidx = g["qidx"].ravel().astype(np.int64) - 1
    gnd = [
        {"ok": np.asarray(e["ok"]).ravel().astype(np.int64) - 1, "junk": np.asarray(e["junk"]).ravel().astype(np.int64) - 1}
        for e in g["gnd"].ravel()
    ]
    assert X.shape == (1491, 512) and len(qidx) == 500
    return X, qidx, gnd
