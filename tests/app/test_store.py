"""The sharded descriptor store (heatsearch.app.store, format version 3 of heatsearch.app.storage):
saves write only new rows, removes are tombstones compacted later, search streams the shards
(same hits as one search over the rows), float16 storage, indexes of descriptors computed
elsewhere (Index.from_descriptors), older formats migrate, and an index larger than the
memory a process may use is built and searched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from heatsearch.app import storage
from heatsearch.app import store as store_module
from heatsearch.app.index import Index, IndexConfig
from heatsearch.errors import IndexFileError, InvalidDTypeError, InvalidInputError
from heatsearch.pipeline import rank

from helpers import small_index, write_version2

ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", HEATSEARCH_NUM_THREADS="2")


def unit(rng, n, d):
    """Unit rows, float32 (an index stores them as they are)."""
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def version(folder):
    folder = Path(folder)
    return folder / json.loads((folder / "index.json").read_text())["data"]


def meta(folder):
    return json.loads((version(folder) / "meta.json").read_text())


def reference(X, Q, k):
    """Exact top-k by NumPy: best score first, ties to the lower row (the kernel's order)."""
    S = Q.astype(np.float64) @ X.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(X.shape[0]), S.shape), -S), axis=1)[:, :k]
    return order, np.take_along_axis(S, order, 1)


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of 1024 rows (the smallest): every search of more rows streams several."""
    monkeypatch.setattr(store_module, "WINDOW_BYTES", 1)


# ---------------------------------------------------------------------------------------------
# Saves write only what is new.
# ---------------------------------------------------------------------------------------------
def test_an_add_writes_only_the_new_rows(tmp_path):
    rng = np.random.default_rng(0)
    X = unit(rng, 3000, 32)
    index = Index.from_descriptors(X)
    index.save(tmp_path / "idx")
    first = {p.name: p.stat().st_ino for p in version(tmp_path / "idx").iterdir()}
    index.add_descriptors(unit(rng, 50, 32))
    index.save(tmp_path / "idx")
    folder = version(tmp_path / "idx")
    inodes = {p.name: p.stat().st_ino for p in folder.iterdir()}
    shards = meta(tmp_path / "idx")["shards"]
    assert [s["rows"] for s in shards] == [3000, 50]
    # The first shard's files are the same files (hard links), not copies.
    for key in ("descriptors", "paths"):
        assert inodes[shards[0][key]] == first[shards[0][key]]
    new_bytes = sum((folder / n).stat().st_size for n in inodes if n not in first.keys() or inodes[n] != first.get(n))
    assert new_bytes < 50 * 32 * 4 + 4096, new_bytes  # the new rows, the metadata, the writer's note
    loaded = Index.load(tmp_path / "idx")
    assert len(loaded) == 3050 and loaded.paths[-1] == "3049"
    np.testing.assert_array_equal(loaded.descriptors, index.descriptors)


def test_after_a_save_the_rows_are_read_from_the_shards(tmp_path):
    index = Index.from_descriptors(unit(np.random.default_rng(1), 100, 8))
    assert not index._store.segments[0].desc.on_disk
    index.save(tmp_path / "idx")
    assert all(s.desc.on_disk for s in index._store.segments)  # not held twice


def test_small_shards_are_merged(tmp_path):
    rng = np.random.default_rng(2)
    index = Index.from_descriptors(unit(rng, 5000, 8))
    index.save(tmp_path / "idx")
    for _ in range(storage.MERGE_SMALL_SHARDS + 3):
        index.add_descriptors(unit(rng, 3, 8), [f"x{len(index) + i}" for i in range(3)])
        index.save(tmp_path / "idx")
    rows = [s["rows"] for s in meta(tmp_path / "idx")["shards"]]
    assert rows[0] == 5000 and len(rows) <= storage.MERGE_SMALL_SHARDS + 1 and sum(rows) == len(index)
    np.testing.assert_array_equal(Index.load(tmp_path / "idx").descriptors, index.descriptors)


# ---------------------------------------------------------------------------------------------
# Removes are tombstones; compaction rewrites.
# ---------------------------------------------------------------------------------------------
def test_remove_is_a_tombstone_then_compacted(tmp_path, small_windows):
    rng = np.random.default_rng(3)
    X = unit(rng, 3000, 16)
    index = Index.from_descriptors(X)
    index.save(tmp_path / "idx")
    shard = meta(tmp_path / "idx")["shards"][0]["descriptors"]
    inode = (version(tmp_path / "idx") / shard).stat().st_ino
    gone = [str(i) for i in range(0, 3000, 7)]
    index.remove(gone)
    keep = np.array([i for i in range(3000) if i % 7])
    index.save(tmp_path / "idx")
    m = meta(tmp_path / "idx")
    assert m["shards"][0]["removed"] == list(range(0, 3000, 7)) and m["count"] == len(keep)
    assert (version(tmp_path / "idx") / shard).stat().st_ino == inode  # not rewritten
    loaded = Index.load(tmp_path / "idx")
    Q = unit(rng, 5, 16)
    for ix in (index, loaded):
        hits = ix.search_many(Q, k=10)
        ranks, scores = reference(X[keep], Q, 10)
        assert [[h.row for h in hh] for hh in hits] == ranks.tolist()
        assert [[h.path for h in hh] for hh in hits] == [[str(keep[r]) for r in rr] for rr in ranks]
        np.testing.assert_allclose([[h.score for h in hh] for hh in hits], scores, rtol=1e-5, atol=1e-6)
    # Past the dead fraction the shard is rewritten with its live rows only.
    loaded.remove([str(i) for i in keep[: len(keep) * 2 // 3]])
    loaded.save(tmp_path / "idx")
    m = meta(tmp_path / "idx")
    assert m["shards"][0]["removed"] == [] and m["shards"][0]["rows"] == len(loaded)
    np.testing.assert_array_equal(Index.load(tmp_path / "idx").descriptors, X[keep[len(keep) * 2 // 3 :]])


def test_compact_rewrites_every_shard_with_removed_rows(tmp_path):
    index = Index.from_descriptors(unit(np.random.default_rng(4), 40, 8))
    index.save(tmp_path / "idx")
    index.remove(["3"])
    index.save(tmp_path / "idx")
    assert meta(tmp_path / "idx")["shards"][0]["removed"] == [3]
    index.compact()
    index.save(tmp_path / "idx")
    assert meta(tmp_path / "idx")["shards"][0] == dict(meta(tmp_path / "idx")["shards"][0], rows=39, removed=[])
    assert "3" not in Index.load(tmp_path / "idx").paths


def test_removing_everything_keeps_the_dimension(tmp_path):
    index = Index.from_descriptors(unit(np.random.default_rng(5), 4, 8))
    index.save(tmp_path / "idx")
    index.remove(["0", "1", "2", "3"])
    index.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    assert len(loaded) == 0 and loaded.dim == 8
    with pytest.raises(InvalidInputError, match="2 columns|8 columns"):
        loaded.add_descriptors(np.ones((1, 2), np.float32))


def test_an_old_index_object_still_searches_after_its_shards_were_removed(tmp_path):
    """A compaction by another Index removes the shard files an older Index reads: the open
    files keep its rows readable (the server swaps indexes while searches run)."""
    X = unit(np.random.default_rng(6), 500, 8)
    Index.from_descriptors(X).save(tmp_path / "idx")
    old = Index.load(tmp_path / "idx")
    before = old.search(X[7], k=3)
    other = Index.load(tmp_path / "idx")
    other.remove([str(i) for i in range(400)])
    other.save(tmp_path / "idx")  # rewrites the shard; the old version directory is removed
    assert not os.path.exists(old._store.segments[0].home)  # its version directory is gone
    assert old.search(X[7], k=3) == before
    # ... and saving it again writes its rows from the open files.
    old.add_descriptors(unit(np.random.default_rng(7), 2, 8), ["new-a", "new-b"])
    old.save(tmp_path / "idx")
    np.testing.assert_array_equal(Index.load(tmp_path / "idx").descriptors[:500], X)


# ---------------------------------------------------------------------------------------------
# Search streams the shards: the same hits as one search over the rows.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rerank", [None, "heat", "aqe", "alpha-qe", "aqe+heat", "auto", "diffusion"])
def test_streamed_search_equals_the_search_of_the_concatenation(tmp_path, small_windows, rerank):
    rng = np.random.default_rng(8)
    X = unit(rng, 2600, 16)
    X[1500] = X[20]  # ties: the lower row first
    index = Index.from_descriptors(X[:1200])
    index.save(tmp_path / "idx")
    index.add_descriptors(X[1200:2000])
    index.save(tmp_path / "idx")
    index.add_descriptors(X[2000:])  # a segment in memory, after two shards
    index.remove([str(i) for i in range(0, 2600, 11)])
    keep = np.array([i for i in range(2600) if i % 11])
    assert len(index._store.segments) == 3
    Q = np.concatenate([X[[20, 5, 2599]], unit(rng, 3, 16)])
    expected_ranks, expected_scores = rank(X[keep], Q, k=30, rerank=rerank)
    hits = index.search_many(Q, k=30, rerank=rerank)
    assert [[h.row for h in hh] for hh in hits] == expected_ranks.tolist()
    got = [[h.score if rerank is None else h.rerank_score for h in hh] for hh in hits]
    np.testing.assert_allclose(got, expected_scores, rtol=1e-5, atol=1e-6)
    if rerank is None:
        ranks, scores = reference(X[keep], Q, 30)
        assert [[h.row for h in hh] for hh in hits] == ranks.tolist()


def test_search_of_every_row(small_windows):
    X = unit(np.random.default_rng(9), 2100, 8)
    index = Index.from_descriptors(X[:1000])
    index.add_descriptors(X[1000:])
    hits = index.search(X[3], k=None)
    assert [h.row for h in hits] == reference(X, X[3:4], 2100)[0][0].tolist()


# ---------------------------------------------------------------------------------------------
# float16 storage.
# ---------------------------------------------------------------------------------------------
def test_float16_storage_halves_the_rows_and_keeps_the_ranking(tmp_path, small_windows):
    rng = np.random.default_rng(10)
    X = unit(rng, 3000, 64)
    Q = X[:20] + 0.05 * unit(rng, 20, 64)
    full = Index.from_descriptors(X)
    half = Index.from_descriptors(X, config=IndexConfig(whiten="none", storage_dtype="float16"))
    full.save(tmp_path / "f32")
    half.save(tmp_path / "f16")
    sizes = {}
    for name in ("f32", "f16"):
        shard = meta(tmp_path / name)["shards"][0]["descriptors"]
        sizes[name] = (version(tmp_path / name) / shard).stat().st_size
        assert np.load(version(tmp_path / name) / shard, mmap_mode="r").dtype == np.dtype(name.replace("f", "float"))
    assert sizes["f16"] < 0.51 * sizes["f32"]
    loaded = Index.load(tmp_path / "f16")
    assert loaded.config.storage_dtype == "float16" and loaded.descriptors.dtype == np.float32
    a, b = full.search_many(Q, k=10), loaded.search_many(Q, k=10)
    assert [h[0].row for h in a] == [h[0].row for h in b] == list(range(20))
    np.testing.assert_allclose([[h.score for h in hh] for hh in b], [[h.score for h in hh] for hh in a], atol=2e-3)


def test_float16_index_of_images_round_trips(tmp_path):
    index = small_index(tmp_path, whitening_dim=8)
    half = Index(config=IndexConfig(whiten="none", storage_dtype="float16"), whitening=index.whitening,
                 paths=index.paths, descriptors=index.descriptors, pooled=index.pooled, mean=index.mean,
                 root=index.root)
    half.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    np.testing.assert_allclose(loaded.descriptors, index.descriptors, atol=1e-3)
    assert np.asarray(loaded.pooled).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Indexes of descriptors computed elsewhere.
# ---------------------------------------------------------------------------------------------
def test_from_descriptors_round_trip_keeps_names_verbatim(tmp_path):
    X = np.random.default_rng(11).standard_normal((5, 6))  # float64, not normalised
    names = ["s3://bucket/a.jpg", "db:17", "../x", "a//b", "é"]
    index = Index.from_descriptors(X, names)
    np.testing.assert_allclose(np.linalg.norm(index.descriptors, axis=1), 1, rtol=1e-6)
    index.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    assert loaded.paths == names and loaded.source == "descriptors" and loaded.root is None
    hit = loaded.search(X[1], k=1)[0]
    assert hit.path == "db:17" and hit.row == 1
    loaded.remove(["db:17"])
    assert loaded.paths == [n for n in names if n != "db:17"]


@pytest.mark.parametrize(
    "X, paths, error, message",
    [
        (np.ones(4), None, InvalidInputError, "X must be a 2-D array"),
        (np.ones((2, 4), np.int64), None, InvalidDTypeError, "float32 or float64"),
        (np.ones((0, 4)), None, InvalidInputError, "at least one row"),
        (np.array([[1.0, np.nan]]), None, InvalidInputError, "NaN"),
        (np.array([[1.0, 2.0], [0.0, 0.0]]), None, InvalidInputError, r"X\[1\] is a zero vector"),
        (np.ones((2, 4)), ["a"], InvalidInputError, "name each of the 2 rows, got 1"),
        (np.ones((2, 4)), ["a", "a"], InvalidInputError, "lists 'a' twice"),
        (np.ones((2, 4)), ["a", ""], InvalidInputError, r"paths\[1\] must be a non-empty string"),
        (np.ones((2, 4)), "ab", InvalidDTypeError, "must be a list of 2 strings"),
    ],
)
def test_from_descriptors_checks_its_input(X, paths, error, message):
    with pytest.raises(error, match=message):
        Index.from_descriptors(X, paths)


def test_an_index_of_descriptors_refuses_images_and_mixing(tmp_path):
    index = Index.from_descriptors(unit(np.random.default_rng(12), 3, 4))
    with pytest.raises(InvalidInputError, match="4 columns"):
        index.add_descriptors(np.ones((1, 5)))
    with pytest.raises(InvalidInputError, match="'0' is already in the index"):
        index.add_descriptors(np.ones((1, 4)), ["0"])
    image = np.zeros((8, 8, 3), np.uint8)
    for call in (lambda: index.search(image), lambda: index.add([str(tmp_path / "a.jpg")]),
                 lambda: index.refit_whitening()):
        with pytest.raises(InvalidInputError, match="descriptors computed elsewhere"):
            call()
    images = small_index(tmp_path)
    with pytest.raises(InvalidInputError, match="describes images itself"):
        images.add_descriptors(np.ones((1, 16)))


# ---------------------------------------------------------------------------------------------
# Older formats load, and the next save converts them.
# ---------------------------------------------------------------------------------------------
def test_a_version2_index_loads_and_is_converted_by_the_next_save(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    old = small_index(root, n=12, whitening_dim=8)
    write_version2(tmp_path / "idx", old)
    loaded = Index.load(tmp_path / "idx")
    assert loaded.paths == old.paths and loaded.config == old.config
    assert isinstance(loaded.descriptors, np.memmap)
    np.testing.assert_array_equal(loaded.descriptors, old.descriptors)
    q = old.descriptors[4]
    assert loaded.search(q, k=5) == old.search(q, k=5)
    loaded.remove([old.paths[0]])
    loaded.save(tmp_path / "idx")
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["version"] == 3
    assert sorted(os.listdir(tmp_path / "idx")) == sorted(["index.json", version(tmp_path / "idx").name])
    again = Index.load(tmp_path / "idx")
    assert again.paths == old.paths[1:]
    np.testing.assert_array_equal(again.pooled, old.pooled[1:])
    np.testing.assert_array_equal(again.descriptors, old.descriptors[1:])


# ---------------------------------------------------------------------------------------------
# Damaged shards never load; the message names the file.
# ---------------------------------------------------------------------------------------------
def _damage_cases():
    def shard_meta(**changes):
        def apply(folder):
            m = meta(folder)
            m["shards"][0].update(changes)
            (version(folder) / "meta.json").write_text(json.dumps(m))
            return "meta.json"
        return apply

    def file(key, content):
        def apply(folder):
            name = meta(folder)["shards"][0][key]
            path = version(folder) / name
            if content is None:
                path.unlink()
            elif callable(content):
                np.save(path, content(np.load(path)))
            else:
                path.write_bytes(content)
            return name
        return apply

    def with_nan(a):
        a = a.copy()
        a[1, 2] = np.nan
        return a

    return {
        "descriptors missing": (file("descriptors", None), "missing file"),
        "descriptors garbage": (file("descriptors", b"\x93NUMPY garbage"), "truncated or corrupt"),
        "descriptors truncated": (file("descriptors", lambda a: a[:-1]), r"shape \(rows, dim\) = \(12, 8\)"),
        "descriptors float64": (file("descriptors", lambda a: a.astype(np.float64)), "must be float32, got dtype float64"),
        "descriptors NaN": (file("descriptors", with_nan), "NaN at row 1, column 2"),
        "pooled NaN": (file("pooled", with_nan), "NaN at row 1, column 2"),
        "pooled missing": (file("pooled", None), "missing file"),
        "paths too few": (file("paths", b'["a"]'), "must be a list of 12 paths"),
        "paths garbage": (file("paths", b"[not json"), "corrupt JSON"),
        "removed out of range": (shard_meta(removed=[12]), r"\['removed'\] must list distinct rows"),
        "removed unsorted": (shard_meta(removed=[3, 1]), r"\['removed'\] must list distinct rows"),
        "count off": (shard_meta(removed=[1]), "the shards hold 11 rows"),
        "file outside": (shard_meta(descriptors="../x.desc.npy"), "must name a shard file"),
        "file twice": (lambda f: shard_meta(pooled=meta(f)["shards"][0]["descriptors"])(f), "must name a shard file"),
        "rows zero": (shard_meta(rows=0), "must be >= 1"),
    }


@pytest.mark.parametrize("case", sorted(_damage_cases()))
def test_a_damaged_shard_raises_naming_the_file(tmp_path, case):
    damage, message = _damage_cases()[case]
    (tmp_path / "photos").mkdir()
    small_index(tmp_path / "photos", whitening_dim=8).save(tmp_path / "idx")
    name = damage(tmp_path / "idx")
    with pytest.raises(IndexFileError, match=message) as e:
        Index.load(tmp_path / "idx")
    assert str(e.value).startswith(str(version(tmp_path / "idx") / name)), str(e.value)


# ---------------------------------------------------------------------------------------------
# Larger than the memory a process may use.
# ---------------------------------------------------------------------------------------------
_OUT_OF_CORE = r"""
import resource, sys
import numpy as np
from heatsearch.app.index import Index

