"""Exact search: heatsearch (Rust: blocked faer GEMM fused with the top-k selection) against
NumPy's best plain code (``S = Q @ X.T``, ``np.argpartition``, a sort of the top k only), at
n = 100k database vectors, d = 512, 100 queries, k = 100, float32; plus the bare NumPy
product ``Q @ X.T`` (the yardstick of the effective GFLOP/s in ``tools/bench_report.py``).

    python -m pytest benches/test_bench_search.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest

from heatsearch.search import search

N, D, NQ, K = 100_000, 512, 100, 100
FLOPS = 2 * N * D * NQ


def numpy_search(X, Q, k):
    """The fastest plain NumPy: one GEMM, argpartition without negating S, sort of k only."""
    S = Q @ X.T
    n = S.shape[1]
    idx = np.argpartition(S, n - k, axis=1)[:, n - k :]
    s = np.take_along_axis(S, idx, axis=1)
    order = np.argsort(-s, axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(s, order, axis=1)


IMPLS = {"rust": search, "numpy": numpy_search}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = rng.standard_normal((NQ, D), dtype=np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    return X, Q


@pytest.mark.parametrize("impl", list(IMPLS))
def test_search(benchmark, data, impl):
    benchmark.group = f"search n={N} d={D} nq={NQ} k={K} float32"
    benchmark.extra_info.update(n=N, d=D, nq=NQ, k=K, flops=FLOPS)
    X, Q = data
    ranks, scores = benchmark.pedantic(IMPLS[impl], args=(X, Q, K), rounds=15, warmup_rounds=2)
    assert ranks.shape == scores.shape == (NQ, K)
    expected = numpy_search(X, Q, K)
    assert (ranks == expected[0]).mean() > 0.999  # the same up to near-ties
    np.testing.assert_allclose(scores, expected[1], rtol=1e-5, atol=1e-6)


def test_numpy_matmul_f32(benchmark, data):
    """NumPy's float32 GEMM of the same product, the yardstick of the effective throughput."""
    benchmark.group = "numpy float32 matmul"
    benchmark.extra_info.update(n=N, d=D, nq=NQ, flops=FLOPS)
    X, Q = data
    out = benchmark.pedantic(np.matmul, args=(Q, X.T), rounds=15, warmup_rounds=2)
    assert out.shape == (NQ, N)
