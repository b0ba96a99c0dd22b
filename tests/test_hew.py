"""HeW (docs/ALGORITHM.md section 1): the Rust path against the NumPy reference and hand-worked
values, degenerate maps, layouts, dtypes, invariants and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import heatsearch as hs
from heatsearch import reference as ref

DTYPES = [np.float32, np.float64]


def relu_map(rng, n, c, dtype=np.float64, dead_every=0, repeat_every=0):
    """A post-ReLU-like (N, C) map: sparse non-negative values, optional dead and repeated cells."""
    f = np.maximum(rng.standard_normal((n, c)), 0) * rng.uniform(0.5, 2.0, size=(n, 1))
    if dead_every:
        f[::dead_every] = 0
    if repeat_every and n > repeat_every:
        f[1::repeat_every] = f[0]
    return f.astype(dtype)


# ---------------------------------------------------------------------------------------------
# A hand-worked example.
# ---------------------------------------------------------------------------------------------
def hand_worked_weights():
    """Four cells (mean 0): three identical (1, 0) ("bursty") and one (1, 1).

    Derived on paper from the steady state with source j clamped at 1 and the ground at 0
    (``G_ij / G_jj`` is cell i's temperature then): c = cos 45 deg, positive affinities are six
    1s and six c's, so z = 0.1 (1 + c) / 2; degrees D1 = 2 + c + z, D4 = 3c + z.
    Source 4: each of cells 1-3 has D1 u = 2u + c, u = c / (c + z); T4 = 3u / 5.
    Source 1: cells 2, 3 at u, cell 4 at v: (1 + c + z) u = 1 + c v and (3c + z) v = c + 2c u;
    T1 = (2u + v) / 5. Weights are 1 / T.
    """
    c = math.sqrt(0.5)
    z = 0.1 * (1 + c) / 2
    u4 = c / (c + z)
    t4 = 3 * u4 / 5
    # Cramer's rule on [[1 + c + z, -c], [-2c, 3c + z]] [u, v] = [1, c].
    a11, a12, a21, a22 = 1 + c + z, -c, -2 * c, 3 * c + z
    det = a11 * a22 - a12 * a21
    u = (1 * a22 - a12 * c) / det
    v = (a11 * c - a21 * 1) / det
    t1 = (2 * u + v) / 5
    return np.array([1 / t1, 1 / t1, 1 / t1, 1 / t4])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", [hs, ref], ids=["rust", "reference"])
def test_hand_worked_example(impl, dtype):
    f = np.array([[1, 0], [1, 0], [1, 0], [1, 1]], dtype=dtype)
    expected = hand_worked_weights()
    w = impl.hew_weights(f, np.zeros(2))
    assert w.dtype == dtype
    np.testing.assert_allclose(w, expected, rtol=1e-6 if dtype == np.float32 else 1e-12)
    # The bursty cells get the smaller weight.
    assert w[0] < w[3]
    v = impl.hew_pool(f, np.zeros(2))
    np.testing.assert_allclose(v, expected @ f.astype(np.float64), rtol=1e-6 if dtype == np.float32 else 1e-12)


# ---------------------------------------------------------------------------------------------
# Rust against the reference.
# ---------------------------------------------------------------------------------------------
SHAPES = [(1, 1), (1, 8), (2, 1), (2, 3), (3, 2), (5, 4), (17, 3), (64, 64), (100, 2048),
          (257, 128), (768, 512)]


@pytest.mark.parametrize("threshold", [0.0, 0.1])
@pytest.mark.parametrize("use_mean", [False, True])
@pytest.mark.parametrize("n,c", SHAPES)
def test_rust_matches_reference_f64(n, c, use_mean, threshold):
    rng = np.random.default_rng(n * 1000 + c)
    f = relu_map(rng, n, c, dead_every=7, repeat_every=5)
    mean = relu_map(rng, 50, c).mean(axis=0) if use_mean else None
    w = hs.hew_weights(f, mean, threshold=threshold)
    w_ref = ref.hew_weights(f, mean, threshold=threshold)
    np.testing.assert_allclose(w, w_ref, rtol=1e-9)
    np.testing.assert_allclose(hs.hew_pool(f, mean, threshold=threshold),
                               ref.hew_pool(f, mean, threshold=threshold), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("threshold", [0.0, 0.1])
@pytest.mark.parametrize("n,c", SHAPES)
def test_rust_f32_stays_accurate(n, c, threshold):
    """float32 input gives float32 weights within 1e-4 of the float64 computation.

    With threshold > 0 an affinity within float32 rounding (~1e-6) of tau may be kept in one
    precision and dropped in the other, which shifts z and the degrees slightly: 5e-4 there.
    """
    rng = np.random.default_rng(n * 7 + c)
    f = relu_map(rng, n, c, dead_every=9, repeat_every=4)
    w32 = hs.hew_weights(f.astype(np.float32), threshold=threshold)
    assert w32.dtype == np.float32
    w64 = ref.hew_weights(f.astype(np.float32).astype(np.float64), threshold=threshold)
    np.testing.assert_allclose(w32, w64, rtol=1e-4 if threshold == 0 else 5e-4)
    # The reference in float32 is a literal transcription; it is looser but must agree too.
    w_ref32 = ref.hew_weights(f.astype(np.float32), threshold=threshold)
    assert w_ref32.dtype == np.float32
    np.testing.assert_allclose(w_ref32, w64, rtol=5e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_map_n3072(dtype):
    """The conv5_3-sized case (N = 64 x 48 = 3072, C = 512), where all threads work on one map.

    float32: the heat system's condition number is about 20 N (its smallest eigenvalue is the
    ground z, a tenth of a mean affinity), and the Cholesky pivots carry that eigenvalue, so
    the diagonal tiles are factored in float64 (faer's float32 Cholesky erred 2.6e-4 here);
    measured 5.8e-6, hence 3e-5.
    """
    rng = np.random.default_rng(3072)
    f = relu_map(rng, 3072, 512, dead_every=31).astype(dtype)
    w = hs.hew_weights(f.reshape(64, 48, 512))
    assert w.shape == (64, 48) and w.dtype == dtype
    w_ref = ref.hew_weights(f.astype(np.float64))
    np.testing.assert_allclose(w.reshape(-1), w_ref, rtol=1e-9 if dtype == np.float64 else 3e-5)


@pytest.mark.parametrize("n", [768, 3072])
def test_f32_accurate_with_a_training_set_mean(n):
    """A centering mean learned elsewhere (here 0.9 times the map's own) leaves a common
    direction in every centred feature: all affinities are positive and large, the degrees
    large against z, the system as ill-conditioned as it gets. float32 must still follow
    float64 (measured before the diagonal tiles were factored in float64: 5.4e-5 at N = 768
    and 3.5e-4 at N = 3072; now 1.6e-6 and 9.3e-6; the float32 reference 1.0e-4 and
    1.2e-4)."""
    rng = np.random.default_rng(n)
    base = rng.standard_normal((n, 32)) @ rng.standard_normal((32, 512))
    f = np.maximum(base + 0.5 * rng.standard_normal((n, 512)), 0).astype(np.float32)
    f[rng.random(n) < 0.05] = 0
    mean = (0.9 * f.mean(axis=0, dtype=np.float64)).astype(np.float32)
    w32 = hs.hew_weights(f, mean)
    w64 = hs.hew_weights(f.astype(np.float64), mean.astype(np.float64))
    np.testing.assert_allclose(w32, w64, rtol=5e-5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_f32_accurate_on_weakly_linked_cells(seed):
    """Eight clusters cut apart by a high threshold: some cells keep one or two weak links
    and get weights up to 80 times the smallest. Their temperatures are sums of products of
    the non-negative entries of L^-1 (no cancellation), so float32 still follows float64
    (measured 1.0e-6 to 1.8e-6)."""
    threshold = 0.5
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, 256))
    f = np.maximum(centres[rng.integers(0, 8, 768)] + rng.standard_normal((768, 256)), 0)
    f = f.astype(np.float32)
    w64 = hs.hew_weights(f.astype(np.float64), threshold=threshold)
    assert w64.max() > 5 * w64.min()
    np.testing.assert_allclose(hs.hew_weights(f, threshold=threshold), w64, rtol=2e-5)


def test_random_shapes_sweep():
    """Many random shapes, N from 1 to ~1000 and C up to 2048, both dtypes."""
    rng = np.random.default_rng(2024)
    for _ in range(25):
        n = int(rng.integers(1, 1000))
        c = int(rng.choice([1, 2, 7, 32, 100, 512, 2048]))
        f = relu_map(rng, n, c, dead_every=int(rng.integers(0, 10)))
        np.testing.assert_allclose(hs.hew_weights(f), ref.hew_weights(f), rtol=1e-8)
        np.testing.assert_allclose(hs.hew_weights(f.astype(np.float32)), ref.hew_weights(f.astype(np.float32).astype(np.float64)), rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Layouts and shapes.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_give_identical_results(dtype):
    rng = np.random.default_rng(1)
    hwc = relu_map(rng, 12 * 10, 64, dtype).reshape(12, 10, 64)
    expected = hs.hew_weights(hwc)
    assert expected.shape == (12, 10)
    np.testing.assert_array_equal(hs.hew_weights(np.asfortranarray(hwc)), expected)
    mat = np.ascontiguousarray(hwc.reshape(120, 64))
    np.testing.assert_array_equal(hs.hew_weights(np.asfortranarray(mat)), expected.reshape(-1))
    # Strided and reversed views equal their contiguous copies.
    big = relu_map(rng, 240, 128, dtype)
    view = big[::2, ::2]
    np.testing.assert_array_equal(hs.hew_weights(view), hs.hew_weights(np.ascontiguousarray(view)))
    rev = big[::-1, ::-1]
    np.testing.assert_array_equal(hs.hew_pool(rev), hs.hew_pool(np.ascontiguousarray(rev)))
    # (H, W, C) and (N, C) agree.
    np.testing.assert_array_equal(hs.hew_pool(hwc), hs.hew_pool(mat))


def test_lists_are_accepted():
    f = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    np.testing.assert_array_equal(hs.hew_weights(f), hs.hew_weights(np.array(f)))


# ---------------------------------------------------------------------------------------------
# Degenerate maps (docs/ALGORITHM.md section 1, "Degenerate cases").
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", [hs, ref], ids=["rust", "reference"])
class TestDegenerate:
    def test_single_cell(self, impl, dtype):
        np.testing.assert_array_equal(impl.hew_weights(np.ones((1, 5), dtype)), [1.0])
        np.testing.assert_array_equal(impl.hew_weights(np.ones((1, 1, 5), dtype)), [[1.0]])
        np.testing.assert_array_equal(impl.hew_pool(np.arange(5, dtype=dtype)[None]), np.arange(5))

    def test_all_zero_map(self, impl, dtype):
        # Every cell is dead: no edge survives, nothing is bursty.
        w = impl.hew_weights(np.zeros((4, 3, 8), dtype))
        np.testing.assert_array_equal(w, np.ones((4, 3)))

    def test_constant_map(self, impl, dtype):
        # Every cell equals the map's mean: zero-norm centred features, no affinity.
        w = impl.hew_weights(np.full((6, 4), 2.5, dtype))
        np.testing.assert_array_equal(w, np.ones(6))

    def test_no_positive_affinity(self, impl, dtype):
        # Two cells, centred by their own mean, point in opposite directions: cosine -1.
        w = impl.hew_weights(np.array([[1, 0], [0, 1]], dtype))
        np.testing.assert_array_equal(w, [1.0, 1.0])

    def test_isolated_cell_gets_the_largest_weight(self, impl, dtype):
        f = np.array([[1, 0, 0], [1, 0.1, 0], [0.9, 0.2, 0], [0, 0, 1]], dtype)
        w = impl.hew_weights(f, np.zeros(3))
        assert w[3] == pytest.approx(w[:3].max(), rel=1e-6)
        assert np.all(np.isfinite(w)) and np.all(w > 0)

    def test_cell_equal_to_the_mean_is_isolated(self, impl, dtype):
        mean = np.array([0.5, 0.5, 0.0])
        f = np.array([[1, 0, 0], [0.9, 0.1, 0], [0.5, 0.5, 0], [1, 0.05, 0]], dtype)
        w = impl.hew_weights(f, mean)
        assert w[2] == pytest.approx(w[[0, 1, 3]].max(), rel=1e-6)

    def test_dead_cells_keep_edges_to_live_cells(self, impl, dtype):
        # Two dead cells and three live ones with a mean that makes the dead ones similar to
        # the live ones: the dead pair's own edge is removed, the dead-live edges kept.
        f = np.array([[0, 0], [0, 0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1]], dtype)
        mean = np.array([1.0, 1.0])
        w = impl.hew_weights(f, mean)
        assert np.all(np.isfinite(w)) and np.all(w > 0)
        np.testing.assert_allclose(w, ref.hew_weights(f.astype(np.float64), mean), rtol=1e-5)
        # Without the dead-cell rule the two dead cells (identical) would reinforce each other.
        assert w[0] == pytest.approx(w[1])


def test_degenerate_rules_match_between_paths():
    rng = np.random.default_rng(5)
    f = relu_map(rng, 40, 16, dead_every=3)
    f[5] = f.mean(axis=0)  # close to but not exactly the mean of the final map
    f[7] = 0
    np.testing.assert_allclose(hs.hew_weights(f), ref.hew_weights(f), rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# Invariants (hypothesis).
# ---------------------------------------------------------------------------------------------
maps = st.integers(2, 40).flatmap(
    lambda n: st.integers(1, 24).flatmap(
        lambda c: hnp.arrays(np.float64, (n, c), elements=st.floats(0, 10, allow_subnormal=False))
    )
)


@settings(max_examples=60, deadline=None)
@given(f=maps)
def test_weights_positive_and_finite(f):
    w = hs.hew_weights(f)
    assert w.shape == (f.shape[0],)
    assert np.all(np.isfinite(w)) and np.all(w > 0)


@settings(max_examples=40, deadline=None)
@given(f=maps, seed=st.integers(0, 2**32 - 1))
def test_permuting_cells_permutes_weights(f, seed):
    perm = np.random.default_rng(seed).permutation(f.shape[0])
    np.testing.assert_allclose(hs.hew_weights(f[perm]), hs.hew_weights(f)[perm], rtol=1e-7)


@settings(max_examples=40, deadline=None)
@given(f=maps, scale=st.floats(1e-3, 1e3))
def test_scaling_a_map(f, scale):
    """With mean=None the weights are scale-invariant and the descriptor scales linearly."""
    np.testing.assert_allclose(hs.hew_weights(f * scale), hs.hew_weights(f), rtol=1e-6)
    np.testing.assert_allclose(hs.hew_pool(f * scale), scale * hs.hew_pool(f), rtol=1e-6, atol=1e-9 * scale)


# ---------------------------------------------------------------------------------------------
# Batches and the mean.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_rows_equal_single_maps(dtype):
    rng = np.random.default_rng(11)
    fmaps = [relu_map(rng, h * w, 32, dtype).reshape(h, w, 32) for h, w in [(3, 4), (7, 5), (1, 1), (10, 9), (2, 2)]]
    mean = hs.local_mean(fmaps)
    for m in (None, mean):
        out = hs.hew_pool_batch(fmaps, m)
        assert out.shape == (5, 32) and out.dtype == dtype
        for b, f in enumerate(fmaps):
            np.testing.assert_array_equal(out[b], hs.hew_pool(f, m))
        np.testing.assert_allclose(out, ref.hew_pool_batch(fmaps, m), rtol=1e-4 if dtype == np.float32 else 1e-9)


def test_local_mean_is_the_mean_of_all_cells():
    rng = np.random.default_rng(2)
    fmaps = [relu_map(rng, n, 6) for n in (1, 10, 100)]
    expected = np.concatenate(fmaps).mean(axis=0)
    np.testing.assert_allclose(hs.local_mean(fmaps), expected, rtol=1e-12)
    np.testing.assert_allclose(ref.local_mean(fmaps), expected, rtol=1e-12)
    # Not the mean of per-map means.
    assert not np.allclose(expected, np.mean([f.mean(axis=0) for f in fmaps], axis=0))
    m32 = hs.local_mean([f.astype(np.float32) for f in fmaps])
    assert m32.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", [hs, ref], ids=["rust", "reference"])
class TestErrors:
    def test_dtype(self, impl):
        for bad in (np.ones((3, 2), np.int64), np.ones((3, 2), np.float16), np.ones((3, 2), bool), np.ones((3, 2), np.complex64)):
            with pytest.raises(TypeError, match="float32 or float64"):
                impl.hew_weights(bad)
        with pytest.raises(hs.InvalidDTypeError):
            impl.hew_pool(np.ones((2, 2), np.int32))

    def test_non_finite(self, impl):
        f = np.ones((4, 3))
        for bad in (np.nan, np.inf, -np.inf):
            g = f.copy()
            g[2, 1] = bad
            with pytest.raises(ValueError, match="finite"):
                impl.hew_weights(g)
            # A batch names its first bad map, whatever the number of threads.
            for fn in (impl.hew_pool_batch, impl.local_mean):
                with pytest.raises(ValueError, match=r"fmaps\[1\] must be finite"):
                    fn([f, g, g, f])
        with pytest.raises(ValueError, match="finite"):
            impl.hew_weights(f, np.array([0.0, np.nan, 0.0]))

    def test_shapes(self, impl):
        with pytest.raises(ValueError, match=r"\(H, W, C\).*shape \(5,\)"):
            impl.hew_weights(np.ones(5))
        with pytest.raises(ValueError, match="shape"):
            impl.hew_weights(np.ones((2, 2, 2, 2)))
        with pytest.raises(ValueError, match="at least one"):
            impl.hew_weights(np.ones((0, 3)))
        with pytest.raises(ValueError, match="at least one"):
            impl.hew_pool(np.ones((4, 0)))
        with pytest.raises(ValueError, match=r"mean must have shape \(3,\).*\(4,\)"):
            impl.hew_weights(np.ones((2, 3)), np.ones(4))
        with pytest.raises(ValueError, match="same number of channels.*3.*4"):
            impl.hew_pool_batch([np.ones((2, 3)), np.ones((2, 4))])
        with pytest.raises(TypeError, match="same dtype"):
            impl.hew_pool_batch([np.ones((2, 3)), np.ones((2, 3), np.float32)])
        with pytest.raises(ValueError, match="at least one feature map"):
            impl.hew_pool_batch([])
        with pytest.raises(ValueError, match="list of feature maps"):
            impl.local_mean(np.ones((3, 4)))
        # One (H, W, C) map passed as the batch was pooled row by row into (H, C).
        for call in (impl.hew_pool_batch, impl.local_mean):
            with pytest.raises(ValueError, match=r"list of feature maps or a 4-D.*\(5, 4, 3\).*\[fmap\]"):
                call(np.ones((5, 4, 3)))
        np.testing.assert_array_equal(
            impl.hew_pool_batch(np.ones((2, 5, 4, 3))), impl.hew_pool_batch([np.ones((5, 4, 3))] * 2)
        )

    def test_parameters(self, impl):
        f = np.ones((3, 2))
        with pytest.raises(ValueError, match="threshold.*>= 0.*-0.1"):
            impl.hew_weights(f, threshold=-0.1)
        for g in (0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="ground.*> 0"):
                impl.hew_weights(f, ground=g)
        with pytest.raises(TypeError, match="threshold must be a real number"):
            impl.hew_weights(f, threshold="0.1")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_non_finite_values_are_found_wherever_they_are(dtype, order):
    """The single-map path checks finiteness inside its first pass over the cells (in
    chunks of rows, shared by the threads): every position is found, and the message names
    the first bad entry in row-major order."""
    rng = np.random.default_rng(5)
    cases = [(1, [(0, 2)]), (3, [(2, 1)]), (150, [(0, 0)]), (150, [(149, 3)]), (150, [(100, 0), (70, 3)])]
    for n, bad in cases:
        f = np.asarray(rng.random((n, 4)), dtype=dtype, order=order)
        for (i, k), value in zip(bad, (np.inf, np.nan)):
            f[i, k] = value
        first = min(bad)
        for fn in (hs.hew_weights, hs.hew_pool):
            with pytest.raises(ValueError, match=rf"finite.*row {first[0]}, column {first[1]}"):
                fn(f)
            with pytest.raises(ValueError, match=rf"finite.*row {first[0]}, column {first[1]}"):
                fn(f, np.zeros(4, dtype))


def test_errors_are_heatsearch_errors():
    with pytest.raises(hs.HeatsearchError):
        hs.hew_weights(np.full((2, 2), np.nan))
    assert issubclass(hs.InvalidInputError, ValueError)
    assert issubclass(hs.InvalidDTypeError, TypeError)


def test_a_batch_that_is_not_a_sequence_is_a_type_error():
    """A NumPy scalar as the batch raised NumPy's TypeError (found by the fuzz suite)."""
    for impl in (hs, ref):
        for call in (impl.hew_pool_batch, impl.local_mean):
            with pytest.raises(hs.InvalidDTypeError, match="fmaps must be a list of feature maps, got float32"):
                call(np.float32(0.5))
