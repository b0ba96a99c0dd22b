"""Search and kNN graph in pure NumPy: the full score matrix ``S = Q @ X.T`` (in the input's
dtype), then each row's top k by (score descending, index ascending).

Obviously right rather than fast, but not needlessly slow: ``np.argpartition`` picks the top
k, the rows where it had to choose among items tying the k-th score are redone with a full
stable sort (so ties always go to the lower index), and only the k winners are sorted.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate
from .._compat import accepts_old_arguments
from ..knn import DEFAULT_NEIGHBORS, KnnGraph

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


def search(X: ArrayLike, Q: ArrayLike, k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`heatsearch.search` (same arguments, results and errors)."""
    x, q, kk = _validate.search_arguments(X, Q, k)
    # The Rust kernel checks Q, then X.
    _validate.finite(q, "Q")
    _validate.finite(x, "X")
    with np.errstate(over="ignore", invalid="ignore"):
        scores = q @ x.T
    if kk and scores.size:
        _validate.products(scores, "Q and X")
    return top_k(scores, kk)


@accepts_old_arguments(positional=("neighbors",), renamed={"k": "neighbors"})
def knn_graph(X: ArrayLike, *, neighbors: int = DEFAULT_NEIGHBORS) -> KnnGraph:
    """Reference of :func:`heatsearch.knn_graph`: each row's top ``neighbors + 1`` of
    ``X @ X.T``, then the item itself removed (or the last one when the item is not among
    them)."""
    x, kk = _validate.knn_arguments(X, neighbors)
    _validate.finite(x, "X")
    n = x.shape[0]
    if kk == 0:
        return KnnGraph(np.zeros((n, 0), np.int64), np.zeros((n, 0), x.dtype))
    with np.errstate(over="ignore", invalid="ignore"):
        scores = x @ x.T
    # An item's product with itself is not a neighbour's score: only the others can overflow.
    others = scores.copy()
    np.fill_diagonal(others, 0)
    _validate.products(others, "X with itself")
    idx, sims = top_k(scores, kk + 1)
    keep = idx != np.arange(n)[:, None]
    keep[keep.all(axis=1), -1] = False
    return KnnGraph(idx[keep].reshape(n, kk), sims[keep].reshape(n, kk))
