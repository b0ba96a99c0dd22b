"""The descriptor store (heatsearch.app.store): exact search streamed from the shards of a saved
index against the same search over one array in memory, and the cost of adding rows to a saved
index in format version 3 (only the new rows are written) against version 2's save (the whole
descriptors array rewritten).

Size: ``HEATSEARCH_BENCH_STORE_ROWS`` rows (default 1,000,000) of dimension 512, random unit
rows (the search cost does not depend on the values). Building it writes 2 GB to a temporary
folder and holds 2 GB in memory for the in-memory side. One round each:

    python -m pytest benches/test_bench_store.py --benchmark-only
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from heatsearch.app.index import Index
from heatsearch.search import search

ROWS = int(os.environ.get("HEATSEARCH_BENCH_STORE_ROWS", "1000000"))
DIM = 512
CHUNK = 100_000
ADDED = 1000


def _written() -> int:
    """Bytes this process has passed to write() so far (Linux /proc/self/io)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar"))


def _rows(seed: int, n: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store") / "idx"
    index = Index()
    for start in range(0, ROWS, CHUNK):
        index.add_descriptors(_rows(start, min(CHUNK, ROWS - start)))
        index.save(folder)
    return folder


@pytest.fixture(scope="module")
def queries():
    return _rows(10**9, 100)


@pytest.mark.benchmark(group="store-search")
def test_search_streamed_from_the_shards(benchmark, saved, queries):
    index = Index.load(saved)
    benchmark.extra_info["loadavg"] = open("/proc/loadavg").read().strip()
    hits = benchmark.pedantic(index.search_many, args=(queries,), kwargs={"k": 10}, rounds=1, iterations=1,
                              warmup_rounds=1)
    assert len(hits) == 100


@pytest.mark.benchmark(group="store-search")
def test_search_of_one_array_in_memory(benchmark, saved, queries):
    X = np.array(Index.load(saved).descriptors)  # the rows read into memory (one array)
    benchmark.extra_info["loadavg"] = open("/proc/loadavg").read().strip()
    ranks, _ = benchmark.pedantic(search, args=(X, queries, 10), rounds=1, iterations=1, warmup_rounds=1)
    assert ranks.shape == (100, 10)


@pytest.mark.benchmark(group="store-add")
def test_add_and_save_version3(benchmark, saved, tmp_path):
    index = Index.load(saved)
    new = _rows(10**9 + 1, ADDED)
    state = {}

    def add_and_save():
        index.add_descriptors(new, [f"new{i}" for i in range(ADDED)])
        before = _written()
        index.save(saved)
        state["bytes"] = _written() - before

    benchmark.extra_info["loadavg"] = open("/proc/loadavg").read().strip()
    benchmark.pedantic(add_and_save, rounds=1, iterations=1)
    benchmark.extra_info["bytes_written"] = state["bytes"]
    assert state["bytes"] < 2 * ADDED * DIM * 4 + (1 << 20)


@pytest.mark.benchmark(group="store-add")
def test_add_and_save_version2_rewrite(benchmark, saved, tmp_path):
    """Version 2's save of the same change: the whole (n + m, d) descriptors array written and
    fsync-ed into a new version directory (its pooled.npy, which an index of images also
    rewrote, is left out: this is a lower bound of what version 2 cost)."""
    X = np.array(Index.load(saved).descriptors[:ROWS])
    new = _rows(10**9 + 1, ADDED)
    state = {}

    def rewrite():
        before = _written()
        joined = np.concatenate([X, new])  # what Index.add did: a second copy in RAM
        with open(tmp_path / "descriptors.npy", "wb") as f:
            np.save(f, joined)
            f.flush()
            os.fsync(f.fileno())
        state["bytes"] = _written() - before

    benchmark.extra_info["loadavg"] = open("/proc/loadavg").read().strip()
    benchmark.pedantic(rewrite, rounds=1, iterations=1)
    benchmark.extra_info["bytes_written"] = state["bytes"]
    assert state["bytes"] >= (ROWS + ADDED) * DIM * 4
