"""Tests of heatsearch.query_expansion: average QE, alpha-QE, alpha-DBA."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatsearch.errors import InvalidDTypeError, InvalidInputError
from heatsearch.postprocess import l2_normalize
from heatsearch.query_expansion import (
    alpha_database_augmentation,
    alpha_query_expansion,
    average_query_expansion,
)

DTYPES = [np.float32, np.float64]


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def random_unit(n: int, d: int, seed: int, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(rng.standard_normal((n, d))).astype(dtype)


def exact_ranks(X: np.ndarray, Q: np.ndarray) -> np.ndarray:
    return np.argsort(-(Q.astype(np.float64) @ X.astype(np.float64).T), axis=1, kind="stable")


def layouts(a: np.ndarray):
    big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), dtype=a.dtype)
    big[::2, ::3] = a
    return {"C": np.ascontiguousarray(a), "F": np.asfortranarray(a), "strided": big[::2, ::3]}


def brute_force_dba(X: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """alpha-DBA written out with a full stable sort per item (self left out by index)."""
    X = X.astype(np.float64)
    out = np.empty_like(X)
    for i in range(X.shape[0]):
        sims = X @ X[i]
        others = [j for j in np.argsort(-sims, kind="stable") if j != i][:k]
        v = X[i].copy()
        for j in others:
            v += max(sims[j], 0.0) ** alpha * X[j]
        out[i] = v
    return l2_normalize(out)


# Hand-worked data: unit vectors of the plane.
X_PLANE = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]])


# ---------------------------------------------------------------- average QE


@pytest.mark.parametrize("dtype", DTYPES)
def test_average_qe_by_hand(dtype):
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=dtype)
    Q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    ranks = np.array([[0, 1, 2], [1, 0, 2]])
    out = average_query_expansion(X, Q, ranks, neighbors=2)
    # q0: mean([1,0], [1,0], [0,1]) -> [2,1]/sqrt5; q1: mean([0,1], [0,1], [1,0]) -> [1,2]/sqrt5.
    assert out.dtype == dtype and out.shape == (2, 2)
    np.testing.assert_allclose(out, unit([[2.0, 1.0], [1.0, 2.0]]), rtol=1e-6)


def test_average_qe_k_zero_and_clamping():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    Q = np.array([[2.0, 0.0]])  # not normalised: k = 0 returns it normalised
    ranks = np.array([[0, 1, 2]])
    np.testing.assert_allclose(average_query_expansion(X, Q, ranks, neighbors=0), [[1.0, 0.0]])
    # k = 10 > m = 3: all three ranked items: [2,0] + [1,0] + [0,1] + [-1,0] = [2, 1].
    np.testing.assert_allclose(average_query_expansion(X, Q, ranks, neighbors=10), unit([[2.0, 1.0]]))
    # A ranking narrower than k: only its columns are used.
    np.testing.assert_allclose(average_query_expansion(X, Q, ranks[:, :1], neighbors=10), [[1.0, 0.0]])
    np.testing.assert_allclose(
        average_query_expansion(X, Q, np.zeros((1, 0), dtype=int), neighbors=10), [[1.0, 0.0]]
    )


def test_average_qe_default_k_is_10():
    X = random_unit(30, 4, seed=0)
    Q = random_unit(3, 4, seed=1)
    ranks = exact_ranks(X, Q)
    expected = unit(Q + X[ranks[:, :10]].sum(axis=1))
    np.testing.assert_allclose(average_query_expansion(X, Q, ranks), expected, rtol=1e-12)


def test_average_qe_zero_vectors_give_zero_not_nan():
    X = np.array([[0.0, 0.0], [1.0, 0.0]])
    Q = np.array([[0.0, 0.0]])
    out = average_query_expansion(X, Q, [[0, 1]], neighbors=1)
    np.testing.assert_array_equal(out, [[0.0, 0.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_average_qe_layouts_agree(dtype):
    X = random_unit(20, 5, seed=2, dtype=dtype)
    Q = random_unit(4, 5, seed=3, dtype=dtype)
    ranks = exact_ranks(X, Q)
    ref = average_query_expansion(X, Q, ranks, neighbors=4)
    for (nx, Xv), (nq, Qv) in zip(layouts(X).items(), layouts(Q).items()):
        out = average_query_expansion(Xv, Qv, np.asfortranarray(ranks), neighbors=4)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, ref, rtol=1e-6, err_msg=f"{nx}/{nq}")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(0, 6))
def test_average_qe_ignores_the_order_of_the_top_k(seed, k):
    rng = np.random.default_rng(seed)
    X = random_unit(12, 3, seed=seed)
    Q = random_unit(2, 3, seed=seed + 1)
    ranks = exact_ranks(X, Q)
    shuffled = ranks.copy()
    for row in shuffled:
        rng.shuffle(row[:k])
    np.testing.assert_allclose(
        average_query_expansion(X, Q, shuffled, neighbors=k), average_query_expansion(X, Q, ranks, neighbors=k),
        rtol=1e-12, atol=1e-15,
    )


# ---------------------------------------------------------------- alpha QE


def test_alpha_qe_by_hand():
    Q = np.array([[1.0, 0.0]])
    ranks = np.array([[0, 1, 2, 3]])  # similarities 1, 0.6, 0, -0.6
    # alpha = 3: weights 1, 0.216, 0, 0 (negative similarity clipped): q + x0 + 0.216 x1.
    out = alpha_query_expansion(X_PLANE, Q, ranks, neighbors=4, alpha=3)
    np.testing.assert_allclose(out, unit([[2.1296, 0.1728]]), rtol=1e-12)
    # alpha = 1: weights 1, 0.6, 0, 0.
    out = alpha_query_expansion(X_PLANE, Q, ranks, neighbors=4, alpha=1)
    np.testing.assert_allclose(out, unit([[2.36, 0.48]]), rtol=1e-12)
    # k = 1: only x0 (weight 1): [2, 0].
    np.testing.assert_allclose(alpha_query_expansion(X_PLANE, Q, ranks, neighbors=1), [[1.0, 0.0]])


def test_alpha_qe_defaults_are_k10_alpha3():
    X = random_unit(25, 4, seed=4)
    Q = random_unit(3, 4, seed=5)
    ranks = exact_ranks(X, Q)
    top = X[ranks[:, :10]]
    sims = np.einsum("qd,qkd->qk", Q, top)
    expected = unit(Q + np.einsum("qk,qkd->qd", np.maximum(sims, 0) ** 3, top))
    np.testing.assert_allclose(alpha_query_expansion(X, Q, ranks), expected, rtol=1e-12)


@pytest.mark.parametrize("k", [0, 1, 5, 30])
def test_alpha_zero_is_average_qe(k):
    X = random_unit(20, 6, seed=6)
    Q = random_unit(4, 6, seed=7)
    ranks = exact_ranks(X, Q)
    np.testing.assert_allclose(
        alpha_query_expansion(X, Q, ranks, neighbors=k, alpha=0),
        average_query_expansion(X, Q, ranks, neighbors=k),
        rtol=1e-12,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_alpha_qe_dtype_and_layouts(dtype):
    X = random_unit(15, 4, seed=8, dtype=dtype)
    Q = random_unit(3, 4, seed=9, dtype=dtype)
    ranks = exact_ranks(X, Q)
    ref = alpha_query_expansion(X.astype(np.float64), Q.astype(np.float64), ranks, neighbors=5)
    for (nx, Xv), (nq, Qv) in zip(layouts(X).items(), layouts(Q).items()):
        out = alpha_query_expansion(Xv, Qv, ranks, neighbors=5)
        assert out.dtype == dtype and out.shape == (3, 4)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6, err_msg=f"{nx}/{nq}")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(0, 8), alpha=st.floats(0.01, 8))
def test_alpha_qe_outputs_are_unit_vectors_in_the_query_half_space(seed, k, alpha):
    X = random_unit(10, 3, seed=seed)
    Q = random_unit(4, 3, seed=seed + 1)
    out = alpha_query_expansion(X, Q, exact_ranks(X, Q), neighbors=k, alpha=alpha)
    # Only neighbours with q . x > 0 get a (positive) weight, so q . (q + sum w x) >= 1:
    # the sum never vanishes and the new query stays on the query's side.
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-12)
    assert np.all(np.einsum("qd,qd->q", out, Q) > 0)


# ---------------------------------------------------------------- alpha DBA


@pytest.mark.parametrize("dtype", DTYPES)
def test_dba_by_hand(dtype):
    X = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=dtype)
    out = alpha_database_augmentation(X, neighbors=1, alpha=3)
    # x0: nearest other x1 (0.6): x0 + 0.216 x1; x1: nearest other x2 (0.8): x1 + 0.512 x2;
    # x2: nearest other x1 (0.8): x2 + 0.512 x1. The item itself counts once, with weight 1.
    expected = unit([[1.1296, 0.1728], [0.6, 1.312], [0.3072, 1.4096]])
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_dba_item_counted_once_even_with_duplicates():
    # Items 0 and 1 are equal: each is the other's top neighbour (sim 1, weight 1); no item is
    # counted twice (which would give x0 weight 2 plus x1 weight 1).
    X = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    out = alpha_database_augmentation(X, neighbors=2, alpha=1)
    # x0 + 1 * x1 + 0 * x2 = [2, 0]; x2 + 0 * x0 + 0 * x1 = x2.
    np.testing.assert_allclose(out, [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], atol=1e-15)
    X2 = np.array([[1.0, 0.0], [0.6, 0.8]])
    # k = 1: x0 + 0.6 x1 (not 2 x0 + ...): direction [1.36, 0.48].
    np.testing.assert_allclose(alpha_database_augmentation(X2, neighbors=1, alpha=1)[0], unit([1.36, 0.48]))


def test_dba_ties_go_to_the_smaller_index():
    # Items 1 and 2 are equally similar to item 0 (0.6); k = 1 must take item 1.
    X = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
    out = alpha_database_augmentation(X, neighbors=1, alpha=1)
    np.testing.assert_allclose(out[0], unit([1.36, 0.48]), rtol=1e-12)
    # Duplicated database with many exact ties: same as the stable brute force.
    Y = np.repeat(random_unit(5, 3, seed=10), 3, axis=0)
    for k in (1, 2, 4):
        np.testing.assert_allclose(
            alpha_database_augmentation(Y, neighbors=k, alpha=3), brute_force_dba(Y, k, 3.0), rtol=1e-12
        )


@pytest.mark.parametrize("k", [1, 3, 10])
def test_dba_matches_brute_force(k):
    X = random_unit(23, 5, seed=11)
    np.testing.assert_allclose(
        alpha_database_augmentation(X, neighbors=k, alpha=3),
        brute_force_dba(X, k, 3.0),
        rtol=1e-12,
        atol=1e-15,
    )


def test_dba_equals_alpha_qe_of_the_database_on_itself():
    X = random_unit(18, 4, seed=12)
    ranks = exact_ranks(X, X)
    others = np.array([[j for j in row if j != i] for i, row in enumerate(ranks)])
    np.testing.assert_allclose(
        alpha_database_augmentation(X, neighbors=5, alpha=3),
        alpha_query_expansion(X, X, others, neighbors=5, alpha=3),
        rtol=1e-12,
    )


def test_dba_k_zero_and_clamping():
    X = np.array([[2.0, 0.0], [0.0, 0.0], [0.6, 0.8]])
    np.testing.assert_allclose(alpha_database_augmentation(X, neighbors=0), [[1, 0], [0, 0], [0.6, 0.8]])
    # k = 50 > n - 1 = 2 is clamped to 2.
    np.testing.assert_allclose(
        alpha_database_augmentation(X, neighbors=50), alpha_database_augmentation(X, neighbors=2), rtol=1e-15
    )
    single = np.array([[3.0, 4.0]], dtype=np.float32)
    out = alpha_database_augmentation(single)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8]], rtol=1e-6)
    assert alpha_database_augmentation(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dba_dtype_and_layouts(dtype):
    X = random_unit(16, 5, seed=13, dtype=dtype)
    ref = brute_force_dba(X, 4, 3.0)
    for name, view in layouts(X).items():
        out = alpha_database_augmentation(view, neighbors=4)
        assert out.dtype == dtype and out.shape == (16, 5)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6, err_msg=name)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 12),
    k=st.integers(0, 14),
)
def test_dba_property_matches_brute_force(seed, n, k):
    X = random_unit(n, 3, seed=seed)
    np.testing.assert_allclose(
        alpha_database_augmentation(X, neighbors=k, alpha=3),
        brute_force_dba(X, min(k, n - 1), 3.0),
        rtol=1e-10,
        atol=1e-12,
    )


# ---------------------------------------------------------------- argument errors


def _xq():
    return random_unit(6, 3, seed=20), random_unit(2, 3, seed=21)


@pytest.mark.parametrize(
    "fn", [average_query_expansion, alpha_query_expansion], ids=["aqe", "alpha_qe"]
)
def test_qe_rejects_bad_arrays(fn):
    X, Q = _xq()
    ranks = exact_ranks(X, Q)
    with pytest.raises(InvalidInputError, match=r"expected d = 3 .*got Q of shape \(2, 4\)"):
        fn(X, np.ones((2, 4)), ranks)
    with pytest.raises(InvalidDTypeError, match="expected float64, got float32"):
        fn(X, Q.astype(np.float32), ranks)
    with pytest.raises(InvalidDTypeError, match="X must be a float32 or float64"):
        fn(X.astype(int), Q, ranks)
    with pytest.raises(InvalidInputError, match=r"Q must be a 2-D array.*\(nq, d\).*\(3,\)"):
        fn(X, Q[0], ranks)
    bad = X.copy()
    bad[2, 0] = np.nan
    with pytest.raises(InvalidInputError, match="X must be finite"):
        fn(bad, Q, ranks)
    with pytest.raises(InvalidInputError, match="Q must be finite"):
        fn(X, np.array([[np.inf, 0, 0], [1, 0, 0]]), ranks)


@pytest.mark.parametrize(
    "fn", [average_query_expansion, alpha_query_expansion], ids=["aqe", "alpha_qe"]
)
def test_qe_rejects_bad_ranks(fn):
    X, Q = _xq()
    ranks = exact_ranks(X, Q)
    with pytest.raises(InvalidInputError, match=r"cirtorch/revisitop layout.*ranks\.T"):
        fn(X, Q, ranks.T)
    with pytest.raises(InvalidInputError, match=r"\(nq, m\) = \(2, m\).*\(6,\)"):
        fn(X, Q, ranks[0])
    with pytest.raises(InvalidInputError, match=r"\[0, 6\), got 6 .*1-based"):
        fn(X, Q, ranks + 1)
    with pytest.raises(InvalidInputError, match=r"\[0, 6\), got -1 at row \d, column \d"):
        fn(X, Q, np.where(ranks == 0, -1, ranks))
    with pytest.raises(InvalidDTypeError, match=r"ranks must be an integer array.*got dtype float64 \(the similarities instead of their argsort\?\)"):
        fn(X, Q, ranks.astype(float))
    dup = ranks.copy()
    dup[1, 2] = dup[1, 0]
    with pytest.raises(InvalidInputError, match=rf"twice in a row, got {dup[1, 0]} again at row 1"):
        fn(X, Q, dup, neighbors=3)
    # A repeat beyond the first neighbours is not used and not an error.
    fn(X, Q, dup, neighbors=2)
    with pytest.raises(InvalidInputError, match="neighbors must be >= 0, got -1"):
        fn(X, Q, ranks, neighbors=-1)
    with pytest.raises(InvalidDTypeError, match="neighbors must be an int, got float"):
        fn(X, Q, ranks, neighbors=2.0)


def test_alpha_rejected_when_invalid():
    X, Q = _xq()
    ranks = exact_ranks(X, Q)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match="alpha must be a finite number >= 0"):
            alpha_query_expansion(X, Q, ranks, neighbors=3, alpha=bad)
        with pytest.raises(InvalidInputError, match="alpha must be a finite number >= 0"):
            alpha_database_augmentation(X, neighbors=3, alpha=bad)
    with pytest.raises(InvalidDTypeError, match="alpha must be a real number, got str"):
        alpha_query_expansion(X, Q, ranks, neighbors=3, alpha="3")


def test_dba_rejects_bad_input():
    X, _ = _xq()
    with pytest.raises(InvalidInputError, match=r"X must be a 2-D array.*\(3,\)"):
        alpha_database_augmentation(X[0])
    with pytest.warns(DeprecationWarning, match="block_size is ignored"):
        np.testing.assert_array_equal(
            alpha_database_augmentation(X, block_size=3), alpha_database_augmentation(X)
        )
    with pytest.raises(InvalidInputError, match="neighbors must be >= 0"):
        alpha_database_augmentation(X, neighbors=-2)
    with pytest.raises(InvalidInputError, match="X must be finite"):
        alpha_database_augmentation(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("alpha", [50.0, 1e308])
def test_alpha_qe_of_vectors_that_are_not_unit_never_overflows(alpha):
    """Similarities above 1 (vectors that are not unit) raised to a large alpha overflowed to
    inf (found by the fuzz suite); the weights are now relative to the largest, which the L2
    normalisation makes exact: the result tends to the most similar neighbour."""
    X = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    Q = np.array([[1.0, 0.1]])
    ranks = np.array([[0, 2, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = alpha_query_expansion(X, Q, ranks, neighbors=3, alpha=alpha)
    np.testing.assert_allclose(out, [[1.0, 0.0]], atol=1e-12)
    small = alpha_query_expansion(X / 10, Q / 10, ranks, neighbors=3, alpha=2.0)
    assert np.isfinite(small).all()
