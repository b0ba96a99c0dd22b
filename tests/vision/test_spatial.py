"""heatsearch.vision.spatial: local features, geometric verification, the re-ordering rule,
the bounded cache, degenerate inputs and argument checks."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="spatial verification needs OpenCV (the 'spatial' extra)")
pytest.importorskip("PIL", reason="images are decoded with Pillow (the 'torch' extra)")
from PIL import Image  # noqa: E402

from heatsearch.errors import (  # noqa: E402
    HeatsearchError,
    InvalidDTypeError,
    InvalidInputError,
    MissingDependencyError,
)
from helpers import texture, transformed  # noqa: E402
from heatsearch.vision import spatial as sp  # noqa: E402
from heatsearch.vision.spatial import (  # noqa: E402
    LocalFeatures,
    SpatialVerifier,
    spatial_order,
    split_rerank,
    with_spatial,
)


@pytest.fixture(scope="module")
def verifier():
    return SpatialVerifier()


def test_a_rotated_scaled_cropped_copy_verifies_and_an_unrelated_image_does_not(verifier):
    a = verifier.describe(texture(1))
    copy = verifier.describe(transformed(texture(1)))
    other = verifier.describe(texture(2))
    assert len(a) > 100 and a.points.dtype == np.float32 and a.descriptors.dtype == np.uint8
    assert a.points.shape == (len(a), 2) and a.descriptors.shape == (len(a), 128)
    same = verifier.inliers(copy, a)
    assert same >= 5 * verifier.min_inliers
    assert verifier.inliers(other, a) < same / 10  # a few chance inliers at most
    # The count does not depend on which image is the query more than RANSAC's sampling allows.
    assert verifier.inliers(a, copy) >= 5 * verifier.min_inliers


def test_the_count_is_reproducible(verifier):
    a, b = verifier.describe(texture(3)), verifier.describe(transformed(texture(3)))
    assert len({verifier.inliers(b, a) for _ in range(3)}) == 1


def test_points_are_in_pixels_of_the_image_as_given():
    """SIFT runs on the image resized to max_size; the points are scaled back."""
    img = texture(4, 600, 800)
    v = SpatialVerifier(max_size=200)
    small = v.describe(img)
    assert small.points[:, 0].max() > 400 and small.points[:, 1].max() > 300
    assert small.points.min() >= 0 and small.cell == pytest.approx(4)
    # The RANSAC threshold follows: keypoints found at a quarter of the size still agree.
    assert v.inliers(v.describe(transformed(img)), small) >= 30


@pytest.mark.parametrize(
    "image",
    [
        np.full((200, 200, 3), 90, np.uint8),  # flat: no keypoint
        np.zeros((3, 3, 3), np.uint8),  # tiny
        np.zeros((1, 500), np.uint8),  # one row, grayscale
    ],
    ids=["flat", "tiny", "one-row"],
)
def test_images_without_features_give_none_and_verify_nothing(verifier, image):
    f = verifier.describe(image)
    assert len(f) == 0 and f.descriptors.shape == (0, 128)
    assert verifier.inliers(f, verifier.describe(texture(5))) == 0
    assert verifier.inliers(verifier.describe(texture(5)), f) == 0


def test_grayscale_and_float_images_are_read(verifier):
    rgb = texture(6)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    a = verifier.describe(rgb)
    for img in (grey, grey[:, :, None], grey.astype(np.float32) / 255):
        assert verifier.inliers(verifier.describe(img), a) >= 5 * verifier.min_inliers


def test_a_box_crops_the_query_first(verifier):
    img = texture(7)
    whole = verifier.describe(img)
    left = verifier.describe(img, bbox=[0, 0, 200, 300])
    assert 0 < len(left) < len(whole) and left.points[:, 0].max() < 200


def test_a_database_image_that_cannot_be_read_is_unverified_with_a_warning(verifier, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(texture(8)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a JPEG")
    query = verifier.describe(transformed(texture(8)))
    with pytest.warns(UserWarning, match="broken.jpg.*unverified"):
        counts = verifier.verify(query, [str(good), str(broken)])
    assert counts[0] >= verifier.min_inliers and counts[1] is None
    with pytest.warns(UserWarning, match="missing.jpg.*unverified"):
        assert verifier.verify(query, [str(tmp_path / "missing.jpg")]) == [None]


def test_the_cache_is_bounded_and_notices_a_changed_file(tmp_path, monkeypatch):
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.fromarray(texture(10 + i)).save(p)
        paths.append(str(p))
    v = SpatialVerifier()
    one = v.cached(paths[0]).nbytes
    v.clear_cache()
    v = SpatialVerifier(cache_bytes=int(2.5 * one))  # room for two images like these
    calls = []
    real = v.describe
    monkeypatch.setattr(v, "describe", lambda image, bbox=None: calls.append(image) or real(image, bbox))
    for p in paths:
        v.cached(p)
    assert len(v._cache) == 2 and v._cached_bytes <= v.cache_bytes
    v.cached(paths[3])  # the most recent: cached
    assert len(calls) == 4
    v.cached(paths[0])  # dropped first: computed again
    assert len(calls) == 5
    Image.fromarray(texture(99)).save(paths[0])  # changed in place
    import os

    os.utime(paths[0], ns=(1, 1))
    v.cached(paths[0])
    assert len(calls) == 6
    none = SpatialVerifier(cache_bytes=0)
    none.cached(paths[1])
    assert len(none._cache) == 0


def test_spatial_order_puts_verified_candidates_first_and_keeps_ties_in_order():
    #                 0   1     2   3   4   5
    counts = [3, None, 40, 15, 40, 16]
    order = spatial_order(counts, 15)
    assert order.tolist() == [2, 4, 5, 3, 0, 1]
    assert order.dtype == np.int64
    assert spatial_order(counts, 100).tolist() == [0, 1, 2, 3, 4, 5]  # nothing verified: unchanged
    assert spatial_order([], 15).tolist() == []


def test_rerank_names():
    assert with_spatial((None, "heat")) == (None, "heat", "spatial", "heat+spatial")
    assert split_rerank("spatial") == (None, True)
    assert split_rerank("aqe+heat+spatial") == ("aqe+heat", True)
    assert split_rerank("heat") == ("heat", False)
    assert split_rerank(None) == (None, False)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"features": "orb"}, InvalidInputError, "features must be one of 'sift', 'cnn', got 'orb'"),
        ({"depth": 0}, InvalidInputError, "depth must be >= 1, got 0"),
        ({"depth": 2.5}, InvalidDTypeError, "depth must be an int, got float"),
        ({"min_inliers": -1}, InvalidInputError, "min_inliers must be >= 0, got -1"),
        ({"min_inliers": True}, InvalidDTypeError, "min_inliers must be an int or None, got bool"),
        ({"max_size": 8}, InvalidInputError, "max_size must be >= 16, got 8"),
        ({"keypoints": 0}, InvalidInputError, "keypoints must be >= 1, got 0"),
        ({"cache_bytes": -5}, InvalidInputError, "cache_bytes must be >= 0, got -5"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message) as e:
        SpatialVerifier(**kwargs)
    assert isinstance(e.value, HeatsearchError)


def test_bad_images_and_missing_extractor(verifier):
    with pytest.raises(InvalidDTypeError, match="image must be"):
        verifier.describe(12)
    with pytest.raises(InvalidInputError, match="shape"):
        verifier.describe(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InvalidInputError, match="features='cnn' needs the extractor"):
        SpatialVerifier("cnn").describe(texture(1))
    with pytest.raises(InvalidInputError, match="min_inliers must be >= 0"):
        spatial_order([1, 2], -1)


def test_missing_opencv_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "heatsearch\[spatial\]"'):
        SpatialVerifier()


class _Cells:
    """A stand-in extractor: one cell per 16 x 16 block, whose code is a fixed random
    non-negative function of the block's mean colour, so the same content gives the same
    cells wherever the image is shifted by whole blocks."""

    def feature_map(self, image, bbox=None):
        img = np.asarray(image, np.float64)
        h, w = img.shape[0] // 16, img.shape[1] // 16
        colours = img[: h * 16, : w * 16].reshape(h, 16, w, 16, 3).mean(axis=(1, 3))
        W = np.random.default_rng(0).standard_normal((3, 64))
        return np.maximum(np.sin(colours @ W / 10), 0).astype(np.float32)


def blocks(seed, h, w):
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 256, (h, w, 3)), np.ones((16, 16, 1))).astype(np.uint8)


def test_cnn_cells_match_by_position():
    img = blocks(3, 20, 30)
    v = SpatialVerifier("cnn", extractor=_Cells(), min_inliers=10)
    a = v.describe(np.ascontiguousarray(img[:, 32:]))
    shifted = v.describe(np.ascontiguousarray(img[:, :-32]))
    assert a.descriptors.dtype == np.float32 and a.cell == pytest.approx(16)
    np.testing.assert_allclose(np.linalg.norm(a.descriptors, axis=1), 1, rtol=1e-5)
    # Of the 20 x 28 cells of each crop, the 20 x 26 they share match.
    same = v.inliers(shifted, a)
    assert same >= 20 * 26 - 10
    # Unrelated cells still fit a transform by chance (a threshold of 1.5 cells is wide):
    # a few dozen at most, which is why "cnn" needs a higher min_inliers than "sift".
    assert v.inliers(v.describe(blocks(4, 20, 28)), a) < same / 10


def test_local_features_report_their_size():
    f = LocalFeatures(np.zeros((3, 2), np.float32), np.zeros((3, 128), np.uint8))
    assert f.cell == 1.0
    assert len(f) == 3 and f.nbytes == 3 * 8 + 3 * 128
    assert sp.DEFAULT_DEPTH >= 1 and set(sp.DEFAULT_MIN_INLIERS) == set(sp.LOCAL_FEATURES)
    assert SpatialVerifier("cnn").min_inliers == sp.DEFAULT_MIN_INLIERS["cnn"]
    assert SpatialVerifier(min_inliers=3).min_inliers == 3
