"""Tests of heatsearch.whitening (PCAWhitening) and heatsearch._atomic (atomic_write)."""

from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile

import numpy as np
import pytest

from heatsearch._atomic import atomic_write
from heatsearch.errors import InvalidDTypeError, InvalidInputError
from heatsearch.whitening import DUPLICATE_JOIN_COSINE, DUPLICATE_WEIGHT, EIGENVALUE_FLOOR, FILE_FORMAT, FILE_VERSION, PCAWhitening

DTYPES = [np.float32, np.float64]


def correlated(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Training vectors with a non-zero mean and a strongly non-identity covariance."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.2, d)
    mixing = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return (rng.standard_normal((n, d)) * scales) @ mixing + rng.standard_normal(d)


def fitted(n: int = 80, d: int = 6, dim=None, seed: int = 0) -> PCAWhitening:
    return PCAWhitening().fit(correlated(n, d, seed), dim=dim)


def layouts(a: np.ndarray):
    big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), dtype=a.dtype)
    big[::2, ::3] = a
    return {"C": np.ascontiguousarray(a), "F": np.asfortranarray(a), "strided": big[::2, ::3]}


# ---------------------------------------------------------------- fit / transform


def test_fit_by_hand():
    # Mean 0; sample covariance (n - 1 = 3) is diag(2/3, 8/3): the y axis comes first.
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    w = PCAWhitening().fit(X)
    assert w.dim_ == 2
    np.testing.assert_allclose(w.mean_, [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(w.eigenvalues_, [8 / 3, 2 / 3])
    # Columns: unit eigenvectors (largest entry positive) / sqrt(eigenvalue).
    np.testing.assert_allclose(
        w.projection_, [[0.0, 1 / np.sqrt(2 / 3)], [1 / np.sqrt(8 / 3), 0.0]], atol=1e-15
    )
    np.testing.assert_allclose(w.transform(np.array([1.0, 0.0])), [0.0, np.sqrt(1.5)], atol=1e-15)
    np.testing.assert_allclose(
        w.transform(np.array([[0.0, -2.0]])), [[-np.sqrt(1.5), 0.0]], atol=1e-15
    )


def test_fit_by_hand_with_offset_and_dim():
    # Shifting the data moves the mean only; dim=1 keeps the direction of largest variance.
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]) + [5.0, -7.0]
    w = PCAWhitening().fit(X, dim=1)
    np.testing.assert_allclose(w.mean_, [5.0, -7.0])
    assert w.dim_ == 1 and w.projection_.shape == (2, 1) and w.eigenvalues_.shape == (1,)
    np.testing.assert_allclose(w.transform(np.array([5.0, -5.0])), [2 / np.sqrt(8 / 3)])


@pytest.mark.parametrize("dim", [None, 6, 3, 1])
def test_training_set_becomes_white(dim):
    X = correlated(200, 6)
    w = PCAWhitening().fit(X, dim=dim)
    Z = w.transform(X)
    kept = 6 if dim is None else dim
    assert Z.shape == (200, kept) and w.dim_ == kept
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    cov = np.cov(Z, rowvar=False, ddof=1).reshape(kept, kept)
    np.testing.assert_allclose(cov, np.eye(kept), atol=1e-10)
    # The kept components are the ones of largest variance, in descending order.
    top = np.linalg.eigvalsh(np.cov(X, rowvar=False))[::-1][:kept]
    np.testing.assert_allclose(w.eigenvalues_, top, rtol=1e-10)
    assert np.all(np.diff(w.eigenvalues_) <= 0)


def test_fit_does_not_modify_input_and_stores_float64():
    X = correlated(30, 4).astype(np.float32)
    before = X.copy()
    w = PCAWhitening().fit(X)
    np.testing.assert_array_equal(X, before)
    for a in (w.mean_, w.projection_, w.eigenvalues_):
        assert a.dtype == np.float64


def test_fit_same_result_for_every_layout_and_dtype():
    X = correlated(50, 5)
    ref = PCAWhitening().fit(X)
    for name, view in layouts(X).items():
        w = PCAWhitening().fit(view)
        np.testing.assert_allclose(w.projection_, ref.projection_, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(w.mean_, ref.mean_, rtol=1e-12, err_msg=name)
    w32 = PCAWhitening().fit(X.astype(np.float32))
    np.testing.assert_allclose(w32.projection_, ref.projection_, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transform_keeps_dtype_and_layouts_agree(dtype):
    w = fitted(d=5)
    X = correlated(9, 5, seed=1).astype(dtype)
    expected = (X.astype(np.float64) - w.mean_) @ w.projection_
    for name, view in layouts(X).items():
        out = w.transform(view)
        assert out.dtype == dtype and out.shape == (9, 5) and out.flags.c_contiguous
        np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-5 if dtype == np.float32 else 1e-12, err_msg=name)
    vec = w.transform(X[3])
    assert vec.shape == (5,)
    np.testing.assert_allclose(vec, w.transform(X)[3], rtol=1e-6)


def test_transform_empty_batch():
    w = fitted(d=4)
    assert w.transform(np.zeros((0, 4), dtype=np.float32)).shape == (0, 4)


def test_n_not_above_d_caps_dimension_with_warning():
    X = correlated(5, 8)  # 5 vectors in 8-D: rank 4 after centring
    with pytest.warns(UserWarning, match=r"n - 1 = 4.*capped at 4"):
        w = PCAWhitening().fit(X)
    assert w.dim_ == 4 and w.projection_.shape == (8, 4)
    Z = w.transform(X)
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(4), atol=1e-9)
    assert np.all(np.isfinite(w.projection_))
    with pytest.warns(UserWarning, match="asked for 6"):
        assert PCAWhitening().fit(X, dim=6).dim_ == 4