target, rows, d, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def size():
    return {l.split(":")[0]: int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(("VmSize", "VmHWM"))}
# The limit: what the process uses now plus 256 MB of address space (the GEMM's scratch per
# thread alone reserves 64 MB), below the index's bytes.
limit = size()["VmSize"] + (256 << 20)
assert rows * d * 4 > limit, (rows * d * 4, limit)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    np.empty(rows * d, np.float32)  # the rows at once do not fit
    raise SystemExit("the limit does not hold")
except MemoryError:
    pass
planted = {}
index = Index()
for start in range(0, rows, chunk):  # built chunk by chunk, each saved: only new rows written
    rng = np.random.default_rng(start)
    X = rng.standard_normal((min(chunk, rows - start), d), dtype=np.float32)
    planted[start + 17] = X[17].copy()
    index.add_descriptors(X)
    index.save(target)
    del X
del index
index = Index.load(target)
Q = np.stack(list(planted.values()))
Q /= np.linalg.norm(Q, axis=1, keepdims=True)
hits = index.search_many(Q, k=5)
assert [h[0].row for h in hits] == list(planted), [h[0].row for h in hits]
assert all(abs(h[0].score - 1) < 1e-5 for h in hits)
heat = index.search_many(Q[:2], k=5, rerank="heat")
assert [h[0].row for h in heat] == list(planted)[:2]
print(limit, rows * d * 4, size()["VmHWM"])
"""


def test_an_index_larger_than_the_memory_limit_is_built_and_searched(tmp_path):
    if not hasattr(__import__("resource"), "RLIMIT_AS") or not Path("/proc/self/status").exists():
        pytest.skip("needs resource.RLIMIT_AS and /proc (Linux)")
    # One search thread, no 64 MB malloc arena reserved per thread: address space for the rows.
    env = dict(ENV, MALLOC_ARENA_MAX="1", HEATSEARCH_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _OUT_OF_CORE, str(tmp_path / "idx"), str(560_000), "256", str(10_000)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    limit, size, peak = map(int, proc.stdout.split())
    assert size > limit and peak < limit


def test_float16_storage_keeps_the_map_on_holidays(holidays):
    """The paper authors' Holidays descriptors (signed sqrt + L2), stored as float32 and as
    float16: measured 80.24 and 80.24 mAP plain, 77.15 and 77.15 with HeR (README,
    "Descriptor store")."""
    import heatsearch as hs

    X, qidx, gnd = holidays
    X = X.astype(np.float64)  # stored as float32: exact
    Y = np.sign(X) * np.sqrt(np.abs(X))
    Y = (Y / np.linalg.norm(Y, axis=1, keepdims=True)).astype(np.float32)
    maps = {}
    for dtype in ("float32", "float16"):
        index = Index.from_descriptors(Y, config=IndexConfig(whiten="none", storage_dtype=dtype))
        for rerank in (None, "heat"):
            # The index's ranking (what search_many returns as hits, without 745,500 SearchHits).
            ranks, _ = index._rank(Y[qidx], None, rerank)
            maps[dtype, rerank] = 100 * float(hs.compute_map(ranks, gnd).map)
    assert round(maps["float32", None], 2) == 80.24  # docs/ALGORITHM.md, section 4
    for rerank in (None, "heat"):
        assert abs(maps["float16", rerank] - maps["float32", rerank]) < 0.1, maps


def test_saving_to_another_folder_writes_a_complete_copy(tmp_path):
    import shutil

    X = unit(np.random.default_rng(13), 300, 8)
    index = Index.from_descriptors(X)
    index.save(tmp_path / "a")
    index.remove(["5"])
    loaded = Index.load(tmp_path / "a")
    index.save(tmp_path / "b")  # its shards are in a/: copied (live rows only), not linked
    shutil.rmtree(tmp_path / "a")
    copy = Index.load(tmp_path / "b")
    assert copy.paths == [str(i) for i in range(300) if i != 5]
    np.testing.assert_array_equal(copy.descriptors, np.delete(X, 5, axis=0))
    assert len(loaded.search(X[0], k=300)) == 300  # the deleted folder's index still reads its open files
