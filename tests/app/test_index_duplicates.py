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


def learned(tmp_path, copies: dict, **config) -> Index:
    """An index of 80 random images (64 channels) with ``copies`` (:func:`with_copies`) whose whitening is
    learned as ``Index.add`` learns it: the default configuration (shrinkage and the
    near-duplicate groups) unless ``config`` says otherwise."""
    index = with_copies(small_index(tmp_path, n=80, channels=64), copies)
    index.config = IndexConfig(**config)
    index.refit_whitening()
    return index


def test_an_index_whitened_with_its_near_duplicates_groups_its_own_descriptors(tmp_path):
    index = learned(tmp_path, {7: 2, 19: 2, 25: 11, 60: 40})
    assert index.whitening.duplicate_images_ == 7  # the whitening found the copies (and only them)
    assert (index.duplicate_descriptors, index.duplicate_threshold) == ("whitened", WHITENED_THRESHOLD)
    X = np.asarray(index.descriptors)
    for threshold in (None, 0.9, 0.2):
        groups = index.duplicates(threshold)
        want = reference.duplicate_groups(X, WHITENED_THRESHOLD if threshold is None else threshold)
        assert [g.rows.tolist() for g in groups] == [w.rows.tolist() for w in want]
        for g in groups:
            assert g.paths == tuple(index.paths[r] for r in g.rows)
            np.testing.assert_allclose(g.scores, np.einsum("ij,ij->i", X[g.pairs[:, 0]], X[g.pairs[:, 1]]), atol=1e-5)
    # The copies have the same final descriptor: one group each, at cosine 1.
    top = index.duplicates(0.999)
    assert [g.rows.tolist() for g in top] == [[2, 7, 19], [11, 25], [40, 60]]
    assert index.duplicates(block=3)[0].rows.tolist() == index.duplicates()[0].rows.tolist()


@pytest.mark.parametrize("config", [{"whiten_duplicates": None}, {"whiten": "none"}])
def test_an_index_without_that_whitening_groups_the_unwhitened_descriptors(tmp_path, config):
    """A whitening of the covariance alone (an index.json written before near-duplicate
    groups existed reads as whiten_duplicates=None) or none: the unwhitened scale."""
    if config.get("whiten") == "none":
        index = with_copies(small_index(tmp_path, n=80, channels=64), {7: 2})
    else:
        index = learned(tmp_path, {7: 2}, **config)
    assert (index.duplicate_descriptors, index.duplicate_threshold) == ("unwhitened", DEFAULT_THRESHOLD)
    want = duplicate_groups(index.unwhitened(), 0.6)
    assert [g.rows.tolist() for g in index.duplicates(0.6)] == [w.rows.tolist() for w in want]


def test_a_whitening_not_learned_by_the_index_is_not_its_scale(tmp_path):
    index = learned(tmp_path, {7: 2})
    index.whitening_learned = False  # e.g. Index.build(..., whitening=a file's)
    assert index.duplicate_descriptors == "unwhitened"


def test_half_precision_rows_are_grouped_as_unit_rows(tmp_path):
    index = learned(tmp_path, {7: 2, 30: 31})
    full = index.duplicates(0.3)
    index.descriptors = np.asarray(index.descriptors, np.float16)  # IndexConfig(storage_dtype="float16")
    X = np.asarray(index.descriptors, np.float64)
    assert np.abs(np.linalg.norm(X, axis=1) - 1).max() > 0  # rounded off the unit sphere
    half = index.duplicates(0.3)
    want = reference.duplicate_groups(X / np.linalg.norm(X, axis=1, keepdims=True), 0.3)
    assert [g.rows.tolist() for g in half] == [w.rows.tolist() for w in want]
    assert [g.rows.tolist() for g in half][:2] == [g.rows.tolist() for g in full][:2]
