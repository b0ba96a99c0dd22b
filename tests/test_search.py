"""Exact inner-product search: the Rust path against the NumPy reference (exactly on
integer data, up to near-ties on random data), layouts, dtypes, degenerate sizes, ties,
thread-count independence and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import heatsearch as hs
from heatsearch import reference as ref
from heatsearch.errors import HeatsearchError, InvalidDTypeError, InvalidInputError
from heatsearch.search import search
from helpers import (
    LAYOUTS,
    assert_rankings_close,
    assert_valid_ranking,
    integer_data,
    layouts,
    tolerance,
    unit_rows,
)

DTYPES = [np.float32, np.float64]



# (n, d, nq): tiny, one block, several database blocks and chunks, several query blocks (> 256).
SHAPES = [(1, 1, 1), (1, 5, 3), (7, 3, 1), (100, 16, 5), (1000, 64, 17), (5000, 8, 2), (3000, 33, 300)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,nq", SHAPES)
def test_exactly_the_reference_on_integer_data(dtype, n, d, nq):
    """Small-integer vectors: exact products, many ties; ranks and scores must be identical."""
    rng = np.random.default_rng(n + d + nq)
    X, Q = integer_data(rng, n, d, dtype), integer_data(rng, nq, d, dtype)
    for k in sorted({0, 1, 5, n - 1, n, n + 3} - {-1}) + [None]:
        r, s = search(X, Q, k)
        r_ref, s_ref = ref.search(X, Q, k)
        m = n if k is None else min(k, n)
        assert r.shape == s.shape == (nq, m)
        assert r.dtype == np.int64 and s.dtype == dtype
        np.testing.assert_array_equal(r, r_ref)
        np.testing.assert_array_equal(s, s_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,nq", [(300, 24, 7), (4000, 128, 40), (2500, 50, 270)])
@pytest.mark.parametrize("k", [1, 10, 100, None])
def test_matches_the_reference_on_random_data(dtype, n, d, nq, k):
    rng = np.random.default_rng(n * 7 + nq)
    X, Q = unit_rows(rng, n, d, dtype), unit_rows(rng, nq, d, dtype)
    r, s = search(X, Q, k)
    r_ref, s_ref = ref.search(X, Q, k)
    assert_rankings_close(r, s, r_ref, s_ref, tolerance(dtype))
    exact = Q.astype(np.float64) @ X.astype(np.float64).T
    assert_valid_ranking(r, s, lambda i, rr: exact[i, rr])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xl", LAYOUTS)
@pytest.mark.parametrize("ql", LAYOUTS)
def test_layouts_give_the_same_result(dtype, xl, ql):
    rng = np.random.default_rng(3)
    X, Q = integer_data(rng, 700, 20, dtype), integer_data(rng, 9, 20, dtype)
    expected = search(X, Q, 25)
    got = search(layouts(X)[xl], layouts(Q)[ql], 25)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_duplicates_and_zero_vectors_tie_to_the_lower_index(dtype):
    rng = np.random.default_rng(5)
    X = unit_rows(rng, 50, 8, dtype)
    X[[3, 17, 40]] = X[29]  # four copies of one vector
    X[[5, 6, 45]] = 0  # zero vectors: score 0 (or -0.0) for every query
    Q = np.concatenate([X[29:30], -X[29:30], np.zeros((1, 8), dtype)])
    r, s = search(X, Q, None)
    assert list(r[0, :4]) == [3, 17, 29, 40]
    assert list(r[1, -4:]) == [3, 17, 29, 40]
    np.testing.assert_array_equal(r[2], np.arange(50))  # all scores 0: index order
    zeros = [list(row).index(5) for row in r[:2]]
    for row, p in zip(r[:2], zeros):
        assert list(row[p : p + 2]) == [5, 6]
    np.testing.assert_array_equal(search(X, Q, 3)[0], r[:, :3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_degenerate_sizes(dtype):
    X = np.array([[1.0, 2.0]], dtype)
    Q = np.array([[1.0, 1.0], [0.0, -1.0]], dtype)
    r, s = search(X, Q)
    np.testing.assert_array_equal(r, [[0], [0]])
    np.testing.assert_array_equal(s, np.array([[3.0], [-2.0]], dtype))
    r0, s0 = search(X, Q, 0)
    assert r0.shape == s0.shape == (2, 0) and r0.dtype == np.int64 and s0.dtype == dtype
    rq, sq = search(X, Q[:0], 5)
    assert rq.shape == (0, 1)
    big = search(X, Q, 10**30)
    np.testing.assert_array_equal(big[0], r)


def test_thread_count_does_not_change_the_result(restore_threads):
    rng = np.random.default_rng(11)
    X, Q = unit_rows(rng, 20000, 48, np.float32), unit_rows(rng, 37, 48, np.float32)
    X[1000:1100] = X[0]  # ties across chunks
    out = []
    for t in (1, 2, 3):
        hs.set_num_threads(t)
        out.append(search(X, Q, 50))
    for r, s in out[1:]:
        np.testing.assert_array_equal(r, out[0][0])
        np.testing.assert_array_equal(s, out[0][1])


@pytest.mark.parametrize("impl", [search, ref.search])
def test_overflowing_products_are_an_error(impl):
    """Finite vectors whose inner products overflow: a clear error (inf scores ranked the
    overflowed items anyhow, and NaN ones last)."""
    X = np.full((4, 8), 1e30, np.float32)
    X[2] = -1e30
    Q = np.full((1, 8), 1e30, np.float32)
    with pytest.raises(InvalidInputError, match="inner products of Q and X overflow float32"):
        impl(X, Q, None)
    r, s = impl(X.astype(np.float64), Q.astype(np.float64), None)
    assert list(r[0]) == [0, 1, 3, 2] and np.isfinite(s).all()


@given(
    n=st.integers(1, 60),
    d=st.integers(1, 6),
    nq=st.integers(1, 5),
    k=st.one_of(st.none(), st.integers(0, 70)),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_invariants(n, d, nq, k, seed):
    """Any shape: same as the reference on integer data (exact, ties by index)."""
    rng = np.random.default_rng(seed)
    X, Q = integer_data(rng, n, d, np.float32, -1, 1), integer_data(rng, nq, d, np.float32, -1, 1)
    r, s = search(X, Q, k)
    r_ref, s_ref = ref.search(X, Q, k)
    np.testing.assert_array_equal(r, r_ref)
    np.testing.assert_array_equal(s, s_ref)


@pytest.mark.parametrize("impl", [search, ref.search], ids=["rust", "reference"])
def test_bad_input(impl):
    X = np.ones((10, 4), np.float32)
    Q = np.ones((2, 4), np.float32)
    with pytest.raises(InvalidDTypeError, match="dtype of X"):
        impl(X, Q.astype(np.float64))
    with pytest.raises(InvalidDTypeError, match="float32 or float64"):
        impl(X.astype(np.int32), Q)
    with pytest.raises(InvalidInputError, match="d = 4 columns"):
        impl(X, np.ones((2, 3), np.float32))
    with pytest.raises(InvalidInputError, match="q\\[None, :\\]"):
        impl(X, Q[0])
    with pytest.raises(InvalidInputError, match="2-D"):
        impl(X[0], Q)
    with pytest.raises(InvalidInputError, match=">= 0"):
        impl(X, Q, -1)
    with pytest.raises(InvalidDTypeError, match="int"):
        impl(X, Q, 2.0)
    for where in [(0, 0), (9, 3), (4, 1)]:
        for bad in (np.nan, np.inf, -np.inf):
            Xb = X.copy()
            Xb[where] = bad
            with pytest.raises(InvalidInputError, match="X must be finite"):
                impl(Xb, Q, 3)
            with pytest.raises(InvalidInputError, match="X must be finite"):
                impl(Xb, Q, 0)
    Qb = Q.copy()
    Qb[1, 2] = np.nan
    with pytest.raises(InvalidInputError, match="Q must be finite"):
        impl(X, Qb)
    # They are ValueError / TypeError too.
    with pytest.raises(ValueError):
        impl(X, Q, -1)
    with pytest.raises(TypeError):
        impl(X, Q.astype(np.float64))
    assert issubclass(InvalidInputError, HeatsearchError)


def test_error_names_the_first_bad_entry():
    X = np.ones((3000, 4), np.float32)
    X[2500, 1] = np.nan
    X[2999, 0] = np.inf
    with pytest.raises(InvalidInputError, match="row 2500, column 1"):
        search(X, np.ones((3, 4), np.float32), 5)


@pytest.mark.parametrize("impl", [search, ref.search])
def test_vectors_of_no_dimension(impl):
    """d = 0 (found by the fuzz suite): every score is 0, ties go to the lower index; the
    Rust path used to panic in its few-row kernel (InternalError)."""
    X, Q = np.zeros((3, 0), np.float32), np.zeros((2, 0), np.float32)
    r, s = impl(X, Q)
    np.testing.assert_array_equal(r, [[0, 1, 2], [0, 1, 2]])
    assert s.dtype == np.float32 and not s.any()
