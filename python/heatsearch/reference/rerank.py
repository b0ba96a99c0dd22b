"""HeR in pure NumPy, transcribed from docs/ALGORITHM.md section 2 as written there.

Per query the dense ``L = I - D^-1 A`` and ``G = inv(L)`` (``2 (k+1)^3`` flops instead of the
Rust path's one iterative solve), the score of each candidate being column ``q`` of ``G``;
everything in the input's dtype (the centring is done in float64 and rounded, as in Rust).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate
from .._compat import accepts_old_arguments
from ..hew import EQUAL_TO_MEAN_ULPS
from ..rerank import DEFAULT_DEPTH, DEFAULT_GROUND

__all__ = ["heat_rerank"]


def _temperatures(T: np.ndarray, ground: float) -> np.ndarray:
    """``G_{i,q}`` for the rows of ``T`` (``(k+1, d)``, query last), ``(k,)``."""
    dtype = T.dtype
    k = T.shape[0] - 1
    # 1-2. centre by the mean of the k + 1 rows (no re-normalisation); rows equal to the mean
    # up to rounding become zero vectors.
    T64 = T.astype(np.float64)
    mu = T64.mean(axis=0)
    C = T64 - mu
    tol = EQUAL_TO_MEAN_ULPS * np.finfo(dtype).eps
    equal = np.linalg.norm(C, axis=1) <= tol * (np.linalg.norm(T64, axis=1) + np.linalg.norm(mu))
    C[equal] = 0
    C = C.astype(dtype)
    # 3. affinity: Gram, zero diagonal, threshold 0.
    A = C @ C.T
    np.fill_diagonal(A, 0)
    A[A < 0] = 0
    positive = A > 0
    if not positive.any():
        # A = 0: L = I, G = I, every candidate's temperature is 0.
        return np.zeros(k, dtype)
    z = dtype.type(ground) * A[positive].mean(dtype=dtype)
    D = A.sum(axis=1) + z
    L = np.eye(k + 1, dtype=dtype) - A / D[:, None]
    G = np.linalg.inv(L)
    # 4. the query's column; isolated candidates are exactly 0.
    t = G[:k, k].copy()
    t[~positive.any(axis=1)[:k]] = 0
    return t


@accepts_old_arguments(positional=("depth",), renamed={"k": "depth"})
def heat_rerank(
    X: ArrayLike,
    Q: ArrayLike,
    ranks: ArrayLike,
    *,
    depth: int = DEFAULT_DEPTH,
    ground: float = DEFAULT_GROUND,
    scores: Optional[ArrayLike] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`heatsearch.heat_rerank` (same arguments, shapes, rules and errors).

    ``ranks`` and ``scores`` are ``(nq, m)``, best first (cirtorch/revisitop's ``(n, nq)``
    layout must be transposed). One query after the other, a dense inverse each: slow on
    purpose.
    """
    Xa, Qa, r, s, kk, g = _validate.her_arguments(X, Q, ranks, scores, depth, ground)
    _validate.rerank_data(Xa, Qa, s, r)
    nq, m = r.shape
    out_ranks = r.copy()
    out_scores = s.copy() if s is not None else np.zeros((nq, m), Xa.dtype)
    if s is None:
        with np.errstate(over="ignore", invalid="ignore"):
            for i in range(nq):
                # In float64, as the Rust path accumulates it, then rounded.
                out_scores[i, kk:] = Xa[r[i, kk:]].astype(np.float64) @ Qa[i].astype(np.float64)
        _validate.products(out_scores[:, kk:], "Q and X")
    for i in range(nq):
        if kk == 0:
            continue
        top = r[i, :kk]
        t = _temperatures(np.vstack([Xa[top], Qa[i : i + 1]]), g)
        order = np.argsort(-t, kind="stable")
        out_ranks[i, :kk] = top[order]
        out_scores[i, :kk] = t[order]
    return out_ranks, out_scores
