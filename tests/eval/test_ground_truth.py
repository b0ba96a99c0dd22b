"""Ground-truth and descriptor loaders, on the shared benchmark files and on synthetic ones."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from heatsearch.eval import ground_truth
from heatsearch.eval.descriptors import load_descriptors
from heatsearch.eval.ground_truth import GroundTruth, load_ground_truth, save_ground_truth_json
from heatsearch.errors import HeatsearchError, InvalidDTypeError, InvalidInputError, MissingDependencyError
from heatsearch.eval.evaluate import compute_map

try:
    import scipy.io as scipy_io
except ImportError:  # the JSON, pickle and .npy tests still run
    scipy_io = None

needs_scipy = pytest.mark.skipif(scipy_io is None, reason="SciPy is not installed (pip install scipy)")

# (file, database images, queries, revisited) as stated in ../shared/data/README.md
FILES = [
    ("gnd/gnd_roxford5k.pkl", 4993, 70, True),
    ("gnd/gnd_rparis6k.pkl", 6322, 70, True),
    ("gnd/gnd_oxford5k.mat", 5062, 55, False),
    ("gnd/gnd_paris6k.mat", 6392, 55, False),
    ("holidays/gnd_holidays.mat", 1491, 500, False),
]


@pytest.fixture(scope="module")
def loaded(shared_data):
    pytest.importorskip("scipy.io", reason="the .mat ground truths need SciPy")
    return {f: load_ground_truth(shared_data / f) for f, *_ in FILES}


# --------------------------------------------------------------------------------------------
# The shared files


@pytest.mark.parametrize("name, n, nq, rev", FILES)
def test_every_ground_truth_file_loads_with_the_stated_counts(loaded, name, n, nq, rev):
    gt = loaded[name]
    assert (gt.n_images, gt.n_queries, gt.revisited) == (n, nq, rev)
    assert len(gt.images) == n and len(set(gt.images)) == n
    assert len(gt.gnd) == nq and all(isinstance(s, str) for s in gt.images + gt.queries)
    keys = ("easy", "hard", "junk") if rev else ("ok", "junk")
    for entry in gt.gnd:
        for k in keys:
            a = entry[k]
            assert a.dtype == np.int64 and a.ndim == 1
            assert a.size == 0 or (a.min() >= 0 and a.max() < n)
        if "bbx" in entry:
            assert entry["bbx"].dtype == np.float64 and entry["bbx"].shape == (4,)
    if rev:
        assert gt.query_indices is None
        assert not set(gt.queries) & set(gt.images)  # queries are separate images
        assert gt.protocols == ("easy", "medium", "hard")
    else:
        assert gt.query_indices.shape == (nq,) and gt.query_indices.dtype == np.int64
        assert gt.query_indices.min() >= 0 and gt.query_indices.max() < n
        assert gt.queries == [gt.images[i] for i in gt.query_indices]
        assert gt.protocols == ("classic",)


@needs_scipy
@pytest.mark.parametrize("name", ["gnd/gnd_oxford5k.mat", "gnd/gnd_paris6k.mat",
                                  "holidays/gnd_holidays.mat"])
def test_mat_indices_are_the_file_values_minus_one(shared_data, loaded, name):
    raw = scipy_io.loadmat(str(shared_data / name))
    gt = loaded[name]
    np.testing.assert_array_equal(gt.query_indices, raw["qidx"].ravel().astype(np.int64) - 1)
    for i in (0, 1, gt.n_queries - 1):
        rec = raw["gnd"][i, 0]
        np.testing.assert_array_equal(gt.gnd[i]["ok"], rec["ok"].ravel().astype(np.int64) - 1)
        np.testing.assert_array_equal(gt.gnd[i]["junk"], rec["junk"].ravel().astype(np.int64) - 1)
    assert gt.images[0] == str(raw["imlist"][0, 0][0])


def test_oxford_known_values(loaded):
    gt = loaded["gnd/gnd_oxford5k.mat"]
    # qidx(1) = 12 in the file -> database index 11, all_souls_000013
    assert gt.query_indices[0] == 11 and gt.queries[0] == "all_souls_000013"
    # boxes are pixel coordinates, never shifted
    np.testing.assert_array_equal(gt.gnd[0]["bbx"], [136.5, 34.1, 648.5, 955.7])


def test_what_the_files_hold_about_the_query(loaded):
    # Holidays: every query is its own (only) junk and not a positive
    ho = loaded["holidays/gnd_holidays.mat"]
    for q, entry in zip(ho.query_indices, ho.gnd):
        assert entry["junk"].tolist() == [q] and q not in entry["ok"]
    # classic Oxford/Paris: every query image is among its own positives, never junk
    for name in ("gnd/gnd_oxford5k.mat", "gnd/gnd_paris6k.mat"):
        gt = loaded[name]
        for q, entry in zip(gt.query_indices, gt.gnd):
            assert q in entry["ok"] and q not in entry["junk"]
            assert not np.intersect1d(entry["ok"], entry["junk"]).size


@pytest.mark.parametrize("rev, classic", [("gnd/gnd_roxford5k.pkl", "gnd/gnd_oxford5k.mat"),
                                          ("gnd/gnd_rparis6k.pkl", "gnd/gnd_paris6k.mat")])
def test_revisited_queries_extend_the_classic_ones_with_equal_boxes(loaded, rev, classic):
    r, c = loaded[rev], loaded[classic]
    assert r.queries[:55] == c.queries
    for i in range(55):
        np.testing.assert_array_equal(r.gnd[i]["bbx"], c.gnd[i]["bbx"])


def test_revisited_protocols_on_real_data(loaded):
    gt = loaded["gnd/gnd_roxford5k.pkl"]
    for entry in gt.gnd:  # easy, hard and junk are disjoint
        allidx = np.concatenate([entry["easy"], entry["hard"], entry["junk"]])
        assert np.unique(allidx).size == allidx.size
    medium = gt.protocol("medium")
    assert [q["ok"].size for q in medium] == [e["easy"].size + e["hard"].size for e in gt.gnd]
    assert "bbx" in medium[0]
    # two revisited-Oxford queries have no easy positive: NaN AP under Easy, left out
    assert sum(e["easy"].size == 0 for e in gt.gnd) == 2
    easy = gt.protocol("easy")
    ranks = np.tile(np.arange(gt.n_images), (gt.n_queries, 1))
    res = compute_map(ranks, easy, n=gt.n_images)
    assert int(np.isnan(res.aps).sum()) == 2 and 0 < res.map < 1
    # positives first, the rest after: mAP 1 under every protocol
    for p in gt.protocols:
        g = gt.protocol(p)
        perfect = np.stack([np.concatenate([q["ok"], np.setdiff1d(np.arange(gt.n_images), q["ok"])])
                            for q in g])
        assert compute_map(perfect, g, n=gt.n_images).map == pytest.approx(1.0)
    with pytest.raises(InvalidInputError, match="revisited.*'easy', 'medium', 'hard'"):
        gt.protocol("classic")
    with pytest.raises(InvalidInputError, match="classic.*got 'medium'"):
        loaded["gnd/gnd_oxford5k.mat"].protocol("medium")


@needs_scipy
def test_holidays_descriptors_reproduce_the_published_map(shared_data, loaded):
    gt = loaded["holidays/gnd_holidays.mat"]
    vecs = load_descriptors(shared_data / "holidays/vecs_ho.mat", expected_count=gt.n_images)
    assert vecs.shape == (1491, 512) and vecs.dtype == np.float32 and vecs.flags.c_contiguous
    raw = scipy_io.loadmat(str(shared_data / "holidays/vecs_ho.mat"))["vecs_ho"]
    np.testing.assert_array_equal(vecs[7], raw[0, 7].ravel())
    # docs/ALGORITHM.md, section 4: L2 only 75.14; signed sqrt + L2 80.24
    for sqrt, expected in ((False, 75.14), (True, 80.24)):
        x = vecs.astype(np.float64)
        if sqrt:
            x = np.sign(x) * np.sqrt(np.abs(x))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ranks = np.argsort(-(x[gt.query_indices] @ x.T), axis=1, kind="stable")
        res = compute_map(ranks, gt.protocol("classic"), n=gt.n_images)
        assert round(100 * res.map, 2) == expected


@needs_scipy
def test_mean_cnn_column_vector(shared_data):
    path = shared_data / "holidays/mean_CNN.mat"
    m = load_descriptors(path)  # a MATLAB 512 x 1 column is one vector under "auto"
    assert m.shape == (1, 512) and m.dtype == np.float32
    assert load_descriptors(path, layout="rows").shape == (512, 1)
    assert load_descriptors(path, layout="columns").shape == (1, 512)


@pytest.mark.parametrize("name", ["gnd/gnd_roxford5k.pkl", "gnd/gnd_oxford5k.mat",
                                  "holidays/gnd_holidays.mat"])
def test_json_round_trip_of_real_files(tmp_path, loaded, name):
    gt = loaded[name]
    out = tmp_path / "gt.json"
    save_ground_truth_json(gt, out)
    back = load_ground_truth(out)
    assert_same_gt(gt, back)
    assert json.loads(out.read_text())["format"] == "heatsearch-gnd"


def assert_same_gt(a: GroundTruth, b: GroundTruth) -> None:
    assert a.images == b.images and a.queries == b.queries and a.revisited == b.revisited
    if a.query_indices is None:
        assert b.query_indices is None
    else:
        np.testing.assert_array_equal(a.query_indices, b.query_indices)
    assert len(a.gnd) == len(b.gnd)
    for x, y in zip(a.gnd, b.gnd):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
            assert x[k].dtype == y[k].dtype


# --------------------------------------------------------------------------------------------
# JSON format


DOC = {
    "format": "heatsearch-gnd",
    "version": 1,
    "images": ["img_000", "img_001", "img_002", "img_003"],
    "queries": ["img_000", "img_002"],
    "query_indices": [0, 2],
    "gnd": [
        {"ok": [1], "junk": [0], "bbx": [10.0, 20.0, 200.0, 180.0]},
        {"ok": [3], "junk": []},
    ],
}


def write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_json_docstring_example(tmp_path):
    gt = load_ground_truth(write_json(tmp_path / "mine.json", DOC))
    assert (gt.n_images, gt.n_queries, gt.revisited) == (4, 2, False)
    assert gt.query_indices.tolist() == [0, 2]
    assert gt.gnd[0]["ok"].tolist() == [1] and gt.gnd[1]["junk"].tolist() == []
    assert gt.gnd[0]["bbx"].tolist() == [10.0, 20.0, 200.0, 180.0] and "bbx" not in gt.gnd[1]
    assert gt.gnd[0]["ok"].flags.writeable is False
    assert ground_truth.__doc__ is not None and '"format": "heatsearch-gnd"' in ground_truth.__doc__


def test_json_query_indices_only_and_revisited(tmp_path):
    doc = dict(DOC)
    del doc["queries"]
    gt = load_ground_truth(write_json(tmp_path / "a.json", doc))
    assert gt.queries == ["img_000", "img_002"]
    rev = {**DOC, "gnd": [{"easy": [1], "hard": [], "junk": [3]}, {"easy": [], "hard": [3], "junk": []}]}
    del rev["query_indices"]
    gt = load_ground_truth(write_json(tmp_path / "noext", rev))  # recognised by content
    assert gt.revisited and gt.query_indices is None
    assert [q["ok"].tolist() for q in gt.protocol("medium")] == [[1], [3]]
    back = tmp_path / "b.json"
    save_ground_truth_json(gt, back)
    assert_same_gt(gt, load_ground_truth(back))


def test_user_built_ground_truth(tmp_path):
    gt = GroundTruth(images=["a", "b", "c"], queries=["q"], query_indices=None,
                     gnd=[{"ok": [2, 0]}], revisited=False)
    assert gt.gnd[0]["junk"].tolist() == [] and gt.protocol("classic")[0]["ok"].tolist() == [2, 0]
    assert "classic, images=3, queries=1" in repr(gt)
    with pytest.raises(InvalidInputError, match=r"gnd must have one entry per query: expected 1, got 2"):
        GroundTruth(images=["a"], queries=["q"], query_indices=None,
                    gnd=[{"ok": [0]}, {"ok": [0]}], revisited=False)
    with pytest.raises(InvalidInputError, match=r"revisited=True\?"):
        GroundTruth(images=["a"], queries=["q"], query_indices=None,
                    gnd=[{"easy": [0], "hard": [], "junk": []}], revisited=False)


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda d: d.update(format="other"), r'"format": "heatsearch-gnd".*got \'other\''),
        (lambda d: d.update(version=2), r"unsupported heatsearch-gnd version 2.*reads version 1"),
        (lambda d: d.pop("images"), r"missing \['images'\]"),
        (lambda d: (d.pop("queries"), d.pop("query_indices")), r"queries or query_indices"),
        (lambda d: d["gnd"][0].update(ok=[7]), r"gnd\[0\]\['ok'\].*\[0, 4\).*got 7"),
        (lambda d: d["gnd"][0].update(ok=[1.0]), r"gnd\[0\]\['ok'\] must be a JSON list of integers"),
        (lambda d: d["gnd"].pop(), r"one entry per query: expected 2, got 1"),
        (lambda d: d["gnd"][1].update(easy=[1], hard=[], junk=[]), r"mixes revisited"),
        (lambda d: d["gnd"][0].update(bbx=[1, 2, 3]), r"bbx.*4 numbers"),
        (lambda d: d.update(images=[1, 2]), r"images\[0\] must be a string"),
    ],
)
def test_bad_json_names_the_file_and_the_problem(tmp_path, mutate, pattern):
    doc = json.loads(json.dumps(DOC))
    mutate(doc)
    path = write_json(tmp_path / "bad.json", doc)
    with pytest.raises(InvalidInputError, match=pattern) as e:
        load_ground_truth(path)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------------------------
# Corrupt and foreign files


@needs_scipy
def test_corrupt_files_raise_clear_errors(tmp_path, shared_data):
    cases = {
        "trunc.pkl": (shared_data / "gnd/gnd_roxford5k.pkl").read_bytes()[:5000],
        "trunc.mat": (shared_data / "gnd/gnd_oxford5k.mat").read_bytes()[:3000],
        "text.json": b'{"format": "heatsearch-gnd", "version": 1, "images": [',
        "empty.pkl.txt": b"",
        "image.png": b"\x89PNG\r\n\x1a\n" + bytes(100),
    }
    for fname, data in cases.items():
        path = tmp_path / fname
        path.write_bytes(data)
        with pytest.raises(InvalidInputError) as e:
            load_ground_truth(path)
        assert str(path) in str(e.value), fname
    with pytest.raises(FileNotFoundError):
        load_ground_truth(tmp_path / "missing.pkl")


def test_wrong_pickle_content(tmp_path):
    p = tmp_path / "list.pkl"
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(InvalidInputError, match=r"list.pkl: expected a dict with 'imlist'"):
        load_ground_truth(p)
    p.write_bytes(pickle.dumps({"imlist": ["a"], "gnd": []}))
    with pytest.raises(InvalidInputError, match=r"missing \['qimlist'\]"):
        load_ground_truth(p)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickles_cannot_run_code(tmp_path):
    target = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [_Evil(str(target))]}))
    with pytest.raises(InvalidInputError, match=r"refers to .*mkdir.*refusing"):
        load_ground_truth(p)
    assert not target.exists()


def test_pickle_with_numpy_arrays_and_classic_entries(tmp_path):
    # cirtorch-style: numpy arrays, ok/junk entries, optional 0-based qidx
    data = {
        "imlist": ["a", "b", "c"],
        "qimlist": ["a"],
        "qidx": np.array([0]),
        "gnd": [{"ok": np.array([0, 2], dtype=np.int32), "junk": np.array([], dtype=np.int64),
                 "bbx": np.array([1, 2, 3, 4])}],
    }
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        p = tmp_path / f"c{proto}.pkl"
        p.write_bytes(pickle.dumps(data, protocol=proto))
        gt = load_ground_truth(p)
        assert not gt.revisited and gt.query_indices.tolist() == [0]
        assert gt.gnd[0]["ok"].tolist() == [0, 2] and gt.gnd[0]["bbx"].tolist() == [1.0, 2.0, 3.0, 4.0]


# --------------------------------------------------------------------------------------------
# MATLAB quirks, on files written with scipy.io.savemat


def _struct_array(entries, fields):
    arr = np.zeros((len(entries), 1), dtype=[(f, object) for f in fields])
    for i, e in enumerate(entries):
        for f in fields:
            arr[i, 0][f] = e[f]
    return arr


@needs_scipy
def test_mat_quirks_scalars_empty_junk_doubles_and_cell_strings(tmp_path):
    imlist = np.array(["im1", "im2", "image3"], dtype=object).reshape(3, 1)  # cell array
    gnd = _struct_array(
        [
            {"ok": 2.0, "junk": np.zeros((0, 0)), "bbx": np.array([[1, 2, 3, 4]], np.uint16)},
            {"ok": np.array([[1], [3]], np.uint8), "junk": np.array([[2]]), "bbx": np.zeros((0, 0))},
        ],
        ["ok", "junk", "bbx"],
    )
    path = tmp_path / "mine.mat"
    scipy_io.savemat(str(path), {"imlist": imlist, "qidx": np.array([[1, 3]]), "gnd": gnd})
    gt = load_ground_truth(path)
    assert gt.images == ["im1", "im2", "image3"] and gt.queries == ["im1", "image3"]
    assert gt.query_indices.tolist() == [0, 2]
    assert gt.gnd[0]["ok"].tolist() == [1] and gt.gnd[0]["junk"].tolist() == []
    assert gt.gnd[0]["bbx"].tolist() == [1.0, 2.0, 3.0, 4.0] and "bbx" not in gt.gnd[1]
    assert gt.gnd[1]["ok"].tolist() == [0, 2] and gt.gnd[1]["junk"].tolist() == [1]


@needs_scipy
def test_mat_revisited_format_and_char_matrix(tmp_path):
    # revisitop's MATLAB release: qimlist, gnd(i).easy/.hard/.junk, 1-based
    gnd = _struct_array([{"easy": np.array([[1, 2]]), "hard": np.zeros((1, 0)), "junk": 3}],
                        ["easy", "hard", "junk"])
    path = tmp_path / "rev.mat"
    scipy_io.savemat(str(path), {"imlist": np.array(["aa", "b ", "cc"]), "qimlist": np.array(["q1"], dtype=object),
                                 "gnd": gnd})
    gt = load_ground_truth(path)
    assert gt.revisited and gt.query_indices is None and gt.queries == ["q1"]
    assert gt.images == ["aa", "b", "cc"]  # char matrix rows are blank-padded
    assert gt.gnd[0]["easy"].tolist() == [0, 1] and gt.gnd[0]["junk"].tolist() == [2]


@needs_scipy
@pytest.mark.parametrize(
    "contents, pattern",
    [
        ({"imlist": np.array(["a"], dtype=object)}, r"missing \['gnd', 'qidx or qimlist'\]"),
        ({"imlist": np.array(["a"], dtype=object), "qidx": 1,
          "gnd": _struct_array([{"ok": 0, "junk": []}], ["ok", "junk"])}, r"gnd\(1\).ok.*1-based.*got 0"),
        ({"imlist": np.array(["a"], dtype=object), "qidx": 1,
          "gnd": _struct_array([{"ok": 1.5, "junk": []}], ["ok", "junk"])}, r"gnd\(1\).ok.*whole-number"),
        ({"imlist": np.array(["a"], dtype=object), "qidx": 4,
          "gnd": _struct_array([{"ok": 1, "junk": []}], ["ok", "junk"])}, r"qidx.*\[1, 1\], got 4"),
        ({"imlist": np.array(["a"], dtype=object), "qidx": 1,
          "gnd": _struct_array([{"ok": 2, "junk": []}], ["ok", "junk"])}, r"gnd\[0\]\['ok'\].*\[0, 1\).*got 1"),
        ({"imlist": np.array([[1.0]]), "qidx": 1,
          "gnd": _struct_array([{"ok": 1, "junk": []}], ["ok", "junk"])}, r"imlist must be a cell array of strings"),
        ({"imlist": np.array(["a"], dtype=object), "qidx": 1, "gnd": np.array([[1.0]])},
         r"gnd must be a MATLAB struct array"),
    ],
)
def test_bad_mat_contents(tmp_path, contents, pattern):
    path = tmp_path / "bad.mat"
    scipy_io.savemat(str(path), contents)
    with pytest.raises(InvalidInputError, match=pattern) as e:
        load_ground_truth(path)
    assert str(path) in str(e.value)


def test_missing_scipy_is_a_clear_import_error(tmp_path, shared_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # makes "from scipy.io import" fail
    with pytest.raises(MissingDependencyError, match="pip install scipy") as e:
        load_ground_truth(shared_data / "gnd/gnd_oxford5k.mat")
    assert isinstance(e.value, ImportError) and isinstance(e.value, HeatsearchError)
    with pytest.raises(MissingDependencyError):
        load_descriptors(shared_data / "holidays/vecs_ho.mat")
    # pickles and JSON need no SciPy
    assert load_ground_truth(shared_data / "gnd/gnd_roxford5k.pkl").n_queries == 70


# --------------------------------------------------------------------------------------------
# Atomic save


def _sample_gt() -> GroundTruth:
    return GroundTruth(images=["a", "b"], queries=["a"], query_indices=[0],
                       gnd=[{"ok": [1], "junk": [0]}], revisited=False)


def test_interrupted_replace_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "gt.json"
    out.write_text("OLD CONTENT")

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_ground_truth_json(_sample_gt(), out)
    assert out.read_text() == "OLD CONTENT"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.json"]  # no temp file left


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "gt.json"
    save_ground_truth_json(_sample_gt(), out)
    before = out.read_bytes()
    real_dump = json.dump

    def half_dump(obj, fp, **kw):
        fp.write('{"format": "heatsearch-gnd", "ima')  # a partial write, then a crash
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", half_dump)
    bigger = GroundTruth(images=["a", "b", "c"], queries=["c"], query_indices=None,
                         gnd=[{"ok": [2]}], revisited=False)
    with pytest.raises(KeyboardInterrupt):
        save_ground_truth_json(bigger, out)
    monkeypatch.setattr(json, "dump", real_dump)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.json"]
    assert_same_gt(_sample_gt(), load_ground_truth(out))


def test_save_rejects_non_ground_truth(tmp_path):
    with pytest.raises(InvalidInputError, match="GroundTruth"):
        save_ground_truth_json({"images": []}, tmp_path / "x.json")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Descriptors


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npy_descriptors_keep_dtype_and_rows(tmp_path, dtype):
    x = np.arange(12, dtype=dtype).reshape(4, 3)
    np.save(tmp_path / "x.npy", np.asfortranarray(x))
    y = load_descriptors(tmp_path / "x.npy")
    assert y.dtype == dtype and y.flags.c_contiguous
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(load_descriptors(tmp_path / "x.npy", layout="columns"), x.T)
    # auto + expected_count picks the orientation that has that many vectors
    np.testing.assert_array_equal(load_descriptors(tmp_path / "x.npy", expected_count=3), x.T)
    np.testing.assert_array_equal(load_descriptors(tmp_path / "x.npy", expected_count=4), x)
    np.save(tmp_path / "v.npy", np.ones(5, dtype))
    assert load_descriptors(tmp_path / "v.npy").shape == (1, 5)


@needs_scipy
def test_mat_numeric_matrix_in_column_convention(tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)  # (n=6, d=4)
    path = tmp_path / "cols.mat"
    scipy_io.savemat(str(path), {"X": x.T})  # MATLAB stores (d, n)
    np.testing.assert_array_equal(load_descriptors(path, layout="columns"), x)
    np.testing.assert_array_equal(load_descriptors(path, expected_count=6), x)
    assert load_descriptors(path).shape == (4, 6)  # "auto" without a count: rows


@needs_scipy
def test_mat_cell_array_and_variable_choice(tmp_path):
    cells = np.empty((1, 3), dtype=object)
    for i in range(3):
        cells[0, i] = np.full((5, 1), i, np.float64)
    path = tmp_path / "cells.mat"
    scipy_io.savemat(str(path), {"v": cells, "other": np.eye(2)})
    with pytest.raises(InvalidInputError, match=r"single variable, found \['other', 'v'\].*key="):
        load_descriptors(path)
    with pytest.raises(InvalidInputError, match=r"no variable 'w'"):
        load_descriptors(path, key="w")
    y = load_descriptors(path, key="v")
    assert y.shape == (3, 5) and y.dtype == np.float64
    np.testing.assert_array_equal(y[:, 0], [0, 1, 2])
    with pytest.raises(InvalidInputError, match="cell array holds one vector per cell"):
        load_descriptors(path, key="v", layout="columns")
    with pytest.raises(InvalidInputError, match=r"expected 4 descriptors, got 3"):
        load_descriptors(path, key="v", expected_count=4)
    cells[0, 1] = np.ones((4, 1))
    scipy_io.savemat(str(path), {"v": cells})
    with pytest.raises(InvalidInputError, match=r"same length, got lengths \[4, 5\]"):
        load_descriptors(path)


def test_bad_descriptor_files(tmp_path):
    np.save(tmp_path / "i.npy", np.ones((3, 2), np.int32))
    with pytest.raises(InvalidDTypeError, match=r"i.npy: descriptors must be float32 or float64, got int32"):
        load_descriptors(tmp_path / "i.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match=r"o.npy: not a readable .npy array"):
        load_descriptors(tmp_path / "o.npy")
    np.save(tmp_path / "e.npy", np.ones((0, 4), np.float32))
    with pytest.raises(InvalidInputError, match=r"non-empty"):
        load_descriptors(tmp_path / "e.npy")
    np.save(tmp_path / "c.npy", np.ones((2, 2, 2), np.float32))
    with pytest.raises(InvalidInputError, match=r"2-D matrix.*\(2, 2, 2\)"):
        load_descriptors(tmp_path / "c.npy")
    (tmp_path / "t.txt").write_text("1 2 3")
    with pytest.raises(InvalidInputError, match=r"t.txt: expected a NumPy .npy file or a MATLAB .mat"):
        load_descriptors(tmp_path / "t.txt")
    np.save(tmp_path / "x.npy", np.ones((3, 2), np.float32))
    with pytest.raises(InvalidInputError, match=r"layout must be one of 'auto', 'rows', 'columns'"):
        load_descriptors(tmp_path / "x.npy", layout="cols")
    with pytest.raises(InvalidInputError, match=r"expected 5 descriptors \(rows or columns\).*\(3, 2\)"):
        load_descriptors(tmp_path / "x.npy", expected_count=5)
    with pytest.raises(InvalidInputError, match=r"expected_count must be >= 1"):
        load_descriptors(tmp_path / "x.npy", expected_count=0)
