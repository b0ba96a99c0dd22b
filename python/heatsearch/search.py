"""Exact inner-product search: the first pass of every retrieval pipeline.

Descriptors are ROWS: a database ``X`` of shape ``(n, d)`` and queries ``Q`` of shape
``(nq, d)``, float32 or float64 (kept: no conversion), any memory layout (C or Fortran order,
strided views). On L2-normalised descriptors (what the paper's pipeline produces) the inner
product is the cosine similarity and ranking by it equals ranking by L2 distance.

The Rust path computes ``Q @ X.T`` in blocks (faer's GEMM) and selects each query's top k
while the block is still in cache, on heatsearch's thread pool with the GIL released: it
never holds the full ``(nq, n)`` score matrix, unlike ``argsort(-(Q @ X.T))``. The pure-NumPy
transcription is :func:`heatsearch.reference.search`.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _checks, _core
from .errors import InvalidDTypeError, InvalidInputError

__all__ = ["search"]


def search(X: Any, Q: Any, k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k search by inner product.

    Args:
        X: database ``(n, d)``, float32 or float64, one descriptor per ROW, any layout.
        Q: queries ``(nq, d)``, same dtype and ``d`` as ``X`` (one query: ``q[None, :]``).
        k: results per query. ``None`` (default) ranks the whole database; ``k > n`` is
            clamped to ``n``; ``k = 0`` gives ``(nq, 0)`` arrays.

    Returns:
        ``(ranks, scores)``, both ``(nq, min(k, n))``: ``ranks`` int64 0-based database
        indices, best first; ``scores`` the inner products ``<q, x>`` in ``X``'s dtype,
        non-increasing along each row. Equal scores are ordered by the lower database index.
        NOTE: cirtorch and revisitop use the transpose, ``ranks`` of shape ``(n, nq)`` (one
        COLUMN per query, ``argsort(-X.T @ Q, axis=0)`` with descriptors as columns): use
        ``ranks.T`` with their code.

    Raises:
        InvalidDTypeError (a TypeError): a dtype other than float32/float64, or ``Q`` of
            another dtype than ``X``.
        InvalidInputError (a ValueError): arrays that are not 2-D, ``Q`` of another
            dimension ``d``, NaN or infinity in ``X`` or ``Q``, ``k < 0``.

    Complexity: ``nq * n * d`` multiply-adds in float32/float64 GEMM blocks, ``O(nq * n)``
    comparisons; memory ``O(nq * k)`` plus a score block of about 1 MB per thread. Results do
    not depend on the number of threads (:func:`heatsearch.set_num_threads`).
    """
    X, Q = database_and_queries(X, Q)
    kk = count(k, "k")
    return _core.search(X, Q, None if kk is None else min(kk, X.shape[0]))


def database(X: Any, name: str = "X") -> np.ndarray:
    """``X`` as a 2-D float32/float64 array (kept as it is)."""
    return _checks.row_matrix(X, name, "n")


def database_and_queries(X: Any, Q: Any) -> Tuple[np.ndarray, np.ndarray]:
    """``X (n, d)`` and ``Q (nq, d)`` of one float dtype, checked (not converted)."""
    return _checks.descriptor_pair(X, Q)


def count(value: Any, name: str, *, minimum: int = 0, allow_none: bool = True) -> Optional[int]:
    """An integer ``>= minimum`` (or None when allowed), else the matching heatsearch error."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidDTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
