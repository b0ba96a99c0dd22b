"""Stage 3 of heatsearch.distributed (``_assemble``) on fake parts, without Ray or a network:
the index equals the one :meth:`Index._from_pooled` (the local path's code) makes of all the
rows at once, its shard files are linked into the saved index (not copied), and the driver's
memory does not grow with the rows (tracemalloc)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from heatsearch import distributed, whitening
from heatsearch.app.index import AUTO_WHITENING_MIN_IMAGES, Index, IndexConfig, mean_sample
from heatsearch.app.storage import PARTS_DIR
from heatsearch.errors import InvalidInputError

PART = 16  # rows per fake part (distributed.DEFAULT_BATCH_SIZE)


def fake_parts(out: Path, n: int, channels: int, config: IndexConfig, *, seed: int = 0, lost: int = 0,
               copies: int = 1):
    """The parts stage 2 would leave for ``n`` images (random non-negative pooled rows, as
    HeW's; with ``copies`` > 1, runs of that many consecutive images are near-duplicates),
    ``lost`` of them failed (recorded as skipped); returns the paths (the order the user
    gave), the mean, the settings and every row by path (the reference's input)."""
    rng = np.random.default_rng(seed)
    paths = [str(out.parent / "photos" / f"img{i:06d}.jpg") for i in range(n)]
    base = np.abs(rng.standard_normal((n // copies + 1, channels))) + 0.1
    rows = {p: (base[i // copies] + (0.02 * np.abs(rng.standard_normal(channels)) if copies > 1 else 0)).astype(np.float32)
            for i, p in enumerate(paths)}
    parts = out / PARTS_DIR
    parts.mkdir(parents=True)
    (out.parent / "photos").mkdir(exist_ok=True)  # the collection's folder (the index records it)
    for lo in range(0, n, PART):
        chunk = paths[lo : lo + PART]
        bad = [p for p in chunk if int(p[-10:-4]) < lost]
        good = [p for p in chunk if p not in bad]
        pooled = np.stack([rows[p] for p in good]) if good else np.zeros((0, 0), np.float32)
        distributed._write_part(parts / distributed._part_name(chunk), good, pooled, [(p, "broken") for p in bad])
    settings = distributed._Settings(config.to_dict(), "auto", 1, str(parts), None)
    mean = rng.random(channels).astype(np.float32)
    return paths, mean, settings, rows


def assemble(paths, config, settings, mean, whitening=None):
    return distributed._assemble(paths, config, settings, mean, 10, [], whitening, os.path.dirname(paths[0]), "auto")


@pytest.mark.parametrize("config, copies", [
    (IndexConfig(mean_sample=16), 1),  # learned whitening (shrinkage 0.5, no pair found)
    (IndexConfig(mean_sample=16), 3),  # runs of 3 near-duplicates: the whitening's groups
    (IndexConfig(mean_sample=16, shrinkage="ledoit-wolf"), 1),
    (IndexConfig(mean_sample=16, whiten="none", storage_dtype="float16"), 1),
])
def test_equals_the_index_of_all_rows_at_once(tmp_path, config, copies):
    out = tmp_path / "photos.index"
    paths, mean, settings, rows = fake_parts(out, 300, 96, config, lost=5, copies=copies)
    with pytest.warns(UserWarning, match="5 image"):
        got = assemble(paths, config, settings, mean)
    kept = [p for p in paths if int(p[-10:-4]) >= 5]  # the 5 lost images are the first 5
    sample = [p for p in mean_sample(paths, config.mean_sample) if p in kept]
    order = sample + [p for p in kept if p not in set(sample)]
    with pytest.warns(UserWarning, match="5 image"):
        want = Index._from_pooled(config, order, np.stack([rows[p] for p in order]), mean=mean, mean_images=10,
                                  skipped=got.skipped, root=os.path.dirname(paths[0]))
    assert got.paths == want.paths == order and len(got) == 295
    assert sorted(p for p, _ in got.skipped) == paths[:5]
    assert got.whitening_learned == want.whitening_learned == (config.whiten == "auto")
    assert got.whitening_images == want.whitening_images
    if config.whiten == "auto":
        assert got.whitening.duplicate_images_ == want.whitening.duplicate_images_
        assert (got.whitening.duplicate_images_ > 0) == (copies > 1)
    np.testing.assert_array_equal(np.asarray(got.pooled), np.asarray(want.pooled))
    atol = 1e-3 if config.storage_dtype == "float16" else 1e-6
    np.testing.assert_allclose(np.asarray(got.descriptors, np.float32), np.asarray(want.descriptors, np.float32), atol=atol)
    got.save(out)
    np.testing.assert_allclose(np.asarray(Index.load(out).descriptors, np.float32),
                               np.asarray(want.descriptors, np.float32), atol=atol)


def test_the_save_links_the_shard_instead_of_copying_it(tmp_path):
    config = IndexConfig(mean_sample=16)
    out = tmp_path / "photos.index"
    paths, mean, settings, _ = fake_parts(out, 2 * AUTO_WHITENING_MIN_IMAGES, 32, config)
    index = assemble(paths, config, settings, mean)
    staged = {p.name: p.stat().st_ino for p in (out / PARTS_DIR).glob("*.npy") if p.name != "mean.npy"}
    assert len(staged) == 2  # the pooled rows and the descriptors
    index.save(out)
    saved = {p.name: p.stat().st_ino for p in out.glob("data-*/*.npy") if p.name in staged}
    assert saved == staged  # the same files (hard links), not copies
    # A kill after the save and before the parts are removed: a rerun of stage 3 makes its own
    # shard and the index it saves still loads.
    again = assemble(paths, config, settings, mean)
    again.save(out)
    assert Index.load(out).paths == index.paths


def test_an_unreadable_part_is_reported_not_half_used(tmp_path, monkeypatch):
    config = IndexConfig(mean_sample=16, whiten="none")
    out = tmp_path / "photos.index"
    paths, mean, settings, _ = fake_parts(out, 64, 32, config)
    first = sorted((out / PARTS_DIR).glob("part-*.npz"))[0]
    real = distributed._read_part

    def vanished(path, **kw):  # readable when listed, gone when its rows are read
        if path == first and kw.get("rows", True):
            return None
        return real(path, **kw)

    monkeypatch.setattr(distributed, "_read_part", vanished)
    with pytest.raises(InvalidInputError, match="could no longer be read"):
        assemble(paths, config, settings, mean)


def _peak(n: int, tmp_path: Path, monkeypatch) -> int:
    config = IndexConfig(mean_sample=16)
    out = tmp_path / f"n{n}.index"
    paths, mean, settings, rows = fake_parts(out, n, 512, config)
    del rows
    monkeypatch.setattr(distributed, "ASSEMBLY_ROWS", 256)  # below both n: the same blocks in both runs
    # The rows among which the whitening looks for near-duplicate pairs are held (a bounded
    # sample, heatsearch.whitening.DUPLICATE_SAMPLE): below both n, the same size in both runs.
    monkeypatch.setattr(whitening, "DUPLICATE_SAMPLE", 1000)
    tracemalloc.start()
    try:
        index = assemble(paths, config, settings, mean)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index) == n and index.whitening_learned
    return peak


def test_the_driver_does_not_hold_every_row(tmp_path, monkeypatch):
    """Four times the rows (12 MB more of float32 pooled rows, 24 MB in float64) raise the
    peak of Python's allocations in stage 3 by far less than one copy of them: what grows is
    the paths' bookkeeping (a few hundred bytes a row), not the rows (2 kB each); the sample
    searched for near-duplicate pairs is bounded whatever the number of rows."""
    small, large = 2000, 8000
    grown = _peak(large, tmp_path, monkeypatch) - _peak(small, tmp_path, monkeypatch)
    rows_bytes = (large - small) * 512 * 4
    assert grown < rows_bytes / 2, f"stage 3's peak grew by {grown} bytes for {rows_bytes} bytes of new rows"


def test_an_index_configured_with_an_ann_saves_it_trained_on_the_stage_3_shard(tmp_path):
    """``IndexConfig(ann=...)``: stage 3's index trains its approximate index when it is
    saved, on a sample of the rows read from the shard (never all rows in one array), and the
    loaded index searches with it."""
    pytest.importorskip("faiss", reason="the ANN backend needs faiss-cpu (pip install 'heatsearch[ann]')")
    from heatsearch.app.index import ANN_FILE

    config = IndexConfig(mean_sample=16, whiten="none", ann="hnsw")
    out = tmp_path / "photos.index"
    paths, mean, settings, _ = fake_parts(out, 300, 32, config)
    index = assemble(paths, config, settings, mean)
    index.save(out)
    assert list(out.glob(f"data-*/{ANN_FILE}"))
    loaded = Index.load(out)
    assert loaded._ann is not None and loaded._ann.ntotal == 300
    X = np.asarray(loaded.descriptors)
    assert [hits[0].row for hits in loaded.search_many(X[::50], k=3)] == list(range(0, 300, 50))