def test_n_not_above_d_small_dim_has_no_warning():
    X = correlated(5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = PCAWhitening().fit(X, dim=3)
    assert w.dim_ == 3


def test_eigenvalue_floor_prevents_division_by_zero():
    # n > d but the last coordinate is constant: a zero-variance direction.
    X = correlated(40, 3)
    X[:, 2] = 1.5
    with pytest.warns(UserWarning, match=r"below 1e-12 x the largest.*dim <= 2"):
        w = PCAWhitening().fit(X)
    floor = EIGENVALUE_FLOOR * w.eigenvalues_[0]
    assert w.eigenvalues_[-1] == pytest.approx(floor)
    assert np.all(np.isfinite(w.projection_))
    # Gain of the floored direction is bounded by 1e6 times that of the strongest one.
    gains = np.linalg.norm(w.projection_, axis=0)
    assert gains.max() <= gains[0] * 1.0000001 / np.sqrt(EIGENVALUE_FLOOR)


def test_eigenvector_signs_are_fixed():
    w = fitted(d=6)
    cols = w.projection_
    pivots = np.argmax(np.abs(cols), axis=0)
    assert np.all(cols[pivots, np.arange(cols.shape[1])] > 0)


def test_fit_rejects_bad_input():
    X = correlated(10, 4)
    with pytest.raises(InvalidInputError, match=r"dim must be at most d = 4.*got 5"):
        PCAWhitening().fit(X, dim=5)
    with pytest.raises(InvalidInputError, match="got 0"):
        PCAWhitening().fit(X, dim=0)
    with pytest.raises(InvalidDTypeError, match="dim must be an int or None, got float"):
        PCAWhitening().fit(X, dim=2.0)
    with pytest.raises(InvalidDTypeError, match="got bool"):
        PCAWhitening().fit(X, dim=True)
    with pytest.raises(InvalidInputError, match=r"at least 2 training vectors.*\(1, 4\)"):
        PCAWhitening().fit(X[:1])
    with pytest.raises(InvalidInputError, match=r"2-D array of row vectors \(n, d\).*\(4,\)"):
        PCAWhitening().fit(X[0])
    with pytest.raises(InvalidDTypeError, match="int64"):
        PCAWhitening().fit(X.astype(np.int64))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="must be finite, got"):
        PCAWhitening().fit(bad)
    with pytest.raises(InvalidInputError, match="no variance: all 6 training vectors are equal"):
        PCAWhitening().fit(np.ones((6, 3)))


def test_transform_rejects_bad_input():
    w = fitted(d=4)
    with pytest.raises(InvalidInputError, match=r"must be a \(4,\) vector or an \(n, 4\) matrix.*got shape \(3, 5\)"):
        w.transform(np.ones((3, 5)))
    with pytest.raises(InvalidInputError, match=r"got shape \(2, 2, 4\)"):
        w.transform(np.ones((2, 2, 4)))
    with pytest.raises(InvalidInputError, match="must be finite, got"):
        w.transform(np.array([[np.inf, 0, 0, 0]]))
    with pytest.raises(InvalidDTypeError):
        w.transform(np.ones((1, 4), dtype=np.float16))
    with pytest.raises(InvalidInputError, match="not fitted; call fit"):
        PCAWhitening().transform(np.ones((1, 4)))
    assert repr(PCAWhitening()) == "PCAWhitening(not fitted)"
    assert repr(w) == "PCAWhitening(d=4, dim=4)"


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path):
    w = fitted(d=6, dim=4)
    path = tmp_path / "white.pca"  # no .npz suffix: used as given
    w.save(path)
    assert os.listdir(tmp_path) == ["white.pca"]
    v = PCAWhitening.load(path)
    assert v.dim_ == w.dim_ == 4 and isinstance(v.dim_, int)
    np.testing.assert_array_equal(v.mean_, w.mean_)
    np.testing.assert_array_equal(v.projection_, w.projection_)
    np.testing.assert_array_equal(v.eigenvalues_, w.eigenvalues_)
    X = correlated(5, 6, seed=3).astype(np.float32)
    np.testing.assert_array_equal(v.transform(X), w.transform(X))
    v2 = PCAWhitening.load(str(path))  # str paths too
    np.testing.assert_array_equal(v2.projection_, w.projection_)


