"""The index as a service uses it: every argument of search checked before any image is read;
queries as encoded bytes and file objects; search_many (one search call); warmup; one
extractor when threads make their first query together. (Fake extractors: no torch.)"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

PIL = pytest.importorskip("PIL.Image")

import heatsearch.app.index as index_module  # noqa: E402
from heatsearch.app.index import Index, IndexConfig  # noqa: E402
from heatsearch.errors import ImageReadError, InvalidDTypeError, InvalidInputError  # noqa: E402

from helpers import PixelMaps, write_images  # noqa: E402

NAMES = [f"img{i}.png" for i in range(8)]


@pytest.fixture
def index(tmp_path):
    write_images(tmp_path, NAMES)
    built = Index.build(tmp_path, IndexConfig(scales=(1.0,), whiten="none"), extractor=PixelMaps())
    built.extractor = PixelMaps()  # counts from zero
    return built


# ---------------------------------------------------------------------------------------------
# Arguments, checked before extraction.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rerank", [None, "heat", "diffusion"])
@pytest.mark.parametrize(
    "k, error, message",
    [
        (2.7, InvalidDTypeError, "k must be an int or None, got float"),
        ("2", InvalidDTypeError, "k must be an int or None, got str"),
        (True, InvalidDTypeError, "k must be an int or None, got bool"),
        (-1, InvalidInputError, "k must be >= 1, got -1"),
        (0, InvalidInputError, "k must be >= 1, got 0"),
    ],
)
def test_k_is_checked_before_any_image_is_read(index, rerank, k, error, message):
    with pytest.raises(error, match=message):
        index.search(index.paths[0], k=k, rerank=rerank)
    with pytest.raises(error, match=message):
        index.search_many([index.paths[0]], k=k, rerank=rerank)
    assert index.extractor.calls == 0


@pytest.mark.parametrize("rerank", [None, "heat", "diffusion", "aqe"])
def test_k_counts(index, rerank):
    assert len(index.search(index.descriptors[0], k=3, rerank=rerank)) == 3
    assert len(index.search(index.descriptors[0], k=None, rerank=rerank)) == len(index)
    assert len(index.search(index.descriptors[0], k=100, rerank=rerank)) == len(index)
    assert len(index.search(index.descriptors[0], k=np.int64(2), rerank=rerank)) == 2


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rerank": "magic"}, InvalidInputError, "rerank must be one of"),
        ({"bbox": [1, 2, 3]}, InvalidInputError, "bbox must be four finite numbers"),
        ({"bbox": [5, 5, 1, 1]}, InvalidInputError, "x1 < x2"),
        ({"bbox": "0,0,4,4"}, InvalidInputError, "bbox must be four numbers"),
    ],
)
def test_other_arguments_are_checked_before_any_image_is_read(index, kwargs, error, message):
    with pytest.raises(error, match=message):
        index.search(index.paths[0], **kwargs)
    assert index.extractor.calls == 0


@pytest.mark.parametrize("query", [3, None, ["a.png"], {"path": "a.png"}, 2.5])
def test_a_query_of_another_type_is_refused_before_extraction(index, query):
    with pytest.raises(InvalidDTypeError, match="query must be an image: a path, encoded image bytes"):
        index.search(query)
    assert index.extractor.calls == 0


def test_descriptor_queries(index):
    d = index.descriptors.shape[1]
    with pytest.raises(InvalidInputError, match=f"query as a descriptor must be a vector of length {d}.*got length 3"):
        index.search(np.ones(3, np.float32))
    with pytest.raises(InvalidDTypeError, match="query must be a float32 or float64 array, got dtype int64"):
        index.search(np.ones(d, np.int64))
    with pytest.raises(InvalidInputError, match="bbox crops an image query, but query is a descriptor"):
        index.search(index.descriptors[0], bbox=[0, 0, 2, 2])
    with pytest.raises(InvalidInputError, match="Q must be finite"):
        index.search(np.full(d, np.nan, np.float32))
    assert [h.row for h in index.search(np.asarray(index.descriptors[2], np.float64), k=1)] == [2]


# ---------------------------------------------------------------------------------------------
# Queries as bytes and file objects.
# ---------------------------------------------------------------------------------------------
def test_queries_as_bytes_and_file_objects(index):
    path = index.paths[3]
    with open(path, "rb") as f:
        data = f.read()
    expected = index.describe(path)
    with open(path, "rb") as f:
        forms = [data, bytearray(data), memoryview(data), io.BytesIO(data), f, PIL.open(path),
                 np.asarray(PIL.open(path).convert("RGB"))]
        for form in forms:
            np.testing.assert_allclose(index.describe(form), expected, rtol=1e-6, atol=1e-7)
    for form in (data, io.BytesIO(data)):
        hits = index.search(form, k=2)
        assert hits[0].path == path and hits[0].score == pytest.approx(1, abs=1e-5)
    with pytest.raises(ImageReadError, match="from 7 bytes"):
        index.search(b"garbage")
    with open(path, "r", encoding="latin-1") as text:
        with pytest.raises(InvalidDTypeError, match="binary mode"):
            index.search(text)


# ---------------------------------------------------------------------------------------------
# search_many: one search call, the same hits as one search per query.
# ---------------------------------------------------------------------------------------------
class BatchingMaps(PixelMaps):
    """PixelMaps with the real extractor's streaming method (counted), and its contract: maps
    may come out of order (here in pairs, reversed), and every map of the items before one
    that fails is yielded before the error."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def feature_maps(self, items, bboxes=None, progress=False):
        self.batches += 1
        boxes = list(bboxes) if bboxes is not None else [None] * len(items)
        pending = []
        for i, (item, box) in enumerate(zip(items, boxes)):
            try:
                pending.append((i, self.feature_map(item, bbox=box)))
            except Exception:
                yield from reversed(pending)
                raise
            if len(pending) == 2:
                yield from reversed(pending)
                pending = []
        yield from reversed(pending)


