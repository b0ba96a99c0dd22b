"""Near-duplicate groups: heatsearch (all pairs through the blocked Rust search, k grown only
for rows with many duplicates, vectorised union-find) against the NumPy reference (the full
``X @ X.T``, ``O(n^2)`` memory), at n = 5000 unit rows of d = 512 (float32) of which 500 are
near-copies of others, threshold 0.9.

    python -m pytest benches/test_bench_duplicates.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest

from heatsearch import reference
from heatsearch.duplicates import duplicate_groups

N, D, COPIES, THRESHOLD = 5000, 512, 500, 0.9

IMPLS = {"rust": duplicate_groups, "numpy": reference.duplicate_groups}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D), dtype=np.float32)
    X[-COPIES:] = X[rng.integers(0, N - COPIES, COPIES)] + 0.2 * rng.standard_normal((COPIES, D), dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_duplicates(benchmark, data, impl):
    benchmark.group = f"duplicates n={N} d={D} threshold={THRESHOLD} float32"
    groups = benchmark.pedantic(IMPLS[impl], args=(data, THRESHOLD), rounds=3, warmup_rounds=1)
    assert sum(len(g) for g in groups) >= COPIES
