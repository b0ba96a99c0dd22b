"""Search and kNN graph in pure NumPy: the full score matrix ``S = Q @ X.T`` (in the input's
dtype), then each row's top k by (score descending, index ascending).

Obviously right rather than fast, but not needlessly slow: ``np.argpartition`` picks the top
k, the rows where it had to choose among items tying the k-th score are redone with a full
stable sort (so ties always go to the lower index), and only the k winners are sorted.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .. import _checks
from ..knn import DEFAULT_K, KnnGraph
from ..search import count, database, database_and_queries

__all__ = ["search", "knn_graph"]


def top_k(S: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The best ``k <= S.shape[1]`` entries of every row of ``S``: ``(indices int64, scores)``,
    ordered by score descending, then index ascending."""
    nq, n = S.shape
    if k == 0 or nq == 0:
        return np.zeros((nq, k), np.int64), np.zeros((nq, k), S.dtype)
    if k >= n:
        order = np.argsort(-S, axis=1, kind="stable")
    else:
        order = np.argpartition(-S, k - 1, axis=1)[:, :k]
        chosen = np.take_along_axis(S, order, axis=1)
        kth = chosen.min(axis=1, keepdims=True)
        # argpartition chooses arbitrarily among items tying the k-th best score: where some
        # such item was left out, take that row's first k of a stable sort instead.
        ambiguous = np.nonzero((S == kth).sum(axis=1) > (chosen == kth).sum(axis=1))[0]
        for i in ambiguous:
            order[i] = np.argsort(-S[i], kind="stable")[:k]
        chosen = np.take_along_axis(S, order, axis=1)
        order = np.take_along_axis(order, np.lexsort((order, -chosen), axis=1), axis=1)
    return order.astype(np.int64), np.take_along_axis(S, order, axis=1)


def search(X: Any, Q: Any, k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`heatsearch.search` (same arguments, results and errors)."""
    x, q = database_and_queries(X, Q)
    kk = count(k, "k")
    _checks.all_finite(x, "X")
    _checks.all_finite(q, "Q")
    n = x.shape[0]
    return top_k(q @ x.T, n if kk is None else min(kk, n))


def knn_graph(X: Any, k: int = DEFAULT_K) -> KnnGraph:
    """Reference of :func:`heatsearch.knn_graph`: each row's top ``k + 1`` of ``X @ X.T``,
    then the item itself removed (or the last one when the item is not among them)."""
    x = database(X, "X")
    kk = count(k, "k", minimum=1, allow_none=False)
    assert kk is not None
    _checks.all_finite(x, "X")
    n = x.shape[0]
    kk = min(kk, max(n - 1, 0))
    if kk == 0:
        return KnnGraph(np.zeros((n, 0), np.int64), np.zeros((n, 0), x.dtype))
    idx, sims = top_k(x @ x.T, kk + 1)
    keep = idx != np.arange(n)[:, None]
    keep[keep.all(axis=1), -1] = False
    return KnnGraph(idx[keep].reshape(n, kk), sims[keep].reshape(n, kk))
