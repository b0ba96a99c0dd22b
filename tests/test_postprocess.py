"""Tests of heatsearch.postprocess: signed power, L2 normalisation, the PostProcess chain."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from heatsearch.errors import InvalidDTypeError, InvalidInputError
from heatsearch.postprocess import L2_EPS, PostProcess, l2_normalize, power_normalize
from heatsearch.whitening import PCAWhitening

DTYPES = [np.float32, np.float64]


def layouts(a: np.ndarray):
    """The same values as C, Fortran and a strided (non-contiguous) view."""
    big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), dtype=a.dtype)
    big[::2, ::3] = a
    return {"C": np.ascontiguousarray(a), "F": np.asfortranarray(a), "strided": big[::2, ::3]}


# ---------------------------------------------------------------- power_normalize


@pytest.mark.parametrize("dtype", DTYPES)
def test_power_normalize_signed_sqrt_by_hand(dtype):
    X = np.array([[4.0, -9.0, 0.0], [0.25, -1.0, 2.0]], dtype=dtype)
    out = power_normalize(X)
    expected = np.array([[2.0, -3.0, 0.0], [0.5, -1.0, np.sqrt(2.0)]])
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_power_normalize_other_exponents_by_hand():
    X = np.array([-3.0, 2.0, 0.0])
    np.testing.assert_allclose(power_normalize(X, p=2), [-9.0, 4.0, 0.0])
    np.testing.assert_allclose(power_normalize(X, p=1.0), X)
    np.testing.assert_allclose(power_normalize(X, p=np.float32(3)), [-27.0, 8.0, 0.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_power_normalize_numpy_scalar_exponent_keeps_dtype(dtype):
    # A NumPy float64 exponent must not promote float32 input to float64 (NEP 50).
    out = power_normalize(np.ones((2, 2), dtype=dtype), p=np.float64(0.5))
    assert out.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_power_normalize_layouts_agree_and_input_untouched(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 4)).astype(dtype)
    expected = np.sign(X) * np.sqrt(np.abs(X))
    for name, view in layouts(X).items():
        before = view.copy()
        out = power_normalize(view)
        np.testing.assert_allclose(out, expected, rtol=1e-6, err_msg=name)
        np.testing.assert_array_equal(view, before)
        assert out.dtype == dtype


def test_power_normalize_empty_and_any_shape():
    assert power_normalize(np.zeros((0, 3))).shape == (0, 3)
    np.testing.assert_allclose(power_normalize(np.full((2, 2, 2), 16.0)), np.full((2, 2, 2), 4.0))


@pytest.mark.parametrize("p", [0, -0.5, float("nan"), float("inf")])
def test_power_normalize_rejects_bad_exponent(p):
    with pytest.raises(InvalidInputError, match="p must be a finite number > 0"):
        power_normalize(np.ones(3), p=p)


@pytest.mark.parametrize("p", ["0.5", True, None, [0.5]])
def test_power_normalize_rejects_non_real_exponent(p):
    with pytest.raises(InvalidDTypeError, match="p must be a real number"):
        power_normalize(np.ones(3), p=p)


def test_power_normalize_rejects_bad_arrays():
    with pytest.raises(InvalidDTypeError, match="float32 or float64.*int64"):
        power_normalize(np.ones(3, dtype=np.int64))
    with pytest.raises(InvalidInputError, match="must be finite, got"):
        power_normalize(np.array([1.0, np.nan]))
    with pytest.raises(InvalidInputError, match="must be finite, got"):
        power_normalize(np.array([1.0, -np.inf], dtype=np.float32))


@pytest.mark.parametrize("x, p, dtype", [(125.73, 1e308, np.float64), (1e30, 2.0, np.float32), (-1e200, 1.6, np.float64)])
def test_power_normalize_overflow_is_an_error_not_inf(x, p, dtype):
    """A power past the dtype's largest value: a clear error, never inf (nor a NumPy warning,
    which NumPy 1.x and 2.x raise alike)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInputError, match=rf"X \*\* p overflows {np.dtype(dtype).name} .*raised to p = "):
            power_normalize(np.array([[0.5, x]], dtype), p=p)
        assert np.isfinite(power_normalize(np.array([[0.5, 2.0]], dtype), p=p if p < 100 else 50.0)).all()


