"""heatsearch.ann: the FAISS backends (correctness, recall, files, bad input)."""

from __future__ import annotations

import builtins
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import heatsearch as hs
from heatsearch.errors import (
    HeatsearchError,
    IndexFileError,
    InvalidDTypeError,
    InvalidInputError,
    MissingDependencyError,
)

pytest.importorskip("faiss", reason="the ANN backend needs faiss-cpu (pip install 'heatsearch[ann]')")

from heatsearch.ann import ANN_KINDS, AnnIndex, AnnParams, ann_params  # noqa: E402


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, d: int, clusters: int = 50, spread: float = 0.3) -> np.ndarray:
    """Unit rows around ``clusters`` random centres (descriptors of photo collections cluster)."""
    centres = unit(rng, clusters, d)
    X = centres[rng.integers(0, clusters, n)] + spread / np.sqrt(d) * rng.standard_normal((n, d)).astype(np.float32)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / truth.shape[1] for a, b in zip(ids, truth)]))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = clustered(rng, 4000, 32)
    Q = clustered(np.random.default_rng(1), 40, 32)
    return X, Q


# ---------------------------------------------------------------------------------------------
# Correctness.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ANN_KINDS)
def test_planted_neighbours_are_found_first(kind):
    """Each query is a slightly moved copy of a planted row: that row must come first, with
    its exact cosine when re-scored."""
    rng = np.random.default_rng(2)
    X = unit(rng, 3000, 48)
    planted = rng.choice(3000, 30, replace=False)
    Q = X[planted] + 0.01 * rng.standard_normal((30, 48)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    ann = AnnIndex.build(X, kind)
    ids, scores = ann.search(Q, 5, exact=X)
    np.testing.assert_array_equal(ids[:, 0], planted)
    np.testing.assert_allclose(scores[:, 0], np.einsum("ij,ij->i", X[planted], Q), rtol=1e-5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (30, 5)
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize("kind,params", [("ivfpq", {"nprobe": 64, "refine": 20}), ("hnsw", {"ef_search": 256})])
def test_recall_against_exact_with_high_parameters(data, kind, params):
    X, Q = data
    truth, truth_scores = hs.search(X, Q, 20)
    ann = AnnIndex.build(X, kind, params=params)
    ids, scores = ann.search(Q, 20, exact=X)
    assert recall(ids, truth) >= 0.95
    # Re-scored: where the ids agree the scores are the exact inner products.
    same = ids == truth
    np.testing.assert_allclose(scores[same], truth_scores[same], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ANN_KINDS)
def test_blocks_build_the_same_rows_as_an_array(data, kind):
    """Built from blocks (trained on the first rows), every row is findable by itself (a deep
    shortlist, longer than a cluster of 80 near-identical rows, which tiny PQ codes confuse)."""
    X, _ = data
    ann = AnnIndex.build((X[s : s + 700] for s in range(0, len(X), 700)), kind, n=len(X), params={"refine": 100})
    assert ann.ntotal == len(X)
    probe = np.arange(0, len(X), 97)
    ids, _ = ann.search(X[probe], 1, exact=X)
    np.testing.assert_array_equal(ids[:, 0], probe)


def test_add_extends_ids_in_order(data):
    X, _ = data
    ann = AnnIndex("hnsw", X.shape[1], len(X))
    ann.train(X[:1000])
    ann.add(X[:2500])
    ann.add(X[2500:])
    ids, _ = ann.search(X[[2600, 10]], 1, exact=X)
    assert ids[:, 0].tolist() == [2600, 10]


def test_approximate_scores_without_exact(data):
    X, Q = data
    ann = AnnIndex.build(X, "hnsw")
    ids, scores = ann.search(Q, 10)
    exact = np.einsum("ijk,ik->ij", X[ids], Q)
    assert np.max(np.abs(scores - exact)) < 0.05  # 8-bit scalar quantisation


def test_k_larger_than_the_index_is_clamped():
    X = unit(np.random.default_rng(3), 300, 16)
    ann = AnnIndex.build(X, "hnsw")
    ids, scores = ann.search(X[:2], 1000, exact=X)
    assert ids.shape == (2, 300)
    assert sorted(ids[0].tolist()) == list(range(300))


def test_a_single_vector_query_and_float64(data):
    X, Q = data
    ann = AnnIndex.build(X.astype(np.float64), "hnsw")
    a = ann.search(Q[0].astype(np.float64), 5, exact=X)
    b = ann.search(Q[:1], 5, exact=X)
    np.testing.assert_array_equal(a[0], b[0])


def test_threads_follow_heatsearch(data):
    faiss = pytest.importorskip("faiss")
    X, Q = data
    ann = AnnIndex.build(X, "hnsw")
    before = hs.get_num_threads()
    try:
        hs.set_num_threads(1)
        ann.search(Q, 5)
        assert faiss.omp_get_max_threads() == 1
    finally:
        hs.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Parameters from n.
# ---------------------------------------------------------------------------------------------
def test_the_rule_and_overrides():
    p = ann_params("ivfpq", 1_000_000, 512)
    assert (p.nlist, p.m, p.nbits, p.nprobe, p.refine) == (4096, 64, 8, 512, 30)
    assert p.train_size == 40 * 4096
    small = ann_params("ivfpq", 2000, 64)
    assert small.nlist <= 2000 // 39 and small.nbits < 8  # never fewer than 39 rows a centroid
    assert ann_params("ivfpq", 1_000_000, 512, AnnParams(nlist=1024, nprobe=7)).nlist == 1024
    assert ann_params("ivfpq", 1_000_000, 512, AnnParams(nlist=1024, nprobe=7)).nprobe == 7
    h = ann_params("hnsw", 10_000, 128, AnnParams(ef_search=64))
    assert (h.M, h.ef_construction, h.ef_search) == (32, 40, 64)
    # Longer exact shortlists from 3M rows on (recall@100 >= 0.95 measured at 10M)
    assert ann_params("ivfpq", 2_999_999, 512).refine == 30 and ann_params("ivfpq", 10_000_000, 512).refine == 100
    assert ann_params("hnsw", 2_999_999, 512).refine == 3 and ann_params("hnsw", 10_000_000, 512).refine == 6
    assert ann_params("hnsw", 10_000_000, 512, AnnParams(refine=2)).refine == 2


def test_dict_overrides_and_saved_parameters(tmp_path, data):
    X, _ = data
    ann = AnnIndex.build(X, "ivfpq", params={"nlist": 16, "nprobe": 4})
    assert ann.params.nlist == 16 and ann.params.nprobe == 4
    ann.save(tmp_path)
    assert AnnIndex.load(tmp_path).params == ann.params


# ---------------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ANN_KINDS)
def test_save_load_round_trip(tmp_path, data, kind):
    X, Q = data
    ann = AnnIndex.build(X, kind)
    path = tmp_path / "x.faiss"
    ann.save(path)
    back = AnnIndex.load(path)
    assert (back.kind, back.d, back.ntotal) == (kind, X.shape[1], len(X))
    for a, b in zip(ann.search(Q, 10), back.search(Q, 10)):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["x.faiss"]  # no temporary file left


def test_a_failed_save_keeps_the_old_file(tmp_path, data, monkeypatch):
    faiss = pytest.importorskip("faiss")
    X, _ = data
    path = tmp_path / "ann.faiss"
    AnnIndex.build(X[:1000], "hnsw").save(path)
    before = path.read_bytes()

    real = faiss.PyCallbackIOWriter

    def full_disk(callback):
        def write(chunk):
            callback(chunk)
            raise OSError("disk full")  # after the first bytes reached the file

        return real(write)

    monkeypatch.setattr(faiss, "PyCallbackIOWriter", full_disk)
    with pytest.raises((OSError, RuntimeError), match="disk full"):
        AnnIndex.build(X, "hnsw").save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ann.faiss"]


def test_a_save_killed_with_sigkill_keeps_the_old_file(tmp_path, data):
    """A real kill -9 in the middle of writing: the old file still loads, the same."""
    X, Q = data
    path = tmp_path / "ann.faiss"
    old = AnnIndex.build(X[:2000], "hnsw")
    old.save(path)
    before = path.read_bytes()
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np, faiss
        from heatsearch.ann import AnnIndex
        X = np.load({str(tmp_path / 'x.npy')!r})
        ann = AnnIndex.build(X, "hnsw")
        real = faiss.PyCallbackIOWriter
        def dying(callback):
            def w(chunk):
                callback(chunk)
                os.kill(os.getpid(), signal.SIGKILL)  # after the first bytes reach the file
            return real(w)
        faiss.PyCallbackIOWriter = dying
        ann.save({str(path)!r})
        """
    )
    np.save(tmp_path / "x.npy", X)
    # The heatsearch this test imports (a checkout's python/ or the installed wheel's).
    env = {**os.environ, "PYTHONPATH": str(Path(hs.__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert path.read_bytes() == before
    back = AnnIndex.load(path)
    assert back.ntotal == 2000
    np.testing.assert_array_equal(back.search(Q, 5)[0], old.search(Q, 5)[0])


def test_corrupt_files_are_index_file_errors(tmp_path, data):
    X, _ = data
    with pytest.raises(IndexFileError, match="no ANN file"):
        AnnIndex.load(tmp_path / "missing.faiss")
    (tmp_path / "junk.faiss").write_bytes(b"not an index at all")
    with pytest.raises(IndexFileError, match="bad magic"):
        AnnIndex.load(tmp_path / "junk.faiss")
    good = tmp_path / "good.faiss"
    AnnIndex.build(X[:1000], "hnsw").save(good)
    raw = good.read_bytes()
    (tmp_path / "cut.faiss").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IndexFileError, match="corrupt"):
        AnnIndex.load(tmp_path / "cut.faiss")


# ---------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------
def test_bad_input(data):
    X, Q = data
    ann = AnnIndex.build(X[:1000], "hnsw")
    with pytest.raises(InvalidInputError, match="d = 32 columns"):
        ann.search(np.zeros((1, 31), np.float32), 5)
    with pytest.raises(InvalidInputError, match="k must be >= 1"):
        ann.search(Q, 0)
    with pytest.raises(InvalidDTypeError, match="k must be an int"):
        ann.search(Q, 2.5)
    bad = Q.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InvalidInputError, match="finite|NaN"):
        ann.search(bad, 5)
    with pytest.raises(InvalidInputError, match="finite|NaN"):
        ann.add(bad)
    with pytest.raises(InvalidDTypeError):
        ann.search(Q.astype(np.int32), 5)
    with pytest.raises(InvalidInputError, match=r"exact must hold the \(1000, 32\) rows"):
        ann.search(Q, 5, exact=X)
    with pytest.raises(InvalidInputError, match="kind must be one of"):
        AnnIndex.build(X, "lsh")
    with pytest.raises(InvalidInputError, match="m .* must divide d"):
        AnnIndex("ivfpq", 30, 1000, {"m": 7})
    with pytest.raises(InvalidInputError, match="unknown ANN parameters"):
        AnnIndex("hnsw", 30, 1000, {"efsearch": 7})
    with pytest.raises(InvalidInputError, match="nprobe must be >= 1"):
        AnnParams(nprobe=0)
    with pytest.raises(InvalidInputError, match="n .* is required"):
        AnnIndex.build(iter([X]), "hnsw")
    with pytest.raises(InvalidInputError, match="at least one row"):
        AnnIndex.build(X[:0], "hnsw")


def test_untrained_and_empty_indexes_say_so(data):
    X, Q = data
    ann = AnnIndex("ivfpq", 32, 4000)
    with pytest.raises(InvalidInputError, match="not trained"):
        ann.add(X)
    with pytest.raises(InvalidInputError, match="empty"):
        ann.search(Q, 5)
    with pytest.raises(InvalidInputError, match="at least .* rows to train"):
        ann.train(X[:10])
    assert all(isinstance(e, HeatsearchError) for e in (InvalidInputError("x"), IndexFileError("x")))


def test_faiss_missing_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    with pytest.raises(MissingDependencyError, match=r"pip install 'heatsearch\[ann\]'"):
        AnnIndex("hnsw", 8, 100)


@pytest.mark.parametrize("kind", ANN_KINDS)
def test_removed_rows_are_never_returned_and_the_rest_renumbered(tmp_path, data, kind):
    """``without(keep)``: the FAISS index is shared (unchanged), removed rows never come back,
    kept rows answer under their new numbers (as an index's live rows after a removal), with
    and without exact re-scoring, after appending, and after a save and a load."""
    X, Q = data
    ann = AnnIndex.build(X, kind)
    keep = np.ones(len(X), bool)
    keep[::3] = False
    kept = np.flatnonzero(keep)
    cut = ann.without(keep)
    assert cut._index is ann._index and ann.row_of_id is None
    assert (cut.nrows, cut.ntotal) == (len(kept), len(X)) and abs(cut.dead_fraction - 1334 / 4000) < 1e-9
    Xk = X[kept]
    for ids, scores in (cut.search(Q, 10, exact=Xk), cut.search(Q, 10)):
        # ivfpq may find fewer than k in the cells it probes: padded at the end with -1
        assert ids.max() < len(kept) and (ids >= 0).mean() > 0.9
        assert all(np.all(np.diff((row < 0).astype(int)) >= 0) for row in ids)
        assert np.all(np.isinf(scores[ids < 0]))
    exact_ids, exact_scores = cut.search(Q, 10, exact=Xk)
    truth = np.argsort(-(Q @ Xk.T), axis=1)[:, :10]
    assert recall(exact_ids, truth) >= 0.9
    np.testing.assert_allclose(exact_scores, np.take_along_axis(Q @ Xk.T, exact_ids, 1), rtol=1e-5)
    more = cut.extended(X[:5] * -1.0)
    assert (more.nrows, more.ntotal) == (len(kept) + 5, len(X) + 5) and cut.ntotal == len(X)
    top, _ = more.search(-X[2:3], 1, exact=np.vstack([Xk, -X[:5]]))
    assert top[0, 0] == len(kept) + 2
    more.save(tmp_path / "m.faiss")
    back = AnnIndex.load(tmp_path / "m.faiss")
    np.testing.assert_array_equal(back.row_of_id, more.row_of_id)
    for a, b in zip(more.search(Q, 10), back.search(Q, 10)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InvalidInputError, match=r"keep must be a bool array of shape \(2666,\)"):
        cut.without(np.ones(len(X), bool))
    with pytest.raises(InvalidInputError, match="every row of the ANN index was removed"):
        cut.without(np.zeros(len(kept), bool)).search(Q, 3)


def test_a_row_map_that_does_not_fit_is_an_index_file_error(tmp_path, data):
    import json
    import struct

    X, _ = data
    ann = AnnIndex.build(X[:600], "hnsw").without(np.arange(600) % 2 == 0)
    path = tmp_path / "m.faiss"
    ann.save(path)
    raw = path.read_bytes()
    magic = b"HSANN1\n"
    (size,) = struct.unpack("<Q", raw[len(magic) : len(magic) + 8])
    start = len(magic) + 8 + size
    row_map = np.frombuffer(raw[start : start + 600 * 8], "<i8").copy()
    row_map[[0, 2]] = row_map[[2, 0]]  # live rows out of order
    path.write_bytes(raw[:start] + row_map.tobytes() + raw[start + 600 * 8 :])
    with pytest.raises(IndexFileError, match="row map does not fit"):
        AnnIndex.load(path)
    header = json.loads(raw[len(magic) + 8 : start])
    assert header["row_map_bytes"] == 600 * 8
    path.write_bytes(raw[:start + 100])
    with pytest.raises(IndexFileError):
        AnnIndex.load(path)
