"""Image paths of an index resolve from anywhere: the collection's root is recorded, paths are
stored relative to it, a moved collection loads with root=, and Index.sync() follows the files.
(A fake extractor that reads the real image files: no torch.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL.Image")

from heatsearch.app.index import Index, IndexConfig, SyncResult  # noqa: E402
from heatsearch.errors import ImageReadError, InvalidDTypeError, InvalidInputError  # noqa: E402

from helpers import PixelMaps, skip_without_extraction, write_images, write_version1  # noqa: E402

CONFIG = IndexConfig(scales=(1.0,), whiten="none")
NAMES = ["one/img0.png", "one/img1.png", "two/img0.jpg", "two/img1.png", "top.png"]


def meta_of(index_dir):
    """The current version's metadata, with the stored paths of its rows as ``"paths"`` (format
    version 3 keeps them in each shard's paths file)."""
    pointer = json.loads((Path(index_dir) / "index.json").read_text())
    folder = Path(index_dir) / pointer["data"]
    meta = json.loads((folder / "meta.json").read_text())
    if "shards" in meta:
        meta["paths"] = [
            p for s in meta["shards"] for i, p in enumerate(json.loads((folder / s["paths"]).read_text()))
            if i not in s["removed"]
        ]
    return meta


def test_the_reported_search_from_another_directory(tmp_path, monkeypatch):
    """`heatsearch index photos -o idx` then `cd / && heatsearch search /abs/idx q.jpg --html
    x.html` failed with "cannot read image 'two/img0.jpg'": paths were stored relative to the
    directory the index command ran in."""
    from heatsearch.app.gallery import write_gallery

    monkeypatch.chdir(tmp_path)
    write_images("photos", NAMES)
    Index.build("photos", CONFIG, extractor=PixelMaps()).save("idx")
    monkeypatch.chdir("/")
    index = Index.load(tmp_path / "idx", extractor=PixelMaps())
    query = str(tmp_path / "photos" / "two" / "img0.jpg")
    hits = index.search(query, k=3)
    assert hits[0].path == query
    assert all(os.path.isabs(h.path) and os.path.isfile(h.path) for h in hits)
    write_gallery(str(tmp_path / "x.html"), [(query, hits)])  # opens every hit's image
    assert (tmp_path / "x.html").read_text().count("<figure") == 4


def test_the_cli_searches_from_another_directory(tmp_path, monkeypatch):
    """The same through the command line, with the real network (torch or ONNX Runtime)."""
    skip_without_extraction()
    from heatsearch.app.cli import main

    monkeypatch.chdir(tmp_path)
    write_images("photos", NAMES, size=40)
    assert main(["index", "photos", "-o", "idx", "--max-size", "64", "--single-scale", "--quiet"]) == 0
    monkeypatch.chdir("/")
    html = tmp_path / "x.html"
    assert main(["search", str(tmp_path / "idx"), str(tmp_path / "photos" / "top.png"), "-k", "2", "--html", str(html)]) == 0
    assert html.read_text().count("<figure") == 3


def test_paths_are_stored_relative_to_the_recorded_root(tmp_path):
    root = tmp_path / "photos"
    write_images(root, NAMES)
    outside = write_images(tmp_path / "elsewhere", ["far.png"], seed=3)
    index = Index.build(root, CONFIG, extractor=PixelMaps())
    assert index.root == str(root) and all(p.startswith(str(root) + os.sep) for p in index.paths)
    index.add(outside)
    index.save(tmp_path / "idx")
    meta = meta_of(tmp_path / "idx")
    assert meta["root"] == str(root)
    assert meta["paths"] == sorted(NAMES) + outside  # relative with "/", outside the root: absolute
    loaded = Index.load(tmp_path / "idx")
    assert loaded.paths == index.paths and loaded.root == str(root)


def test_a_moved_collection_loads_with_root(tmp_path):
    old = tmp_path / "old"
    write_images(old / "photos", NAMES)
    Index.build(old / "photos", CONFIG, extractor=PixelMaps()).save(old / "photos.index")
    new = tmp_path / "new"
    shutil.move(str(old), str(new))
    with pytest.warns(UserWarning, match="recorded in the index does not exist.*root="):
        stale = Index.load(new / "photos.index")
    assert stale.paths[0].startswith(str(old))
    index = Index.load(new / "photos.index", root=new / "photos", extractor=PixelMaps())
    assert index.root == str(new / "photos")
    assert all(os.path.isfile(p) for p in index.paths)
    query = str(new / "photos" / "one" / "img1.png")
    assert index.search(query, k=1)[0].path == query
    # Saved again, the new root is recorded.
    index.save(new / "photos.index")
    assert meta_of(new / "photos.index")["root"] == str(new / "photos")
    with pytest.raises(InvalidInputError, match="root must be an existing directory"):
        Index.load(new / "photos.index", root=new / "nowhere")
    with pytest.raises(InvalidDTypeError, match="root must be a path"):
        Index.load(new / "photos.index", root=3)


