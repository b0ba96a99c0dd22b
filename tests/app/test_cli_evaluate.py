"""`heatsearch evaluate` on an index folder: the ground truth's images found among the
index's by path (JSON names relative to the JSON file), its descriptors taken as they are
(final: no post-processing again), full protocol names in the header."""

from __future__ import annotations

import json
import re

import numpy as np

from heatsearch.app.cli import main
from heatsearch.app.index import Index, IndexConfig
from heatsearch.eval import compute_map
from heatsearch.pipeline import rank


def make_index(tmp_path, n=12, d=6):
    """An index of ``n`` images in two folders (descriptors with negative entries, so that a
    signed square root would change the ranking), saved without extraction."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    paths = [str(tmp_path / ("db" if i < n - 3 else "queries") / f"img{i:02d}.jpg") for i in range(n)]
    Index(config=IndexConfig(power=None), paths=paths, descriptors=X, pooled=X.copy(), mean=np.ones(d, np.float32)).save(
        str(tmp_path / "idx"))
    return X, paths


def test_evaluate_an_index_with_json_paths(tmp_path, capsys):
    X, paths = make_index(tmp_path)
    order = [4, 0, 8, 2, 6, 1, 7, 3, 5]  # the ground truth lists the database in its own order
    (tmp_path / "gt").mkdir()
    gnd = [{"ok": [0, 3]}, {"ok": [1], "junk": [2]}, {"ok": [5, 6, 8]}]
    doc = {"format": "heatsearch-gnd", "version": 1, "images": [f"../db/img{i:02d}.jpg" for i in order],
           "queries": [f"../queries/img{i:02d}.jpg" for i in (9, 10, 11)], "gnd": gnd}
    (tmp_path / "gt" / "truth.json").write_text(json.dumps(doc))
    assert main(["evaluate", "--db", str(tmp_path / "idx"), "--gnd", str(tmp_path / "gt" / "truth.json"),
                 "--methods", "plain,+HeR"]) == 0
    out = capsys.readouterr().out
    ranks, _ = rank(X[order], X[9:12])
    expected = 100 * compute_map(ranks, [{k: np.asarray(v) for k, v in g.items()} for g in gnd]).map
    assert re.search(rf"^plain\s+{expected:.2f}\s", out, re.M), (expected, out)
    assert "9 database, 3 queries, d = 6, index" in out and "descriptors as stored" in out
    assert re.search(r"^method\s+classic\s+time$", out, re.M), out  # not "classi"


def test_evaluate_an_index_with_query_indices(tmp_path, capsys):
    X, paths = make_index(tmp_path, n=9)
    doc = {"format": "heatsearch-gnd", "version": 1, "images": paths[:8], "query_indices": [0, 5],
           "gnd": [{"ok": [1], "junk": [0]}, {"ok": [2, 3], "junk": [5]}]}
    (tmp_path / "truth.json").write_text(json.dumps(doc))
    assert main(["evaluate", "--db", str(tmp_path / "idx"), "--gnd", str(tmp_path / "truth.json"),
                 "--methods", "plain"]) == 0
    out = capsys.readouterr().out
    ranks, _ = rank(X[:8], X[[0, 5]])
    expected = 100 * compute_map(ranks, [{"ok": np.array([1]), "junk": np.array([0])},
                                        {"ok": np.array([2, 3]), "junk": np.array([5])}]).map
    assert re.search(rf"^plain\s+{expected:.2f}\s", out, re.M), (expected, out)
    assert "1 of its images are not in the ground truth and are left out" in out


def test_evaluate_says_which_images_the_index_lacks(tmp_path, capsys):
    make_index(tmp_path)
    doc = {"format": "heatsearch-gnd", "version": 1, "images": ["db/img00.jpg", "db/elsewhere.jpg"],
           "queries": ["queries/img09.jpg"], "gnd": [{"ok": [0]}]}
    (tmp_path / "truth.json").write_text(json.dumps(doc))
    assert main(["evaluate", "--db", str(tmp_path / "idx"), "--gnd", str(tmp_path / "truth.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heatsearch evaluate: error: 1 of the 2 database images of the ground truth not found "
                          "in the index: ") and "elsewhere.jpg" in err, err


def test_protocol_names_are_not_cut(tmp_path, capsys):
    """The header cut names to 6 characters: "classic" printed as "classi"."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "db.npy", rng.random((5, 4)).astype(np.float32))
    doc = {"format": "heatsearch-gnd", "version": 1, "images": list("abcde"), "query_indices": [0],
           "gnd": [{"ok": [1]}]}
    (tmp_path / "truth.json").write_text(json.dumps(doc))
    assert main(["evaluate", "--db", str(tmp_path / "db.npy"), "--gnd", str(tmp_path / "truth.json"),
                 "--methods", "plain"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^method\s+classic\s+time$", out, re.M), out
    assert "post-processing: sqrt,l2" in out  # descriptor files keep the default


def test_evaluate_warns_when_the_index_images_are_equidistant(tmp_path, capsys):
    """A whitening learned on the n indexed images (queries included) with n - 1 dimensions
    makes them all equally similar: the figures then say nothing, and the command says so."""
    from heatsearch.postprocess import l2_normalize
    from heatsearch.whitening import PCAWhitening

    rng = np.random.default_rng(1)
    raw = rng.standard_normal((8, 20))
    X = l2_normalize(PCAWhitening().fit(raw, dim=7).transform(raw)).astype(np.float32)
    paths = [str(tmp_path / f"img{i}.jpg") for i in range(8)]
    Index(config=IndexConfig(power=None), paths=paths, descriptors=X, pooled=X.copy(), mean=np.ones(7, np.float32)).save(
        str(tmp_path / "idx"))
    doc = {"format": "heatsearch-gnd", "version": 1, "images": paths[:6], "queries": paths[6:],
           "gnd": [{"ok": [0]}, {"ok": [1]}]}
    (tmp_path / "truth.json").write_text(json.dumps(doc))
    assert main(["evaluate", "--db", str(tmp_path / "idx"), "--gnd", str(tmp_path / "truth.json"),
                 "--methods", "plain"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("heatsearch evaluate: warning: the index's images are all equally similar") and \
        err.count("\n") == 1, err
