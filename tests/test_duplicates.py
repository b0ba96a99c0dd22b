"""Near-duplicate groups: the blocked Rust-search path against the brute-force NumPy reference
(exactly on data whose cosines are exact, across thresholds away from every score on random
data), layouts, dtypes, blocks, many duplicates per row (k grown), ties at the threshold,
degenerate sizes, invariants and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import heatsearch as hs
from heatsearch import reference as ref
from heatsearch.duplicates import DEFAULT_BLOCK, duplicate_groups
from heatsearch.errors import InvalidDTypeError, InvalidInputError
from helpers import LAYOUTS, layouts, unit_rows

DTYPES = [np.float32, np.float64]


def quarter_rows(rng: np.random.Generator, n: int, d: int, dtype, distinct: int = 0) -> np.ndarray:
    """Unit rows with four entries of +-1/2 (the rest 0): every cosine is a multiple of 1/4,
    exact in float32 whatever the summation order, and many tie. ``distinct``: the rows are
    drawn from that many vectors only (so a row can have many exact copies)."""
    m = distinct or n
    base = np.zeros((m, d))
    for row in base:
        cols = rng.choice(d, size=4, replace=False)
        row[cols] = rng.choice([-0.5, 0.5], size=4)
    return base[rng.integers(0, m, size=n)].astype(dtype)


def assert_same_groups(got, want, *, exact: bool) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.rows, w.rows)
        assert g.rows.dtype == np.int64 and g.pairs.dtype == np.int64 and g.scores.dtype == np.float64
        if exact:
            np.testing.assert_array_equal(g.pairs, w.pairs)
            np.testing.assert_array_equal(g.scores, w.scores)
        else:  # near-equal scores may swap places: the same set of pairs, the same scores
            assert {tuple(p) for p in g.pairs.tolist()} == {tuple(p) for p in w.pairs.tolist()}
            np.testing.assert_allclose(g.scores, w.scores, rtol=0, atol=1e-5)


def assert_groups_valid(X: np.ndarray, groups, threshold: float) -> None:
    """Everything a result must be, from the float64 score matrix: pairs at or above the
    threshold inside one group and all listed, none across groups, groups disjoint and
    connected, sorted largest first, singletons omitted."""
    S = X.astype(np.float64) @ X.astype(np.float64).T
    n = X.shape[0]
    seen = np.full(n, -1)
    for gi, g in enumerate(groups):
        assert len(g) >= 2 and np.all(np.diff(g.rows) > 0)
        assert np.all(seen[g.rows] == -1)
        seen[g.rows] = gi
        assert np.all(g.pairs[:, 0] < g.pairs[:, 1])
        assert np.all(np.isin(g.pairs, g.rows))
        assert np.all(np.diff(g.scores) <= 0)
        np.testing.assert_allclose(g.scores, S[g.pairs[:, 0], g.pairs[:, 1]], atol=1e-5)
        assert g.pairs.shape[0] >= len(g) - 1
        assert g.complete == (g.pairs.shape[0] == len(g) * (len(g) - 1) // 2)
        touching = [g.scores[(g.pairs == r).any(axis=1)] for r in g.rows]
        np.testing.assert_array_equal(g.nearest, [t.max() for t in touching])
    sizes = [len(g) for g in groups]
    assert sizes == sorted(sizes, reverse=True)
    # Every clearly linked pair is in one group and listed; no clearly unlinked pair is.
    listed = {tuple(p) for g in groups for p in g.pairs.tolist()}
    i, j = np.triu_indices(n, k=1)
    clear_in = S[i, j] >= threshold + 1e-5
    for a, b in zip(i[clear_in], j[clear_in]):
        assert seen[a] == seen[b] != -1 and (a, b) in listed
    for a, b in zip(i[S[i, j] < threshold - 1e-5], j[S[i, j] < threshold - 1e-5]):
        assert (a, b) not in listed


THRESHOLDS = [-1.0, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,distinct", [(1, 8, 0), (2, 8, 1), (7, 8, 0), (60, 8, 0), (200, 10, 5), (300, 12, 40)])
@pytest.mark.parametrize("block", [1, 7, DEFAULT_BLOCK])
def test_exactly_the_reference_on_exact_cosines(dtype, n, d, distinct, block):
    """Cosines that are multiples of 1/4 tie a lot and sit exactly on the thresholds (a pair
    scoring exactly the threshold is linked); (200, 10, 5): every row has about 40 exact
    copies, more than the first search's k, so k is grown."""
    rng = np.random.default_rng(n * 31 + d + distinct)
    X = quarter_rows(rng, n, d, dtype, distinct)
    for t in THRESHOLDS:
        got = duplicate_groups(X, t, block=block)
        assert_same_groups(got, ref.duplicate_groups(X, t), exact=True)
        assert_groups_valid(X, got, t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_the_reference_on_random_data(dtype, layout):
    """Random unit rows with planted near-copies; thresholds midway between two consecutive
    scores (so rounding cannot move a pair across), from -1 to 1."""
    rng = np.random.default_rng(7)
    base = unit_rows(rng, 80, 16, np.float64)
    noisy = base[rng.integers(0, 80, 60)] + 0.15 * rng.standard_normal((60, 16))
    X64 = np.concatenate([base, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)])
    X = layouts(X64.astype(dtype))[layout]
    S = np.sort((X64 @ X64.T)[np.triu_indices(140, k=1)])
    gaps = np.flatnonzero(np.diff(S) > 1e-3)
    for g in gaps[np.linspace(0, gaps.size - 1, 12).astype(int)]:
        t = float((S[g] + S[g + 1]) / 2)
        got = duplicate_groups(X, t, block=13)
        assert_same_groups(got, ref.duplicate_groups(X, t), exact=False)
        assert_groups_valid(X, got, t)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 6),
    copies=st.integers(0, 3),
    threshold=st.floats(-1.0, 1.0),
    block=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_invariants(n, d, copies, threshold, block, seed):
    """Any data, threshold and block: a valid grouping, the same as one block of all rows."""
    rng = np.random.default_rng(seed)
    X = unit_rows(rng, n, d, np.float64)
    if copies:
        X = np.concatenate([X, X[rng.integers(0, n, copies)]])
    got = duplicate_groups(X, threshold, block=block)
    assert_groups_valid(X, got, threshold)
    assert_same_groups(got, duplicate_groups(X, threshold, block=X.shape[0]), exact=True)


