"""Exact kNN graph: Rust against the NumPy reference, self exclusion, ties and duplicates,
degenerate sizes, layouts, thread-count independence, the KnnGraph object and errors."""

from __future__ import annotations

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import reference as ref
from heatsearch.errors import InvalidDTypeError, InvalidInputError
from heatsearch.knn import KnnGraph, knn_graph
from helpers import LAYOUTS, assert_rankings_close, integer_data, layouts, tolerance, unit_rows

DTYPES = [np.float32, np.float64]



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", [(1, 3), (2, 1), (5, 2), (40, 3), (700, 6), (2100, 5)])
@pytest.mark.parametrize("k", [1, 3, 50, 10**6])
def test_exactly_the_reference_on_integer_data(dtype, n, d, k):
    rng = np.random.default_rng(n * 3 + d)
    X = integer_data(rng, n, d, dtype, -1, 2)
    g, g_ref = knn_graph(X, neighbors=k), ref.knn_graph(X, neighbors=k)
    assert (g.n, g.neighbors) == (n, min(k, n - 1))
    assert g.indices.dtype == np.int64 and g.similarities.dtype == dtype
    np.testing.assert_array_equal(g.indices, g_ref.indices)
    np.testing.assert_array_equal(g.similarities, g_ref.similarities)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,k", [(300, 16, 10), (3000, 64, 50)])
def test_matches_the_reference_on_random_data(dtype, n, d, k):
    rng = np.random.default_rng(n)
    X = unit_rows(rng, n, d, dtype)
    g, g_ref = knn_graph(X, neighbors=k), ref.knn_graph(X, neighbors=k)
    assert_rankings_close(g.indices, g.similarities, g_ref.indices, g_ref.similarities, tolerance(dtype))
    assert not (g.indices == np.arange(n)[:, None]).any()
    assert np.all(np.diff(g.similarities, axis=1) <= 0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(layout):
    rng = np.random.default_rng(1)
    X = integer_data(rng, 500, 7, np.float64)
    g = knn_graph(layouts(X)[layout], neighbors=12)
    g0 = knn_graph(X, neighbors=12)
    np.testing.assert_array_equal(g.indices, g0.indices)
    np.testing.assert_array_equal(g.similarities, g0.similarities)


def test_duplicates_are_neighbours_and_self_is_not():
    rng = np.random.default_rng(2)
    X = unit_rows(rng, 30, 5, np.float32)
    X[[4, 9, 20]] = X[12]
    X[[0, 1]] = 0
    g = knn_graph(X, neighbors=3)
    np.testing.assert_array_equal(g.indices[12], [4, 9, 20])
    np.testing.assert_array_equal(g.indices[4], [9, 12, 20])
    np.testing.assert_array_equal(g.indices[20], [4, 9, 12])
    # A zero vector's similarities are all 0: its neighbours are the lowest other indices.
    np.testing.assert_array_equal(g.indices[0], [1, 2, 3])
    np.testing.assert_array_equal(g.indices[1], [0, 2, 3])
    np.testing.assert_array_equal(g.similarities[0], 0)


def test_degenerate_sizes():
    g1 = knn_graph(np.ones((1, 4), np.float32))
    assert (g1.n, g1.neighbors) == (1, 0) and g1.indices.shape == (1, 0)
    g2 = knn_graph(np.array([[1.0], [2.0]]), neighbors=5)
    np.testing.assert_array_equal(g2.indices, [[1], [0]])
    np.testing.assert_array_equal(g2.similarities, [[2.0], [2.0]])


def test_thread_count_does_not_change_the_result(restore_threads):
    rng = np.random.default_rng(4)
    X = unit_rows(rng, 3000, 24, np.float32)
    X[100:160] = X[7]
    out = []
    for t in (1, 2, 3):
        hs.set_num_threads(t)
        out.append(knn_graph(X, neighbors=20))
    for g in out[1:]:
        np.testing.assert_array_equal(g.indices, out[0].indices)
        np.testing.assert_array_equal(g.similarities, out[0].similarities)


def test_graph_object():
    g = knn_graph(np.eye(4, dtype=np.float32), neighbors=2)
    assert repr(g) == "KnnGraph(n=4, neighbors=2, dtype=float32)"
    assert not g.indices.flags.writeable and not g.similarities.flags.writeable
    with pytest.raises(ValueError):
        g.indices[0, 0] = 3
    # A graph from the user's own neighbour lists (faiss lists the item itself first).
    idx = np.array([[0, 1], [1, 0], [2, 1]], dtype=np.int32)
    sims = np.ones((3, 2))
    mine = KnnGraph(idx, sims)
    assert mine.indices.dtype == np.int64 and (mine.n, mine.neighbors) == (3, 2)
    idx[0, 0] = 2
    assert mine.indices[0, 0] == 0  # copied
    with pytest.raises(InvalidDTypeError, match="integer"):
        KnnGraph(idx.astype(float), sims)
    with pytest.raises(InvalidInputError, match="shape of indices"):
        KnnGraph(idx, sims[:, :1])
    with pytest.raises(InvalidInputError, match=r"\[0, 3\)"):
        KnnGraph(np.array([[1], [3], [0]]), np.ones((3, 1)))
    with pytest.raises(InvalidInputError, match="twice in a row"):
        KnnGraph(np.array([[1, 1], [0, 2], [0, 1]]), np.ones((3, 2)))
    with pytest.raises(InvalidInputError, match="finite"):
        KnnGraph(np.array([[1], [0], [0]]), np.array([[1.0], [np.nan], [0.0]]))


@pytest.mark.parametrize("impl", [knn_graph, ref.knn_graph], ids=["rust", "reference"])
def test_bad_input(impl):
    X = np.ones((6, 3), np.float32)
    with pytest.raises(InvalidInputError, match=">= 1"):
        impl(X, neighbors=0)
    with pytest.raises(InvalidDTypeError, match="int"):
        impl(X, neighbors=2.5)
    with pytest.raises(InvalidDTypeError):
        impl(X.astype(np.float16), neighbors=2)
    with pytest.raises(InvalidInputError, match="2-D"):
        impl(X[0], neighbors=2)
    X[5, 2] = np.nan
    with pytest.raises(InvalidInputError, match="X must be finite"):
        impl(X, neighbors=2)


@pytest.mark.parametrize("impl", [knn_graph, ref.knn_graph])
def test_an_item_whose_own_product_overflows_still_has_neighbours(impl):
    """Only the products with OTHER items are scores (found by the fuzz suite: the reference
    counted x_0 . x_0 = inf as an overflow where the Rust path, rightly, did not)."""
    X = np.array([[1e300], [-0.5], [0.25]])
    g = impl(X, neighbors=1)
    np.testing.assert_array_equal(g.indices, [[2], [2], [0]])
