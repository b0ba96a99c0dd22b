"""SearchHit.score is the cosine of the query's and the hit's final descriptors for every
re-ranker; the re-ranker decides the order and its own value is SearchHit.rerank_score.
(In-memory indexes, queries by descriptor: no torch.)"""

from __future__ import annotations

import numpy as np
import pytest

import heatsearch.app.index as index_module
from heatsearch.pipeline import RERANKERS, rank

from helpers import small_index


@pytest.fixture
def index(tmp_path):
    return small_index(tmp_path, n=60, channels=16, whitening_dim=10, seed=3)


def queries(index, count: int = 4) -> np.ndarray:
    """Database rows with noise, L2-normalised (final descriptors of near-copies)."""
    rng = np.random.default_rng(1)
    X = np.asarray(index.descriptors)
    Q = X[:count] + 0.3 * rng.standard_normal((count, X.shape[1])).astype(np.float32)
    return (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("rerank", RERANKERS)
@pytest.mark.parametrize("k", [5, None])
def test_score_is_the_cosine_and_the_order_is_the_rerankers(index, rerank, k):
    X = np.asarray(index.descriptors)
    Q = queries(index)
    want_ranks, want_scores = rank(X, Q, k=k, rerank=rerank, graph=None)
    for q, hits, rr, ss in zip(Q, index.search_many(Q, k=k, rerank=rerank), want_ranks, want_scores):
        assert [h.row for h in hits] == rr.tolist()
        np.testing.assert_allclose([h.score for h in hits], X[rr].astype(np.float64) @ q, rtol=1e-5, atol=1e-6)
        assert all(-1 - 1e-5 <= h.score <= 1 + 1e-5 for h in hits)
        if rerank is None:
            assert all(h.rerank_score is None for h in hits)
        else:
            np.testing.assert_allclose([h.rerank_score for h in hits], ss, rtol=1e-5, atol=1e-7)


def test_search_and_search_many_give_the_same_scores(index):
    Q = queries(index, 2)
    for rerank in RERANKERS:
        many = index.search_many(Q, k=7, rerank=rerank)
        for q, hits in zip(Q, many):
            one = index.search(q, k=7, rerank=rerank)
            assert [(h.row, h.rerank_score is None) for h in one] == [(h.row, h.rerank_score is None) for h in hits]
            np.testing.assert_allclose([h.score for h in one], [h.score for h in hits], rtol=1e-6)


def test_cosines_are_gathered_in_slices(index, monkeypatch):
    Q = queries(index, 3)
    whole = [[h.score for h in hits] for hits in index.search_many(Q, k=None, rerank="heat")]
    monkeypatch.setattr(index_module, "COSINE_CHUNK", 7)
    sliced = [[h.score for h in hits] for hits in index.search_many(Q, k=None, rerank="heat")]
    np.testing.assert_array_equal(sliced, whole)
