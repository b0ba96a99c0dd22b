"""Synthetic copies (heatsearch.vision.copies): the edits an index learns its whitening with."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL", reason="synthetic copies need Pillow (the onnx or torch extra)")

from heatsearch.errors import ImageReadError  # noqa: E402
from heatsearch.vision.copies import CROP, DOWNSCALE, copy_seed, synthetic_copy  # noqa: E402



def texture(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth random ``(h, w, 3)`` uint8 picture."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:h, :w])


def _save(path, pixels):
    from PIL import Image

    Image.fromarray(pixels).save(path)
    return str(path)


def test_a_copy_is_a_smaller_edited_crop_the_same_on_every_call(tmp_path):
    pixels = texture(0, 300, 400)
    path = _save(tmp_path / "a.png", pixels)
    copy = synthetic_copy(path)
    assert copy.dtype == np.uint8 and copy.ndim == 3 and copy.shape[2] == 3
    # A crop of 75-95% of each side, downscaled by 0.5-0.9 (at least 16 pixels).
    for side, got in ((300, copy.shape[0]), (400, copy.shape[1])):
        assert int(side * CROP[0]) * DOWNSCALE[0] - 1 <= got <= side * CROP[1] * DOWNSCALE[1]
    np.testing.assert_array_equal(synthetic_copy(path), copy)  # seeded by the path
    other = _save(tmp_path / "b.png", pixels)
    assert copy_seed(path) != copy_seed(other)
    assert synthetic_copy(other).shape != copy.shape or not np.array_equal(synthetic_copy(other), copy)
    # The same edits from the array: the path only reads the pixels and picks the seed.
    np.testing.assert_array_equal(synthetic_copy(pixels, seed=copy_seed(path)), copy)


def test_the_edits_act_at_the_size_the_network_sees(tmp_path):
    """A large photo is first brought to max_size (as the extractor brings it), so the copy's
    downscale and JPEG act at the network's scale, whatever the file's resolution."""
    big = _save(tmp_path / "big.png", texture(1, 1500, 2000))
    copy = synthetic_copy(big, max_size=100)
    assert max(copy.shape[:2]) <= 100 * CROP[1] * DOWNSCALE[1]
    assert max(synthetic_copy(big).shape[:2]) > 500  # without max_size: the file's own size


def test_an_array_takes_a_seed_and_tiny_images_keep_16_pixels():
    pixels = texture(2, 120, 90)
    np.testing.assert_array_equal(synthetic_copy(pixels, seed=5), synthetic_copy(pixels, seed=5))
    assert synthetic_copy(texture(3, 10, 12), seed=1).shape[:2] == (16, 16)
    assert 0 <= copy_seed("photo.jpg") < 2**64


def test_an_unreadable_file_is_an_image_read_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a JPEG")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        synthetic_copy(bad)
    with pytest.raises(ImageReadError):
        synthetic_copy(tmp_path / "missing.jpg")
