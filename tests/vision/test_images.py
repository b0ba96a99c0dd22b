"""heatsearch.vision.images: decoding, EXIF orientation, colour modes, crop and resize semantics."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from heatsearch.errors import HeatsearchError, InvalidDTypeError, InvalidInputError

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from heatsearch.vision import images as im  # noqa: E402
from heatsearch.errors import ImageReadError  # noqa: E402


def pattern(h=48, w=64):
    """Four flat quadrants of distinct colours (survive JPEG), plus a marked corner."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (230, 30, 30)
    a[: h // 2, w // 2 :] = (30, 230, 30)
    a[h // 2 :, : w // 2] = (30, 30, 230)
    a[h // 2 :, w // 2 :] = (230, 230, 30)
    return a


def quadrant_means(a):
    h, w = a.shape[:2]
    q = [a[: h // 2, : w // 2], a[: h // 2, w // 2 :], a[h // 2 :, : w // 2], a[h // 2 :, w // 2 :]]
    return np.array([x.reshape(-1, 3).mean(0) for x in q])


# --------------------------------------------------------------------------------------------
# Decoding


def test_load_png_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    out = im.load_image(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (13, 17, 3)
    np.testing.assert_array_equal(out, a)
    np.testing.assert_array_equal(im.load_image(str(tmp_path / "x.png")), a)


# EXIF orientation -> the array transform a viewer applies, written without Pillow.
EXIF_CASES = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),  # "rotate 90 CW to display"
    8: lambda a: np.rot90(a, 1),  # "rotate 90 CCW to display"
}


@pytest.mark.parametrize("orientation", sorted(EXIF_CASES))
def test_exif_orientation_applied(tmp_path, orientation):
    a = pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(a).save(path, quality=95, exif=exif)
    out = im.load_image(path)
    expected = EXIF_CASES[orientation](a)
    assert out.shape == expected.shape
    np.testing.assert_allclose(quadrant_means(out), quadrant_means(expected), atol=12)
    # The same through to_rgb of the opened PIL image.
    with Image.open(path) as img:
        np.testing.assert_array_equal(im.to_rgb(img), out)
    # exif_transpose=False: the pixels as stored.
    stored = im.load_image(path, exif_transpose=False)
    assert stored.shape == a.shape
    np.testing.assert_allclose(quadrant_means(stored), quadrant_means(a), atol=12)
    with Image.open(path) as img:
        np.testing.assert_array_equal(im.to_rgb(img, exif_transpose=False), stored)


def test_grayscale_file_gives_three_equal_channels(tmp_path):
    g = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = im.load_image(tmp_path / "g.png")
    assert out.shape == (12, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], g)


def test_16bit_grayscale_keeps_the_high_byte(tmp_path):
    g = (np.arange(6, dtype=np.uint16) * 257 * 50).reshape(2, 3)  # 0, 12850, ... = 0, 50, ... * 257
    Image.fromarray(g).save(tmp_path / "g16.png")
    out = im.load_image(tmp_path / "g16.png")
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], (np.arange(6) * 50).reshape(2, 3))


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float32_tiff_is_read_with_its_intensities(tmp_path, scale):
    """A float32 TIFF (mode F) with values in [0, 1] was read as a black image (Pillow's own
    conversion clips); [0, 1] and [0, 255] images are both read by their intensities."""
    g = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4) * np.float32(scale)
    Image.fromarray(g, mode="F").save(tmp_path / "f.tif")
    out = im.load_image(tmp_path / "f.tif")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 1], np.round(np.linspace(0, 255, 12)).reshape(3, 4))


def test_a_float_tiff_outside_the_intensity_range_is_an_error(tmp_path):
    Image.fromarray(np.full((2, 2), -3.0, np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match=r"f\.tif.*values in \[-3, -3\]"):
        im.load_image(tmp_path / "f.tif")


def test_rgba_composited_over_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 200
    a[0, 0, 3] = 255  # opaque red
    a[0, 1, 3] = 0  # transparent: white whatever the colour underneath
    a[0, 2, 3] = 128  # half: 200 * 128/255 + 255 * 127/255
    Image.fromarray(a, mode="RGBA").save(tmp_path / "a.png")
    out = im.load_image(tmp_path / "a.png")
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[0, 0], (200, 0, 0))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    np.testing.assert_array_equal(
        out[0, 2], np.round([200 * 128 / 255 + 255 * 127 / 255, 255 * 127 / 255, 255 * 127 / 255])
    )
    # The same array passed directly.
    np.testing.assert_array_equal(im.to_rgb(a), out)


