"""Valid input never gets a NumericalError ("please report this input"): the ranges HeW and
HeR compute accurately are checked up front, float32 input is computed in float64 where it
needs it, and results that do not fit the output dtype are clear errors, never inf or NaN."""

from __future__ import annotations

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import reference
from heatsearch.errors import InvalidInputError

rng = np.random.default_rng(11)
F = np.maximum(rng.standard_normal((12, 10, 32)), 0)
CENTRES = rng.standard_normal((12, 48))
X = hs.l2_normalize(CENTRES[rng.integers(0, 12, 900)] + 0.8 * rng.standard_normal((900, 48)))
Q = hs.l2_normalize(X[:6] + 0.1 * rng.standard_normal((6, 48)))
R, S = hs.search(X, Q, 400)


@pytest.mark.parametrize("ground", [1e-300, 1e-20, 1e-7, 2e6, 1e100, 1e308])
def test_a_ground_outside_the_accurate_range_is_refused(ground):
    """hew_weights(F, ground=1e308) and heat_rerank(..., ground=1e-20) failed with "please
    report this input"; float32 HeW silently returned uniform weights below 1e-20."""
    for call in (
        lambda: hs.hew_weights(F, ground=ground),
        lambda: hs.hew_pool(F.astype(np.float32), ground=ground),
        lambda: hs.heat_rerank(X, Q, R, ground=ground),
        lambda: reference.heat_rerank(X, Q, R, ground=ground),
    ):
        with pytest.raises(InvalidInputError, match=r"ground must be in \[1e-06, 1e\+06\]"):
            call()


@pytest.mark.parametrize("ground", [1e-6, 1e-3, 1e6])
def test_the_whole_range_computes_accurately(ground):
    w64 = hs.hew_weights(F, ground=ground)
    np.testing.assert_allclose(w64, reference.hew_weights(F, ground=ground), rtol=1e-9)
    np.testing.assert_allclose(hs.hew_weights(F.astype(np.float32), ground=ground), w64, rtol=2e-5)
    r64, s64 = hs.heat_rerank(X, Q, R, depth=300, ground=ground)
    r32, s32 = hs.heat_rerank(X.astype(np.float32), Q.astype(np.float32), R, depth=300, ground=ground)
    scale = np.abs(s64[:, :300]).max(axis=1, keepdims=True)
    # float32 input with a small ground is solved in float64: as close as at the default.
    assert np.abs(s32[:, :300] - s64[:, :300]).max() <= 5e-5 * scale.max()
    assert (r32[:, :100] != r64[:, :100]).mean() < 0.02


@pytest.mark.parametrize("scale", [1e-25, 1e19])
def test_her_does_not_depend_on_the_scale_of_float32_descriptors(scale):
    """float32 descriptors of size 1e19 overflowed the Gram products (76% of the top 50 went
    elsewhere), and of size 1e-25 underflowed them."""
    Xs, Qs = (X * scale).astype(np.float32), (Q * scale).astype(np.float32)
    _, s_unit = hs.heat_rerank(X.astype(np.float32), Q.astype(np.float32), R, depth=300, scores=S.astype(np.float32))
    r, s = hs.heat_rerank(Xs, Qs, R, depth=300, scores=S.astype(np.float32))
    assert np.isfinite(s).all()
    top = np.abs(s_unit[:, :300]).max()
    assert np.abs(s[:, :300] - s_unit[:, :300]).max() <= 1e-4 * top


def test_descriptors_near_unit_scale_are_not_rescaled():
    """The rescaling is by a power of two, and only far from unit scale: the default
    case's results are the same to the bit (compared with a scale of 2**10, which is exact)."""
    a = hs.heat_rerank(X, Q, R, depth=300)
    b = hs.heat_rerank(X * 2.0**10, Q * 2.0**10, R, depth=300)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][:, :300], b[1][:, :300])


def test_inner_products_that_overflow_are_an_error_not_inf():
    huge = (X * 1e20).astype(np.float32)
    for call in (
        lambda: hs.search(huge, huge[:2], 5),
        lambda: hs.knn_graph(huge, neighbors=3),
        lambda: hs.heat_rerank(huge, huge[:2], R[:2], depth=10),  # first-pass scores beyond 10
        # The graph of the unit vectors, the first-pass scores beyond the truncation overflow.
        lambda: hs.diffusion_rerank(huge, huge[:2], R[:2], graph=hs.knn_graph(X, neighbors=5), truncation=10),
    ):
        with pytest.raises(InvalidInputError, match="inner products of .* overflow float32"):
            call()


def test_a_hew_descriptor_that_overflows_is_an_error_not_inf():
    big = np.full((4, 4, 3), 3e37, np.float32)
    big[0, 0, 0] = 1e37
    with pytest.raises(InvalidInputError, match="HeW descriptor .* overflows float32"):
        hs.hew_pool(big)
    assert np.isfinite(hs.hew_pool(big.astype(np.float64))).all()
