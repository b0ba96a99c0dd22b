"""A JSON ground truth may name images by path, relative to the JSON file's folder, and
:func:`locate` finds names among an index's image paths."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from heatsearch.errors import InvalidInputError
from heatsearch.eval import load_ground_truth
from heatsearch.eval.ground_truth import locate


def test_json_names_are_paths_from_the_json_folder(tmp_path, monkeypatch):
    (tmp_path / "truth").mkdir()
    doc = {"format": "heatsearch-gnd", "version": 1, "images": ["../db/a.jpg", "/abs/b.jpg"],
           "queries": ["q/c.jpg"], "gnd": [{"ok": [0]}]}
    (tmp_path / "truth" / "gt.json").write_text(json.dumps(doc))
    monkeypatch.chdir(tmp_path / "truth")  # any folder: paths do not depend on it
    gt = load_ground_truth("gt.json")
    assert gt.images == ["../db/a.jpg", "/abs/b.jpg"]
    assert gt.image_path(gt.images[0]) == str(tmp_path / "db" / "a.jpg")
    assert gt.image_path(gt.images[1]) == "/abs/b.jpg"
    assert gt.image_path(gt.queries[0]) == str(tmp_path / "truth" / "q" / "c.jpg")


def test_locate_by_path_or_by_name(tmp_path):
    paths = [str(tmp_path / "jpg" / "all_souls_000013.jpg"), str(tmp_path / "db" / "x.png"), "rel/y.jpg"]
    assert locate([paths[1], paths[0]], paths, "images").tolist() == [1, 0]
    assert locate(["all_souls_000013", "jpg/all_souls_000013.jpg", "y.jpg", "db/x"], paths, "images").tolist() == [0, 0, 2, 1]
    assert locate([os.path.abspath("rel/y.jpg")], paths, "images").tolist() == [2]
    with pytest.raises(InvalidInputError, match="1 of the 2 database images not found in the index: other.jpg"):
        locate(["x.png", "other.jpg"], paths, "database images")
    with pytest.raises(InvalidInputError, match="matching several"):
        locate(["x"], paths + [str(tmp_path / "x.jpg")], "images")
    assert locate([], paths, "images").dtype == np.int64
