"""HeW in pure NumPy, transcribed from docs/ALGORITHM.md section 1 as written there.

Dense ``L = I - D^-1 A`` and ``G = inv(L)`` (``2 N^3`` flops instead of the Rust path's
``2 N^3 / 3``), everything in the input's dtype.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate
from ..hew import DEFAULT_GROUND, DEFAULT_THRESHOLD, EQUAL_TO_MEAN_ULPS

__all__ = ["hew_weights", "hew_pool", "hew_pool_batch", "local_mean"]


def _weights(F: np.ndarray, mu: Optional[np.ndarray], threshold: float, ground: float) -> np.ndarray:
    dtype = F.dtype
    n = F.shape[0]
    if n == 1:
        return np.ones(1, dtype)
    if mu is None:
        mu = F.mean(axis=0, dtype=np.float64).astype(dtype)
    # 1. centre and L2-normalise; a cell equal to the mean (up to rounding: 16 eps relative)
    #    keeps a zero vector.
    Fc = F - mu
    norms = np.linalg.norm(Fc, axis=1)
    tolerance = EQUAL_TO_MEAN_ULPS * np.finfo(dtype).eps * (np.linalg.norm(F, axis=1) + np.linalg.norm(mu))
    equal_to_mean = norms <= tolerance
    Fc = np.divide(Fc, norms[:, None], out=np.zeros_like(Fc), where=~equal_to_mean[:, None])
    # 2. affinity: zero diagonal, no edge between two dead cells, threshold.
    A = Fc @ Fc.T
    np.fill_diagonal(A, 0)
    dead = ~np.any(F != 0, axis=1)
    A[np.ix_(dead, dead)] = 0
    A[A < threshold] = 0
    positive = A > 0
    if not positive.any():
        return np.ones(n, dtype)
    # 3. ground conductance: ground * mean of the positive affinities' values.
    z = dtype.type(ground) * A[positive].mean(dtype=dtype)
    # 4. degrees, L = I - D^-1 A, G = L^-1.
    D = A.sum(axis=1) + z
    L = np.eye(n, dtype=dtype) - A / D[:, None]
    G = np.linalg.inv(L)
    # 5. T_j = 1/(N+1) sum_{i != j} G_ij / G_jj.
    ratio = G / np.diag(G)[None, :]
    T = (ratio.sum(axis=0) - np.diag(ratio)) / dtype.type(n + 1)
    # 6. w_j = 1 / T_j; isolated cells get the largest weight of the others.
    isolated = ~positive.any(axis=1)
    w = np.empty(n, dtype)
    w[~isolated] = 1 / T[~isolated]
    w[isolated] = w[~isolated].max()
    return w


def hew_weights(
    fmap: ArrayLike,
    mean: Optional[ArrayLike] = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    ground: float = DEFAULT_GROUND,
) -> np.ndarray:
    """Reference of :func:`heatsearch.hew_weights` (same arguments, shapes and errors)."""
    mat, spatial, mu, t, g = _validate.hew_arguments(fmap, mean, threshold, ground)
    _validate.hew_data([mat], mu, ["fmap"])
    return _weights(mat, mu, t, g).reshape(spatial)


def hew_pool(
    fmap: ArrayLike,
    mean: Optional[ArrayLike] = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    ground: float = DEFAULT_GROUND,
) -> np.ndarray:
    """Reference of :func:`heatsearch.hew_pool`: ``sum_j w_j f_j``, ``(C,)``."""
    mat, _, mu, t, g = _validate.hew_arguments(fmap, mean, threshold, ground)
    _validate.hew_data([mat], mu, ["fmap"])
    return _weights(mat, mu, t, g) @ mat


def hew_pool_batch(
    fmaps: Sequence[ArrayLike],
    mean: Optional[ArrayLike] = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    ground: float = DEFAULT_GROUND,
) -> np.ndarray:
    """Reference of :func:`heatsearch.hew_pool_batch`: one map after the other, ``(B, C)``."""
    mats, mu, t, g = _validate.hew_batch_arguments(fmaps, mean, threshold, ground)
    # A bad map fails the batch before any is computed.
    _validate.hew_data(mats, mu, [f"fmaps[{b}]" for b in range(len(mats))])
    return np.stack([_weights(m, mu, t, g) @ m for m in mats])


def local_mean(fmaps: Sequence[ArrayLike]) -> np.ndarray:
    """Reference of :func:`heatsearch.local_mean`: all cells of all maps, averaged."""
    mats = _validate.feature_maps(fmaps)
    _validate.hew_data(mats, None, [f"fmaps[{b}]" for b in range(len(mats))])
    total = sum(m.sum(axis=0, dtype=np.float64) for m in mats)
    cells = sum(m.shape[0] for m in mats)
    return (total / cells).astype(mats[0].dtype)
