"""Diffusion re-ranking with SciPy: ``scipy.sparse`` for the graph and
``scipy.sparse.linalg.cg`` for each query's system, as fyang93/diffusion does it, transcribed
from docs/ALGORITHM.md section 3 and the docs of :mod:`heatsearch.diffusion`.

The graph, ``y`` and the conjugate gradient are computed in float64 (the similarities are
converted first), as in the Rust path; the first pass and the graph's similarities come from
:mod:`heatsearch.reference.search` in the input's dtype.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate
from .._compat import accepts_old_arguments
from ..diffusion import (
    DEFAULT_ALPHA,
    DEFAULT_GAMMA,
    DEFAULT_ITERATIONS,
    DEFAULT_QUERY_NEIGHBORS,
    DEFAULT_TOL,
    DEFAULT_TRUNCATION,
)
from ..knn import DEFAULT_NEIGHBORS, KnnGraph
from .search import knn_graph, search

__all__ = ["diffusion_rerank", "transition"]


def transition(graph: KnnGraph, gamma: float) -> Any:
    """``S = D^-1/2 W D^-1/2`` of the mutual kNN graph, a ``scipy.sparse.csr_matrix``."""
    from scipy import sparse  # type: ignore[import-untyped]

    n, k = graph.indices.shape
    rows = np.repeat(np.arange(n), k)
    cols = graph.indices.ravel()
    sims = graph.similarities.ravel().astype(np.float64)
    keep = rows != cols  # self links are ignored
    rows, cols, sims = rows[keep], cols[keep], sims[keep]
    linked = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    listed = sparse.csr_matrix((sims, (rows, cols)), shape=(n, n))
    mutual = linked.multiply(linked.T)  # 1 where i lists j AND j lists i
    # Mean of the two lists' similarities of a mutual pair, then max(s, 0) ** gamma.
    W = sparse.csr_matrix(((listed + listed.T) * 0.5).multiply(mutual))
    W.data = np.maximum(W.data, 0.0) ** gamma
    W.eliminate_zeros()
    degree = np.asarray(W.sum(axis=1)).ravel()
    inv_sqrt = np.zeros(n)
    inv_sqrt[degree > 0] = 1.0 / np.sqrt(degree[degree > 0])
    D = sparse.diags(inv_sqrt)
    return sparse.csr_matrix(D @ W @ D)


def conjugate_gradient(A: Any, b: np.ndarray, tol: float, iterations: int) -> np.ndarray:
    """``scipy.sparse.linalg.cg`` from 0, relative tolerance ``tol``, no absolute one."""
    from scipy.sparse.linalg import cg  # type: ignore[import-untyped]

    try:
        x, _ = cg(A, b, rtol=tol, atol=0.0, maxiter=iterations)
    except TypeError:  # SciPy < 1.12 only knows tol= (SciPy >= 1.14 only rtol=)
        x, _ = cg(A, b, tol=tol, atol=0.0, maxiter=iterations)
    return np.asarray(x, dtype=np.float64)


@accepts_old_arguments(renamed={"k": "neighbors", "query_k": "query_neighbors"})
def diffusion_rerank(
    X: ArrayLike,
    Q: ArrayLike,
    ranks: Optional[ArrayLike] = None,
    *,
    scores: Optional[ArrayLike] = None,
    graph: Optional[KnnGraph] = None,
    neighbors: int = DEFAULT_NEIGHBORS,
    query_neighbors: int = DEFAULT_QUERY_NEIGHBORS,
    alpha: float = DEFAULT_ALPHA,
    gamma: float = DEFAULT_GAMMA,
    truncation: Optional[int] = DEFAULT_TRUNCATION,
    iterations: int = DEFAULT_ITERATIONS,
    tol: float = DEFAULT_TOL,
) -> Tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`heatsearch.diffusion_rerank` (same arguments, results, errors)."""
    from scipy import sparse  # type: ignore[import-untyped]

    a = _validate.diffusion_arguments(
        X, Q, ranks, scores, graph, neighbors, query_neighbors, alpha, gamma, truncation,
        iterations, tol, KnnGraph,
    )
    x, q = a.X, a.Q
    g = a.graph if a.graph is not None else knn_graph(x, neighbors=a.neighbors)
    s: Optional[np.ndarray]
    if a.ranks is None:
        r, s = search(x, q)
    else:
        r, s = a.ranks, a.scores
    _validate.rerank_data(x, q, s, r)
    nq, m = r.shape
    t = m if a.truncation is None else min(a.truncation, m)
    kq = min(a.query_neighbors, t)
    A = sparse.csr_matrix(sparse.identity(x.shape[0]) - a.alpha * transition(g, a.gamma))
    out_ranks = np.array(r, dtype=np.int64)
    out_scores = np.zeros((nq, m), x.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(nq):
            out_scores[i, t:] = s[i, t:] if s is not None else x[r[i, t:]].astype(np.float64) @ q[i].astype(np.float64)
    if s is None:
        _validate.products(out_scores[:, t:], "Q and X")
    for i in range(nq):
        qi = q[i].astype(np.float64)
        if t == 0:
            continue
        ids = r[i, :t]
        y = np.zeros(t)
        y[:kq] = np.maximum(x[ids[:kq]].astype(np.float64) @ qi, 0.0) ** a.gamma
        f = conjugate_gradient(A[ids][:, ids], y, a.tol, a.iterations)
        order = np.argsort(-f, kind="stable")  # ties keep the first-pass order
        out_ranks[i, :t] = ids[order]
        out_scores[i, :t] = f[order]
    return out_ranks, out_scores
