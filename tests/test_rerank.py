"""HeR (docs/ALGORITHM.md section 2): the Rust path against the NumPy reference (dense inverse) and
hand-worked values; degenerate sizes and inputs, layouts, dtypes, thread-count independence,
errors, and the Holidays figures of docs/ALGORITHM.md section 4."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import heatsearch as hs
from helpers import ticks_while
from heatsearch import reference as ref
from heatsearch.errors import HeatsearchError, InvalidDTypeError, InvalidInputError
from heatsearch.rerank import heat_rerank

DTYPES = [np.float32, np.float64]
IMPLS = {"rust": heat_rerank, "reference": ref.heat_rerank}
#: Relative tolerance of the head's temperatures between the two paths, relative to the row's
#: largest temperature. float32: the reference's float32 inverse is off by about 1e-4 (the Rust
#: path solves the float32 system in float64 vectors); float64: both are exact to rounding.
SCORE_RTOL = {np.float32: 2e-3, np.float64: 1e-9}


def clustered(rng, n, d, clusters=4, dtype=np.float64, spread=0.6):
    """Unit rows around a few random centres (so the graphs have structure)."""
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def first_pass(X, Q):
    """Exhaustive inner-product ranking ``(nq, n)`` and its scores, best first (stable)."""
    s = Q @ X.T
    r = np.argsort(-s, axis=1, kind="stable")
    return r, np.take_along_axis(s, r, axis=1)


def problem(seed=0, n=80, d=16, nq=4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = clustered(rng, n, d, dtype=dtype)
    Q = X[rng.choice(n, nq, replace=False)] + dtype(0.05) * rng.standard_normal((nq, d)).astype(dtype)
    Q = (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(dtype)
    r, s = first_pass(X, Q)
    return X, Q, r, s


def assert_consistent(got, want, k, rtol):
    """``got`` and ``want`` are the same re-ranking up to near-ties.

    Positions beyond k are identical; the head holds the same candidates with temperatures
    equal to ``rtol`` (relative to the row's largest); and ``got``'s order is sorted by
    ``want``'s temperatures up to ``rtol``: two candidates may swap only when the reference
    finds their temperatures within the tolerance (docs/ALGORITHM.md: near-ties).
    """
    (gr, gs), (wr, ws) = got, want
    assert gr.shape == wr.shape and gs.shape == ws.shape
    np.testing.assert_array_equal(gr[:, k:], wr[:, k:])
    np.testing.assert_allclose(gs[:, k:], ws[:, k:], rtol=1e-5 if gs.dtype == np.float32 else 1e-12, atol=1e-6)
    for i in range(gr.shape[0]):
        want_t = dict(zip(wr[i, :k].tolist(), ws[i, :k].astype(np.float64).tolist()))
        assert sorted(want_t) == sorted(gr[i, :k].tolist())
        scale = max(np.abs(ws[i, :k]).max(initial=0.0), 1e-30)
        theirs = np.array([want_t[j] for j in gr[i, :k].tolist()])
        np.testing.assert_allclose(gs[i, :k], theirs, rtol=0, atol=rtol * scale)
        # got's order, judged by want's temperatures: never increasing beyond the tolerance.
        assert np.all(np.diff(theirs) <= rtol * scale), (i, np.diff(theirs).max(), scale)


# ---------------------------------------------------------------------------------------------
# Hand-worked examples (the Rust unit tests work the same numbers).
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_hand_worked_example(impl, dtype):
    """x0 = (2, 0), x1 = (0, 2), x2 = (-2, 0), q = (2, 0), first pass [1, 2, 0].

    Rows [x1, x2, x0, q] centred by their mean (0.5, 0.5): the positive affinities are
    x1-x2 = 0.5 and x0-q = 2.5, z = 0.1 * 1.5 = 0.15. The query's component {x0, q} has
    M = [[2.65, -2.5], [-2.5, 2.65]], M x = (0, 2.65): x0 = 2.5 * 2.65 / (2.65^2 - 2.5^2).
    x1 and x2 are not linked to the query: temperature 0, first-pass order.
    """
    X = np.array([[2, 0], [0, 2], [-2, 0]], dtype=dtype)
    Q = np.array([[2, 0]], dtype=dtype)
    r, s = IMPLS[impl](X, Q, np.array([[1, 2, 0]]), depth=3)
    np.testing.assert_array_equal(r, [[0, 1, 2]])
    np.testing.assert_allclose(s[0, 0], 2.5 * 2.65 / (2.65**2 - 2.5**2), rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert s[0, 1] == 0 and s[0, 2] == 0
    assert r.dtype == np.int64 and s.dtype == dtype


@pytest.mark.parametrize("impl", list(IMPLS))
def test_k_smaller_than_m_keeps_the_tail(impl):
    """k = 2 of 3: the head [x1, x2] with q has no positive affinity (order kept, temperatures
    0); the tail keeps its position and gets the first-pass inner product (or the given one)."""
    X = np.array([[2.0, 0], [0, 2], [-2, 0]])
    Q = np.array([[2.0, 0]])
    r, s = IMPLS[impl](X, Q, np.array([[1, 2, 0]]), depth=2)
    np.testing.assert_array_equal(r, [[1, 2, 0]])
    np.testing.assert_array_equal(s, [[0.0, 0.0, 4.0]])
    r, s = IMPLS[impl](X, Q, np.array([[1, 2, 0]]), depth=2, scores=np.array([[9.0, 8.0, 7.0]]))
    np.testing.assert_array_equal(s, [[0.0, 0.0, 7.0]])


# ---------------------------------------------------------------------------------------------
# Rust against the reference on random data.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [5, 40, 80])
@pytest.mark.parametrize("seed", [0, 1])
def test_rust_matches_reference(dtype, k, seed):
    X, Q, r, s = problem(seed, dtype=dtype)
    got = heat_rerank(X, Q, r, depth=k)
    want = ref.heat_rerank(X, Q, r, depth=k)
    assert_consistent(got, want, k, SCORE_RTOL[dtype])
    if dtype == np.float64:
        # Exact to rounding in float64: the rankings themselves agree.
        np.testing.assert_array_equal(got[0], want[0])


def test_f32_close_to_f64():
    """float32 input gives float64's temperatures to about 1e-5 of the row's largest."""
    X, Q, r, _ = problem(3, n=120, d=24, nq=3)
    r64, s64 = heat_rerank(X, Q, r, depth=100)
    r32, s32 = heat_rerank(X.astype(np.float32), Q.astype(np.float32), r, depth=100)
    scale = np.abs(s64[:, :100]).max(axis=1, keepdims=True)
    assert np.abs(s32[:, :100] - s64[:, :100]).max() <= 1e-4 * scale.max()


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_give_identical_results(dtype):
    """C order, Fortran order, strided and negatively strided views: bit-identical output."""
    X, Q, r, s = problem(4, dtype=dtype)
    base = heat_rerank(X, Q, r, depth=50, scores=s)
    big_x = np.zeros((X.shape[0], 2 * X.shape[1]), dtype)
    big_x[:, ::2] = X
    big_q = np.zeros((2 * Q.shape[0], Q.shape[1]), dtype)
    big_q[::2] = Q
    big_r = np.zeros((r.shape[0], 2 * r.shape[1]), np.int64)
    big_r[:, ::2] = r
    variants = [
        (np.asfortranarray(X), np.asfortranarray(Q), np.asfortranarray(r), np.asfortranarray(s)),
        (big_x[:, ::2], big_q[::2], big_r[:, ::2], s),
        (X[::-1].copy()[::-1], Q[::-1].copy()[::-1], r, s),
        (X.copy(order="F")[::1], Q.copy(order="F"), r.T.copy().T, s.T.copy().T),
    ]
    for Xv, Qv, rv, sv in variants:
        got = heat_rerank(Xv, Qv, rv, depth=50, scores=sv)
        np.testing.assert_array_equal(got[0], base[0])
        np.testing.assert_array_equal(got[1], base[1])


@pytest.mark.parametrize("impl", list(IMPLS))
def test_inputs_are_not_modified(impl):
    X, Q, r, s = problem(5)
    copies = [a.copy() for a in (X, Q, r, s)]
    IMPLS[impl](X, Q, r, depth=30, scores=s)
    for a, b in zip((X, Q, r, s), copies):
        np.testing.assert_array_equal(a, b)


def test_integer_ranks_of_any_dtype_and_truncated_rankings():
    X, Q, r, s = problem(6)
    base = heat_rerank(X, Q, r, depth=20)
    for dt in (np.int32, np.uint16, np.intp):
        got = heat_rerank(X, Q, r.astype(dt), depth=20)
        np.testing.assert_array_equal(got[0], base[0])
    # A truncated first pass (m = 30 < n): the tail of the 30 is kept.
    got = heat_rerank(X, Q, r[:, :30], depth=20)
    np.testing.assert_array_equal(got[0], base[0][:, :30])
    np.testing.assert_array_equal(got[1], base[1][:, :30])


def test_scores_fill_the_tail():
    """Given first-pass scores are returned beyond k (in X's dtype); without them, the tail
    gets the inner products."""
    X, Q, r, s = problem(7)
    a = heat_rerank(X, Q, r, depth=25, scores=s)
    b = heat_rerank(X, Q, r, depth=25)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][:, :25], b[1][:, :25])
    np.testing.assert_array_equal(a[1][:, 25:], s[:, 25:])
    np.testing.assert_allclose(b[1][:, 25:], s[:, 25:], rtol=1e-12, atol=1e-15)
    c = heat_rerank(X.astype(np.float32), Q.astype(np.float32), r, depth=25, scores=s)
    assert c[1].dtype == np.float32
    np.testing.assert_array_equal(c[1][:, 25:], s[:, 25:].astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Degenerate sizes and inputs (same rules on both paths).
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", list(IMPLS))
class TestDegenerate:
    def test_k0_returns_the_ranking_unchanged(self, impl, dtype):
        X, Q, r, s = problem(8, dtype=dtype)
        out = IMPLS[impl](X, Q, r, depth=0, scores=s)
        np.testing.assert_array_equal(out[0], r)
        np.testing.assert_array_equal(out[1], s)
        out = IMPLS[impl](X, Q, r, depth=0)
        np.testing.assert_array_equal(out[0], r)
        np.testing.assert_allclose(out[1], s, rtol=1e-5, atol=1e-6)

    def test_k1_keeps_the_order(self, impl, dtype):
        """Two centred rows are opposite: no positive affinity, temperature 0."""
        X, Q, r, s = problem(9, dtype=dtype)
        out = IMPLS[impl](X, Q, r, depth=1, scores=s)
        np.testing.assert_array_equal(out[0], r)
        np.testing.assert_array_equal(out[1][:, 0], 0)
        np.testing.assert_array_equal(out[1][:, 1:], s[:, 1:])

    def test_k_larger_than_m_is_clamped(self, impl, dtype):
        X, Q, r, s = problem(10, n=30, dtype=dtype)
        a = IMPLS[impl](X, Q, r, depth=30)
        b = IMPLS[impl](X, Q, r, depth=10**30)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])

    def test_single_database_vector(self, impl, dtype):
        X = np.array([[1.0, 2.0, 3.0]], dtype)
        Q = np.array([[1.0, 2.0, 2.5], [0.0, 0.0, 1.0]], dtype)
        r, s = IMPLS[impl](X, Q, np.zeros((2, 1), np.int64))
        np.testing.assert_array_equal(r, [[0], [0]])
        np.testing.assert_array_equal(s, [[0], [0]])

    def test_empty_query_set_and_empty_rankings(self, impl, dtype):
        X, Q, r, s = problem(11, dtype=dtype)
        out = IMPLS[impl](X, Q[:0], r[:0], depth=10)
        assert out[0].shape == (0, r.shape[1]) and out[1].shape == (0, r.shape[1])
        out = IMPLS[impl](X, Q, r[:, :0], depth=10)
        assert out[0].shape == (Q.shape[0], 0) and out[1].dtype == dtype

    def test_all_rows_equal_keeps_the_order(self, impl, dtype):
        """Query and candidates all equal: every centred row is (up to rounding) 0."""
        v = np.random.default_rng(0).standard_normal(16)
        X = np.tile(v, (20, 1)).astype(dtype)
        Q = X[:2].copy()
        r = np.tile(np.arange(20)[::-1], (2, 1))
        out = IMPLS[impl](X, Q, r, depth=20)
        np.testing.assert_array_equal(out[0], r)
        np.testing.assert_array_equal(out[1], 0)

    def test_isolated_candidate_goes_last(self, impl, dtype):
        """An outlier ranked first has negative affinities to all (after centring): 0, last."""
        X = np.array([[-5, 0], [1, 0.1], [1, -0.1], [1, 0.05], [1, -0.02]], dtype)
        Q = np.array([[1, 0]], dtype)
        r, s = IMPLS[impl](X, Q, np.array([[0, 1, 2, 3, 4]]), depth=5)
        assert r[0, -1] == 0 and s[0, -1] == 0
        assert np.all(s[0, :-1] > 0)

    def test_duplicates_and_zero_vectors(self, impl, dtype):
        """Duplicated database rows and zero rows: same candidates, consistent with the
        reference; duplicates get equal temperatures up to rounding."""
        rng = np.random.default_rng(12)
        X = clustered(rng, 60, 12, dtype=dtype)
        X[10:20] = X[0]
        X[20:25] = 0
        Q = X[[0, 30]].copy()
        r, s = first_pass(X, Q)
        got = IMPLS[impl](X, Q, r, depth=60)
        want = ref.heat_rerank(X, Q, r, depth=60)
        assert_consistent(got, want, 60, SCORE_RTOL[dtype])
        t = dict(zip(got[0][0].tolist(), got[1][0].tolist()))
        dup = np.array([t[j] for j in [0, *range(10, 20)]])
        assert np.ptp(dup) <= 1e-5 * np.abs(got[1][0]).max()


def test_degenerate_results_match_between_paths():
    rng = np.random.default_rng(13)
    X = clustered(rng, 40, 6)
    X[5:15] = X[3]
    X[15:18] = 0
    Q = np.vstack([X[3], np.zeros(6), X[20]])
    r, _ = first_pass(X, Q)
    for k in (0, 1, 2, 3, 17, 40):
        assert_consistent(heat_rerank(X, Q, r, depth=k), ref.heat_rerank(X, Q, r, depth=k), k, 1e-9)


# ---------------------------------------------------------------------------------------------
# Invariants.
# ---------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    d=st.integers(1, 8),
    k=st.integers(0, 50),
    m_frac=st.floats(0.0, 1.0),
)
def test_head_is_a_permutation_and_tail_is_kept(seed, n, d, k, m_frac):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Q = rng.standard_normal((2, d))
    m = int(round(m_frac * n))
    r = np.stack([rng.permutation(n)[:m] for _ in range(2)])
    out_r, out_s = heat_rerank(X, Q, r, depth=k)
    kk = min(k, m)
    np.testing.assert_array_equal(np.sort(out_r[:, :kk], axis=1), np.sort(r[:, :kk], axis=1))
    np.testing.assert_array_equal(out_r[:, kk:], r[:, kk:])
    assert np.all(np.isfinite(out_s))
    # Temperatures are non-negative (up to rounding) and sorted.
    head = out_s[:, :kk]
    assert np.all(head >= -1e-9 * np.abs(head).max(initial=1.0))
    assert np.all(np.diff(head, axis=1) <= 0)


def test_qe_plus_her_heats_with_the_expanded_query():
    """QE + HeR: the expanded query heats the ORIGINAL first-pass top k (docs/ALGORITHM.md 2)."""
    X, Q, r, s = problem(14, n=100)
    Qe = hs.average_query_expansion(X, Q, r, neighbors=10)
    got = heat_rerank(X, Qe, r, depth=60, scores=s)
    want = ref.heat_rerank(X, Qe, r, depth=60, scores=s)
    assert_consistent(got, want, 60, 1e-9)
    np.testing.assert_array_equal(got[1][:, 60:], s[:, 60:])
    plain = heat_rerank(X, Q, r, depth=60, scores=s)
    assert not np.array_equal(plain[1], got[1])


# ---------------------------------------------------------------------------------------------
# Threads.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_depend_on_the_thread_count(restore_threads, dtype):
    X, Q, r, s = problem(15, n=300, d=32, nq=7, dtype=dtype)
    outs = []
    for n in (1, 2, 3):
        hs.set_num_threads(n)
        outs.append(heat_rerank(X, Q, r, depth=250))
    for o in outs[1:]:
        np.testing.assert_array_equal(o[0], outs[0][0])
        np.testing.assert_array_equal(o[1], outs[0][1])


def test_gil_is_released():
    """A second Python thread keeps running while HeR works (about a second)."""
    X, Q, r, s = problem(17, n=900, d=256, nq=40, dtype=np.float32)
    assert ticks_while(lambda: heat_rerank(X, Q, r, depth=800, scores=s)) > 10_000


# ---------------------------------------------------------------------------------------------
# Errors: the same exceptions on both paths, messages saying expected vs got.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", list(IMPLS))
class TestErrors:
    def setup_method(self):
        self.X, self.Q, self.r, self.s = problem(16, n=20, d=4, nq=2)

    def test_dtypes(self, impl):
        f = IMPLS[impl]
        X, Q, r, s = self.X, self.Q, self.r, self.s
        with pytest.raises(InvalidDTypeError, match="dtype of X"):
            f(X, Q.astype(np.float32), r)
        with pytest.raises(InvalidDTypeError, match="float32 or float64"):
            f(X.astype(np.int64), Q.astype(np.int64), r)
        with pytest.raises(InvalidDTypeError, match="float32 or float64"):
            f(X.astype(np.float16), Q.astype(np.float16), r)
        with pytest.raises(InvalidDTypeError, match="integer"):
            f(X, Q, r.astype(np.float64))
        with pytest.raises(InvalidDTypeError, match="depth must be an int"):
            f(X, Q, r, depth=2.0)
        with pytest.raises(InvalidDTypeError, match="depth must be an int"):
            f(X, Q, r, depth=True)
        with pytest.raises(InvalidDTypeError, match="scores"):
            f(X, Q, r, scores=s.astype(np.int64))
        with pytest.raises(InvalidDTypeError, match="ground"):
            f(X, Q, r, ground="0.1")
        # InvalidDTypeError is a TypeError.
        with pytest.raises(TypeError):
            f(X, Q.astype(np.float32), r)

    def test_shapes(self, impl):
        f = IMPLS[impl]
        X, Q, r, s = self.X, self.Q, self.r, self.s
        with pytest.raises(InvalidInputError, match=r"expected d = 4"):
            f(X, Q[:, :3], r)
        with pytest.raises(InvalidInputError, match="2-D"):
            f(X[0], Q, r)
        with pytest.raises(InvalidInputError, match="2-D"):
            f(X, Q[0], r)
        with pytest.raises(InvalidInputError, match=r"\(nq, m\) = \(2, m\)"):
            f(X, Q, r[0])
        with pytest.raises(InvalidInputError, match="one row per query"):
            f(X, Q, r[:1])
        with pytest.raises(InvalidInputError, match="ranks.T"):
            f(X, Q, r.T)
        with pytest.raises(InvalidInputError, match="at most n = 20"):
            f(X, Q, np.hstack([r, r[:, :1]]))
        with pytest.raises(InvalidInputError, match="shape of ranks"):
            f(X, Q, r, scores=s[:, :5])
        with pytest.raises(InvalidInputError, match="at least one row"):
            f(X[:0], Q, r[:, :0])
        # InvalidInputError is a ValueError.
        with pytest.raises(ValueError):
            f(X, Q[:, :3], r)

    def test_values(self, impl):
        f = IMPLS[impl]
        X, Q, r, s = self.X, self.Q, self.r, self.s
        bad = r.copy()
        bad[1, 3] = 20
        with pytest.raises(InvalidInputError, match=r"\[0, 20\), got 20 at row 1, column 3"):
            f(X, Q, bad)
        bad[1, 3] = -1
        with pytest.raises(InvalidInputError, match=r"\[0, 20\), got -1"):
            f(X, Q, bad)
        bad = r.copy()
        bad[0, 5] = bad[0, 2]
        with pytest.raises(InvalidInputError, match="twice"):
            f(X, Q, bad)
        with pytest.raises(InvalidInputError, match="depth must be >= 0"):
            f(X, Q, r, depth=-1)
        for g in (0.0, -0.1, float("nan"), float("inf")):
            with pytest.raises(InvalidInputError, match="ground must be a finite number > 0"):
                f(X, Q, r, ground=g)

    def test_non_finite(self, impl):
        f = IMPLS[impl]
        X, Q, r, s = self.X, self.Q, self.r, self.s
        for name in ("X", "Q", "scores"):
            for v in (np.nan, np.inf):
                args = {"X": X.copy(), "Q": Q.copy(), "scores": s.copy()}
                args[name][1, 2] = v
                with pytest.raises(InvalidInputError, match=f"{name} must be finite"):
                    f(args["X"], args["Q"], r, scores=args["scores"])
                # Fortran order too (the core reads along the contiguous dimension).
                fargs = {key: np.asfortranarray(v) for key, v in args.items()}
                with pytest.raises(InvalidInputError, match=f"{name} must be finite"):
                    f(fargs["X"], fargs["Q"], r, scores=fargs["scores"])

    def test_errors_are_heatsearch_errors(self, impl):
        with pytest.raises(HeatsearchError):
            IMPLS[impl](self.X, self.Q, self.r, depth=-3)


# ---------------------------------------------------------------------------------------------
# Real data: the authors' Holidays HeW descriptors (docs/ALGORITHM.md section 4).
# ---------------------------------------------------------------------------------------------
def _holidays_map(ranks, gnd):
    """mAP in [0, 1] (revisitop's protocol, tests/eval/test_evaluate.py)."""
    return float(hs.compute_map(ranks, gnd).map)


def _l2n(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_holidays_first_pass_map(holidays):
    X, qidx, gnd = holidays
    Y = _l2n(X)
    assert abs(100 * _holidays_map(first_pass(Y, Y[qidx])[0], gnd) - 75.14) < 0.01
    Y = _l2n(np.sign(X) * np.sqrt(np.abs(X)))
    assert abs(100 * _holidays_map(first_pass(Y, Y[qidx])[0], gnd) - 80.24) < 0.01


@pytest.fixture(scope="module")
def holidays_her(holidays):
    X, qidx, gnd = holidays
    Y = _l2n(np.sign(X) * np.sqrt(np.abs(X))).astype(np.float32)
    r, s = first_pass(Y, Y[qidx])
    return Y, qidx, gnd, r, s, heat_rerank(Y, Y[qidx], r, depth=800, scores=s)


def test_holidays_her_map(holidays_her):
    Y, qidx, gnd, r, s, (r2, s2) = holidays_her
    assert abs(100 * _holidays_map(r2, gnd) - 77.15) < 0.01
    np.testing.assert_array_equal(r2[:, 800:], r[:, 800:])
    # float64 input: the same figure.
    r3, _ = heat_rerank(Y.astype(np.float64), Y[qidx].astype(np.float64), r, depth=800)
    assert abs(100 * _holidays_map(r3, gnd) - 77.15) < 0.01


@pytest.mark.slow
def test_holidays_her_matches_reference(holidays_her):
    """The dense-inverse reference (float32, about 0.1 s per query) gives the same mAP to 0.01
    points and the same temperatures to 2e-3 of each row's largest (measured: 9e-5)."""
    Y, qidx, gnd, r, s, (r2, s2) = holidays_her
    rr, sr = ref.heat_rerank(Y, Y[qidx], r, depth=800, scores=s)
    assert abs(100 * _holidays_map(rr, gnd) - 100 * _holidays_map(r2, gnd)) < 0.01
    scale = np.abs(sr[:, :800]).max(axis=1, keepdims=True)
    assert np.all(np.abs(s2[:, :800] - sr[:, :800]) <= 2e-3 * scale)
    assert_consistent((r2, s2), (rr, sr), 800, 2e-3)
