"""A corrupt or inconsistent index never loads: every field of index.json / meta.json and
every array is checked, and the IndexFileError names the file that is wrong.

These cases damage an index of format version 2 (one descriptors.npy per version, as
heatsearch 0.3/0.4 wrote it), which heatsearch still reads; the shards of version 3 are
damaged in tests/app/test_store.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from heatsearch.app import storage
from heatsearch.app.index import Index
from heatsearch.errors import IndexFileError
from heatsearch.postprocess import PostProcess

from helpers import index_arrays, small_index, write_version1, write_version2

DELETE = object()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A HeW index of 12 images with a whitening (16 -> 8 dimensions), in format version 2."""
    folder = tmp_path_factory.mktemp("saved")
    (folder / "photos").mkdir()
    write_version2(folder / "idx", small_index(folder / "photos", whitening_dim=8))
    return folder / "idx"


def _pointer(d):
    return d / "index.json"


def _data(d):
    return d / json.loads(_pointer(d).read_text())["data"]


def edit_json(path, **changes):
    obj = json.loads(path.read_text())
    for k, v in changes.items():
        if v is DELETE:
            del obj[k]
        else:
            obj[k] = v
    path.write_text(json.dumps(obj))


def pointer(**changes):
    return lambda d: (edit_json(_pointer(d), **changes), "index.json")[1]


def meta(**changes):
    return lambda d: (edit_json(_data(d) / "meta.json", **changes), "meta.json")[1]


def config(**changes):
    def apply(d):
        m = json.loads((_data(d) / "meta.json").read_text())
        for k, v in changes.items():
            if v is DELETE:
                del m["config"][k]
            else:
                m["config"][k] = v
        (_data(d) / "meta.json").write_text(json.dumps(m))
        return "meta.json"

    return apply


def raw(name, content):
    """Replace a file's bytes (``content``: bytes, or a function of the old bytes)."""

    def apply(d):
        target = _pointer(d) if name == "index.json" else _data(d) / name
        old = target.read_bytes()
        target.write_bytes(content(old) if callable(content) else content)
        return name

    return apply


def array(name, change):
    """Replace an array by ``change(old array)``."""

    def apply(d):
        path = _data(d) / name
        np.save(path, change(np.load(path)), allow_pickle=True)
        return name

    return apply


def remove(name):
    def apply(d):
        (_data(d) / name).unlink()
        return name

    return apply


def with_nan(a):
    a = a.copy()
    a[2, 3] = np.nan
    return a


def other_whitening(dim):
    def apply(d):
        w = PostProcess.fit(np.abs(np.random.default_rng(42).standard_normal((64, 16))), dim=dim).whitening
        (_data(d) / "whitening.npz").unlink()
        w.save(_data(d) / "whitening.npz")
        return "whitening.npz"

    return apply