def test_a_chain_is_one_incomplete_group():
    """A ~ B and B ~ C above the threshold, A ~ C below: one group of three, two links."""
    angle = np.deg2rad([0.0, 20.0, 40.0, 120.0])
    X = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    (group,) = duplicate_groups(X, float(np.cos(np.deg2rad(25))))
    np.testing.assert_array_equal(group.rows, [0, 1, 2])
    assert group.pairs.shape == (2, 2) and not group.complete
    assert group.min_score == pytest.approx(np.cos(np.deg2rad(20)))
    assert all(len(g) == 3 and g.complete for g in duplicate_groups(X, float(np.cos(np.deg2rad(45)))))


def test_groups_are_sorted_largest_first_then_by_lowest_row():
    X = np.eye(4)[[3, 0, 3, 1, 0, 3, 2]]  # rows 0,2,5 alike; 1,4 alike; 3 and 6 alone
    groups = duplicate_groups(X, 0.5)
    assert [g.rows.tolist() for g in groups] == [[0, 2, 5], [1, 4]]
    assert all(g.complete and g.min_score == g.max_score == 1.0 for g in groups)


def test_one_row_and_no_links_give_no_group():
    assert duplicate_groups(np.ones((1, 3)) / np.sqrt(3), -1.0) == []
    assert duplicate_groups(np.eye(5), 0.5) == []


def test_zero_rows_score_zero_with_everything():
    X = np.concatenate([np.eye(3), np.zeros((1, 3))])
    assert duplicate_groups(X, 0.001) == []
    (group,) = duplicate_groups(X, 0.0)
    np.testing.assert_array_equal(group.rows, [0, 1, 2, 3])


def test_identical_rows_reach_threshold_one_in_float64():
    X = quarter_rows(np.random.default_rng(3), 10, 8, np.float64, distinct=4)
    groups = duplicate_groups(X, 1.0)
    assert groups and all(g.complete and g.min_score == 1.0 for g in groups)
    assert_same_groups(groups, ref.duplicate_groups(X, 1.0), exact=True)


@pytest.mark.parametrize("impl", [duplicate_groups, ref.duplicate_groups], ids=["rust", "reference"])
@pytest.mark.parametrize(
    "X,threshold,block,error,match",
    [
        (np.empty((0, 4)), 0.5, 16, InvalidInputError, "at least one row"),
        (np.ones(4) / 2, 0.5, 16, InvalidInputError, "2-D array"),
        (np.eye(3, dtype=np.int64), 0.5, 16, InvalidDTypeError, "float32 or float64"),
        (np.eye(3) * 2, 0.5, 16, InvalidInputError, "row 0 of norm 2 and 2 more"),
        (np.array([[1.0, 0.0], [0.5, 0.5]]), 0.5, 16, InvalidInputError, "L2-normalised rows"),
        (np.array([[1.0, 0.0], [np.nan, 0.0]]), 0.5, 16, InvalidInputError, "NaN"),
        (np.eye(3), 1.5, 16, InvalidInputError, r"in \[-1, 1\].*got 1.5"),
        (np.eye(3), -1.01, 16, InvalidInputError, r"in \[-1, 1\]"),
        (np.eye(3), float("nan"), 16, InvalidInputError, "finite"),
        (np.eye(3), "0.8", 16, InvalidDTypeError, "threshold must be a real number, got str"),
        (np.eye(3), True, 16, InvalidDTypeError, "threshold must be a real number"),
        (np.eye(3), 0.5, 0, InvalidInputError, "block must be >= 1"),
        (np.eye(3), 0.5, 2.0, InvalidDTypeError, "block must be an int"),
    ],
)
def test_errors_say_what_was_expected(impl, X, threshold, block, error, match):
    with pytest.raises(error, match=match):
        impl(X, threshold, block=block)


def test_exported_from_the_package():
    assert hs.duplicate_groups is duplicate_groups
    assert hs.DuplicateGroup is type(duplicate_groups(np.eye(2)[[0, 0]], 0.5)[0])
