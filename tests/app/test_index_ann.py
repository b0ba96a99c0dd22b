"""Index with an approximate backend (IndexConfig(ann=...)): shortlist, re-rankers, files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from heatsearch.app import index as index_module
from heatsearch.app.index import ANN_FILE, Index, IndexConfig
from heatsearch.errors import InvalidInputError
from helpers import small_index

pytest.importorskip("faiss", reason="the ANN backend needs faiss-cpu (pip install 'heatsearch[ann]')")

from heatsearch.ann import AnnIndex, AnnParams  # noqa: E402


def with_ann(ix: Index, ann, params=None) -> Index:
    out = dataclasses.replace(ix, config=dataclasses.replace(ix.config, ann=ann, ann_params=params))
    out._ann = None
    return out


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """An exact index of 1500 descriptors in 30 clusters (photo collections cluster; IVF's
    cells rely on it), L2-normalised pooled descriptors without power or whitening."""
    ix = small_index(tmp_path_factory.mktemp("col"), n=1500, channels=32, seed=3)
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((30, 32))
    X = centres[rng.integers(0, 30, 1500)] + 0.5 * rng.standard_normal((1500, 32))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    return dataclasses.replace(ix, config=dataclasses.replace(ix.config, power=None), pooled=X, descriptors=X.copy())


def rows_of(hits):
    return [[h.row for h in q] for q in hits]


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_same_top_hits_as_exact_search(exact, kind):
    ix = with_ann(exact, kind)
    X = np.asarray(exact.descriptors)
    queries = X[::50]
    got = ix.search_many(queries, k=10)
    want = exact.search_many(queries, k=10)
    assert [q[0].row for q in got] == list(range(0, 1500, 50))  # each query's own row first
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows_of(got), rows_of(want))])
    assert overlap >= 0.9
    # scores are the exact cosines of the stored descriptors, not the codes'
    for q, hits in zip(queries, got):
        np.testing.assert_allclose([h.score for h in hits], X[[h.row for h in hits]] @ q, rtol=1e-5)
    assert isinstance(ix._ann, AnnIndex) and ix._ann.kind == kind


@pytest.mark.parametrize("rerank", ["heat", "auto", "aqe+heat"])
def test_her_on_a_complete_shortlist_equals_her_on_the_index(exact, rerank):
    """HeR reads only the first pass's top 800 (20 for auto): when the shortlist holds exactly
    those rows (every one of the 1500 rows a candidate, refine * 100, re-scored exactly),
    re-ranking the shortlist gives the exact index's hits."""
    ix = with_ann(exact, "hnsw", AnnParams(ef_search=1500, refine=15))
    queries = np.asarray(exact.descriptors)[::100]
    assert rows_of(ix.search_many(queries, k=20, rerank=rerank)) == rows_of(
        exact.search_many(queries, k=20, rerank=rerank)
    )


@pytest.mark.parametrize("rerank,depth", [(None, 100), ("auto", 100), ("heat", 800), ("aqe", 100), ("diffusion", 1000)])
def test_rerankers_run_on_the_shortlist_rows(exact, monkeypatch, rerank, depth):
    seen = []
    real = index_module.rank

    def spy(X, Q, **kw):
        seen.append((np.shape(X), kw.get("rerank")))
        return real(X, Q, **kw)

    monkeypatch.setattr(index_module, "rank", spy)
    ix = with_ann(exact, "hnsw")
    X = np.asarray(exact.descriptors)
    hits = ix.search_many(X[:3], k=5, rerank=rerank)
    assert all(len(h) == 5 for h in hits)
    if rerank is None:
        assert seen == []  # the re-scored shortlist is the ranking
    else:
        assert seen == [((depth, X.shape[1]), rerank)] * 3
    assert ix._graph is None  # never a kNN graph of the whole index


