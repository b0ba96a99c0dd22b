"""Diffusion re-ranking (Iscen et al. 2017, docs/ALGORITHM.md section 3): Rust against the SciPy
reference (scores to a relative tolerance, rankings equal up to near-ties, the same mAP),
parameters, truncation semantics, degenerate inputs, thread-count independence, errors."""

from __future__ import annotations

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import reference as ref
from heatsearch.diffusion import diffusion_rerank
from heatsearch.errors import InvalidDTypeError, InvalidInputError
from heatsearch.eval.evaluate import compute_map
from heatsearch.knn import KnnGraph, knn_graph
from heatsearch.search import search
from helpers import LAYOUTS, layouts, unit_rows

pytest.importorskip("scipy", reason="the diffusion reference needs SciPy")

DTYPES = [np.float32, np.float64]



def clustered(seed, n, d, nq, clusters=12, spread=0.6, dtype=np.float32):
    """Unit vectors around ``clusters`` centres (a manifold-ish structure diffusion exploits),
    queries drawn the same way; returns X, Q and each query's ground truth (its cluster)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng, clusters, d, np.float64)
    label = rng.integers(0, clusters, n)
    X = centres[label] + spread * rng.standard_normal((n, d)) / np.sqrt(d)
    qlabel = rng.integers(0, clusters, nq)
    Q = centres[qlabel] + spread * rng.standard_normal((nq, d)) / np.sqrt(d)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    gnd = [{"ok": np.nonzero(label == c)[0]} for c in qlabel]
    return X.astype(dtype), Q.astype(dtype), gnd


def assert_diffusions_agree(a, b, rtol):
    """Scores close position by position; indices equal except at near-ties."""
    (r1, s1), (r2, s2) = a, b
    assert r1.shape == r2.shape and r1.dtype == r2.dtype == np.int64 and s1.dtype == s2.dtype
    scale = np.abs(s2).max(axis=1, keepdims=True) + 1e-300
    np.testing.assert_allclose(s1 / scale, s2 / scale, rtol=rtol, atol=rtol)
    diff = r1 != r2
    if diff.any():
        np.testing.assert_allclose(s1[diff] / np.broadcast_to(scale, s1.shape)[diff],
                                   s2[diff] / np.broadcast_to(scale, s2.shape)[diff], atol=rtol)
        assert diff.mean() < 0.02
    for row1, row2 in zip(r1, r2):
        assert set(row1) == set(row2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"truncation": None},
        {"truncation": 1},
        {"truncation": 40, "query_neighbors": 3},
        {"alpha": 0.0},
        {"alpha": 0.5, "gamma": 1.0},
        {"iterations": 0},
        {"iterations": 1},
        {"iterations": 200, "tol": 0.0},
        {"query_neighbors": 5000},
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults",
)
def test_same_graph_and_ranks_as_the_reference(dtype, params):
    X, Q, _ = clustered(0, 1500, 32, 9, dtype=dtype)
    g = knn_graph(X, neighbors=20)
    r0, s0 = search(X, Q)
    got = diffusion_rerank(X, Q, r0, scores=s0, graph=g, **params)
    want = ref.diffusion_rerank(X, Q, r0, scores=s0, graph=g, **params)
    assert_diffusions_agree(got, want, 1e-5 if dtype == np.float32 else 1e-9)
    t = params.get("truncation", 1000) or 1500
    # Beyond the truncation: the first-pass order and scores, untouched.
    np.testing.assert_array_equal(got[0][:, t:], r0[:, t:])
    np.testing.assert_array_equal(got[1][:, t:], s0[:, t:])
    # The truncated part is a permutation of the first-pass top t, by non-increasing score.
    np.testing.assert_array_equal(np.sort(got[0][:, :t]), np.sort(r0[:, :t]))
    assert np.all(np.diff(got[1][:, :t].astype(np.float64), axis=1) <= 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_end_to_end_same_map_as_the_reference(dtype):
    """graph and first pass built inside: the same mAP (and scores up to rounding)."""
    X, Q, gnd = clustered(1, 2000, 64, 25, clusters=15, spread=1.0, dtype=dtype)
    got = diffusion_rerank(X, Q, truncation=500)
    want = ref.diffusion_rerank(X, Q, truncation=500)
    assert_diffusions_agree(got, want, 1e-4 if dtype == np.float32 else 1e-9)
    m_got, m_want = compute_map(got[0], gnd).map, compute_map(want[0], gnd).map
    assert abs(m_got - m_want) < 1e-3
    # Diffusion helps on clustered data (the reason it exists).
    assert m_got > compute_map(search(X, Q)[0], gnd).map


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(layout):
    X, Q, _ = clustered(2, 400, 16, 5, dtype=np.float64)
    g = knn_graph(X, neighbors=10)
    r0, _ = search(X, Q, 300)
    base = diffusion_rerank(X, Q, r0, graph=g, truncation=100)
    got = diffusion_rerank(layouts(X)[layout], layouts(Q)[layout], layouts(r0)[layout], graph=g, truncation=100)
    np.testing.assert_array_equal(got[0], base[0])
    np.testing.assert_array_equal(got[1], base[1])


def test_partial_rankings_and_scores():
    """m < n, ranks from elsewhere (not by inner product), scores given or recomputed."""
    X, Q, _ = clustered(3, 600, 16, 4, dtype=np.float64)
    g = knn_graph(X, neighbors=15)
    rng = np.random.default_rng(0)
    ranks = np.stack([rng.permutation(600)[:250] for _ in range(4)]).astype(np.int32)
    got = diffusion_rerank(X, Q, ranks, graph=g, truncation=100)
    want = ref.diffusion_rerank(X, Q, ranks, graph=g, truncation=100)
    assert_diffusions_agree(got, want, 1e-9)
    # Beyond the truncation the inner products are returned.
    np.testing.assert_allclose(got[1][:, 100:], np.einsum("qd,qmd->qm", Q, X[ranks[:, 100:]]), rtol=1e-12, atol=1e-15)
    given = diffusion_rerank(X, Q, ranks, scores=np.full(ranks.shape, 7.0, np.float32), graph=g, truncation=100)
    np.testing.assert_array_equal(given[1][:, 100:], 7.0)
    np.testing.assert_array_equal(given[0], got[0])


def test_truncation_uses_the_induced_subgraph():
    """An item linked to the query's neighbours only through an item outside the truncation
    gets no heat: links leaving the top t are cut."""
    # 2-NN lists give the mutual links 0 - 1 and 1 - 2 only (x0 . x2 < 0, item 3 is orthogonal
    # to all: its links have weight 0): a chain 0 - 1 - 2.
    X = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])
    Q = np.array([[1.0, 0.0, 0.0]])
    g = knn_graph(X, neighbors=2)
    full = diffusion_rerank(X, Q, np.array([[0, 1, 2, 3]]), graph=g, truncation=None, query_neighbors=1)
    cut = diffusion_rerank(X, Q, np.array([[0, 2, 1, 3]]), graph=g, truncation=2, query_neighbors=1)
    assert full[1][0, list(full[0][0]).index(2)] > 0  # heat reaches 2 through 1
    assert list(cut[0][0]) == [0, 2, 1, 3]
    assert cut[1][0, 1] == 0.0  # 2's only link (to 1) leaves the truncation
    for impl in (diffusion_rerank, ref.diffusion_rerank):
        r = impl(X, Q, np.array([[0, 2, 1, 3]]), graph=g, truncation=2, query_neighbors=1)
        assert r[1][0, 1] == 0.0


@pytest.mark.parametrize("impl", [diffusion_rerank, ref.diffusion_rerank], ids=["rust", "reference"])
def test_degenerate_inputs(impl):
    # One item.
    r, s = impl(np.ones((1, 3), np.float32), np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(r, [[0], [0]])
    assert s.dtype == np.float32
    # All-zero vectors: no edge, y = 0, f = 0: first-pass order (index order) with scores 0.
    r, s = impl(np.zeros((6, 4)), np.zeros((1, 4)))
    np.testing.assert_array_equal(r, [np.arange(6)])
    np.testing.assert_array_equal(s, 0.0)
    # Empty rankings.
    r, s = impl(np.eye(3), np.eye(3)[:2], np.zeros((2, 0), np.int64))
    assert r.shape == s.shape == (2, 0)
    # Duplicated database vectors tie: first-pass order among them.
    X = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [0.0, 1.0]])
    r, s = impl(X, np.array([[0.6, 0.8]]), neighbors=2, query_neighbors=2)
    assert list(r[0][:2]) == [1, 2] and s[0][0] == s[0][1]


def test_thread_count_does_not_change_the_result(restore_threads):
    X, Q, _ = clustered(4, 3000, 32, 16)
    out = []
    for t in (1, 2, 3):
        hs.set_num_threads(t)
        out.append(diffusion_rerank(X, Q, neighbors=30))
    for r, s in out[1:]:
        np.testing.assert_array_equal(r, out[0][0])
        np.testing.assert_array_equal(s, out[0][1])


def test_graph_of_another_dtype_and_reuse():
    X, Q, _ = clustered(5, 500, 16, 3, dtype=np.float32)
    g64 = knn_graph(X.astype(np.float64), neighbors=10)
    g32 = KnnGraph(g64.indices, g64.similarities.astype(np.float32))
    a = diffusion_rerank(X, Q, graph=g64)
    b = diffusion_rerank(X, Q, graph=g32)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].dtype == np.float32


@pytest.mark.parametrize("impl", [diffusion_rerank, ref.diffusion_rerank], ids=["rust", "reference"])
def test_bad_input(impl):
    X = unit_rows(np.random.default_rng(0), 20, 4, np.float32)
    Q = X[:3].copy()
    ranks = np.tile(np.arange(20), (3, 1))
    g = knn_graph(X, neighbors=5)
    cases = [
        (InvalidInputError, "d = 4", dict(Q=np.ones((3, 5), np.float32))),
        (InvalidDTypeError, "dtype of X", dict(Q=Q.astype(np.float64))),
        (InvalidDTypeError, "integer", dict(ranks=ranks.astype(float))),
        (InvalidInputError, "shape \\(nq, m\\)", dict(ranks=ranks[:2])),
        (InvalidInputError, "shape \\(nq, m\\)", dict(ranks=np.zeros((3, 21), np.int64))),
        (InvalidInputError, "\\[0, 20\\)", dict(ranks=np.where(ranks == 5, 20, ranks))),
        (InvalidInputError, "\\[0, 20\\)", dict(ranks=np.where(ranks == 5, -1, ranks))),
        (InvalidInputError, "twice", dict(ranks=np.where(ranks == 5, 6, ranks))),
        (InvalidInputError, "without ranks", dict(scores=np.ones((3, 20)))),
        (InvalidInputError, "shape of ranks", dict(ranks=ranks, scores=np.ones((3, 19)))),
        (InvalidInputError, "one row per database item", dict(graph=knn_graph(X[:10], neighbors=3))),
        (InvalidDTypeError, "KnnGraph", dict(graph=(g.indices, g.similarities))),
        (InvalidInputError, "alpha", dict(alpha=1.0)),
        (InvalidInputError, "alpha", dict(alpha=-0.1)),
        (InvalidInputError, "gamma", dict(gamma=0.0)),
        (InvalidInputError, "tol", dict(tol=-1e-6)),
        (InvalidInputError, "query_neighbors", dict(query_neighbors=0)),
        (InvalidInputError, "truncation", dict(truncation=0)),
        (InvalidInputError, "iterations", dict(iterations=-1)),
        (InvalidInputError, "neighbors must", dict(neighbors=0)),
        (InvalidDTypeError, "alpha", dict(alpha="0.9")),
        (InvalidInputError, "finite", dict(alpha=float("nan"))),
    ]
    for exc, match, kw in cases:
        args = {"X": X, "Q": Q, "ranks": None, **kw}
        Xa, Qa, ra = args.pop("X"), args.pop("Q"), args.pop("ranks")
        with pytest.raises(exc, match=match):
            impl(Xa, Qa, ra, **args)
    Xb = X.copy()
    Xb[7, 1] = np.inf
    with pytest.raises(InvalidInputError, match="finite"):
        impl(Xb, Q, ranks, graph=g)
    Qb = Q.copy()
    Qb[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="finite"):
        impl(X, Qb, ranks, graph=g)
