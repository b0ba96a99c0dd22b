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

from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _core, _validate

__all__ = ["search"]


def search(X: ArrayLike, Q: ArrayLike, k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
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
    x, q, kk = _validate.search_arguments(X, Q, k)
    return _core.search(x, q, k=kk)
