"""Every mistake a user can make on the command line gives ONE line,
``heatsearch COMMAND: error: ...``, and exit code 2: never a traceback, never an internal
error, never a temporary file name. Runs without torch: arguments are checked before any
image is extracted (the extractor is made to fail if it is ever reached)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import numpy as np
import pytest

import heatsearch
from heatsearch.app.cli import main
from heatsearch.app.index import Index, IndexConfig
from heatsearch.eval import GroundTruth, save_ground_truth_json
from heatsearch.threads import get_num_threads

#: The folder the heatsearch under test is imported from (for the child processes).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(heatsearch.__file__)))


def tiny_index(directory, paths, d=8, seed=0):
    """An index saved without extracting anything: random unit descriptors for ``paths``."""
    rng = np.random.default_rng(seed)
    X = rng.random((len(paths), d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    # power=None: the final descriptors of unit pooled ones are themselves (a consistent index).
    index = Index(config=IndexConfig(power=None), paths=[str(p) for p in paths], descriptors=X, pooled=X.copy(),
                  mean=np.ones(d, np.float32))
    index.save(str(directory))
    return X


@pytest.fixture
def setup(tmp_path, monkeypatch):
    from PIL import Image

    from heatsearch.vision import extract

    def no_extraction(*args, **kwargs):
        raise AssertionError("an image was extracted before the arguments were checked")

    monkeypatch.setattr(extract.Extractor, "feature_map", no_extraction)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (80 * i, 60, 200)).save(photos / f"p{i}.jpg")
    (tmp_path / "empty").mkdir()
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    (tmp_path / "file.txt").write_text("mine")
    tiny_index(tmp_path / "idx", sorted((photos).glob("*.jpg")))
    gt = GroundTruth(images=["photos/p0.jpg", "photos/p1.jpg"], queries=["photos/p2.jpg"], query_indices=None,
                     gnd=[{"ok": [0]}], revisited=False)
    save_ground_truth_json(gt, tmp_path / "gt.json")
    monkeypatch.chdir(tmp_path)
    return tmp_path


BAD = [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice"),
    (["--threads", "-1", "info", "idx"], "--threads must be a whole number from 0 to 1024, got -1"),
    (["--threads", "1e20", "info", "idx"], "--threads must be a whole number"),
    (["--threads", "100000000000000000000", "info", "idx"], "--threads must be a whole number"),
    (["info", "idx", "--threads", "two"], "--threads must be a whole number"),
    (["info", "nowhere"], "INDEX must be an existing folder"),
    (["info", "stuff"], "not a heatsearch index"),
    (["search", "idx", "photos/p0.jpg", "-k", "0"], "-k must be a whole number >= 1, got 0"),
    (["search", "idx", "photos/p0.jpg", "-k", "ten"], "-k must be a whole number"),
    (["search", "idx", "missing.jpg"], "missing.jpg"),
    (["search", "idx", "photos/p0.jpg", "--bbox", "1,2,3"], "--bbox must be x1,y1,x2,y2"),
    (["search", "idx", "photos/p0.jpg", "--bbox", "-1,2,3,nan"], "--bbox must be x1,y1,x2,y2"),
    (["search", "idx", "photos/p0.jpg", "--html", "nodir/r.html"], "nodir"),
    (["search", "idx", "photos/p0.jpg", "--html", "photos"], "--html must be a file"),
    (["search", "idx", "photos/p0.jpg", "--rerank", "magic"], "invalid choice"),
    (["search", "empty", "photos/p0.jpg"], "not a heatsearch index"),
    (["index", "empty", "-o", "new.index"], "holds no image files"),
    (["index", "nowhere", "-o", "new.index"], "FOLDER must be an existing folder"),
    (["index", "file.txt", "-o", "new.index"], "FOLDER must be an existing folder"),
    (["index", "photos", "-o", "stuff"], "refusing to replace it"),
    (["index", "photos", "-o", "file.txt"], "'file.txt' exists and is not a directory"),
    (["index", "photos", "-o", "new.index", "--pooling", "max"], "--pooling must be one of"),
    (["index", "photos", "-o", "new.index", "--backbone", "alexnet"], "--backbone must be one of"),
    (["index", "photos", "-o", "new.index", "--layer", "fc9"], "--layer must be one of"),
    (["index", "photos", "-o", "new.index", "--max-size", "0"], "--max-size must be a whole number from 16"),
    (["index", "photos", "-o", "new.index", "--max-size", "big"], "--max-size must be a whole number"),
    (["index", "photos", "-o", "new.index", "--whiten", "none.npz"], "--whiten must be an existing file"),
    (["index", "photos", "-o", "new.index", "--whiten", "file.txt", "--no-whiten"], "contradict"),
    (["add", "nowhere", "photos/p0.jpg"], "INDEX must be an existing folder"),
    (["add", "idx", "file.txt"], "not an image file"),
    (["add", "idx", "photos/gone.jpg"], "no such file"),
    (["remove", "idx", "photos/elsewhere.jpg"], "not in the index"),
    (["duplicates", "nowhere"], "INDEX must be an existing folder"),
    (["duplicates", "stuff"], "not a heatsearch index"),
    (["duplicates", "idx", "--threshold", "1.5"], "--threshold must be a cosine similarity in [-1, 1] (1: identical descriptors), got 1.5"),
    (["duplicates", "idx", "--threshold", "-2"], "--threshold must be a cosine similarity in [-1, 1] (1: identical descriptors), got -2"),
    (["duplicates", "idx", "--threshold", "high"], "--threshold must be a cosine similarity in [-1, 1], got 'high'"),
    (["duplicates", "idx", "--threshold", "nan"], "--threshold must be a cosine similarity"),
    (["duplicates", "idx", "--root", "nowhere"], "--root must be an existing folder"),
    (["explain", "missing.jpg", "-o", "w.png"], "IMAGE must be an existing file"),
    (["explain", "photos/p0.jpg", "-o", "nodir/w.png"], "no such folder"),
    (["explain", "photos/p0.jpg", "-o", "w.png", "--range", "2,1"], "LOW < HIGH"),
    (["explain", "photos/p0.jpg", "-o", "w.png", "--range", "-1"], "--range must be LOW,HIGH"),
    (["explain", "photos/p0.jpg", "-o", "w.png", "--backbone", "alexnet"], "--backbone must be one of"),
    (["evaluate", "--db", "none.npy", "--gnd", "gt.json"], "--db must be an existing file"),
    (["evaluate", "--db", "idx", "--gnd", "none.json"], "--gnd must be an existing file"),
    (["evaluate", "--db", "idx", "--gnd", "gt.json", "--postprocess", "sqrt"], "descriptors are final"),
    (["evaluate", "--db", "idx", "--gnd", "gt.json", "--methods", "plain,magic"], "each --methods entry"),
    (["evaluate", "--db", "idx", "--gnd", "file.txt"], "file.txt"),
    (["demo", "--photos", "-3"], "--photos must be a whole number"),
    (["demo", "--max-size", "1e9"], "--max-size must be a whole number"),
]


@pytest.mark.parametrize("argv,expected", BAD, ids=[" ".join(a) or "nothing" for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_code_2(setup, capsys, argv, expected, restore_threads):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own checks
        code = e.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("heatsearch") and ": error: " in lines[0], err
    assert expected in lines[0], err
    for leak in ("Traceback", "internal error", ".tmp"):
        assert leak not in err
    assert not (setup / "new.index").exists()


def test_a_real_process_prints_one_line_without_traceback(setup):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    for argv in (["--threads", "1e20", "info", "idx"], ["search", "idx", "photos/p0.jpg", "-k", "0"],
                 ["index", "empty", "-o", "x.index"]):
        run = subprocess.run([sys.executable, "-m", "heatsearch", *argv], capture_output=True, text=True,
                             timeout=120, env=env, cwd=setup)
        assert run.returncode == 2, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr


def test_threads_zero_means_every_core(setup, capsys, restore_threads):
    assert main(["--threads", "1", "info", "idx"]) == 0
    assert get_num_threads() == 1
    assert main(["--threads", "0", "info", "idx"]) == 0
    assert get_num_threads() == len(os.sched_getaffinity(0))
    assert main(["info", "idx", "--threads", "1"]) == 0  # also after the command
    assert get_num_threads() == 1


def test_a_box_may_start_with_a_negative_number(setup, capsys, monkeypatch):
    """argparse took ``--bbox -10,...`` for an option ("expected one argument")."""
    seen = {}

    def search(self, query, k=10, *, rerank=None, bbox=None):
        seen["bbox"] = bbox
        return []

    monkeypatch.setattr(Index, "search", search)
    assert main(["search", "idx", "photos/p0.jpg", "--bbox", "-10,-5.5,30,20"]) == 0
    assert seen["bbox"] == [-10.0, -5.5, 30.0, 20.0]
    assert main(["search", "idx", "photos/p0.jpg", "--bbox=-1,0,3,4"]) == 0
    assert seen["bbox"] == [-1.0, 0.0, 3.0, 4.0]


def test_no_temporary_name_in_a_failed_save(setup, capsys, monkeypatch):
    """A full disk while saving names the user's folder (the index), not the version folder
    being written (``idx/data-<pid>-.../descriptors.npy``)."""
    from heatsearch.app import storage

    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(storage, "_write_npy", full)
    before = sorted(os.listdir(setup / "idx"))
    assert main(["remove", "idx", "photos/p0.jpg"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"heatsearch remove: error: cannot write in {setup / 'idx'}: No space left on device", err
    assert sorted(os.listdir(setup / "idx")) == before and len(Index.load(setup / "idx")) == 3


def test_warnings_are_one_line_each_and_said_once(setup, capsys, monkeypatch):
    import warnings

    from heatsearch.app import cli

    def disk_size(folder):
        for _ in range(3):
            warnings.warn("something odd\n  on two lines")
        return 0

    monkeypatch.setattr(cli, "_disk_size", disk_size)
    assert main(["info", "idx"]) == 0
    err = capsys.readouterr().err
    assert err == "heatsearch info: warning: something odd on two lines\n"
