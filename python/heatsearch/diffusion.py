"""Diffusion re-ranking: Iscen, Tolias, Avrithis, Furon, Chum, "Efficient Diffusion on Region
Manifolds: Recovering Small Objects with Compact CNN Representations", CVPR 2017 (global
descriptors, with the truncation of their section 4; docs/ALGORITHM.md section 3).

The database is a graph: items i and j are linked when each is among the other's k nearest
neighbours (mutual kNN), with weight ``w_ij = max(s_ij, 0) ** gamma`` (``s_ij`` the inner
product; the two lists' values for a pair are averaged, which makes ``W`` exactly symmetric;
non-positive similarities give no edge). ``S = D^-1/2 W D^-1/2`` (``D_ii = sum_j w_ij``; an
item without mutual neighbours has a zero row) is normalised once, on the whole graph.

For each query, ``y`` holds ``max(<q, x_j>, 0) ** gamma`` at its top ``query_k`` items of the
first-pass ranking and 0 elsewhere, and ``(I - alpha S) f = y`` is solved by conjugate
gradient. TRUNCATION (Iscen et al.'s, as fyang93/diffusion codes it:
``cg(lap_alpha[ids][:, ids], ..., tol=1e-6, maxiter=20)``): only the query's top ``truncation`` items of
the first-pass ranking take part; the system is the principal submatrix of ``I - alpha S`` on
them, i.e. the subgraph they induce, keeping the WHOLE graph's normalisation (not
re-normalised on the subgraph). Links to items outside the truncation are dropped. The
submatrix is symmetric positive definite for ``0 <= alpha < 1``.

The Rust path builds ``S`` and each query's subgraph in CSR form and runs the conjugate
gradient in float64, one query per thread, with the GIL released; the iteration is step for
step that of ``scipy.sparse.linalg.cg`` (from ``f = 0``; at most ``iterations`` steps; stop
before a step when ``||r|| < tol * ||y||``). The SciPy transcription is
:func:`heatsearch.reference.diffusion_rerank`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _core, _validate
from ._compat import accepts_old_arguments
from .knn import DEFAULT_NEIGHBORS, KnnGraph, knn_graph
from .search import search

__all__ = ["diffusion_rerank"]

# Defaults of Iscen et al. CVPR 2017, also those of fyang93/diffusion (docs/PEERS.md). They are
# the Rust core's (rust/core/src/diffusion.rs), the one place they are written.
#: Query's top items holding its heat (``kq``).
DEFAULT_QUERY_NEIGHBORS: int = _core.DIFFUSION_QUERY_NEIGHBORS
#: Diffusion rate ``alpha`` of ``(I - alpha S) f = y``.
DEFAULT_ALPHA: float = _core.DIFFUSION_ALPHA
#: Power of the similarities, in the graph and in ``y``.
DEFAULT_GAMMA: float = _core.DIFFUSION_GAMMA
#: Items of the first-pass ranking the diffusion re-orders.
DEFAULT_TRUNCATION: int = _core.DIFFUSION_TRUNCATION
#: Conjugate-gradient iterations (20 in Iscen et al. and fyang93/diffusion).
DEFAULT_ITERATIONS: int = _core.DIFFUSION_ITERATIONS
#: Relative residual at which the conjugate gradient stops.
DEFAULT_TOL: float = _core.DIFFUSION_TOL


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
    """Re-rank first-pass rankings by diffusion on the database's mutual kNN graph.

    Args:
        X: database ``(n, d)``, float32 or float64, one descriptor per ROW (L2-normalised in
            the paper), any layout.
        Q: queries ``(nq, d)``, same dtype and ``d``.
        ranks: first-pass rankings ``(nq, m)``, integer 0-based database indices, best first,
            distinct within a row, ``m <= n``. NOTE: cirtorch/revisitop rankings are the
            transpose ``(n, nq)``: pass ``ranks.T``. ``None`` (default): the exact search of
            the whole database (:func:`heatsearch.search`), so ``m = n``.
        scores: the first-pass scores ``(nq, m)`` beside ``ranks`` (converted to ``X``'s
            dtype), returned unchanged beyond the truncation. ``None``: the inner products
            ``<q, x_i>`` are returned there. Only with ``ranks``.
        graph: the database's :class:`KnnGraph` (reuse one across calls); ``None`` builds it
            with :func:`heatsearch.knn_graph` ``(X, neighbors=neighbors)``. Its similarities
            are converted to ``X``'s dtype if they differ.
        neighbors: neighbours per item of the graph built when ``graph`` is None: 50 (Iscen
            et al.). Ignored when ``graph`` is given. (``k`` before heatsearch 0.2.)
        query_neighbors: the query's top items of the ranking that hold its heat ``y``: 10
            (Iscen et al.'s ``kq``). Clamped to the truncation. (``query_k`` before 0.2.)
        alpha: diffusion rate, ``0 <= alpha < 1``: 0.99 (Iscen et al.).
        gamma: power of the similarities (> 0): 3 (Iscen et al.).
        truncation: the top items of each ranking that are re-ranked: 1000 (Iscen et al.).
            ``None``: the whole ranking.
        iterations: maximum conjugate-gradient iterations: 20 (Iscen et al.).
        tol: the conjugate gradient stops when ``||r|| < tol * ||y||``: 1e-6 (Iscen et al.).

    Returns:
        ``(ranks, scores)`` of shape ``(nq, m)``: int64 indices and ``X``'s dtype. The first
        ``min(truncation, m)`` positions are the truncated items re-ordered by descending
        diffusion score ``f`` (ties keep their first-pass order; items the heat does not
        reach score 0 and come last among them); the positions after keep the first-pass
        order and carry first-pass scores. THE TWO PARTS' SCORES ARE ON DIFFERENT SCALES
        (diffusion values vs inner products): compare scores within a part only.

    Raises:
        InvalidDTypeError (a TypeError): float dtypes that differ or are not float32/float64,
            non-integer ``ranks``, a non-number parameter, ``graph`` not a :class:`KnnGraph`.
        InvalidInputError (a ValueError): shapes that do not match (``d``, one row of
            ``ranks`` per query, ``m <= n``, the graph's ``n``), NaN or infinity (in ``X``: in
            the rows ``ranks`` names, the only ones read), ranks out of ``[0, n)`` or repeated
            within a row, ``scores`` without ``ranks``, parameters out of range.

    Complexity: the graph ``n^2 d`` (when built here), then per query a sparse system of
    ``truncation`` unknowns with at most ``k`` entries per row, ``iterations`` sparse
    matrix-vector products. Queries run in parallel; results do not depend on the number of
    threads.
    """
    a = _validate.diffusion_arguments(
        X, Q, ranks, scores, graph, neighbors, query_neighbors, alpha, gamma, truncation,
        iterations, tol, KnnGraph,
    )
    g = a.graph if a.graph is not None else knn_graph(a.X, neighbors=a.neighbors)
    r, s = (a.ranks, a.scores) if a.ranks is not None else search(a.X, a.Q)
    return _core.diffusion_rerank(
        a.X,
        a.Q,
        r,
        scores=s,
        graph_indices=g.indices,
        graph_similarities=graph_similarities(g, a.X.dtype),
        query_neighbors=a.query_neighbors,
        alpha=a.alpha,
        gamma=a.gamma,
        truncation=a.truncation,
        iterations=a.iterations,
        tol=a.tol,
    )


def graph_similarities(graph: KnnGraph, dtype: np.dtype) -> np.ndarray:
    """The graph's similarities in the database's dtype (a visible conversion)."""
    sims = graph.similarities
    return sims if sims.dtype == dtype else sims.astype(dtype)