CASES = {
    # index.json, the pointer
    "pointer version 2.0": (pointer(version=2.0), "must be an integer, got 2.0"),
    "pointer version true": (pointer(version=True), "must be an integer, got True"),
    "pointer version '2'": (pointer(version="2"), "must be an integer, got '2'"),
    "pointer version 99": (pointer(version=99), "version 99, this heatsearch reads versions 1, 2, 3"),
    "pointer format": (pointer(format="other"), "expected format 'heatsearch-index', got 'other'"),
    "pointer not an object": (raw("index.json", b"[2]"), "expected a JSON object, got list"),
    "pointer garbage": (raw("index.json", b"{not json"), "corrupt JSON"),
    "pointer empty": (raw("index.json", b""), "corrupt JSON"),
    "pointer escapes the index": (pointer(data="../elsewhere"), "'data' must name a version directory"),
    "pointer to no version": (pointer(data="data-1-1-00000000-00000000-00000000"), "names the version directory 'data-1-1-0.*', which does not exist"),
    "pointer extra key": (pointer(extra=1), "expected the keys"),
    # meta.json, the metadata
    "meta garbage": (raw("meta.json", b"\x00\x01garbage"), "corrupt JSON"),
    "meta truncated": (raw("meta.json", lambda b: b[: len(b) // 2]), "corrupt JSON"),
    "meta NaN literal": (raw("meta.json", lambda b: b.replace(b'"dim": 8', b'"dim": NaN')), "NaN is not a valid JSON number"),
    "meta repeated key": (raw("meta.json", lambda b: b.replace(b'"dim": 8', b'"dim": 8, "dim": 9')), "'dim' appears twice"),
    "meta missing": (remove("meta.json"), "missing file"),
    "meta version 1.0": (meta(version=1.0), "version 1.0"),
    "meta unknown key": (meta(colour="blue"), "unknown keys \\['colour'\\]"),
    "meta missing key": (meta(count=DELETE), "missing keys \\['count'\\]"),
    "paths of ints": (meta(paths=list(range(12))), "'paths'\\[0\\] must be a non-empty string .*got 0"),
    "paths of nulls": (meta(paths=[None] * 12), "'paths'\\[0\\] must be a non-empty string .*got None"),
    "paths a string": (meta(paths="sub/img00.jpg"), "'paths' must be a list of strings, got str"),
    "paths too few": (meta(paths=[f"sub/img{i:02d}.jpg" for i in range(11)]), "'paths' has 11 entries, 'count' says 12"),
    "paths twice": (meta(paths=["sub/img00.jpg"] * 12), "'paths' lists 'sub/img00.jpg' twice"),
    "paths empty string": (meta(paths=[""] + [f"sub/img{i:02d}.jpg" for i in range(1, 12)]), "'paths'\\[0\\]"),
    "paths leaving the root": (meta(paths=["../x.jpg"] + [f"sub/img{i:02d}.jpg" for i in range(1, 12)]), "normalised relative to the root"),
    "paths not normalised": (meta(paths=["sub//./img00.jpg"] + [f"sub/img{i:02d}.jpg" for i in range(1, 12)]), "no '.', '..' or empty parts"),
    "count true": (meta(count=True), "'count' must be an int, got bool"),
    "count negative": (meta(count=-1), "'count' must be >= 0"),
    "dim another": (meta(dim=7), "descriptors.npy: must have shape \\(count, dim\\) = \\(12, 7\\)"),
    "channels another": (meta(channels=15), "pooled.npy: must have shape \\(count, channels\\) = \\(12, 15\\)"),
    "has_mean false on HeW": (meta(has_mean=False), "HeW index of images must have its centering mean"),
    "has_mean a string": (meta(has_mean="yes"), "'has_mean' must be True or False"),
    "no whitening but 16 -> 8": (meta(has_whitening=False, whitening_learned=False), "no whitening to change it"),
    "learned without whitening": (meta(has_whitening=False, whitening_learned=True), "'whitening_learned' is true"),
    "mean images zero": (meta(mean_images=0), "'mean_images' must be >= 1, got 0"),
    "mean images a float": (meta(mean_images=2.0), "'mean_images' must be an int, got float"),
    "mean images without a mean": (meta(mean_images=3, has_mean=False), "'mean_images' is 3 but 'has_mean' is false"),
    "whitening images not learned": (meta(whitening_images=12, whitening_learned=False), "'whitening_images' is 12 but 'whitening_learned' is false"),
    "root relative": (meta(root="photos"), "'root' must be an absolute path, got 'photos'"),
    "root a number": (meta(root=5), "'root' must be an absolute path, got 5"),
    "config not an object": (meta(config=[1]), "'config' must be an object, got list"),
    # meta.json's configuration: what the index means
    "pooling unknown": (config(pooling="magic"), "pooling must be one of 'hew', .* got 'magic'"),
    "backbone unknown": (config(backbone="alexnet"), "backbone must be one of .* got 'alexnet'"),
    "layer a number": (config(layer=5), "layer must be a string or None, got int"),
    "scales empty": (config(scales=[]), "scales must hold at least one number"),
    "scales zero": (config(scales=[1.0, 0]), "scales\\[1\\] must be a finite number > 0"),
    "scales a string": (config(scales="1"), "scales must be a list or tuple of numbers, got str"),
    "max_size 1.5": (config(max_size=1.5), "max_size must be an int or None, got float"),
    "max_size true": (config(max_size=True), "max_size must be an int or None, got bool"),
    "power negative": (config(power=-1), "power must be a finite number > 0"),
    "power a string": (config(power="0.5"), "power must be a real number, got str"),
    "whiten unknown": (config(whiten="sometimes"), "whiten must be one of 'auto', 'none'"),
    "mean_sample 0": (config(mean_sample=0), "mean_sample must be >= 1"),
    "config missing key": (config(power=DELETE), "missing \\['power'\\]"),
    "config unknown key": (config(colour="blue"), "unknown \\['colour'\\]"),
    "another power": (config(power=1.0), "pooled descriptors do not give the stored final descriptors"),
    # descriptors.npy
    "descriptors NaN": (array("descriptors.npy", with_nan), "NaN at row 2, column 3"),
    "descriptors inf": (array("descriptors.npy", lambda a: np.where(a > 0.5, np.inf, a).astype(np.float32)), "must be finite, got inf"),
    "descriptors int64": (array("descriptors.npy", lambda a: a.astype(np.int64)), "must be float32, got dtype int64"),
    "descriptors float16": (array("descriptors.npy", lambda a: a.astype(np.float16)), "must be float32, got dtype float16"),
    "descriptors float64": (array("descriptors.npy", lambda a: a.astype(np.float64)), "must be float32, got dtype float64"),
    "descriptors complex": (array("descriptors.npy", lambda a: a.astype(np.complex64)), "must be float32, got dtype complex64"),
    "descriptors a row short": (array("descriptors.npy", lambda a: a[:-1]), "shape \\(count, dim\\) = \\(12, 8\\) as the metadata says, got \\(11, 8\\)"),
    "descriptors 1-D": (array("descriptors.npy", lambda a: a.ravel()), "got \\(96,\\)"),
    "descriptors 3-D": (array("descriptors.npy", lambda a: a[:, :, None]), "got \\(12, 8, 1\\)"),
    "descriptors objects": (array("descriptors.npy", lambda a: np.array([{"a": 1}] * 12, dtype=object)), "truncated or corrupt"),
    "descriptors truncated": (raw("descriptors.npy", lambda b: b[:-40]), "truncated or corrupt"),
    "descriptors garbage": (raw("descriptors.npy", b"\x93NUMPY garbage"), "truncated or corrupt"),
    "descriptors empty file": (raw("descriptors.npy", b""), "truncated or corrupt"),
    "descriptors missing": (remove("descriptors.npy"), "missing file"),
    "descriptors of another index": (
        array("descriptors.npy", lambda a: index_arrays(12, 16, seed=9, whitening_dim=8)["descriptors"]),
        "pooled descriptors do not give the stored final descriptors",
    ),
    # pooled.npy
    "pooled of another index": (array("pooled.npy", lambda a: index_arrays(12, 16, seed=9)["pooled"]), "pooled descriptors do not give"),
    "pooled rows swapped": (array("pooled.npy", lambda a: a[::-1].copy()), "pooled descriptors do not give"),
    "pooled NaN": (array("pooled.npy", with_nan), "NaN at row 2, column 3"),
    "pooled narrower": (array("pooled.npy", lambda a: a[:, :15]), "got \\(12, 15\\)"),
    "pooled float64": (array("pooled.npy", lambda a: a.astype(np.float64)), "must be float32, got dtype float64"),
    "pooled missing": (remove("pooled.npy"), "missing file"),
    # mean.npy
    "mean shorter": (array("mean.npy", lambda a: a[:-1]), "shape \\(channels,\\) = \\(16,\\), got \\(15,\\)"),
    "mean NaN": (array("mean.npy", lambda a: np.where(np.arange(16) == 4, np.nan, a).astype(np.float32)), "NaN at 4|must be finite"),
    "mean int64": (array("mean.npy", lambda a: a.astype(np.int64)), "must be float32 or float64, got dtype int64"),
    "mean 2-D": (array("mean.npy", lambda a: a[None]), "got \\(1, 16\\)"),
    "mean missing": (remove("mean.npy"), "missing file"),
    # whitening.npz
    "whitening to 6 dimensions": (other_whitening(6), "maps 16 dimensions to 6, but .* the final ones 8"),
    "whitening of another set": (other_whitening(8), "pooled descriptors do not give"),
    "whitening garbage": (raw("whitening.npz", b"PK garbage"), "not a valid heatsearch PCA-whitening file"),
    "whitening truncated": (raw("whitening.npz", lambda b: b[: len(b) // 2]), "truncated or corrupt"),
    "whitening missing": (remove("whitening.npz"), "missing file"),
}


#: Mismatches between files: the message names the file found wrong against the others.
NAMED = {
    "another power": "pooled.npy",
    "descriptors of another index": "pooled.npy",
    "whitening of another set": "pooled.npy",
    "channels another": "pooled.npy",
    "dim another": "descriptors.npy",
    "no whitening but 16 -> 8": "descriptors.npy",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_corrupt_index_raises_naming_the_file(saved, tmp_path, case):
    damage, message = CASES[case]
    target = tmp_path / "idx"
    shutil.copytree(saved, target)
    name = damage(target)
    name = NAMED.get(case, name)
    where = str(_pointer(target)) if name == "index.json" else str(_data(target) / name)
    with pytest.raises(IndexFileError, match=message) as e:
        Index.load(target)
    assert str(e.value).startswith(where), (where, str(e.value))


def test_the_undamaged_copy_loads(saved, tmp_path):
    shutil.copytree(saved, tmp_path / "idx")
    index = Index.load(tmp_path / "idx")
    assert len(index) == 12 and index.whitening.dim_ == 8


def test_not_an_index(tmp_path):
    with pytest.raises(IndexFileError, match="no index.json in it \\(no such directory\\)"):
        Index.load(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexFileError, match="not a directory"):
        Index.load(tmp_path / "file")
    with pytest.raises(IndexFileError, match="no index.json in it$"):
        Index.load(tmp_path)
    (tmp_path / storage._writers.new_name()).mkdir()
    with pytest.raises(IndexFileError, match="interrupted first save"):
        Index.load(tmp_path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: edit_json(d / "index.json", version=1.0), "version must be an integer, got 1.0"),
        (lambda d: edit_json(d / "index.json", has_mean=False), "centering mean"),
        (lambda d: edit_json(d / "index.json", paths=[1] * 6), "'paths'\\[0\\] must be a non-empty string"),
        (lambda d: edit_json(d / "index.json", dim=3), "descriptors.npy: must have shape"),
        (lambda d: np.save(d / "mean.npy", np.ones(3, np.float32)), "mean.npy: must have shape"),
        (lambda d: np.save(d / "pooled.npy", np.ones((6, 16), np.float32)), "pooled descriptors do not give"),
        (lambda d: (d / "descriptors.npy").unlink(), "missing file"),
    ],
)
def test_a_corrupt_version1_index_raises(tmp_path, damage, message):
    root = tmp_path / "photos"
    root.mkdir()
    write_version1(tmp_path / "old", small_index(root, n=6, whitening_dim=5))
    Index.load(tmp_path / "old")
    damage(tmp_path / "old")
    with pytest.raises(IndexFileError, match=message) as e:
        Index.load(tmp_path / "old")
    assert str(tmp_path / "old") in str(e.value)


def test_an_empty_index_round_trips(tmp_path):
    empty = Index(root=str(tmp_path))
    empty.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    assert len(loaded) == 0 and loaded.descriptors is None and loaded.mean is None
    # Emptied (its mean and dimensions kept).
    index = small_index(tmp_path)
    index.remove(index.paths)
    index.save(tmp_path / "idx2")
    loaded = Index.load(tmp_path / "idx2")
    assert len(loaded) == 0 and loaded.descriptors.shape == (0, 16) and loaded.mean.shape == (16,)