def test_auto_is_exact_below_the_crossover(exact, monkeypatch):
    ix = with_ann(exact, "auto")
    assert ix.ann_kind() is None
    ix.search(np.asarray(exact.descriptors)[0], k=3)
    assert ix._ann is None
    monkeypatch.setattr(index_module, "AUTO_MIN_ROWS", 1000)
    assert ix.ann_kind() == "hnsw"
    ix.search(np.asarray(exact.descriptors)[0], k=3)
    assert ix._ann is not None and ix._ann.ntotal == len(ix)
    monkeypatch.setattr(index_module, "ann_available", lambda: False)
    assert ix.ann_kind() is None  # "auto" without FAISS: exact search, no error


def test_saved_beside_the_descriptors_and_loaded(exact, tmp_path, monkeypatch):
    ix = with_ann(exact, "hnsw")
    ix.save(tmp_path / "idx")
    versions = [p for p in (tmp_path / "idx").iterdir() if p.is_dir()]
    assert len(versions) == 1 and (versions[0] / ANN_FILE).is_file()

    def no_build(*a, **k):
        raise AssertionError("the saved ANN should be loaded, not rebuilt")

    monkeypatch.setattr(AnnIndex, "build", no_build)
    back = Index.load(tmp_path / "idx", root=exact.root)
    assert back.config.ann == "hnsw" and back._ann is not None and back._ann.ntotal == len(exact)
    q = np.asarray(exact.descriptors)[7]
    assert [h.row for h in back.search(q, k=5)] == [h.row for h in ix.search(q, k=5)]


def test_a_saved_ann_of_other_rows_is_not_used(exact, tmp_path):
    ix = with_ann(exact, "hnsw")
    ix.save(tmp_path / "idx")
    version = next(p for p in (tmp_path / "idx").iterdir() if p.is_dir())
    X = np.asarray(exact.descriptors)
    AnnIndex.build(X[:1000], "hnsw").save(version / ANN_FILE)  # stale: 1000 rows
    back = Index.load(tmp_path / "idx", root=exact.root)
    assert back._ann is None
    assert back.search(X[1200], k=1)[0].row == 1200  # rebuilt over every row
    assert back._ann.ntotal == len(exact)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_remove_keeps_the_ann_and_never_returns_a_removed_row(exact, kind, tmp_path):
    """A removal marks ids instead of rebuilding: the same FAISS index, removed rows never
    come back (nor their neighbours' numbers shift wrongly), appended rows after a removal are
    found, and all of it survives a save and a load."""
    ix = with_ann(exact, kind)
    X = np.asarray(exact.descriptors)
    ix.search(X[0], k=1)
    faiss_index = ix._ann._index
    removed = set(ix.paths[:10]) | set(ix.paths[500:520])
    ix.remove(sorted(removed))
    assert ix._ann is not None and ix._ann._index is faiss_index and ix._ann.nrows == len(ix) == 1470
    for q in (X[3], X[505], X[20], X[900]):
        hits = ix.search(q, k=20)
        assert not {h.path for h in hits} & removed
        assert all(ix.paths[h.row] == h.path for h in hits)
        np.testing.assert_allclose([h.score for h in hits], X[[exact.paths.index(h.path) for h in hits]] @ q, rtol=1e-5)
    assert ix.search(X[20], k=1)[0].path == exact.paths[20]
    assert ix.search(X[900], k=1)[0].path == exact.paths[900]
    extra = np.asarray(-X[:2], np.float32)
    ix._append_rows(extra, extra)
    ix.paths.extend(str(tmp_path / f"new{i}.jpg") for i in range(2))
    assert ix.search(extra[1], k=1)[0].row == 1471 and ix._ann.nrows == 1472
    ix.save(tmp_path / "ix")
    back = Index.load(tmp_path / "ix")
    assert back._ann is not None and back._ann.nrows == 1472 and back._ann.ntotal == 1502
    assert back.search(X[900], k=1)[0].path == exact.paths[900]
    assert back.search(extra[0], k=1)[0].row == 1470