def test_la_and_palette_transparency(tmp_path):
    la = Image.new("LA", (3, 2), (90, 0))
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(im.load_image(tmp_path / "la.png"), np.full((2, 3, 3), 255))
    p = Image.new("P", (3, 2), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(im.load_image(tmp_path / "p.png")[0, 0], (10, 20, 30))


def test_array_inputs():
    g = np.arange(20, dtype=np.uint8).reshape(4, 5)
    for a in (g, g[:, :, None]):
        out = im.to_rgb(a)
        assert out.shape == (4, 5, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[:, :, 2], g)
    f = np.random.default_rng(1).random((4, 5, 3))
    out = im.to_rgb(f)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, f, rtol=1e-6)
    u16 = np.full((2, 2, 3), 65535, np.uint16)
    np.testing.assert_allclose(im.to_rgb(u16), 1.0)
    # A Fortran-ordered or strided view is fine; the input is never modified.
    a = np.asfortranarray(np.random.default_rng(2).integers(0, 256, (6, 7, 3), dtype=np.uint8))
    before = a.copy()
    out = im.to_rgb(a[::2])
    out[...] = 0
    np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((4, 5, 2), np.uint8), InvalidInputError),
        (np.zeros((4,), np.uint8), InvalidInputError),
        (np.zeros((0, 5, 3), np.uint8), InvalidInputError),
        (np.full((4, 5, 3), 255.0), InvalidInputError),  # a 0-255 float image
        (np.full((4, 5, 3), np.nan), InvalidInputError),
        (np.zeros((4, 5, 3), np.int64), InvalidDTypeError),
        (12, InvalidDTypeError),
    ],
)
def test_bad_inputs(bad, error):
    with pytest.raises(error):
        im.to_rgb(bad)


def test_unreadable_files(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(ImageReadError, match="junk.jpg"):
        im.load_image(junk)
    with pytest.raises(OSError):  # ImageReadError is an OSError ...
        im.load_image(junk)
    with pytest.raises(HeatsearchError):  # ... and a HeatsearchError
        im.load_image(junk)
    with pytest.raises(ImageReadError, match="missing.png"):
        im.load_image(tmp_path / "missing.png")
    # A JPEG cut in half: the header decodes, the pixels do not.
    whole = tmp_path / "whole.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(whole)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        im.load_image(cut)
    with pytest.raises(ImageReadError, match="empty.png"):
        (tmp_path / "empty.png").write_bytes(b"")
        im.to_rgb(tmp_path / "empty.png")


class _Stream:
    """A file object that can only be read (an upload stream, a pipe): no seek, no tell."""

    def __init__(self, data):
        self._data = data

    def read(self, size=-1):
        data, self._data = self._data, b""
        return data


@pytest.mark.parametrize("orientation", [1, 6])
def test_encoded_bytes_and_file_objects_decode_like_the_file(tmp_path, orientation):
    import io

    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(pattern()).save(path, quality=95, exif=exif)
    expected = im.load_image(path)
    data = path.read_bytes()
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data), _Stream(data)):
        np.testing.assert_array_equal(im.to_rgb(source), expected)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(im.to_rgb(f), expected)
    # exif_transpose=False and the rest of the pipeline take them too.
    np.testing.assert_array_equal(im.to_rgb(data, exif_transpose=False), im.load_image(path, exif_transpose=False))
    np.testing.assert_array_equal(im.prepare_image(data, max_size=20), im.prepare_image(path, max_size=20))


def test_bad_bytes_and_file_objects(tmp_path):
    import io

    with pytest.raises(ImageReadError, match="0 bytes"):
        im.to_rgb(b"")
    with pytest.raises(ImageReadError, match="from 9 bytes"):
        im.to_rgb(b"not a jpg")
    with pytest.raises(ImageReadError, match="file object"):
        im.to_rgb(io.BytesIO(b"\x89PNG but cut"))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"garbage")
    with open(junk, "rb") as f, pytest.raises(ImageReadError, match="junk.png"):
        im.to_rgb(f)  # a file's name is in the message
    with open(junk, "r") as f, pytest.raises(InvalidDTypeError, match="binary mode"):
        im.to_rgb(f)
    with pytest.raises(InvalidDTypeError, match="encoded image bytes"):
        im.to_rgb(["a", "list"])


def test_list_images(tmp_path):
    files = ("b.JPG", "a.png", "c.webp", "d.tiff", "e.txt", ".hidden.jpg", "f.bmp", "g.tif")
    files += ("h.jpeg",)
    for name in files:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.jpg").write_bytes(b"")
    names = [p.name for p in im.list_images(tmp_path)]
    assert names == ["a.png", "b.JPG", "c.webp", "d.tiff", "f.bmp", "g.tif", "h.jpeg"]
    assert [p.name for p in im.list_images(tmp_path, recursive=True)][-1] == "z.jpg"
    assert set(im.SUPPORTED_EXTENSIONS) == {
        ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"
    }


# --------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize(
    "box",
    [[3, 4, 20, 15], [2.5, 3.5, 10.5, 11.5], [0.4, 0.6, 29.6, 19.4], [1.49, 2.51, 7.5, 8.5]],
)
def test_crop_rounds_like_pillow(box):
    a = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(im.crop(a, box), np.asarray(Image.fromarray(a).crop(box)))


def test_crop_clips_and_rejects_empty_boxes():
    a = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(im.crop(a, [-5, -2, 40, 10]), a[0:10, 0:30])
    for bad in ([5, 5, 5, 9], [9, 1, 3, 4], [40, 0, 50, 10], [0, 0, np.nan, 4], [1, 2, 3], "box"):
        with pytest.raises(InvalidInputError):
            im.crop(a, bad)