def test_version1_paths_relative_to_an_unrecorded_folder(tmp_path, monkeypatch):
    """heatsearch 0.1/0.2 stored paths as given (relative to where `index` ran)."""
    monkeypatch.chdir(tmp_path)
    write_images("photos", NAMES)
    built = Index.build("photos", CONFIG, extractor=PixelMaps())
    write_version1("idx", built, paths=[os.path.relpath(p) for p in built.paths])  # 'photos/one/img0.png'
    assert Index.load("idx").paths == built.paths  # from the folder it ran in: as before
    monkeypatch.chdir("/")
    with pytest.warns(UserWarning, match="heatsearch 0.1/0.2 .* root="):
        Index.load(tmp_path / "idx")
    index = Index.load(tmp_path / "idx", root=tmp_path)
    assert index.paths == built.paths and index.root == str(tmp_path)


def test_add_and_remove_take_paths_from_the_current_directory(tmp_path, monkeypatch):
    write_images(tmp_path / "photos", NAMES)
    monkeypatch.chdir(tmp_path / "photos")
    index = Index(config=CONFIG, extractor=PixelMaps())
    index.add(["one/img0.png", "top.png"])
    assert index.paths == [str(tmp_path / "photos" / "one" / "img0.png"), str(tmp_path / "photos" / "top.png")]
    with pytest.raises(InvalidInputError, match="already in the index"):
        index.add([str(tmp_path / "photos" / "top.png")])
    with pytest.raises(InvalidInputError, match="the same image twice"):
        index.add(["two/img1.png", "./two/img1.png"])
    with pytest.raises(InvalidDTypeError, match="a list of paths, got a single str"):
        index.add("two/img1.png")
    assert index.remove(["top.png"]) == 1 and len(index) == 1
    # No root given: save records the deepest folder holding every image.
    index.save(tmp_path / "idx")
    assert meta_of(tmp_path / "idx")["root"] == str(tmp_path / "photos" / "one")


def test_sync_adds_new_files_and_drops_gone_ones(tmp_path):
    root = tmp_path / "photos"
    write_images(root, NAMES)
    index = Index.build(root, CONFIG, extractor=PixelMaps())
    mean = index.mean.copy()
    before = {p: d.copy() for p, d in zip(index.paths, index.descriptors)}
    os.remove(root / "one" / "img1.png")
    added = write_images(root, ["three/new.png", "new.jpg"], seed=4)
    (root / "three" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="could not be read"):
        result = index.sync()
    assert isinstance(result, SyncResult)
    assert result.removed == [str(root / "one" / "img1.png")]
    assert sorted(result.added) == sorted(added)
    assert [p for p, _ in result.skipped] == [str(root / "three" / "broken.png")]
    assert sorted(index.paths) == sorted(set(before) - set(result.removed) | set(added))
    # The mean is kept, so the descriptors of the images already there do not change.
    np.testing.assert_array_equal(index.mean, mean)
    for p, d in zip(index.paths, index.descriptors):
        if p in before:
            np.testing.assert_array_equal(d, before[p])
    fresh = PixelMaps()
    index.extractor = fresh
    with pytest.warns(UserWarning, match="could not be read"):  # the broken file is tried again
        again = index.sync()
    assert again.added == [] and again.removed == [] and fresh.calls == 1
    index.save(tmp_path / "idx")
    assert Index.load(tmp_path / "idx").paths == index.paths


def test_sync_needs_a_root(tmp_path):
    with pytest.raises(InvalidInputError, match="no root folder"):
        Index(config=CONFIG).sync()
    write_images(tmp_path / "photos", NAMES[:2])
    index = Index.build(tmp_path / "photos", CONFIG, extractor=PixelMaps())
    shutil.rmtree(tmp_path / "photos")
    with pytest.raises(InvalidInputError, match="is not a directory .*root="):
        index.sync()
    with pytest.raises(ImageReadError):
        index.describe(index.paths[0])