@pytest.mark.parametrize("rerank", [None, "heat", "aqe+heat", "diffusion"])
def test_search_many_matches_search_in_one_search_call(index, monkeypatch, rerank):
    path = index.paths[5]
    with open(path, "rb") as f:
        data = f.read()
    queries = [index.paths[1], data, np.asarray(PIL.open(index.paths[2]).convert("RGB")), index.descriptors[4],
               io.BytesIO(data), index.paths[6]]
    bboxes = [None, None, None, None, None, [0, 0, 15, 12]]
    single = [index.search(q if not isinstance(q, io.BytesIO) else io.BytesIO(data), k=4, rerank=rerank, bbox=b)
              for q, b in zip(queries, bboxes)]
    calls = []
    real_rank = index_module.rank

    def counting_rank(X, Q, **kwargs):
        calls.append(Q.shape)
        return real_rank(X, Q, **kwargs)

    monkeypatch.setattr(index_module, "rank", counting_rank)
    index.extractor = BatchingMaps()
    many = index.search_many(queries, k=4, rerank=rerank, bboxes=bboxes)
    assert calls == [(6, index.descriptors.shape[1])]
    assert index.extractor.batches == 1 and index.extractor.calls == 5  # the descriptor is not extracted
    assert len(many) == 6
    for got, want in zip(many, single):
        assert [h.path for h in got] == [h.path for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-5, atol=1e-6)
    # An (nq, d) array of descriptors.
    rows = index.search_many(np.asarray(index.descriptors[:3]), k=1)
    assert [r[0].row for r in rows] == [0, 1, 2]


def test_search_many_errors(index, tmp_path):
    with pytest.raises(InvalidDTypeError, match="queries must be a list"):
        index.search_many(index.paths[0])
    with pytest.raises(InvalidInputError, match="at least one query"):
        index.search_many([])
    with pytest.raises(InvalidInputError, match="one box \\(or None\\) per query \\(2\\), got 1 entries"):
        index.search_many(index.paths[:2], bboxes=[None])
    with pytest.raises(InvalidDTypeError, match="queries\\[1\\] must be an image"):
        index.search_many([index.paths[0], 5])
    with pytest.raises(InvalidInputError, match="bboxes\\[0\\] must be four"):
        index.search_many([index.paths[0]], bboxes=[[1, 2]])
    assert index.extractor.calls == 0
    (tmp_path / "broken.png").write_bytes(b"broken")
    with pytest.raises(ImageReadError, match="queries\\[1\\]: cannot read image .*broken.png"):
        index.search_many([index.paths[0], str(tmp_path / "broken.png"), index.paths[1]])
    index.extractor = BatchingMaps()
    with pytest.raises(ImageReadError, match="queries\\[1\\]: cannot read image"):
        index.search_many([index.paths[0], b"broken", index.paths[1]])


# ---------------------------------------------------------------------------------------------
# warmup, and one extractor for threads that start together.
# ---------------------------------------------------------------------------------------------
class SlowExtractor(PixelMaps):
    """Stands in for heatsearch.vision.extract.Extractor: slow to build (weights), counted."""

    built = 0
    lock = threading.Lock()

    def __init__(self, **kwargs):
        time.sleep(0.3)
        with SlowExtractor.lock:
            SlowExtractor.built += 1
        super().__init__()


@pytest.fixture
def slow_extractor(monkeypatch, index):
    import heatsearch.vision.extract as extract

    SlowExtractor.built = 0
    monkeypatch.setattr(extract, "Extractor", SlowExtractor)
    index.extractor = None
    return index


def test_warmup_builds_the_extractor_and_runs_it_once(slow_extractor):
    index = slow_extractor
    index.warmup()
    assert SlowExtractor.built == 1 and isinstance(index.extractor, SlowExtractor)
    assert index.extractor.calls == 1
    index.search(index.paths[0], k=2)
    assert SlowExtractor.built == 1 and index.extractor.calls == 2


def test_threads_making_their_first_query_together_build_one_extractor(slow_extractor):
    index = slow_extractor
    start = threading.Barrier(3, timeout=60)
    results, errors = [], []

    def first_query(path):
        try:
            start.wait()
            results.append(index.search(path, k=1)[0].path)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=first_query, args=(p,)) for p in index.paths[:3]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and sorted(results) == sorted(index.paths[:3])
    assert SlowExtractor.built == 1


def test_concurrent_diffusion_queries_build_one_graph(index, monkeypatch):
    import heatsearch.knn as knn

    built = []
    real = knn.knn_graph

    def slow_graph(X, *args, **kwargs):
        time.sleep(0.2)
        built.append(1)
        return real(X, *args, **kwargs)

    monkeypatch.setattr(knn, "knn_graph", slow_graph)
    start = threading.Barrier(2, timeout=60)
    results = []

    def query(row):
        start.wait()
        results.append(index.search(index.descriptors[row], k=1, rerank="diffusion")[0].row)

    threads = [threading.Thread(target=query, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and len(built) == 1