def test_max_size_never_upscales():
    a = pattern(50, 100)
    assert im.prepare_image(a, max_size=1024).shape == (50, 100, 3)
    np.testing.assert_array_equal(im.prepare_image(a, max_size=100), a)
    assert im.prepare_image(a, max_size=None).shape == (50, 100, 3)
    assert im.base_scale(50, 100, 1024) == 1.0


def test_max_size_downscales_the_longer_side():
    a = pattern(300, 2000)
    out = im.prepare_image(a, max_size=1024)
    assert out.shape == (154, 1024, 3)  # 300 * 1024 / 2000 = 153.6
    assert im.prepare_image(pattern(2000, 300), max_size=1024).shape == (1024, 154, 3)
    assert im.prepare_image(pattern(1500, 1000), max_size=1024).shape == (1024, 683, 3)
    np.testing.assert_allclose(quadrant_means(out), quadrant_means(a), atol=3)


def test_query_crop_keeps_the_scale_of_its_full_image():
    a = np.random.default_rng(4).integers(0, 256, (1000, 2000, 3), dtype=np.uint8)
    box = [100, 200, 500, 600]
    # Full image 2000 wide, max_size 1000: factor 1/2, applied to the 400 x 400 crop (which
    # would not be resized at all on its own).
    out = im.prepare_image(a, bbox=box, max_size=1000)
    assert out.shape == (200, 200, 3)
    np.testing.assert_array_equal(out, im.resize(a[200:600, 100:500], 0.5))
    # Image within max_size: the crop is used as is, not resized again.
    small = a[:500, :700]
    np.testing.assert_array_equal(
        im.prepare_image(small, bbox=box, max_size=1024), small[200:500, 100:500]
    )


def test_scale_multiplies_the_max_size_factor():
    a = pattern(400, 800)
    assert im.prepare_image(a, max_size=400, scale=0.5).shape == (100, 200, 3)
    assert im.prepare_image(a, max_size=None, scale=1 / np.sqrt(2)).shape == (283, 566, 3)
    with pytest.raises(InvalidInputError):
        im.prepare_image(a, scale=0)
    with pytest.raises(InvalidInputError):
        im.prepare_image(a, max_size=0)
    with pytest.raises(InvalidDTypeError):
        im.prepare_image(a, max_size=10.5)


def test_float_images_resize_in_float():
    f = pattern(40, 80).astype(np.float64) / 255
    out = im.prepare_image(f, max_size=40)
    assert out.dtype == np.float32 and out.shape == (20, 40, 3)
    assert 0 <= out.min() and out.max() <= 1
    u = im.prepare_image(pattern(40, 80), max_size=40)
    np.testing.assert_allclose(out * 255, u, atol=1.0)


def test_normalize():
    a = np.array([[[0, 128, 255]]], np.uint8)
    out = im.normalize(a)
    mean, std = np.array(im.IMAGENET_MEAN), np.array(im.IMAGENET_STD)
    expected = (np.array([0, 128, 255]) / 255 - mean) / std
    assert out.dtype == np.float32 and out.shape == (1, 1, 3)
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(im.normalize(a.astype(np.float32) / 255), out, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Optional dependencies


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_importing_heatsearch_modules_does_not_import_torch():
    r = _run(
        "import sys, heatsearch, heatsearch.vision.extract, heatsearch.vision.images, heatsearch.vision.backbones\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'PIL' not in sys.modules, 'PIL imported'\n"
    )
    assert r.returncode == 0, r.stderr


def test_extractor_without_torch_says_how_to_install():
    r = _run(
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "import heatsearch\n"
        "from heatsearch.vision.extract import Extractor\n"
        "from heatsearch.errors import MissingDependencyError\n"
        "try:\n"
        "    Extractor(runtime='torch')\n"
        "except MissingDependencyError as e:\n"
        "    assert isinstance(e, ImportError)\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    assert r.returncode == 0, r.stderr
    assert 'pip install "heatsearch[torch]"' in r.stdout
    assert 'runtime=\'onnx\': pip install "heatsearch[onnx]"' in r.stdout


def test_a_torchvision_backbone_without_torchvision_says_how_to_install():
    pytest.importorskip("torch", reason="this case has torch without torchvision")
    r = _run(
        "import sys\n"
        "sys.modules['torchvision'] = None  # torch installed, torchvision not\n"
        "from heatsearch.errors import MissingDependencyError\n"
        "from heatsearch.vision.backbones import build_backbone\n"
        "try:\n"
        "    build_backbone('vgg16', None, 'random')\n"
        "except MissingDependencyError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    assert r.returncode == 0, r.stderr
    assert "pip install torchvision" in r.stdout


@pytest.mark.parametrize("source", [b"not an image", io.BytesIO(b"not an image")])
def test_an_unknown_format_is_named_without_pillows_object_repr(source):
    """Pillow says "cannot identify image file <_io.BytesIO object at 0x...>": the message
    keeps the words, not the memory address."""
    with pytest.raises(ImageReadError, match="cannot identify image file$") as e:
        im.to_rgb(source)
    assert "object at 0x" not in str(e.value)
