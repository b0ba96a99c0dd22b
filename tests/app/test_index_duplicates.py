"""Index.duplicates: groups of the index's own descriptors when it learned its whitening with
its near-duplicate groups, else of its UNWHITENED descriptors, with paths and each one's
default threshold; Index.unwhitened; empty index and bad thresholds. (In-memory indexes: no
torch; real indexes of photos and their edited copies are in test_index.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from heatsearch import duplicate_groups, reference
from heatsearch.app.index import Index, IndexConfig
from heatsearch.duplicates import DEFAULT_THRESHOLD, WHITENED_THRESHOLD
from heatsearch.errors import InvalidDTypeError, InvalidInputError
from heatsearch.postprocess import PostProcess

from helpers import small_index


def with_copies(index: Index, copies: dict) -> Index:
    """``index`` with the pooled descriptor of row ``src`` replaced by row ``dst``'s, scaled
    (the same image, brighter: the same unwhitened descriptor) for each ``dst: src``."""
    pooled = np.array(index.pooled)
    for dst, src in copies.items():
        pooled[dst] = 2.0 * pooled[src]
    index.pooled = pooled
    index.descriptors = index.postprocess(pooled.astype(np.float64)).astype(np.float32)
    return index


@pytest.mark.parametrize("whitening_dim", [None, 8])
def test_groups_are_those_of_the_unwhitened_descriptors(tmp_path, whitening_dim):
    index = with_copies(small_index(tmp_path, n=30, channels=16, whitening_dim=whitening_dim), {7: 2, 19: 2, 25: 11})
    plain = PostProcess(None, power=index.config.power)(np.asarray(index.pooled, np.float64))
    np.testing.assert_allclose(index.unwhitened(), plain, rtol=1e-5, atol=1e-6)
    assert index.unwhitened().dtype == np.float32
    for t in (0.99, 0.9):
        groups = index.duplicates(t)
        want = reference.duplicate_groups(plain, t)
        assert [g.rows.tolist() for g in groups] == [w.rows.tolist() for w in want]
        for g in groups:
            assert g.paths == tuple(index.paths[r] for r in g.rows)
            cosines = np.einsum("ij,ij->i", plain[g.pairs[:, 0]], plain[g.pairs[:, 1]])
            np.testing.assert_allclose(g.scores, cosines, atol=1e-5)
    top = index.duplicates(0.999)
    assert [g.rows.tolist() for g in top] == [[2, 7, 19], [11, 25]]


def test_the_default_threshold_and_block_are_the_array_functions(tmp_path):
    index = with_copies(small_index(tmp_path, n=12, whitening_dim=6), {3: 1})
    assert (index.duplicate_descriptors, index.duplicate_threshold) == ("unwhitened", DEFAULT_THRESHOLD)
    groups = index.duplicates()
    want = duplicate_groups(index.unwhitened())
    assert [g.rows.tolist() for g in groups] == [w.rows.tolist() for w in want]
    assert [g.rows.tolist() for g in index.duplicates(block=1)] == [w.rows.tolist() for w in want]


def test_unwhitened_slices_agree_with_one_pass(tmp_path, monkeypatch):
    import heatsearch.app.index as index_module

    index = small_index(tmp_path, n=23, whitening_dim=5)
    whole = index.unwhitened()
    monkeypatch.setattr(index_module, "UNWHITENED_CHUNK", 4)
    np.testing.assert_array_equal(index.unwhitened(), whole)


def test_an_index_of_one_image_has_no_duplicates(tmp_path):
    assert small_index(tmp_path, n=1).duplicates(-1.0) == []


@pytest.mark.parametrize(
    "threshold, error, message",
    [
        (1.2, InvalidInputError, r"threshold must be a cosine similarity in \[-1, 1\]"),
        (-3, InvalidInputError, r"in \[-1, 1\]"),
        ("high", InvalidDTypeError, "threshold must be a real number, got str"),
        ([0.5], InvalidDTypeError, "threshold must be a real number, got list"),
    ],
)
def test_bad_thresholds_are_errors(tmp_path, threshold, error, message):
    with pytest.raises(error, match=message):
        small_index(tmp_path, n=5).duplicates(threshold)


def test_an_empty_index_is_an_error():
    with pytest.raises(InvalidInputError, match="the index is empty"):
        Index().duplicates()


def fresh_whitened(index: Index) -> np.ndarray:
    """The index's pooled rows whitened as :meth:`Index.duplicates` must: the default whitening
    learned now, in one piece (PostProcess.fit, not the blocks), on all of them."""
    from heatsearch.app.index import DEFAULT_SHRINKAGE, WHITEN_DUPLICATES

    pooled = np.asarray(index.pooled, np.float64)
    post = PostProcess.fit(pooled, power=index.config.power, shrinkage=DEFAULT_SHRINKAGE, duplicates=WHITEN_DUPLICATES)
    return post(pooled)


def many(tmp_path, copies: dict, n: int = 80, **config) -> Index:
    """An index of ``n`` random images (64 channels) with ``copies`` (:func:`with_copies`) and
    the configuration ``config`` (the defaults otherwise), its whitening not learned."""
    index = with_copies(small_index(tmp_path, n=n, channels=64), copies)
    index.config = IndexConfig(**config)
    return index


@pytest.mark.parametrize("whitening", ["none", "stale", "current"])
def test_from_64_images_the_whitening_is_learned_on_the_collection_as_it_is(tmp_path, whitening, monkeypatch):
    """Whatever whitening the index searches with (none, one learned on its first 64 images and
    kept since, one learned on all): the groups are those of the default whitening learned on
    all its images now, in blocks (several here: 80 rows in blocks of 16)."""
    import heatsearch.app.index as index_module

    monkeypatch.setattr(index_module, "UNWHITENED_CHUNK", 16)
    index = many(tmp_path, {7: 2, 19: 2, 25: 11, 70: 40, 79: 40})
    if whitening != "none":
        first = index.pooled
        index.pooled = first[:64] if whitening == "stale" else first
        index.refit_whitening()  # learned on the first 64 (stale) or on all 80 rows
        index.pooled = first
        index.descriptors = index.postprocess(np.asarray(first, np.float64)).astype(np.float32)
    assert (index.duplicate_descriptors, index.duplicate_threshold) == ("whitened", WHITENED_THRESHOLD)
    X = fresh_whitened(index)
    for threshold in (None, 0.9, 0.2):
        groups = index.duplicates(threshold)
        want = reference.duplicate_groups(X, WHITENED_THRESHOLD if threshold is None else threshold)
        assert [g.rows.tolist() for g in groups] == [w.rows.tolist() for w in want]
        for g in groups:
            assert g.paths == tuple(index.paths[r] for r in g.rows)
            np.testing.assert_allclose(g.scores, np.einsum("ij,ij->i", X[g.pairs[:, 0]], X[g.pairs[:, 1]]), atol=1e-5)
    # The copies have the same pooled direction, so the same whitened row: a group each, at 1.
    top = index.duplicates(0.999)
    assert [g.rows.tolist() for g in top] == [[2, 7, 19], [40, 70, 79], [11, 25]]
    assert [g.rows.tolist() for g in index.duplicates(block=3)] == [g.rows.tolist() for g in index.duplicates()]


def test_the_index_is_left_as_it_was(tmp_path):
    index = many(tmp_path, {7: 2})
    index.refit_whitening()
    before = (index.whitening, np.array(index.descriptors), index.whitening_images)
    index.duplicates()
    assert index.whitening is before[0] and index.whitening_images == before[2]
    np.testing.assert_array_equal(index.descriptors, before[1])


def test_under_64_images_the_unwhitened_descriptors_are_compared(tmp_path):
    index = many(tmp_path, {7: 2, 30: 31}, n=63)
    assert (index.duplicate_descriptors, index.duplicate_threshold) == ("unwhitened", DEFAULT_THRESHOLD)
    want = duplicate_groups(index.unwhitened(), 0.6)
    assert [g.rows.tolist() for g in index.duplicates(0.6)] == [w.rows.tolist() for w in want]


def test_an_index_of_given_descriptors_compares_them(tmp_path):
    rows = np.random.default_rng(3).standard_normal((70, 8)).astype(np.float32)
    rows[5] = rows[4]
    index = Index.from_descriptors(rows)
    assert (index.duplicate_descriptors, index.duplicate_threshold) == ("given", DEFAULT_THRESHOLD)
    assert [g.rows.tolist() for g in index.duplicates()] == [[4, 5]]


def test_identical_images_are_one_group(tmp_path):
    """Nothing to whiten (every row the same): every pair is a copy, no error."""
    index = small_index(tmp_path, n=70, channels=16)
    index.pooled = np.repeat(np.asarray(index.pooled)[:1], 70, axis=0)
    groups = index.duplicates()
    assert [g.rows.tolist() for g in groups] == [list(range(70))]


def test_bad_arguments_fail_before_the_whitening_is_learned(tmp_path, monkeypatch):
    import heatsearch.postprocess as postprocess_module

    index = many(tmp_path, {})
    monkeypatch.setattr(postprocess_module.PostProcess, "_fit_blocks", None)  # would fail if called
    with pytest.raises(InvalidInputError, match="threshold must be a cosine"):
        index.duplicates(2.0)
    with pytest.raises(InvalidInputError, match="block must be"):
        index.duplicates(0.5, block=0)


def test_the_command_names_the_whitened_descriptors(tmp_path, capsys):
    from heatsearch.app.cli import main

    many(tmp_path, {7: 2, 9: 3}).save(tmp_path / "idx")
    assert main(["duplicates", str(tmp_path / "idx")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"2 group(s) of near-duplicates: 4 of the 80 images (cosine >= {WHITENED_THRESHOLD:g} "
                          "of the whitened descriptors"), out


def test_the_whitening_does_not_depend_on_the_index_configuration(tmp_path):
    """The scale is the calibrated one: the default shrinkage and near-duplicate groups,
    whatever the index searches with."""
    copies = {7: 2, 19: 2, 25: 11}
    default = many(tmp_path, copies).duplicates(0.2)
    other = many(tmp_path, copies, shrinkage=0.1, whiten_duplicates=None).duplicates(0.2)
    assert [g.rows.tolist() for g in other] == [g.rows.tolist() for g in default]


def test_removed_and_saved_rows_are_read_window_by_window(tmp_path):
    """An index loaded from disk (memory-mapped), with rows removed (tombstones) and rows
    added after the load (a second segment): the live rows, in order."""
    index = many(tmp_path, {7: 2, 19: 2, 70: 40}, whiten="none")  # no whitening learned on the way
    index.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    loaded.remove([loaded.paths[i] for i in (3, 5, 60)])
    loaded._append_pooled([str(tmp_path / "sub" / f"new{i}.jpg") for i in range(3)],
                          np.asarray(index.pooled)[[2, 40, 41]] * 3.0)  # copies of 2, 40 and 41
    assert len(loaded) == 80 and len(loaded._store.segments) == 2
    X = fresh_whitened(loaded)
    groups = loaded.duplicates()
    assert [g.rows.tolist() for g in groups] == [w.rows.tolist() for w in reference.duplicate_groups(X, WHITENED_THRESHOLD)]
    names = [sorted(p.rsplit("/", 1)[1] for p in g.paths) for g in loaded.duplicates(0.999)]
    assert names == [["img02.jpg", "img07.jpg", "img19.jpg", "new0.jpg"], ["img40.jpg", "img70.jpg", "new1.jpg"],
                     ["img41.jpg", "new2.jpg"]]
