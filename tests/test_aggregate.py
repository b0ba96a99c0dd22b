"""Tests of heatsearch.aggregate: SPoC, MAC, GeM, R-MAC, CroW, HeW and the dispatcher.

Expected values are worked out by hand in the comments; the R-MAC grids were also compared,
outside this suite, with cirtorch's float32 torch arithmetic for every map up to 80 x 400.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import heatsearch as hs
from heatsearch import aggregate as ag
from heatsearch.errors import InvalidDTypeError, InvalidInputError

DTYPES = [np.float32, np.float64]
METHODS = list(ag.POOLINGS)
SPATIAL_ONLY = {"rmac"}


def rtol(dtype) -> float:
    return 1e-5 if dtype == np.float32 else 1e-12


def random_map(h=5, w=7, c=4, seed=0, dtype=np.float64) -> np.ndarray:
    """A ReLU-like map: non-negative, about half the entries zero."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(h, w, c)), 0).astype(dtype)


# A 2 x 2 x 2 map used by several hand computations: cells (row, col) -> channels.
#   (0,0): [1, 0]   (0,1): [2, 1]
#   (1,0): [0, 3]   (1,1): [4, 0]
MAP2 = np.array([[[1.0, 0.0], [2.0, 1.0]], [[0.0, 3.0], [4.0, 0.0]]])


