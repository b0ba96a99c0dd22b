"""Diffusion re-ranking: Iscen, Tolias, Avrithis, Furon, Chum, "Efficient Diffusion on Region
Manifolds: Recovering Small Objects with Compact CNN Representations", CVPR 2017 (global
descriptors, with the truncation of their section 4; ALGORITHM.md section 3).

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

from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

from . import _checks, _core
from .errors import InvalidDTypeError, InvalidInputError
from .knn import DEFAULT_K, KnnGraph, knn_graph
from .search import count, database_and_queries, search

__all__ = ["diffusion_rerank"]

# Defaults of Iscen et al. CVPR 2017, also those of fyang93/diffusion (PEERS.md).
#: Query's top items holding its heat (``kq``).
DEFAULT_QUERY_K = 10
#: Diffusion rate ``alpha`` of ``(I - alpha S) f = y``.
DEFAULT_ALPHA = 0.99
#: Power of the similarities, in the graph and in ``y``.
DEFAULT_GAMMA = 3.0
#: Items of the first-pass ranking the diffusion re-orders.
DEFAULT_TRUNCATION = 1000
#: Conjugate-gradient iterations (20 in Iscen et al. and fyang93/diffusion).
DEFAULT_ITERATIONS = 20
#: Relative residual at which the conjugate gradient stops.
DEFAULT_TOL = 1e-6


def diffusion_rerank(
    X: Any,
    Q: Any,
    ranks: Optional[Any] = None,
    *,
    scores: Optional[Any] = None,
    graph: Optional[KnnGraph] = None,
    k: int = DEFAULT_K,
    query_k: int = DEFAULT_QUERY_K,
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
            with :func:`heatsearch.knn_graph` ``(X, k)``. Its similarities are converted to
            ``X``'s dtype if they differ.
        k: neighbours per item of the graph built when ``graph`` is None: 50 (Iscen et al.).
            Ignored when ``graph`` is given.
        query_k: the query's top items of the ranking that hold its heat ``y``: 10 (Iscen et
            al. ``kq``). Clamped to the truncation.
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
            ``ranks`` per query, ``m <= n``, the graph's ``n``), NaN or infinity, ranks out of
            ``[0, n)`` or repeated within a row, ``scores`` without ``ranks``, parameters out
            of range.

    Complexity: the graph ``n^2 d`` (when built here), then per query a sparse system of
    ``truncation`` unknowns with at most ``k`` entries per row, ``iterations`` sparse
    matrix-vector products. Queries run in parallel; results do not depend on the number of
    threads.
    """
    a = arguments(X, Q, ranks, scores, graph, k, query_k, alpha, gamma, truncation, iterations, tol)
    g = a.graph if a.graph is not None else knn_graph(a.X, a.k)
    r, s = (a.ranks, a.scores) if a.ranks is not None else search(a.X, a.Q)
    return _core.diffusion_rerank(
        a.X, a.Q, r, s, g.indices, _graph_similarities(g, a.X.dtype),
        a.query_k, a.alpha, a.gamma, a.truncation, a.iterations, a.tol,
    )


def _graph_similarities(graph: KnnGraph, dtype: np.dtype) -> np.ndarray:
    sims = graph.similarities
    return sims if sims.dtype == dtype else sims.astype(dtype)


class Arguments(NamedTuple):
    """The checked arguments of :func:`diffusion_rerank` (shared with the reference)."""

    X: np.ndarray
    Q: np.ndarray
    ranks: Optional[np.ndarray]
    scores: Optional[np.ndarray]
    graph: Optional[KnnGraph]
    k: int
    query_k: int
    alpha: float
    gamma: float
    truncation: Optional[int]
    iterations: int
    tol: float


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidDTypeError(f"{name} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not np.isfinite(out):
        raise InvalidInputError(f"{name} must be finite, got {value}")
    return out


def arguments(
    X: Any, Q: Any, ranks: Any, scores: Any, graph: Any, k: Any, query_k: Any, alpha: Any,
    gamma: Any, truncation: Any, iterations: Any, tol: Any,
) -> Arguments:
    """Checks and normalises the arguments of :func:`diffusion_rerank` (visible conversions:
    ``ranks`` to int64, ``scores`` to ``X``'s dtype)."""
    x, q = database_and_queries(X, Q)
    n, nq = x.shape[0], q.shape[0]
    kk = count(k, "k", minimum=1, allow_none=False)
    qk = count(query_k, "query_k", minimum=1, allow_none=False)
    tr = count(truncation, "truncation", minimum=1)
    it = count(iterations, "iterations", minimum=0, allow_none=False)
    al = _real(alpha, "alpha")
    if not 0 <= al < 1:
        raise InvalidInputError(
            f"alpha must be in [0, 1) (at 1 the system I - alpha S is singular), got {alpha}"
        )
    ga = _real(gamma, "gamma")
    if ga <= 0:
        raise InvalidInputError(f"gamma must be > 0, got {gamma}")
    to = _real(tol, "tol")
    if to < 0:
        raise InvalidInputError(f"tol must be >= 0, got {tol}")
    if graph is not None:
        if not isinstance(graph, KnnGraph):
            raise InvalidDTypeError(
                f"graph must be a KnnGraph (see heatsearch.knn_graph), got {type(graph).__name__}"
            )
        if graph.n != n:
            raise InvalidInputError(
                f"graph must have one row per database item (n = {n}), got n = {graph.n}"
            )
    r: Optional[np.ndarray] = None
    s: Optional[np.ndarray] = None
    if ranks is None:
        if scores is not None:
            raise InvalidInputError("scores were given without ranks (pass both or neither)")
    else:
        # int64 values are checked by the core; others before their conversion to int64.
        convert = np.asarray(ranks).dtype != np.int64
        r = _checks.ranking(ranks, nq, n, max_columns=n, check_range=convert, check_repeats=False)
        if scores is not None:
            sc = np.asarray(scores)
            if sc.dtype.kind != "f":
                raise InvalidDTypeError(f"scores must be a float array, got dtype {sc.dtype}")
            if sc.shape != r.shape:
                raise InvalidInputError(f"scores must have the shape of ranks {r.shape}, got {sc.shape}")
            s = sc if sc.dtype == x.dtype else sc.astype(x.dtype)
    # Clamped here so that any Python int fits the kernel's integers (the kernel clamps too).
    qk, tr, it = min(qk, n), None if tr is None else min(tr, n), min(it, 1 << 31)  # type: ignore[type-var]
    return Arguments(x, q, r, s, graph, kk, qk, al, ga, tr, it, to)  # type: ignore[arg-type]
