"""HeR: Rust vs the NumPy reference (dense inverse per query), side by side, at the paper's
``k = 800`` with ``d = 512`` float32 descriptors: 20 queries per call over a synthetic
database of clustered unit vectors (4000 x 512), first pass = exact inner-product top 800.

Per-query time = median / 20 (``extra_info["queries"]``). The Rust path runs the queries in
parallel on heatsearch's pool (all cores), the reference one after the other with NumPy's
multi-threaded BLAS: both use the whole machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from heatsearch import reference as ref
from heatsearch.rerank import heat_rerank

N, D, K, QUERIES = 4000, 512, 800, 20
IMPLS = {"rust": heat_rerank, "reference": ref.heat_rerank}


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, D))
    X = centres[rng.integers(0, 40, N)] + 1.5 * rng.standard_normal((N, D))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    Q = X[rng.choice(N, QUERIES, replace=False)] + np.float32(0.02) * rng.standard_normal((QUERIES, D)).astype(np.float32)
    Q = (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)
    sims = Q @ X.T
    ranks = np.argsort(-sims, axis=1, kind="stable")[:, :K]
    return X, Q, ranks, np.take_along_axis(sims, ranks, axis=1)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_heat_rerank_k800(benchmark, case, impl):
    benchmark.group = f"heat_rerank depth={K} d={D} float32, {QUERIES} queries"
    benchmark.extra_info.update(depth=K, d=D, queries=QUERIES, dtype="float32")
    X, Q, ranks, sims = case
    rounds = 3 if impl == "reference" else 15
    r, s = benchmark.pedantic(IMPLS[impl], args=(X, Q, ranks), kwargs={"depth": K, "scores": sims}, rounds=rounds, warmup_rounds=1)
    assert r.shape == (QUERIES, K) and s.dtype == np.float32