@settings(max_examples=60, deadline=None)
@given(
    X=hnp.arrays(np.float64, (4, 3), elements=st.floats(-1e6, 1e6)),
    p=st.floats(0.05, 4.0),
)
def test_power_normalize_keeps_signs_and_is_monotone(X, p):
    out = power_normalize(X, p=p)
    # The sign bit is always kept; a value whose power underflows becomes a zero of that sign.
    assert np.all(np.signbit(out) == np.signbit(X))
    nonzero = out != 0
    assert np.all(np.sign(out[nonzero]) == np.sign(X[nonzero]))
    assert np.all((X[~nonzero] == 0) | (np.abs(X[~nonzero]) ** p == 0))
    np.testing.assert_allclose(np.abs(out), np.abs(X) ** p, rtol=1e-12)
    flat_in, flat_out = X.ravel(), out.ravel()
    order = np.argsort(flat_in, kind="stable")
    assert np.all(np.diff(flat_out[order]) >= 0)  # x -> sign(x)|x|^p is non-decreasing


# ---------------------------------------------------------------- l2_normalize


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_normalize_by_hand(dtype):
    X = np.array([[3.0, 4.0], [0.0, 0.0], [-5.0, 12.0]], dtype=dtype)
    out = l2_normalize(X)
    assert out.dtype == dtype and out.shape == (3, 2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-5 / 13, 12 / 13]], rtol=1e-6)


def test_l2_normalize_vector():
    out = l2_normalize(np.array([3.0, 4.0]))
    assert out.shape == (2,)
    np.testing.assert_allclose(out, [0.6, 0.8])
    np.testing.assert_array_equal(l2_normalize(np.zeros(4)), np.zeros(4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [L2_EPS, 0.0])
def test_l2_normalize_zero_row_stays_zero_without_warning(dtype, eps):
    X = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        out = l2_normalize(X, eps=eps)
    np.testing.assert_array_equal(out[0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[1], [1 / 3, 2 / 3, 2 / 3], rtol=1e-6)


def test_l2_normalize_eps_semantics():
    tiny = np.array([[1e-8, 0.0], [3e-6, 4e-6]])
    # Default eps = 1e-6: a row of norm 1e-8 is divided by eps (norm 1e-2, not blown up to 1);
    # a row of norm 5e-6 >= eps is normalised exactly.
    np.testing.assert_allclose(l2_normalize(tiny), [[1e-2, 0.0], [0.6, 0.8]])
    # eps = 0: every non-zero row gets unit norm.
    np.testing.assert_allclose(l2_normalize(tiny, eps=0), [[1.0, 0.0], [0.6, 0.8]])


def test_l2_normalize_extreme_magnitudes():
    big = np.array([[1e200, 1e200], [1e-200, 0.0], [3e-170, 4e-170]])
    np.testing.assert_allclose(
        l2_normalize(big, eps=0), [[2**-0.5, 2**-0.5], [1.0, 0.0], [0.6, 0.8]], rtol=1e-12
    )
    # float32: the squared norm of this row overflows float32 but not the float64 accumulator.
    f32 = np.array([[3e38, 3e38]], dtype=np.float32)
    out = l2_normalize(f32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[2**-0.5, 2**-0.5]], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_normalize_layouts_agree(dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 5)).astype(dtype)
    expected = X / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    for name, view in layouts(X).items():
        out = l2_normalize(view)
        assert out.dtype == dtype and out.flags.c_contiguous
        np.testing.assert_allclose(out, expected, rtol=2e-6, err_msg=name)


def test_l2_normalize_empty():
    assert l2_normalize(np.zeros((0, 4), dtype=np.float32)).shape == (0, 4)
    assert l2_normalize(np.zeros((3, 0))).shape == (3, 0)


def test_l2_normalize_rejects_bad_input():
    with pytest.raises(InvalidInputError, match=r"\(d,\) vector or an \(n, d\).*\(2, 2, 2\)"):
        l2_normalize(np.ones((2, 2, 2)))
    with pytest.raises(InvalidInputError, match="got shape \\(\\)"):
        l2_normalize(np.float64(1.0))
    with pytest.raises(InvalidDTypeError, match="got dtype int"):
        l2_normalize(np.ones((2, 2), dtype=int))
    with pytest.raises(InvalidInputError, match="must be finite, got"):
        l2_normalize(np.array([[np.inf, 0.0]]))
    with pytest.raises(InvalidInputError, match="eps must be a finite number >= 0, got -1"):
        l2_normalize(np.ones(2), eps=-1)
    with pytest.raises(InvalidDTypeError, match="eps must be a real number"):
        l2_normalize(np.ones(2), eps="small")


@settings(max_examples=80, deadline=None)
@given(
    X=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 5)),
        elements=st.one_of(st.just(0.0), st.floats(-1e3, 1e3)),
    )
)
def test_l2_normalize_rows_have_norm_one_or_zero(X):
    out = l2_normalize(X)
    scale = np.abs(X).max(axis=1, keepdims=True)
    safe = np.where(scale > 0, scale, 1.0)
    in_norms = scale[:, 0] * np.linalg.norm(X / safe, axis=1)  # no underflow for 1e-308
    out_norms = np.linalg.norm(out, axis=1)
    for i, (a, b) in enumerate(zip(in_norms, out_norms)):
        if np.all(X[i] == 0):
            assert b == 0 and np.all(out[i] == 0)
        elif a >= L2_EPS:
            assert b == pytest.approx(1.0, abs=1e-12)
            np.testing.assert_allclose(out[i] * a, X[i], rtol=1e-10, atol=1e-300)
        else:  # tiny rows are divided by eps
            np.testing.assert_allclose(out[i], X[i] / L2_EPS, rtol=1e-12)
    assert np.all(np.isfinite(out))


