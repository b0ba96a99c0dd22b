"""Query expansion and database augmentation: average QE, alpha-QE, alpha-DBA.

Each replaces a vector by the L2-normalised (weighted) sum of itself and its top-k neighbours
in the database, so that a second search by inner product finds what those neighbours see:

- :func:`average_query_expansion` (AQE; Chum et al., ICCV 2007): ``l2n(mean(q, x_1..x_k))``
  over the query's top k; k = 10 as in CroW, cirtorch and the paper (docs/ALGORITHM.md section 2).
- :func:`alpha_query_expansion` (alpha-QE; Radenovic et al., TPAMI 2018): neighbour ``x_j``
  weighted by ``max(q . x_j, 0)^alpha``, the query by 1; alpha = 3 as in dirtorch/cirtorch.
- :func:`alpha_database_augmentation` (alpha-DBA, same paper): the same for every database
  vector, over its nearest neighbours in the database itself.

Inputs are expected to be final descriptors: L2-normalised rows (the weights are inner
products, which are cosine similarities only for unit vectors). Nothing checks it: other
inputs get the same formulas. Vectors are rows, ``X (n, d)`` and ``Q (nq, d)``, float32 or
float64 (the output keeps it), any memory layout. A ranking is ``ranks (nq, m)`` of 0-based
database indices, best first; cirtorch and revisitop hold the transpose ``(n, nq)``: pass
``ranks.T``. After query expansion, search the database again with the new queries (and,
with DBA, search the augmented database).
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from ._compat import accepts_old_arguments
from .postprocess import l2_normalize

__all__ = [
    "average_query_expansion",
    "alpha_query_expansion",
    "alpha_database_augmentation",
    "DEFAULT_NEIGHBORS",
    "DEFAULT_ALPHA",
]

#: Neighbours used by every method: 10 (average QE "top 10" of CroW, cirtorch and the paper).
DEFAULT_NEIGHBORS = 10
#: Exponent of the similarity weights: 3 (Radenovic et al. 2018, dirtorch, cirtorch).
DEFAULT_ALPHA = 3.0


@accepts_old_arguments(positional=("neighbors",), renamed={"k": "neighbors"})
def average_query_expansion(
    X: ArrayLike, Q: ArrayLike, ranks: ArrayLike, *, neighbors: int = DEFAULT_NEIGHBORS
) -> np.ndarray:
    """Average query expansion: ``q' = l2n(mean(q, x_r1, ..., x_rk))``, ``k = neighbors``.

    Args:
        X: database ``(n, d)``, float32 or float64, L2-normalised rows expected.
        Q: queries ``(nq, d)``, same dtype and ``d`` as ``X``.
        ranks: ``(nq, m)`` integer array, 0-based database indices best first (the first-pass
            ranking; cirtorch/revisitop's ``(n, nq)`` layout must be transposed). Only the
            first ``neighbors`` columns are used; they must not repeat an index.
        neighbors: neighbours averaged, ``>= 0``; default 10 (CroW, cirtorch, the paper).
            0 returns ``l2_normalize(Q)``; more than ``m`` is clamped to ``m`` (all ranked
            items). (``k`` before heatsearch 0.2.)

    Returns:
        New queries ``(nq, d)`` in ``X``'s dtype, L2-normalised (a zero mean stays zero).

    Raises:
        InvalidDTypeError (a TypeError): non-float ``X``/``Q``, ``X`` and ``Q`` of different
            dtypes, non-integer ``ranks`` or ``neighbors``.
        InvalidInputError (a ValueError): shapes (``X``, ``Q`` not 2-D, different ``d``,
            ``ranks`` not ``(nq, m)``), NaN/Inf, indices out of ``[0, n)`` or repeated in the
            top ``neighbors``, ``neighbors < 0``.
    """
    Xa, Qa, top = _validate.expansion_arguments(X, Q, ranks, neighbors)
    ones = np.ones(top.shape, dtype=Xa.dtype)
    total = _weighted_sum(Xa, Qa, top, ones)
    # mean = sum / (k + 1): same direction, but eps in l2_normalize applies to the mean.
    total /= Xa.dtype.type(top.shape[1] + 1)
    return l2_normalize(total)


@accepts_old_arguments(positional=("neighbors", "alpha"), renamed={"k": "neighbors"})
def alpha_query_expansion(
    X: ArrayLike,
    Q: ArrayLike,
    ranks: ArrayLike,
    *,
    neighbors: int = DEFAULT_NEIGHBORS,
    alpha: float = DEFAULT_ALPHA,
) -> np.ndarray:
    """Alpha query expansion: ``q' = l2n(q + sum_j max(q . x_rj, 0)^alpha x_rj)``, over the
    ``j <= neighbors`` top-ranked items.

    Args:
        X, Q, ranks: as in :func:`average_query_expansion`.
        neighbors: neighbours used, ``>= 0``; default 10. 0 returns ``l2_normalize(Q)``;
            more than ``m`` is clamped to ``m``. (``k`` before heatsearch 0.2.)
        alpha: exponent, a finite real ``>= 0``; default 3 (Radenovic et al. 2018, dirtorch).
            Neighbours with a negative similarity get weight 0 (dirtorch would give them a
            negative one). ``alpha = 0`` weighs every neighbour 1 (``0^0 = 1``), which is
            exactly average QE.

    Returns:
        New queries ``(nq, d)`` in ``X``'s dtype, L2-normalised.

    Raises:
        As :func:`average_query_expansion`, plus InvalidInputError for ``alpha < 0``, NaN or
        inf and InvalidDTypeError for a non-real ``alpha``.
    """
    Xa, Qa, top = _validate.expansion_arguments(X, Q, ranks, neighbors)
    a = _exponent(alpha)
    sims = np.empty(top.shape, dtype=np.float64)
    for j in range(top.shape[1]):
        sims[:, j] = np.einsum("ij,ij->i", Qa, Xa[top[:, j]], dtype=np.float64)
    return l2_normalize(_alpha_combination(Xa, Qa, top, sims, a))


@accepts_old_arguments(positional=("neighbors", "alpha"), renamed={"k": "neighbors"})
def alpha_database_augmentation(
    X: ArrayLike,
    *,
    neighbors: int = DEFAULT_NEIGHBORS,
    alpha: float = DEFAULT_ALPHA,
    block_size: Optional[int] = None,
) -> np.ndarray:
    """Alpha database-side augmentation: alpha-QE of every database vector on the database.

    ``x_i' = l2n(x_i + sum_j max(x_i . x_j, 0)^alpha x_j)`` over the ``k = neighbors``
    database items ``j != i`` with the largest inner product ``x_i . x_j`` (exact search,
    :func:`heatsearch.knn_graph`). The item itself is its own top-1 neighbour, with weight 1
    (its similarity to itself for a unit vector, and the query's weight in alpha-QE); it is
    counted exactly once, by index: the search leaves ``i`` out and ``k`` counts the OTHER
    neighbours, as dirtorch's ``expand_descriptors`` does. An exact duplicate of ``x_i``
    stored at another index is another neighbour. Ties at the k-th place go to the smaller
    index. Equals ``alpha_query_expansion(X, X, ranks, neighbors=k, alpha=alpha)`` with each
    row of ``ranks`` the exact ranking of the other items.

    Args:
        X: database ``(n, d)``, float32 or float64, L2-normalised rows expected.
        neighbors: other neighbours, ``>= 0``; default 10. 0 returns ``l2_normalize(X)``;
            more than ``n - 1`` is clamped to ``n - 1``. (``k`` before heatsearch 0.2.)
        alpha: as in :func:`alpha_query_expansion`; default 3.
        block_size: ignored since heatsearch 0.2, where the neighbours come from the Rust
            kNN graph (tiled, memory ``O(n k)``); passing it warns (DeprecationWarning).

    Returns:
        Augmented database ``(n, d)`` in ``X``'s dtype, L2-normalised.

    Complexity: ``n^2 d / 2`` multiply-adds for the kNN graph plus ``O(n k d)``.

    Raises:
        InvalidDTypeError / InvalidInputError: as in :func:`alpha_query_expansion`.
    """
    from .knn import knn_graph

    if block_size is not None:
        warnings.warn(
            "alpha_database_augmentation: block_size is ignored since heatsearch 0.2 (the "
            "neighbours come from the tiled Rust kNN graph) and is removed in 0.3",
            DeprecationWarning,
            stacklevel=3,
        )
    Xa = _validate.rows(X, "X", "n")
    _validate.finite(Xa, "X")
    nb = _validate.integer(neighbors, "neighbors")
    a = _exponent(alpha)
    if min(nb, Xa.shape[0] - 1) <= 0:
        return l2_normalize(Xa)
    graph = knn_graph(Xa, neighbors=nb)
    sims = graph.similarities.astype(np.float64)
    return l2_normalize(_alpha_combination(Xa, Xa, graph.indices, sims, a))


def _weighted_sum(
    X: np.ndarray, base: np.ndarray, neighbours: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """``base_i + sum_j weights[i, j] X[neighbours[i, j]]``, one neighbour rank at a time.

    A loop over the k columns keeps memory at one ``(rows, d)`` gather instead of
    ``(rows, k, d)``.
    """
    out = np.array(base, dtype=X.dtype, order="C", copy=True)
    for j in range(neighbours.shape[1]):
        out += weights[:, j, None] * X[neighbours[:, j]]
    return out


def _alpha_combination(
    X: np.ndarray, base: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float
) -> np.ndarray:
    """``base_i + sum_j max(sims[i, j], 0)^alpha X[neighbours[i, j]]`` (weights in float64,
    rounded to ``X``'s dtype), the formula of alpha-QE and alpha-DBA.

    For unit vectors every weight is at most 1. Vectors that are not unit can have
    similarities above 1, and a large ``alpha`` then overflows the weights: a row with such a
    similarity is computed scaled by ``1 / max_j weight`` instead (in log space), a positive
    factor that the L2 normalisation which follows removes."""
    positive = np.maximum(sims, 0.0)
    if alpha == 0 or not (positive > 1.0).any():
        weights = (positive**alpha).astype(X.dtype)
        return _weighted_sum(X, base, neighbours, weights)
    # log(weight_j / scale) = alpha (log s_j - log s_max) <= 0, and the base's 1 / scale =
    # s_max^-alpha: nothing overflows (an underflow to 0 is the right limit).
    log_max = np.log(np.maximum(positive.max(axis=1, keepdims=True), 1.0))
    with np.errstate(divide="ignore", over="ignore", under="ignore"):
        weights = np.exp(alpha * (np.log(positive) - log_max)).astype(X.dtype)
        base_weight = np.exp(-alpha * log_max).astype(X.dtype)
    return _weighted_sum(X, base * base_weight, neighbours, weights)


def _exponent(alpha: float) -> float:
    """QE's exponent: a finite real ``>= 0``."""
    return _validate.real(alpha, "alpha", low=0.0)
