"""Index.duplicates: groups of the index's UNWHITENED descriptors (the whitening is ignored),
with paths; Index.unwhitened; empty index and bad thresholds. (In-memory indexes: no torch;
a real index of photos and their edited copies is in test_index.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from heatsearch import duplicate_groups, reference
from heatsearch.app.index import Index
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
        (None, InvalidDTypeError, "threshold must be a real number, got NoneType"),
    ],
)
def test_bad_thresholds_are_errors(tmp_path, threshold, error, message):
    with pytest.raises(error, match=message):
        small_index(tmp_path, n=5).duplicates(threshold)


def test_an_empty_index_is_an_error():
    with pytest.raises(InvalidInputError, match="the index is empty"):
        Index().duplicates()