FINITE_F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(X=hnp.arrays(np.float32, (3, 4), elements=FINITE_F32))
def test_l2_normalize_float32_never_nan(X):
    out = l2_normalize(X)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    assert np.all(np.linalg.norm(out.astype(np.float64), axis=1) <= 1 + 1e-6)


# ---------------------------------------------------------------- PostProcess


def _whitening(d: int = 4, n: int = 40, seed: int = 2) -> PCAWhitening:
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    return PCAWhitening().fit(train)


def test_postprocess_without_whitening_by_hand():
    X = np.array([[4.0, 9.0], [-16.0, 0.0], [0.0, 0.0]])
    out = PostProcess()(X)
    np.testing.assert_allclose(out, [[2 / 13**0.5, 3 / 13**0.5], [-1.0, 0.0], [0.0, 0.0]])
    # power=None: L2 only (the "L2 only" baseline of docs/ALGORITHM.md's sanity figures).
    expected = [[4 / np.hypot(4, 9), 9 / np.hypot(4, 9)], [-1.0, 0.0], [0.0, 0.0]]
    np.testing.assert_allclose(PostProcess(power=None)(X), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_postprocess_with_whitening_is_the_chain(dtype):
    w = _whitening()
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 4)).astype(dtype)
    out = PostProcess(w)(X)
    expected = l2_normalize(w.transform(l2_normalize(power_normalize(X))))
    assert out.dtype == dtype and out.shape == (7, 4)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out.astype(np.float64), axis=1), 1.0, rtol=1e-5)
    # A single vector gives the corresponding row.
    np.testing.assert_allclose(PostProcess(w)(X[2]), out[2], rtol=1e-6)


def test_postprocess_layouts_agree():
    w = _whitening()
    X = np.random.default_rng(4).standard_normal((5, 4))
    pp = PostProcess(w)
    ref = pp(X)
    for name, view in layouts(X).items():
        np.testing.assert_allclose(pp(view), ref, rtol=1e-12, err_msg=name)


def test_postprocess_never_learns_from_the_transformed_data():
    w = _whitening(seed=5)
    mean, proj = w.mean_.copy(), w.projection_.copy()
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 4)) * [1.0, 10.0, 0.1, 3.0]
    pp = PostProcess(w)
    out = pp(X)
    np.testing.assert_array_equal(w.mean_, mean)
    np.testing.assert_array_equal(w.projection_, proj)
    # Whitening learned on X itself would give a different result.
    own = PCAWhitening().fit(l2_normalize(power_normalize(X)))
    assert not np.allclose(out, PostProcess(own)(X))


def test_postprocess_fit_learns_on_the_preprocessed_training_set():
    rng = np.random.default_rng(7)
    train = rng.standard_normal((60, 5)) @ rng.standard_normal((5, 5))
    pp = PostProcess.fit(train, dim=3)
    manual = PCAWhitening().fit(l2_normalize(power_normalize(train)), dim=3)
    np.testing.assert_allclose(pp.whitening.projection_, manual.projection_)
    np.testing.assert_allclose(pp.whitening.mean_, manual.mean_)
    X = rng.standard_normal((4, 5))
    assert pp(X).shape == (4, 3)
    assert pp.power == 0.5 and pp.eps == L2_EPS


def test_postprocess_rejects_bad_whitening_and_parameters():
    with pytest.raises(InvalidDTypeError, match="fitted PCAWhitening or None, got str"):
        PostProcess("pca")
    with pytest.raises(InvalidInputError, match="not fitted.*never learns"):
        PostProcess(PCAWhitening())
    with pytest.raises(InvalidInputError, match="power must be a finite number > 0"):
        PostProcess(power=0)
    with pytest.raises(InvalidInputError, match="eps must be"):
        PostProcess(eps=float("nan"))
    with pytest.raises(InvalidInputError, match=r"\(4,\) vector or an \(n, 4\) matrix.*\(2, 3\)"):
        PostProcess(_whitening())(np.ones((2, 3)))
