"""Query expansion and database augmentation: average QE, alpha-QE, alpha-DBA.

Each replaces a vector by the L2-normalised (weighted) sum of itself and its top-k neighbours
in the database, so that a second search by inner product finds what those neighbours see:

- :func:`average_query_expansion` (AQE; Chum et al., ICCV 2007): ``l2n(mean(q, x_1..x_k))``
  over the query's top k; k = 10 as in CroW, cirtorch and the paper (ALGORITHM.md section 2).
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

from typing import Any, Optional, Tuple

import numpy as np

from . import _checks
from .errors import InvalidDTypeError, InvalidInputError
from .postprocess import l2_normalize

__all__ = [
    "average_query_expansion",
    "alpha_query_expansion",
    "alpha_database_augmentation",
    "DEFAULT_K",
    "DEFAULT_ALPHA",
]

#: Neighbours used by every method: 10 (average QE "top 10" of CroW, cirtorch and the paper).
DEFAULT_K = 10
#: Exponent of the similarity weights: 3 (Radenovic et al. 2018, dirtorch, cirtorch).
DEFAULT_ALPHA = 3.0
#: The exact kNN search of alpha-DBA works on blocks of about this many similarities
#: (``block_size * n``); peak memory is about 14 bytes per entry (float32), 18 (float64).
KNN_BLOCK_ENTRIES = 1 << 22


def average_query_expansion(X: Any, Q: Any, ranks: Any, k: int = DEFAULT_K) -> np.ndarray:
    """Average query expansion: ``q' = l2n(mean(q, x_r1, ..., x_rk))``.

    Args:
        X: database ``(n, d)``, float32 or float64, L2-normalised rows expected.
        Q: queries ``(nq, d)``, same dtype and ``d`` as ``X``.
        ranks: ``(nq, m)`` integer array, 0-based database indices best first (the first-pass
            ranking; cirtorch/revisitop's ``(n, nq)`` layout must be transposed). Only the
            first ``k`` columns are used; they must not repeat an index.
        k: neighbours averaged, ``>= 0``; default 10 (CroW, cirtorch, the paper). ``k = 0``
            returns ``l2_normalize(Q)``; ``k > m`` is clamped to ``m`` (all ranked items).

    Returns:
        New queries ``(nq, d)`` in ``X``'s dtype, L2-normalised (a zero mean stays zero).

    Raises:
        InvalidDTypeError (a TypeError): non-float ``X``/``Q``, ``X`` and ``Q`` of different
            dtypes, non-integer ``ranks`` or ``k``.
        InvalidInputError (a ValueError): shapes (``X``, ``Q`` not 2-D, different ``d``,
            ``ranks`` not ``(nq, m)``), NaN/Inf, indices out of ``[0, n)`` or repeated in the
            top k, ``k < 0``.
    """
    Xa, Qa = _checks.descriptor_pair(X, Q, finite=True)
    top = _checks.ranking(ranks, Qa.shape[0], Xa.shape[0], top=_count(k, "k"))
    ones = np.ones(top.shape, dtype=Xa.dtype)
    total = _weighted_sum(Xa, Qa, top, ones)
    # mean = sum / (k + 1): same direction, but eps in l2_normalize applies to the mean.
    total /= Xa.dtype.type(top.shape[1] + 1)
    return l2_normalize(total)


def alpha_query_expansion(
    X: Any, Q: Any, ranks: Any, k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA
) -> np.ndarray:
    """Alpha query expansion: ``q' = l2n(q + sum_j max(q . x_rj, 0)^alpha x_rj)``, j <= k.

    Args:
        X, Q, ranks: as in :func:`average_query_expansion`.
        k: neighbours used, ``>= 0``; default 10. ``k = 0`` returns ``l2_normalize(Q)``;
            ``k > m`` is clamped to ``m``.
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
    Xa, Qa = _checks.descriptor_pair(X, Q, finite=True)
    top = _checks.ranking(ranks, Qa.shape[0], Xa.shape[0], top=_count(k, "k"))
    a = _exponent(alpha)
    sims = np.empty(top.shape, dtype=np.float64)
    for j in range(top.shape[1]):
        sims[:, j] = np.einsum("ij,ij->i", Qa, Xa[top[:, j]], dtype=np.float64)
    return l2_normalize(_weighted_sum(Xa, Qa, top, _alpha_weights(sims, a, Xa.dtype)))


def alpha_database_augmentation(
    X: Any, k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA, *, block_size: Optional[int] = None
) -> np.ndarray:
    """Alpha database-side augmentation: alpha-QE of every database vector on the database.

    ``x_i' = l2n(x_i + sum_j max(x_i . x_j, 0)^alpha x_j)`` over the ``k`` database items
    ``j != i`` with the largest inner product ``x_i . x_j`` (exact search). The item itself is
    its own top-1 neighbour, with weight 1 (its similarity to itself for a unit vector, and
    the query's weight in alpha-QE); it is counted exactly once, by index: the search leaves
    ``i`` out and ``k`` counts the OTHER neighbours, as dirtorch's ``expand_descriptors``
    does. An exact duplicate of ``x_i`` stored at another index is another neighbour. Ties at
    the k-th place go to the smaller index. Equals ``alpha_query_expansion(X, X, ranks, k,
    alpha)`` with each row of ``ranks`` the exact ranking of the other items.

    Args:
        X: database ``(n, d)``, float32 or float64, L2-normalised rows expected.
        k: other neighbours, ``>= 0``; default 10. ``k = 0`` returns ``l2_normalize(X)``;
            ``k > n - 1`` is clamped to ``n - 1``.
        alpha: as in :func:`alpha_query_expansion`; default 3.
        block_size: database rows searched at once; default about ``2**22 / n`` (at least 1),
            keeping the ``(block_size, n)`` similarity block and its temporaries near 60 MB.

    Returns:
        Augmented database ``(n, d)`` in ``X``'s dtype, L2-normalised.

    Complexity: ``O(n^2 d)`` for the exact search (blocked matrix products) plus ``O(n k d)``.

    Raises:
        InvalidDTypeError / InvalidInputError: as in :func:`alpha_query_expansion`, and for a
        ``block_size`` that is not an int ``>= 1``.
    """
    Xa = _checks.row_matrix(X, "X", "n", finite=True)
    n = Xa.shape[0]
    kk = min(_count(k, "k"), max(n - 1, 0))
    a = _exponent(alpha)
    block = _block_size(block_size, n)
    if kk == 0:
        return l2_normalize(Xa)
    neighbours, sims = _inner_product_knn(Xa, kk, block)
    weights = _alpha_weights(sims.astype(np.float64), a, Xa.dtype)
    return l2_normalize(_weighted_sum(Xa, Xa, neighbours, weights))


def _inner_product_knn(X: np.ndarray, k: int, block: int) -> Tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row of ``X`` among the OTHER rows, by inner product.

    Returns ``(indices (n, k) int64, similarities (n, k) in X's dtype)``, best first, ties by
    smaller index; ``1 <= k <= n - 1``. Rows are processed ``block`` at a time. This is the
    seam where a Rust search can replace the NumPy one.
    """
    n = X.shape[0]
    indices = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=X.dtype)
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = np.arange(stop - start)
        S = X[start:stop] @ X.T  # (b, n)
        S[rows, start + rows] = -np.inf  # an item is not its own "other" neighbour
        part = np.argpartition(S, n - k, axis=1)[:, n - k :]  # the k largest, any order
        vals = np.take_along_axis(S, part, axis=1)
        kth = vals.min(axis=1)
        n_above = np.count_nonzero(S > kth[:, None], axis=1)
        n_at = np.count_nonzero(S == kth[:, None], axis=1)
        # Exact ties across the k-th place (duplicates in the database): argpartition picks
        # any of them; take the smallest indices so the result is deterministic.
        for r in np.flatnonzero(n_above + n_at > k):
            s = S[r]
            above = np.flatnonzero(s > kth[r])
            at = np.flatnonzero(s == kth[r])[: k - above.size]
            part[r] = np.concatenate([above, at])
            vals[r] = s[part[r]]
        order = np.lexsort((part, -vals), axis=1)
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        sims[start:stop] = np.take_along_axis(vals, order, axis=1)
    return indices, sims


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


def _alpha_weights(sims: np.ndarray, alpha: float, dtype: np.dtype) -> np.ndarray:
    """``max(sim, 0)^alpha`` computed in float64, returned in ``dtype``."""
    return (np.maximum(sims, 0.0) ** alpha).astype(dtype)


def _count(k: Any, name: str) -> int:
    """An int ``>= 0``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidDTypeError(f"{name} must be an int, got {type(k).__name__}")
    if k < 0:
        raise InvalidInputError(f"{name} must be >= 0, got {k}")
    return int(k)


def _exponent(alpha: Any) -> float:
    """A finite real ``>= 0``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise InvalidDTypeError(f"alpha must be a real number, got {type(alpha).__name__}")
    a = float(alpha)
    if not (np.isfinite(a) and a >= 0):
        raise InvalidInputError(f"alpha must be a finite number >= 0, got {alpha}")
    return a


def _block_size(block_size: Any, n: int) -> int:
    """Rows per kNN block: the given int ``>= 1``, or about ``KNN_BLOCK_ENTRIES / n``."""
    if block_size is None:
        return max(1, KNN_BLOCK_ENTRIES // max(n, 1))
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise InvalidDTypeError(
            f"block_size must be an int or None, got {type(block_size).__name__}"
        )
    if block_size < 1:
        raise InvalidInputError(f"block_size must be >= 1, got {block_size}")
    return int(block_size)