def test_remove_of_most_rows_rebuilds_the_ann(exact):
    ix = with_ann(exact, "hnsw")
    X = np.asarray(exact.descriptors)
    ix.search(X[0], k=1)
    ix.remove(ix.paths[:800])  # more than ANN_REBUILD_DEAD of its ids
    assert ix._ann is None
    hit = ix.search(X[900], k=1)[0]
    assert hit.row == 100 and hit.path == exact.paths[900] and ix._ann.ntotal == 700


def test_config_round_trip_and_old_configs():
    c = IndexConfig(ann="ivfpq", ann_params={"nlist": 64, "nprobe": 8})
    assert isinstance(c.ann_params, AnnParams) and c.ann_params.nlist == 64
    assert IndexConfig.from_dict(c.to_dict()) == c
    old = IndexConfig().to_dict()
    del old["ann"], old["ann_params"]
    assert IndexConfig.from_dict(old).ann is None
    with pytest.raises(InvalidInputError, match="ann must be one of"):
        IndexConfig(ann="flat")
    with pytest.raises(InvalidInputError, match="unknown ANN parameters"):
        IndexConfig(ann="hnsw", ann_params={"ef": 3})


def test_whole_index_rankings_stay_exact(exact):
    ix = with_ann(exact, "hnsw")
    hits = ix.search(np.asarray(exact.descriptors)[0], k=None)
    assert len(hits) == len(exact) and ix._ann is None


def test_a_copy_extends_its_own_ann_and_leaves_the_original_searching(exact, tmp_path):
    """The server changes a copy (Index.copy) while searches go on with the original: rows
    added to the copy extend a CLONE of the shared approximate index, never the one the
    original searches (FAISS does not let one add while others search)."""
    ix = with_ann(exact, "hnsw")
    X = np.asarray(exact.descriptors)
    before = rows_of(ix.search_many(X[:5], k=5))
    shared = ix._ann
    changed = ix.copy()
    extra = np.asarray(X[:3] * -1.0, np.float32)  # far from every stored row but one another
    changed._append_rows(extra, extra)
    changed.paths.extend(str(tmp_path / f"new{i}.jpg") for i in range(3))
    hits = changed.search(extra[0], k=3)
    assert [h.row for h in hits][0] == len(X)  # the new row finds itself
    assert changed._ann is not shared and changed._ann.ntotal == len(X) + 3
    assert shared.ntotal == len(X) and ix._ann is shared
    assert rows_of(ix.search_many(X[:5], k=5)) == before


def test_an_index_of_several_shards_builds_its_ann_from_the_store(exact, tmp_path):
    """Saved twice with rows added between: the ANN is built from the rows of the two shards
    (gathered block by block) and finds each query's own row first."""
    ix = with_ann(exact, "hnsw")
    X = np.asarray(exact.descriptors)
    first = Index.from_descriptors(X[:1000], config=ix.config)
    first.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix")
    loaded.add_descriptors(X[1000:])
    loaded.save(tmp_path / "ix")
    again = Index.load(tmp_path / "ix")
    assert len(again._store.segments) == 2
    again._ann = None
    got = again.search_many(X[::100], k=5)
    assert [q[0].row for q in got] == list(range(0, 1500, 100))


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_the_ann_built_from_the_store_is_the_one_built_from_the_array(exact, tmp_path, kind):
    """Index builds its ANN through AnnIndex.build with a reader of its store (a training sample
    and blocks gathered from the shards, slices included): the same rule, so the same index as
    one built from the rows in one array (same sample, same FAISS state, same answers)."""
    X = np.asarray(exact.descriptors)
    saved = Index.from_descriptors(X, config=with_ann(exact, kind).config)
    saved.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix")
    loaded._ann = None
    reader = index_module._RowReader(loaded, np.float32)
    np.testing.assert_array_equal(reader[10:20], X[10:20])
    np.testing.assert_array_equal(reader[np.array([3, 1499])], X[[3, 1499]])
    from_store = loaded._get_ann()
    from_array = AnnIndex.build(X, kind)
    Q = X[::37]
    for a, b in zip(from_store.search(Q, 20), from_array.search(Q, 20)):
        np.testing.assert_array_equal(a, b)