def test_saved_file_is_versioned_npz_without_pickle(tmp_path):
    path = tmp_path / "w.npz"
    fitted(d=3).save(path)
    with np.load(path, allow_pickle=False) as f:
        assert str(f["format"]) == FILE_FORMAT == "heatsearch-pca-whitening"
        assert int(f["version"]) == FILE_VERSION == 1
        assert set(f.files) == {"format", "version", "mean", "projection", "eigenvalues", "dim"}


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "w.npz"
    fitted(d=3, seed=1).save(path)
    new = fitted(d=5, seed=2)
    new.save(path)
    np.testing.assert_array_equal(PCAWhitening.load(path).projection_, new.projection_)
    assert os.listdir(tmp_path) == ["w.npz"]


def test_save_unfitted_raises(tmp_path):
    with pytest.raises(InvalidInputError, match="save: not fitted"):
        PCAWhitening().save(tmp_path / "w.npz")
    assert os.listdir(tmp_path) == []


def _write_npz(path, **entries):
    with open(path, "wb") as f:
        np.savez(f, **entries)


def _valid_entries(**override):
    w = fitted(d=3)
    entries = dict(
        format=np.array(FILE_FORMAT),
        version=np.array(1),
        mean=w.mean_,
        projection=w.projection_,
        eigenvalues=w.eigenvalues_,
        dim=np.array(w.dim_),
    )
    entries.update(override)
    return {k: v for k, v in entries.items() if v is not None}


@pytest.mark.parametrize(
    "override, message",
    [
        ({"version": np.array(2)}, "unsupported version 2 .*reads version 1"),
        ({"version": None}, "'version' entry is missing"),
        ({"format": np.array("something-else")}, "format is 'something-else'"),
        ({"format": None}, "no 'format' entry"),
        ({"projection": None}, r"entries \['projection'\] are missing"),
        ({"mean": np.zeros(4)}, "inconsistent shapes"),
        ({"dim": np.array(7)}, "inconsistent shapes"),
        ({"eigenvalues": np.array([1.0, 0.0, 1.0])}, "must all be > 0"),
        ({"projection": np.full((3, 3), np.nan)}, "NaN or infinity"),
        ({"mean": np.zeros(3, dtype=np.float32)}, "must be float64"),
    ],
)
def test_load_rejects_wrong_contents(tmp_path, override, message):
    path = tmp_path / "bad.npz"
    _write_npz(path, **_valid_entries(**override))
    with pytest.raises(InvalidInputError, match=message) as info:
        PCAWhitening.load(path)
    assert "bad.npz" in str(info.value)


def test_load_rejects_truncated_file(tmp_path):
    good = tmp_path / "good.npz"
    fitted(d=8).save(good)
    data = good.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 5):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(InvalidInputError, match=rf"cut{cut}\.npz.*truncated or corrupt"):
            PCAWhitening.load(path)