# ---------------------------------------------------------------------------------------------
# SPoC
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_spoc_is_the_sum_by_hand(dtype):
    out = ag.spoc(MAP2.astype(dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, [7.0, 4.0], rtol=rtol(dtype))
    # (N, C) local features give the same sum.
    np.testing.assert_allclose(ag.spoc(MAP2.reshape(4, 2).astype(dtype)), [7.0, 4.0])


def test_spoc_centering_prior_by_hand():
    # 3 x 3: centre (1, 1), sigma = 3 / 6 = 0.5, 2 sigma^2 = 0.5: weight exp(-2 d^2):
    # centre 1, the 4 edge-neighbours exp(-2), the 4 corners exp(-4).
    f = np.zeros((3, 3, 3))
    f[1, 1, 0] = 1.0
    f[0, 1, 1] = 1.0
    f[2, 2, 2] = 1.0
    f[0, 0, 2] = 2.0
    np.testing.assert_allclose(
        ag.spoc(f, centering=True), [1.0, np.exp(-2.0), 3 * np.exp(-4.0)], rtol=1e-13
    )
    # 2 x 2: centre (0.5, 0.5), sigma = 1/3, every cell at d^2 = 0.5: weight exp(-2.25).
    np.testing.assert_allclose(
        ag.spoc(MAP2, centering=True), np.exp(-2.25) * np.array([7.0, 4.0]), rtol=1e-13
    )
    # 1 x 3: sigma = 1/6, 2 sigma^2 = 1/18: the side cells (d^2 = 1) get exp(-18).
    g = np.array([[[1.0], [10.0], [100.0]]])
    np.testing.assert_allclose(
        ag.spoc(g, centering=True), [10.0 + 101.0 * np.exp(-18.0)], rtol=1e-13
    )


def test_spoc_centering_needs_a_spatial_map():
    with pytest.raises(InvalidInputError, match=r"centering=True needs .*\(H, W, C\).*\(4, 2\)"):
        ag.spoc(MAP2.reshape(4, 2), centering=True)
    with pytest.raises(InvalidDTypeError, match="centering must be True or False"):
        ag.spoc(MAP2, centering="yes")


# ---------------------------------------------------------------------------------------------
# MAC, GeM
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_mac_by_hand(dtype):
    out = ag.mac(MAP2.astype(dtype))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [4.0, 3.0])
    np.testing.assert_array_equal(ag.mac(np.array([[-3.0, 1.0], [-2.0, 0.5]])), [-2.0, 1.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gem_by_hand(dtype):
    # Channel 0 holds 1, 2, 0, 4 -> clamp 1, 2, 1e-6, 4 -> (1 + 8 + 1e-18 + 64) / 4 = 18.25.
    # Channel 1 holds 0, 1, 3, 0 -> (0 + 1 + 27 + 0) / 4 = 7 (+ 2e-18 / 4, invisible).
    out = ag.gem(MAP2.astype(dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, [18.25 ** (1 / 3), 7.0 ** (1 / 3)], rtol=rtol(dtype))
    # p = 2 on the same map: sqrt((1 + 4 + 16) / 4), sqrt((1 + 9) / 4).
    np.testing.assert_allclose(
        ag.gem(MAP2.astype(dtype), p=2), [np.sqrt(21 / 4), np.sqrt(10 / 4)], rtol=rtol(dtype)
    )


def test_gem_zero_and_negative_channels_give_eps():
    f = np.zeros((3, 2))
    f[:, 1] = -5.0
    np.testing.assert_allclose(ag.gem(f), [1e-6, 1e-6], rtol=1e-12)
    np.testing.assert_allclose(ag.gem(f, eps=0.25), [0.25, 0.25], rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(ag.gem(f, eps=0.0), [0.0, 0.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gem_p1_is_mean_and_large_p_tends_to_mac(dtype):
    f = random_map(dtype=dtype) + dtype(0.01)  # everything above eps: the clamp is inactive
    np.testing.assert_allclose(ag.gem(f, p=1), f.mean(axis=(0, 1)), rtol=10 * rtol(dtype))
    mac = ag.mac(f)
    # (mean x^p)^(1/p) >= max * (1/N)^(1/p): within 35 * 1e-4 * log(35) of MAC for p = 1e4.
    np.testing.assert_allclose(ag.gem(f, p=1e4), mac, rtol=2e-3)
    assert np.all(ag.gem(f, p=1e4) <= mac * (1 + 1e-6))
    # A huge p on large values neither overflows nor underflows.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(ag.gem(f * dtype(1e30), p=500), mac * dtype(1e30), rtol=2e-2)


# ---------------------------------------------------------------------------------------------
# R-MAC
# ---------------------------------------------------------------------------------------------
def test_rmac_regions_3x3_one_level_is_the_whole_map():
    assert ag.rmac_regions(3, 3, levels=1) == [(0, 0, 3)]


def test_rmac_regions_7x10_by_hand():
    # w = 7, long side 10: b = 3 / (n - 1), level-1 overlap (49 - 7 b) / 49 is 0.571 for
    # n = 2 (|err| 0.171) and worse for n >= 3, so 1 extra region along the width.
    # Level 1: side 7; 2 columns, b = (10-7)/1 = 3 -> 0, 3; 1 row.
    # Level 2: side floor(14/3) = 4; 3 columns, b = 6/2 = 3 -> 0, 3, 6; 2 rows, b = 3 -> 0, 3.
    # Level 3: side floor(14/4) = 3; 4 columns, b = 7/3 -> 0, 2, 4, 7; 3 rows, b = 2 -> 0, 2, 4.
    expected = [(0, 0, 7), (0, 3, 7)]
    expected += [(r, c, 4) for r in (0, 3) for c in (0, 3, 6)]
    expected += [(r, c, 3) for r in (0, 2, 4) for c in (0, 2, 4, 7)]
    assert ag.rmac_regions(7, 10) == expected
    # Transposed map, transposed grid (extra regions along the height instead).
    assert sorted(ag.rmac_regions(10, 7)) == sorted((c, r, s) for r, c, s in expected)


def test_rmac_regions_tiny_maps():
    assert ag.rmac_regions(1, 1) == [(0, 0, 1)]  # levels 2, 3 have side floor(2/3) = 0
    # 2 x 2: level 1 the whole map; level 2 side 1, starts floor(k * 1/1) = 0, 1; level 3
    # side 1, 3 starts floor(k * 1/2) = 0, 0, 1: repeated regions, as in cirtorch.
    expected = [(0, 0, 2)]
    expected += [(r, c, 1) for r in (0, 1) for c in (0, 1)]
    expected += [(r, c, 1) for r in (0, 0, 1) for c in (0, 0, 1)]
    assert ag.rmac_regions(2, 2) == expected
    # 1 x 10: w = 1, b = 9 / (n-1) and |0.6 - b| is smallest for n = 7 (b = 1.5); level 1:
    # 7 one-cell regions at floor(1.5 k) = 0, 1, 3, 4, 6, 7, 9; side 0 at levels 2, 3.
    assert ag.rmac_regions(1, 10) == [(0, c, 1) for c in (0, 1, 3, 4, 6, 7, 9)]


def test_rmac_regions_ties_resolved_as_cirtorch():
    # 5 x 9: b = 4/(n-1); n = 2 gives overlap 1/5, n = 3 gives 3/5: both 0.2 from 0.4.
    # cirtorch's float32 arithmetic takes n = 2 (MATLAB's double would take 3).
    assert [r for r in ag.rmac_regions(5, 9) if r[2] == 5] == [(0, 0, 5), (0, 4, 5)]
    # 3 x 11: b = 8/(n-1); n = 5 gives 1/3, n = 6 gives 7/15: both 1/15 from 0.4.
    # cirtorch takes 6: starts floor(1.6 k) = 0, 1, 3, 4, 6, 8.
    assert [r for r in ag.rmac_regions(3, 11) if r[2] == 3] == [
        (0, c, 3) for c in (0, 1, 3, 4, 6, 8)
    ]


def test_rmac_regions_levels_and_overlap():
    assert ag.rmac_regions(7, 10, levels=1) == [(0, 0, 7), (0, 3, 7)]
    assert ag.rmac_regions(7, 10, levels=5)[: len(ag.rmac_regions(7, 10))] == ag.rmac_regions(
        7, 10
    )
    # overlap 0.9 on 7 x 10: b = 3/(n-1), overlap 1 - b/7 = 0.893 (n = 5), 0.914 (6),
    # 0.929 (7): n = 5, starts floor(0.75 k) = 0, 0, 1, 2, 3.
    assert [r for r in ag.rmac_regions(7, 10, overlap=0.9) if r[2] == 7] == [
        (0, c, 7) for c in (0, 0, 1, 2, 3)
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmac_3x3_one_level_is_twice_normalised_mac(dtype):
    f = random_map(3, 3, 5, seed=1, dtype=dtype)
    m = f.reshape(9, 5).max(axis=0).astype(np.float64)
    out = ag.rmac(f, levels=1)
    assert out.dtype == dtype
    # The whole-map term plus the single level-1 region, which is the whole map too.
    np.testing.assert_allclose(out, 2 * m / (np.linalg.norm(m) + 1e-6), rtol=rtol(dtype))


def test_rmac_2x2_by_hand():
    # Cells (0,0) = [3, 4], (0,1) = [1, 0], (1,0) = [0, 2], (1,1) = [0, 0]; MAC = [3, 4].
    # Regions (see test_rmac_regions_tiny_maps): the whole map twice (extra term + level 1),
    # then (0,0) 1 + 4 times, (0,1) and (1,0) 1 + 2 times each, (1,1) 1 + 1 times (zero).
    f = np.array([[[3.0, 4.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]])

    def n(v):
        return np.asarray(v, dtype=float) / (np.linalg.norm(v) + 1e-6)

    expected = 2 * n([3, 4]) + 5 * n([3, 4]) + 3 * n([1, 0]) + 3 * n([0, 2])
    np.testing.assert_allclose(ag.rmac(f), expected, rtol=1e-13)
    np.testing.assert_allclose(expected, [7.2, 8.6], rtol=1e-5)


def test_rmac_7x10_counts_the_regions_holding_a_cell():
    # One non-zero cell in channel 0: every region holding it contributes e0 / (1 + eps),
    # so channel 0 counts them (+1 for the whole map). From the 7 x 10 grid above:
    # cell (0, 0): one region per level -> 3 + 1; cell (3, 3): level 1 both, level 2 rows
    # {0-3, 3-6} x cols {0-3, 3-6}, level 3 row start 2 x col start 2 -> 2 + 4 + 1 + 1.
    for (r, c), count in (((0, 0), 4), ((3, 3), 8), ((6, 9), 4)):
        f = np.zeros((7, 10, 2))
        f[r, c, 0] = 5.0
        np.testing.assert_allclose(ag.rmac(f), [count * 5 / (5 + 1e-6), 0.0], rtol=1e-13)


def test_rmac_tiny_and_zero_maps():
    f = np.array([[[3.0, 4.0]]])
    np.testing.assert_allclose(ag.rmac(f), 2 * np.array([0.6, 0.8]) / (1 + 2e-7), rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(ag.rmac(np.zeros((4, 6, 3))), np.zeros(3))
        np.testing.assert_array_equal(ag.rmac(np.zeros((4, 6, 3)), eps=0.0), np.zeros(3))


def test_rmac_needs_a_spatial_map():
    message = r"rmac needs a channels-last \(H, W, C\).*\(6, 3\)"
    with pytest.raises(InvalidInputError, match=message):
        ag.rmac(np.ones((6, 3)))


# ---------------------------------------------------------------------------------------------
# CroW
# ---------------------------------------------------------------------------------------------
# 2 x 2 x 3: channel 0 is 1 everywhere (Q = 1), channel 1 is 2 at cell (0,0) only
# (Q = 1/4), channel 2 is dead (Q = 0).
# S = [3, 1, 1, 1], ||S||_2 = sqrt(12), spatial = (S / sqrt 12)^(1/2):
#     cell (0,0): (3 / sqrt 12)^(1/2) = (3/4)^(1/4), the others 12^(-1/4).
# sum Q = 5/4, channel = [log(5/4), log(5), 0].
# CroW = channel * [s0 + 3 s1, 2 s0, 0].
CROW_MAP = np.zeros((2, 2, 3))
CROW_MAP[:, :, 0] = 1.0
CROW_MAP[0, 0, 1] = 2.0
S0, S1 = 0.75**0.25, 12.0**-0.25


@pytest.mark.parametrize("dtype", DTYPES)
def test_crow_weights_by_hand(dtype):
    spatial, channel = ag.crow_weights(CROW_MAP.astype(dtype))
    assert spatial.dtype == channel.dtype == dtype
    np.testing.assert_allclose(spatial, [[S0, S1], [S1, S1]], rtol=rtol(dtype))
    np.testing.assert_allclose(channel, [np.log(1.25), np.log(5.0), 0.0], rtol=rtol(dtype))
    out = ag.crow(CROW_MAP.astype(dtype))
    assert out.dtype == dtype
    expected = [np.log(1.25) * (S0 + 3 * S1), np.log(5.0) * 2 * S0, 0.0]
    np.testing.assert_allclose(out, expected, rtol=rtol(dtype))


def test_crow_other_a_b_by_hand():
    # a = 1, b = 1: spatial = S / sum S = [3, 1, 1, 1] / 6.
    spatial, _ = ag.crow_weights(CROW_MAP, a=1, b=1)
    np.testing.assert_allclose(spatial, [[0.5, 1 / 6], [1 / 6, 1 / 6]], rtol=1e-13)
    np.testing.assert_allclose(
        ag.crow(CROW_MAP, a=1, b=1), [np.log(1.25), np.log(5.0), 0.0], rtol=1e-13
    )


def test_crow_accepts_local_features():
    flat = CROW_MAP.reshape(4, 3)
    np.testing.assert_allclose(ag.crow(flat), ag.crow(CROW_MAP), rtol=1e-15)
    spatial, _ = ag.crow_weights(flat)
    assert spatial.shape == (4,)


def test_crow_degenerate_maps():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # All zero: S = 0 -> zero spatial weights, every channel dead -> zero weights.
        spatial, channel = ag.crow_weights(np.zeros((3, 4, 5)))
        np.testing.assert_array_equal(spatial, np.zeros((3, 4)))
        np.testing.assert_array_equal(channel, np.zeros(5))
        np.testing.assert_array_equal(ag.crow(np.zeros((3, 4, 5))), np.zeros(5))
        # One live channel: log(Q / Q) = 0, the descriptor is zero (as in yahoo/crow).
        f = np.zeros((2, 3, 4))
        f[0, 1, 2] = 7.0
        np.testing.assert_array_equal(ag.crow(f), np.zeros(4))
        # 1 x 1 map: spatial weight 1, Q = 1 for the 2 live channels -> log 2 each.
        g = np.array([[[2.0, 0.0, 5.0]]])
        np.testing.assert_allclose(ag.crow(g), [2 * np.log(2), 0.0, 5 * np.log(2)], rtol=1e-14)


def test_crow_rejects_negative_channel_sums():
    f = np.ones((2, 2, 2))
    f[1, 0] = [-3.0, 1.0]
    with pytest.raises(InvalidInputError, match=r"non-negative channel sums.*-2 at cell 2"):
        ag.crow(f)
    g = np.ones((2, 2, 2))
    g[1, 0] = [-0.5, 1.0]  # a negative feature with a positive sum is fine
    assert np.all(np.isfinite(ag.crow(g)))


# ---------------------------------------------------------------------------------------------
# HeW and the dispatcher
# ---------------------------------------------------------------------------------------------
def test_hew_delegates_to_hew_pool():
    f = random_map(4, 5, 6, seed=3)
    mu = f.reshape(-1, 6).mean(axis=0) * 0.5
    np.testing.assert_array_equal(ag.hew(f), hs.hew_pool(f))
    np.testing.assert_array_equal(
        ag.hew(f, mu, threshold=0.1, ground=0.2), hs.hew_pool(f, mu, threshold=0.1, ground=0.2)
    )
    np.testing.assert_array_equal(ag.pool(f), hs.hew_pool(f))


def test_poolings_registry():
    assert set(ag.POOLINGS) == {"hew", "spoc", "mac", "gem", "rmac", "crow"}
    f = random_map(seed=4)
    for name, func in ag.POOLINGS.items():
        np.testing.assert_array_equal(ag.pool(f, name), func(f))
    np.testing.assert_array_equal(ag.pool(f, "gem", p=4.0), ag.gem(f, p=4.0))
    np.testing.assert_array_equal(ag.pool(f, "rmac", levels=2), ag.rmac(f, levels=2))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_batch_rows_equal_pool(method, dtype):
    sizes = [(4, 6), (1, 1), (5, 3)]
    maps = [random_map(h, w, 3, seed=s, dtype=dtype) for s, (h, w) in enumerate(sizes)]
    out = ag.pool_batch(maps, method)
    assert out.shape == (3, 3) and out.dtype == dtype
    for b, m in enumerate(maps):
        np.testing.assert_allclose(out[b], ag.pool(m, method), rtol=rtol(dtype), atol=0)
    # One (B, H, W, C) array works too.
    stack = np.stack([random_map(4, 4, 3, seed=s, dtype=dtype) for s in range(2)])
    np.testing.assert_allclose(
        ag.pool_batch(stack, method), [ag.pool(m, method) for m in stack], rtol=rtol(dtype)
    )


def test_pool_batch_hew_uses_rust_batch_and_kwargs():
    maps = [random_map(3, 4, 5, seed=s) for s in range(3)]
    np.testing.assert_array_equal(
        ag.pool_batch(maps, threshold=0.1), hs.hew_pool_batch(maps, threshold=0.1)
    )
    np.testing.assert_array_equal(
        ag.pool_batch(maps, "gem", p=2.0), np.stack([ag.gem(m, p=2.0) for m in maps])
    )


# ---------------------------------------------------------------------------------------------
# Properties shared by the methods
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_kept_and_float32_close_to_float64(method, dtype):
    f = random_map(6, 5, 4, seed=5)
    out = ag.pool(f.astype(dtype), method)
    assert out.dtype == dtype and out.shape == (4,)
    np.testing.assert_allclose(out, ag.pool(f, method), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in SPATIAL_ONLY])
def test_local_features_accepted(method):
    f = random_map(3, 5, 4, seed=6)
    np.testing.assert_allclose(ag.pool(f.reshape(15, 4), method), ag.pool(f, method), rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_layouts_give_the_same_result(method):
    f = random_map(5, 6, 4, seed=7)
    big = np.zeros((10, 6, 12))
    big[::2, :, ::3] = f
    swapped = f.transpose(1, 0, 2).copy().transpose(1, 0, 2)  # H and W strides swapped
    for g in (np.asfortranarray(f), big[::2, :, ::3], swapped):
        np.testing.assert_allclose(ag.pool(g, method), ag.pool(f, method), rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_one_by_one_map(method):
    f = np.array([[[3.0, 0.0, 4.0]]])
    expected = {
        "hew": [3.0, 0.0, 4.0],  # one cell: weight 1
        "spoc": [3.0, 0.0, 4.0],
        "mac": [3.0, 0.0, 4.0],
        "gem": [3.0, 1e-6, 4.0],
        "rmac": 2 * np.array([0.6, 0.0, 0.8]) / (1 + 2e-7),
        "crow": [3 * np.log(2), 0.0, 4 * np.log(2)],
    }[method]
    np.testing.assert_allclose(ag.pool(f, method), expected, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_all_zero_map_gives_no_nan(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ag.pool(np.zeros((4, 5, 3)), method)
    assert np.all(np.isfinite(out))
    expected = np.full(3, 1e-6) if method == "gem" else np.zeros(3)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "method,degree", [("spoc", 1), ("mac", 1), ("gem", 1), ("crow", 1), ("hew", 1), ("rmac", 0)]
)
def test_positive_scaling(method, degree):
    # spoc, mac, crow, hew (own mean) scale linearly; gem too while the clamp is inactive
    # (values >= eps before and after); rmac normalises every region: invariant up to eps.
    f = random_map(5, 6, 4, seed=8) + 0.05
    for lam in (3.0, 0.5):
        np.testing.assert_allclose(
            ag.pool(lam * f, method), lam**degree * ag.pool(f, method), rtol=1e-6
        )


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6),
        elements=st.floats(0, 100),
    )
)
def test_invariants(f):
    n = f.shape[0] * f.shape[1]
    mean = f.reshape(n, -1).mean(axis=0)
    mac = ag.mac(f)
    np.testing.assert_allclose(ag.spoc(f), n * mean, rtol=1e-12, atol=1e-9)
    # Power-mean inequality: mean(max(f, eps)) <= GeM_p <= MAC(max(f, eps)) for p >= 1.
    g = ag.gem(f)
    assert np.all(g >= np.maximum(mean, 1e-6) * (1 - 1e-9))
    assert np.all(g <= np.maximum(mac, 1e-6) * (1 + 1e-9))
    # R-MAC sums at most len(regions) + 1 vectors of norm < 1, all non-negative.
    r = ag.rmac(f)
    assert np.all(r >= 0)
    assert np.linalg.norm(r) <= len(ag.rmac_regions(*f.shape[:2])) + 1
    c = ag.crow(f)
    assert np.all(np.isfinite(c)) and np.all(c >= 0)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_bad_dtype(method):
    for bad_dtype in (np.int64, np.float16, bool, np.complex64):
        bad = np.ones((2, 2, 2), bad_dtype)
        with pytest.raises(TypeError, match="float32 or float64"):
            ag.pool(bad, method)
    with pytest.raises(InvalidDTypeError):
        ag.pool(np.ones((2, 2, 2), np.int32), method)


@pytest.mark.parametrize("method", METHODS)
def test_non_finite(method):
    for bad in (np.nan, np.inf, -np.inf):
        f = np.ones((2, 3, 2))
        f[1, 2, 0] = bad
        with pytest.raises(InvalidInputError, match="finite"):
            ag.pool(f, method)
        with pytest.raises(InvalidInputError, match="finite"):
            ag.pool_batch([np.ones((2, 3, 2)), f], method)


@pytest.mark.parametrize("method", METHODS)
def test_bad_shapes(method):
    with pytest.raises(InvalidInputError, match=r"\(H, W, C\).*shape \(5,\)"):
        ag.pool(np.ones(5), method)
    with pytest.raises(InvalidInputError, match=r"\(H, W, C\).*shape \(2, 2, 2, 2\)"):
        ag.pool(np.ones((2, 2, 2, 2)), method)
    with pytest.raises(InvalidInputError, match="at least one"):
        ag.pool(np.ones((0, 3, 2)), method)
    with pytest.raises(InvalidInputError, match="at least one"):
        ag.pool(np.ones((2, 3, 0)), method)
    with pytest.raises(InvalidInputError, match="at least one feature map"):
        ag.pool_batch([], method)
    with pytest.raises(InvalidInputError, match="same number of channels.*3.*4"):
        ag.pool_batch([np.ones((2, 2, 3)), np.ones((2, 2, 4))], method)
    with pytest.raises(InvalidDTypeError, match="same dtype"):
        ag.pool_batch([np.ones((2, 2, 3)), np.ones((2, 2, 3), np.float32)], method)
    with pytest.raises(InvalidInputError, match="list of feature maps"):
        ag.pool_batch(np.ones((3, 4)), method)


def test_bad_parameters():
    f = np.ones((3, 3, 2))
    for p in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match="p must be a finite number > 0"):
            ag.gem(f, p=p)
    with pytest.raises(InvalidInputError, match="eps must be a finite number >= 0"):
        ag.gem(f, eps=-1e-6)
    with pytest.raises(InvalidDTypeError, match="p must be a real number"):
        ag.gem(f, p="3")
    with pytest.raises(InvalidInputError, match="levels must be >= 1"):
        ag.rmac(f, levels=0)
    with pytest.raises(InvalidDTypeError, match="levels must be an int"):
        ag.rmac(f, levels=2.5)
    for ovr in (1.0, -0.1, float("nan")):
        with pytest.raises(InvalidInputError, match="overlap"):
            ag.rmac(f, overlap=ovr)
    with pytest.raises(InvalidInputError, match="eps must be a finite number >= 0"):
        ag.rmac(f, eps=float("inf"))
    with pytest.raises(InvalidInputError, match="height must be >= 1"):
        ag.rmac_regions(0, 4)
    for name in ("a", "b"):
        with pytest.raises(InvalidInputError, match=f"{name} must be a finite number > 0"):
            ag.crow(f, **{name: 0})
    with pytest.raises(InvalidInputError, match="ground.*> 0"):
        ag.hew(f, ground=0)
    with pytest.raises(InvalidInputError, match=r"one of 'hew', .*'crow', got 'max'"):
        ag.pool(f, "max")
    with pytest.raises(InvalidInputError, match="method must be one of"):
        ag.pool_batch([f], None)
    with pytest.raises(TypeError):
        ag.pool(f, "mac", p=3)
