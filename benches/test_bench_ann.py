"""Approximate search against exact search, side by side: heatsearch's exact Rust search
(:func:`heatsearch.search`) and the FAISS backends of :mod:`heatsearch.ann` (ivfpq, hnsw; each
with the exact re-scoring of its shortlist from the float32 rows, as :class:`heatsearch.Index`
searches), at n = 100k x 512: the Holidays rows among Gaussian distractors fitted to them
(``tools/scale.py``), the 500 Holidays queries, k = 100, heatsearch's thread count.
Each ANN's recall@100 against exact search and build time go into ``extra_info``.

    python -m pytest benches/test_bench_ann.py --benchmark-only

The full table (1M, disk, RSS, mAP) is ``tools/scale.py``'s (README, "Scale").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

import heatsearch as hs

pytest.importorskip("faiss", reason="the ANN backends need faiss-cpu (pip install 'heatsearch[ann]')")
pytest.importorskip("scipy", reason="the Holidays descriptors are a MATLAB file")

from heatsearch.ann import AnnIndex  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import scale  # noqa: E402

N, K = 100_000, 100
METHODS = ("exact", "ivfpq", "hnsw")


@pytest.fixture(scope="module")
def data():
    if not (scale.shared_data() / "holidays" / "vecs_ho.mat").exists():
        pytest.skip(f"Holidays descriptors not found under {scale.shared_data()}")
    X = scale.database(N)
    _, qidx, _ = scale.holidays()
    return X, np.ascontiguousarray(X[qidx]), hs.search(X, X[qidx], K)[0]


@pytest.fixture(scope="module")
def indexes(data):
    X = data[0]
    built = {}
    for kind in ("ivfpq", "hnsw"):
        t = time.perf_counter()
        built[kind] = (AnnIndex.build(X, kind), time.perf_counter() - t)
    return built


def run(method, X, Q, indexes):
    if method == "exact":
        return hs.search(X, Q, K)
    return indexes[method][0].search(Q, K, exact=X)


@pytest.mark.parametrize("method", METHODS)
def test_batch(benchmark, data, indexes, method):
    X, Q, truth = data
    benchmark.group = f"500 queries, k={K}, n={N} d=512 (threads {hs.get_num_threads()})"
    ranks, _ = benchmark.pedantic(run, args=(method, X, Q, indexes), rounds=5, warmup_rounds=1)
    recall = float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(ranks, truth)]))
    benchmark.extra_info.update(n=N, nq=len(Q), k=K, recall100=recall,
                                build_s=0.0 if method == "exact" else indexes[method][1])
    assert ranks.shape == (len(Q), K)
    assert recall >= (1.0 if method == "exact" else 0.9)


@pytest.mark.parametrize("method", METHODS)
def test_single_query(benchmark, data, indexes, method):
    X, Q, _ = data
    benchmark.group = f"one query, k={K}, n={N} d=512 (threads {hs.get_num_threads()})"
    ranks, _ = benchmark.pedantic(run, args=(method, X, Q[:1], indexes), rounds=50, warmup_rounds=2)
    assert ranks.shape == (1, K)