def test_load_rejects_corrupt_member(tmp_path):
    good = tmp_path / "good.npz"
    fitted(d=8).save(good)
    data = bytearray(good.read_bytes())
    # Flip bytes in the middle of the projection member's data: the zip CRC check catches it.
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("projection.npy")
    middle = info.header_offset + 200 + info.compress_size // 2
    data[middle : middle + 8] = b"\xff" * 8
    path = tmp_path / "flipped.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match=r"flipped\.npz.*corrupt \(BadZipFile: Bad CRC"):
        PCAWhitening.load(path)


def test_load_rejects_other_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a whitening\n")
    with pytest.raises(InvalidInputError, match=r"notes\.txt.*not a valid heatsearch"):
        PCAWhitening.load(text)
    npy = tmp_path / "array.npy"
    np.save(npy, np.eye(3))
    with pytest.raises(InvalidInputError, match=r"array\.npy.*single \.npy array"):
        PCAWhitening.load(npy)
    pickled = tmp_path / "obj.npz"
    _write_npz(pickled, **_valid_entries(mean=np.array([object()], dtype=object)))
    with pytest.raises(InvalidInputError, match=r"obj\.npz"):
        PCAWhitening.load(pickled)


def test_load_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        PCAWhitening.load(tmp_path / "nope.npz")


def test_interrupted_save_keeps_old_file_byte_identical(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    fitted(d=3, seed=1).save(path)
    old = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        fitted(d=5, seed=2).save(path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["w.npz"]  # the temporary file is gone


def test_save_failing_while_writing_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    fitted(d=3, seed=1).save(path)
    old = path.read_bytes()

    def failing_savez(f, **kw):
        f.write(b"PK\x03\x04 partial")
        raise MemoryError("simulated failure half-way")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(MemoryError):
        fitted(d=5, seed=2).save(path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["w.npz"]


# ---------------------------------------------------------------- atomic_write


def test_atomic_write_text_and_binary(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_write(path, "w") as f:
        f.write("héllo\n")
    assert path.read_bytes() == "héllo\n".encode("utf-8")
    with atomic_write(path) as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_exception_in_body_keeps_old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as f:
            f.write(b"new content, half")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_new_file_not_created_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "new.bin") as f:
            f.write(b"x")
            raise RuntimeError
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_write_keeps_permissions(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    with atomic_write(path) as f:
        f.write(b"new")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    # A new file gets the umask default, not tempfile's 0o600.
    umask = os.umask(0)
    os.umask(umask)
    fresh = tmp_path / "fresh.bin"
    with atomic_write(fresh) as f:
        f.write(b"x")
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o666 & ~umask


def test_atomic_write_rejects_bad_modes(tmp_path):
    for mode in ("a", "r", "w+", "ab", "x"):
        with pytest.raises(InvalidInputError, match="mode must be one of"):
            with atomic_write(tmp_path / "f", mode):
                pass
    with pytest.raises(InvalidInputError, match="encoding is for text modes only"):
        with atomic_write(tmp_path / "f", "wb", encoding="utf-8"):
            pass
    assert os.listdir(tmp_path) == []


def test_atomic_write_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "no" / "such" / "dir.bin") as f:
            f.write(b"x")


@pytest.mark.parametrize("scale", [1e-42, 1e-25, 1e25])
def test_float32_data_of_any_scale_whitens_like_float64(scale):
    """float32 vectors of scale 1e-42 (denormals) gave a projection of scale 1e42, which
    overflowed float32: every whitened value was NaN."""
    rng = np.random.default_rng(9)
    X = (rng.standard_normal((300, 12)) * scale).astype(np.float32)
    w = PCAWhitening().fit(X)
    got = w.transform(X)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    want = w.transform(X.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("big", [1e300, -1e160, 1.7e308])
def test_a_covariance_that_overflows_is_an_error_not_a_warning(big):
    """Training values whose squares (or sums) pass float64's range: a clear error, under
    NumPy 1.x and 2.x alike (found by the fuzz suite under Python 3.9 / NumPy 1.26)."""
    X = np.array([[big, 1.0], [-0.13, 2.0], [0.5, -1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInputError, match="covariance overflows float64"):
            PCAWhitening().fit(X)


def test_whitened_values_beyond_float32_are_an_error_not_inf():
    rng = np.random.default_rng(10)
    w = PCAWhitening().fit((rng.standard_normal((100, 4)) * 1e-42).astype(np.float32))
    far = np.ones((1, 4), np.float32)  # 1e42 standard deviations away
    with pytest.raises(InvalidInputError, match="too far from the training set"):
        w.transform(far)
    assert np.isfinite(w.transform(far.astype(np.float64))).all()


# -- shrinkage (regularised whitening) ---------------------------------------------------------


def _brute_ledoit_wolf(X):
    """Ledoit and Wolf (2004), eq. 14, with the n outer products formed explicitly."""
    n, d = X.shape
    c = X - X.mean(axis=0)
    S = c.T @ c / n
    mu = np.trace(S) / d
    d2 = np.sum((S - mu * np.eye(d)) ** 2) / d
    b2 = sum(np.sum((np.outer(x, x) - S) ** 2) for x in c) / n**2 / d
    return min(b2, d2) / d2


@pytest.mark.parametrize("n, d", [(3, 8), (10, 40), (50, 20), (200, 5)])
def test_ledoit_wolf_shrinkage_matches_the_formula(n, d):
    X = np.random.default_rng(n * d).normal(size=(n, d)) @ np.random.default_rng(d).normal(size=(d, d))
    w = PCAWhitening().fit(X, shrinkage="ledoit-wolf")
    assert 0 <= w.shrinkage_ <= 1
    np.testing.assert_allclose(w.shrinkage_, _brute_ledoit_wolf(X), rtol=1e-9)


@pytest.mark.parametrize("s", [0.1, 0.5, 0.9])
def test_shrinkage_whitens_the_shrunk_covariance(s):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 6)) * np.array([5, 3, 1, 1, 0.5, 0.1])
    w = PCAWhitening().fit(X, shrinkage=s)
    C = np.cov(X.T)
    shrunk = (1 - s) * C + s * np.trace(C) / 6 * np.eye(6)
    # P^T C' P = I: the projection whitens the shrunk covariance exactly.
    np.testing.assert_allclose(w.projection_.T @ shrunk @ w.projection_, np.eye(6), atol=1e-10)
    assert w.dim_ == 6 and w.shrinkage_ == s


def test_shrinkage_zero_is_the_plain_whitening():
    X = np.random.default_rng(2).normal(size=(40, 7))
    a, b = PCAWhitening().fit(X), PCAWhitening().fit(X, shrinkage=0.0)
    np.testing.assert_array_equal(a.projection_, b.projection_)


def test_shrinkage_keeps_a_small_collection_apart():
    """Fewer vectors than dimensions: plain whitening makes the training set a regular simplex
    (every pair at the same cosine); shrinkage keeps all d dimensions, without a warning, and
    the pairs keep different similarities, ordered like the unwhitened ones near the top."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(12, 50))
    X[1] = X[0] + 0.1 * rng.normal(size=50)  # a near-duplicate pair

    def cosines(w):
        Y = w.transform(X)
        Y /= np.linalg.norm(Y, axis=1, keepdims=True)
        return (Y @ Y.T)[~np.eye(12, dtype=bool)]

    with pytest.warns(UserWarning, match="capped"):
        plain = PCAWhitening().fit(X)
    assert np.ptp(cosines(plain)) < 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shrunk = PCAWhitening().fit(X, shrinkage=0.5)
    assert shrunk.dim_ == 50
    sims = cosines(shrunk)
    assert np.ptp(sims) > 0.5
    Y = shrunk.transform(X)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    assert np.argmax(Y[1:] @ Y[0]) == 0  # the near-duplicate stays the nearest


@pytest.mark.parametrize("bad, error", [(-0.1, InvalidInputError), (1.0, InvalidInputError), (float("nan"), InvalidInputError),
                                        ("ledoit", InvalidInputError), (True, InvalidDTypeError), (None, InvalidDTypeError)])
def test_bad_shrinkage_is_refused(bad, error):
    with pytest.raises(error, match="shrinkage"):
        PCAWhitening().fit(np.random.default_rng(0).normal(size=(5, 3)), shrinkage=bad)


@pytest.mark.parametrize("n, d, shrinkage", [(300, 40, 0.0), (300, 40, "ledoit-wolf"), (30, 64, 0.5), (30, 64, "ledoit-wolf")])
def test_fit_blocks_equals_fit_on_the_concatenation(n, d, shrinkage):
    """PCAWhitening._fit_blocks (heatsearch.distributed's stage 3) sums the covariance block
    by block: the same whitening as fit up to float64 rounding (eigenvectors of equal
    eigenvalues may differ by a rotation, so compare what it does to the training rows)."""
    X = np.random.default_rng(4).standard_normal((n, d)) + 3.0
    blocks = lambda: (X[i : i + 7] for i in range(0, n, 7))  # noqa: E731
    want = PCAWhitening().fit(X, shrinkage=shrinkage)
    got = PCAWhitening()._fit_blocks(blocks, shrinkage=shrinkage)
    assert got.dim_ == want.dim_
    np.testing.assert_allclose(got.shrinkage_, want.shrinkage_, rtol=1e-12)
    np.testing.assert_allclose(got.eigenvalues_, want.eigenvalues_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.transform(X), want.transform(X), atol=1e-9)


def test_fit_blocks_refuses_what_fit_refuses():
    with pytest.raises(InvalidInputError, match="at least 2"):
        PCAWhitening()._fit_blocks(lambda: iter([np.ones((1, 3))]))
    with pytest.raises(InvalidInputError, match="NaN"):
        PCAWhitening()._fit_blocks(lambda: iter([np.array([[1.0, np.nan], [0.0, 1.0]])]))
    with pytest.raises(InvalidInputError, match="widths"):
        PCAWhitening()._fit_blocks(lambda: iter([np.ones((2, 3)), np.ones((2, 4))]))
    with pytest.raises(InvalidInputError, match="no variance"):
        PCAWhitening()._fit_blocks(lambda: iter([np.ones((5, 3))]))


# ---------------------------------------------------------------- near-duplicate groups


def copies(groups: int = 12, per: int = 5, d: int = 40, seed: int = 5, far: float = 0.0):
    """``groups`` distinct vectors, each with ``per - 1`` copies that differ from it along a few
    directions shared by all copies (an "edit": blur, JPEG, ...), plus the group of each row.
    Rows of a group have centred cosines of about 0.9; rows of different groups about 0. With
    ``far`` > 0, one more copy of each (last rows) with that much noise: at 2.0 and d = 40, a
    few of them stay below 0.8 to every row but keep their group's copies as nearest
    neighbours (what the neighbours' rule is for). (What the groups do to real copies is
    tested on the demo's photos: tests/app/test_index_quality.py.)"""
    rng = np.random.default_rng(seed)
    scale = np.linspace(2.0, 0.5, d)
    base = rng.normal(size=(groups, d)) * scale
    edits = rng.normal(size=(per - 1, d)) * 0.25
    X = np.concatenate([base] + [base + e + 0.02 * rng.normal(size=(groups, d)) for e in edits]
                       + ([base + far * 0.5 * scale * rng.normal(size=(groups, d))] if far else []))
    return X + 3.0, np.tile(np.arange(groups), per + (1 if far else 0))


def _brute_groups(X: np.ndarray, t: float, mean=None, join: bool = True):
    """By brute force: the groups that the pairs at centred cosine >= t join (the pure-NumPy
    reference of the duplicates' search and components), grown by every row whose two nearest
    other rows lie in one group at cosines >= 0.5 (until none joins, from a full cosine
    matrix); returns the groups of at least two rows."""
    from heatsearch.reference import duplicate_groups

    Y = X - (X.mean(axis=0) if mean is None else mean)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    group = -np.ones(len(X), int)
    for g in duplicate_groups(Y, t):
        group[g.rows] = g.rows[0]
    S = Y @ Y.T
    np.fill_diagonal(S, -np.inf)
    while join:
        joined = False
        for i in np.flatnonzero(group < 0):
            a, b = np.argsort(-S[i])[:2]
            if group[a] >= 0 and group[a] == group[b] and S[i, b] >= DUPLICATE_JOIN_COSINE:
                group[i], joined = group[a], True
        if not joined:
            break
    return [sorted(np.flatnonzero(group == g)) for g in np.unique(group[group >= 0])]


def _group_scatter(X: np.ndarray, groups, m: int) -> np.ndarray:
    out = np.zeros((X.shape[1], X.shape[1]))
    for g in groups:
        R = X[g] - X[g].mean(axis=0)
        out += R.T @ R
    return DUPLICATE_WEIGHT * out / m


@pytest.mark.parametrize("s, t, far", [(0.0, 0.5, 0), (0.5, 0.5, 0), (0.5, 0.8, 0), (0.9, 0.3, 0), (0.5, 0.8, 2.0),
                                     (0.0, 0.8, 2.0)])
def test_duplicate_groups_join_the_covariance(s, t, far):
    """The projection whitens (1 - s)(C + A) + s tr(C)/d I, where A = 8/n sum over the groups
    of sum_i (x_i - mean_g)(x_i - mean_g)^T (for a pair, (x_i - x_j)(x_i - x_j)^T / 2), the
    groups being those the pairs at centred cosine >= t join, grown by the neighbours' rule,
    all found by brute force here (with ``far``, some images join by that rule)."""
    X, _ = copies(far=far)
    n, d = X.shape
    w = PCAWhitening().fit(X, shrinkage=s, duplicates=t)
    groups = _brute_groups(X, t)
    assert w.duplicate_images_ == sum(len(g) for g in groups) > 0
    if far:
        linked = sum(len(g) for g in _brute_groups(X, t, join=False))
        assert w.duplicate_images_ > linked  # some joined by their neighbours
    C = np.cov(X.T)
    target = (1 - s) * (C + _group_scatter(X, groups, n)) + s * np.trace(C) / d * np.eye(d)
    np.testing.assert_allclose(w.projection_.T @ target @ w.projection_, np.eye(d), atol=1e-9)


def test_a_large_group_counts_each_image_once():
    """Twenty copies of one vector among others: the term is their spread around their mean
    (each copy once), not the sum over their 190 pairs (20 times that)."""
    rng = np.random.default_rng(8)
    X = np.concatenate([rng.normal(size=(40, 6)), rng.normal(size=6) + 0.01 * rng.normal(size=(20, 6))])
    w = PCAWhitening().fit(X, shrinkage=0.5, duplicates=0.9)
    groups = _brute_groups(X, 0.9)
    assert w.duplicate_images_ == sum(len(g) for g in groups) and max(len(g) for g in groups) >= 20
    C = np.cov(X.T)
    target = 0.5 * (C + _group_scatter(X, groups, len(X))) + 0.5 * np.trace(C) / 6 * np.eye(6)
    np.testing.assert_allclose(w.projection_.T @ target @ w.projection_, np.eye(6), atol=1e-9)


def test_without_pairs_found_the_whitening_is_the_plain_one(tmp_path):
    X = correlated(60, 8)
    a = PCAWhitening().fit(X, shrinkage=0.5)
    b = PCAWhitening().fit(X, shrinkage=0.5, duplicates=0.999)
    assert a.duplicate_images_ is None and b.duplicate_images_ == 0
    np.testing.assert_array_equal(a.projection_, b.projection_)
    np.testing.assert_array_equal(a.eigenvalues_, b.eigenvalues_)
    b.save(tmp_path / "w.npz")  # the file keeps the result, not how it was learned
    assert PCAWhitening.load(tmp_path / "w.npz").duplicate_images_ is None


def test_a_failed_fit_leaves_the_fitted_whitening_as_it_was():
    X, _ = copies()
    w = PCAWhitening().fit(X, shrinkage=0.5, duplicates=0.5)
    before = (w.projection_.copy(), w.duplicate_images_)
    with pytest.raises(InvalidInputError, match="no variance"):
        w.fit(np.ones((10, X.shape[1])), shrinkage=0.5, duplicates=0.5)
    np.testing.assert_array_equal(w.projection_, before[0])
    assert w.duplicate_images_ == before[1]


def test_beyond_the_sample_size_pairs_are_searched_in_windows_of_neighbours(monkeypatch):
    """Beyond DUPLICATE_SAMPLE rows, the groups are those of windows of DUPLICATE_WINDOW
    consecutive rows, evenly spaced (the first at row 0, the last ending at the last row),
    the term divided by the sample's size; copies that sit side by side (groups of 4
    consecutive rows here) are found. _fit_blocks, which sees the rows a block at a time,
    takes the same sample."""
    import heatsearch.whitening as module

    rng = np.random.default_rng(9)
    base = rng.normal(size=(50, 12)) * np.linspace(2, 0.5, 12)
    X = np.repeat(base, 4, axis=0) + 0.05 * rng.normal(size=(200, 12)) + 3.0  # rows 4g..4g+3: copies
    n, d = X.shape
    monkeypatch.setattr(module, "DUPLICATE_SAMPLE", 48)
    monkeypatch.setattr(module, "DUPLICATE_WINDOW", 16)
    sample = np.concatenate([np.arange(s, s + 16) for s in np.linspace(0, n - 16, 3).astype(int)])
    assert sample[0] == 0 and sample[-1] == n - 1 and len(set(sample)) == 48
    w = PCAWhitening().fit(X, shrinkage=0.5, duplicates=0.5)
    groups = _brute_groups(X[sample], 0.5, mean=X.mean(axis=0))
    assert w.duplicate_images_ == sum(len(g) for g in groups) >= 40  # the 10 whole groups of 4 in the windows
    C = np.cov(X.T)
    centred = X[sample] - X.mean(axis=0)
    target = 0.5 * (C + _group_scatter(centred, groups, 48)) + 0.5 * np.trace(C) / d * np.eye(d)
    np.testing.assert_allclose(w.projection_.T @ target @ w.projection_, np.eye(d), atol=1e-9)
    got = PCAWhitening()._fit_blocks(lambda: (X[k : k + 7] for k in range(0, n, 7)), shrinkage=0.5, duplicates=0.5)
    assert got.duplicate_images_ == w.duplicate_images_
    np.testing.assert_allclose(got.transform(X), w.transform(X), atol=1e-9)


@pytest.mark.parametrize("groups, d, shrinkage", [(10, 12, 0.5), (10, 12, 0.0), (12, 40, 0.5), (5, 64, "ledoit-wolf")])
def test_fit_blocks_with_duplicates_equals_fit(groups, d, shrinkage):
    """Blocks of 7 rows, groups across their boundaries (a group's rows are ``groups`` apart),
    and images that join by the neighbours' rule (the far copies)."""
    X, _ = copies(groups=groups, per=4, d=d, far=2.0)
    t = 0.8
    want = PCAWhitening().fit(X, shrinkage=shrinkage, duplicates=t)
    got = PCAWhitening()._fit_blocks(lambda: (X[i : i + 7] for i in range(0, len(X), 7)), shrinkage=shrinkage, duplicates=t)
    assert got.duplicate_images_ == want.duplicate_images_ == sum(len(g) for g in _brute_groups(X, t)) > 0
    np.testing.assert_allclose(got.eigenvalues_, want.eigenvalues_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.transform(X), want.transform(X), atol=1e-8)


def test_a_zero_centred_row_pairs_with_nothing():
    """A row equal to the mean has no direction: it scores 0 with every row (no NaN)."""
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]]) + 5.0
    w = PCAWhitening().fit(X, duplicates=0.5)
    assert w.duplicate_images_ == 0
    assert np.isfinite(w.projection_).all()


@pytest.mark.parametrize("bad, error", [(0.0, InvalidInputError), (1.0, InvalidInputError), (-0.5, InvalidInputError),
                                        (float("nan"), InvalidInputError), ("0.8", InvalidDTypeError), (True, InvalidDTypeError)])
def test_bad_duplicates_cosine_is_refused(bad, error):
    X = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(error, match="duplicates"):
        PCAWhitening().fit(X, duplicates=bad)
    with pytest.raises(error, match="duplicates"):
        PCAWhitening()._fit_blocks(lambda: iter([X]), duplicates=bad)


def test_an_image_joins_the_group_holding_its_two_nearest_neighbours():
    """The neighbours' rule on given neighbour lists (each row's own hit first, except rows 7
    and 10, exact copies of a grouped row that rank after it): rows 0-1 and 2-3 are groups;
    row 4 has both nearest in group 0 at >= 0.5 (joins), row 5 joins through row 4 once row
    4 has joined, row 7 (self second) has group 0's rows 0 and 1 as its nearest others
    (joins); row 6 has its two nearest in different groups, row 8 its second nearest below
    0.5, row 9 a nearest outside every group, row 10 (self second) its others in two groups:
    none of those four joins."""
    from heatsearch.whitening import _join_neighbours

    ranks = np.array([[0, 1, 4], [1, 0, 4], [2, 3, 6], [3, 2, 6], [4, 0, 1], [5, 4, 0], [6, 0, 2], [0, 7, 1],
                      [8, 2, 3], [9, 6, 3], [2, 10, 0]])
    sims = np.array([[1, .9, .7], [1, .9, .6], [1, .9, .6], [1, .9, .6], [1, .7, .6], [1, .9, .55], [1, .8, .8],
                     [1, 1, .9], [1, .9, .45], [1, .9, .9], [1, 1, .9]], np.float32)
    label = np.arange(11)
    label[[1, 3]] = [0, 2]
    grouped = np.zeros(11, bool)
    grouped[:4] = True
    _join_neighbours(ranks, sims, label, grouped)
    np.testing.assert_array_equal(np.flatnonzero(grouped), [0, 1, 2, 3, 4, 5, 7])
    np.testing.assert_array_equal(label[[0, 1, 2, 3, 4, 5, 7]], [0, 0, 2, 2, 0, 0, 0])


@pytest.mark.parametrize("duplicates", [None, 0.8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matching_pairs_add_their_difference_scatter(duplicates, dtype):
    """Brute force: the whitening's P P^T is the inverse of the shrunk (C + groups' scatter +
    DUPLICATE_WEIGHT (A - B)^T (A - B) / 2n), at full dimension; pairs of any layout."""
    rng = np.random.default_rng(4)
    n, d, s = 60, 10, 0.5
    X = rng.normal(size=(n, d))
    X[1] = X[0] + 1e-3  # one group when duplicates is set
    A = X[:24:2]  # strided rows
    B = A + 0.2 * rng.normal(size=A.shape)
    plain = PCAWhitening().fit(X, shrinkage=s, duplicates=duplicates)
    with_pairs = PCAWhitening().fit(X, shrinkage=s, duplicates=duplicates,
                                    pairs=(A.astype(dtype), np.asfortranarray(B.astype(dtype))))
    C = np.cov(X, rowvar=False)
    groups = np.linalg.inv(plain.projection_ @ plain.projection_.T)  # (1 - s)(C + G) + s tr(C)/d I
    D = A.astype(dtype).astype(np.float64) - B.astype(dtype)  # the pairs as given
    want = groups + (1 - s) * DUPLICATE_WEIGHT * D.T @ D / (2 * n)
    np.testing.assert_allclose(np.linalg.inv(with_pairs.projection_ @ with_pairs.projection_.T), want, rtol=1e-8, atol=1e-10)
    assert with_pairs.duplicate_images_ == plain.duplicate_images_  # None without duplicates: pairs are not groups
    assert np.trace(C) > 0


def test_postprocess_fit_puts_the_pairs_through_its_power_and_l2():
    from heatsearch.postprocess import PostProcess

    rng = np.random.default_rng(5)
    X = np.abs(rng.normal(size=(40, 8)))
    A, B = X[:5], X[:5] * 1.5 + np.abs(rng.normal(size=(5, 8)))
    pre = PostProcess(None, power=0.5)
    got = PostProcess.fit(X, power=0.5, shrinkage=0.5, pairs=(A, B)).whitening
    want = PCAWhitening().fit(pre(X), shrinkage=0.5, pairs=(pre(A), pre(B)))
    np.testing.assert_allclose(got.projection_, want.projection_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pairs, error, message", [
    ("AB", InvalidDTypeError, r"pairs must be a pair \(A, B\) of \(m, 3\) arrays of matching vectors, got str"),
    ((np.ones((2, 3)),), InvalidDTypeError, "got a tuple of 1"),
    ((np.ones((2, 3)), np.ones((3, 3))), InvalidInputError, r"two arrays of one shape \(m, 3\).*got \(2, 3\) and \(3, 3\)"),
    ((np.ones((2, 4)), np.ones((2, 4))), InvalidInputError, r"got \(2, 4\) and \(2, 4\)"),
    ((np.ones((0, 3)), np.ones((0, 3))), InvalidInputError, "m >= 1"),
    ((np.full((2, 3), np.nan), np.ones((2, 3))), InvalidInputError, r"pairs\[0\]"),
    ((np.ones((2, 3), np.int64), np.ones((2, 3))), InvalidDTypeError, r"pairs\[0\]"),
])
def test_bad_pairs_are_refused(pairs, error, message):
    X = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(error, match=message):
        PCAWhitening().fit(X, pairs=pairs)
