"""Exact k-nearest-neighbour graph of a database: the graph diffusion runs on.

Build it once with :func:`knn_graph` and pass it to :func:`heatsearch.diffusion_rerank` for
every batch of queries (``graph=``), or wrap neighbour lists computed elsewhere (faiss, as in
fyang93/diffusion) in a :class:`KnnGraph`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _checks, _core
from .errors import InvalidDTypeError, InvalidInputError
from .search import count, database

__all__ = ["KnnGraph", "knn_graph", "DEFAULT_K"]

#: Neighbours per database item: ``k = 50`` in Iscen et al., "Efficient Diffusion on Region
#: Manifolds", CVPR 2017 (their diffusion-retrieval code and fyang93/diffusion alike).
DEFAULT_K = 50


class KnnGraph:
    """The k nearest neighbours of every database item, best first.

    Attributes (read-only arrays):
        indices: ``(n, k)`` int64, ``indices[i, p]`` the 0-based database index of item i's
            p-th nearest neighbour.
        similarities: ``(n, k)`` float32 or float64, the inner products beside them,
            non-increasing along each row for a graph built by :func:`knn_graph`.
        n: number of database items (rows).
        k: neighbours per item (columns).

    Build one with :func:`knn_graph`, or from neighbour lists of your own: ``KnnGraph(indices,
    similarities)`` checks that the shapes agree, that every index is in ``[0, n)`` and that
    no row repeats an index. An item listed as its own neighbour (faiss does that) is allowed;
    diffusion ignores such self links. The arrays are copied (indices as int64), so changing
    yours afterwards does not change the graph.
    """

    __slots__ = ("_indices", "_similarities")

    def __init__(self, indices: Any, similarities: Any) -> None:
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise InvalidDTypeError(f"indices must be an integer array, got dtype {idx.dtype}")
        sims = _checks.float_array(similarities, "similarities")
        if idx.ndim != 2:
            raise InvalidInputError(f"indices must be a 2-D (n, k) array, got shape {idx.shape}")
        if sims.shape != idx.shape:
            raise InvalidInputError(
                f"similarities must have the shape of indices {idx.shape}, got {sims.shape}"
            )
        n = idx.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise InvalidInputError(
                f"indices must be database indices in [0, {n}) (one row per item), got {bad}"
            )
        if idx.shape[1] > 1:
            srt = np.sort(idx, axis=1)
            rep = np.nonzero(srt[:, 1:] == srt[:, :-1])
            if rep[0].size:
                i = int(rep[0][0])
                raise InvalidInputError(
                    f"a row of indices must not repeat an index, got {srt[i, rep[1][0]]} twice "
                    f"in row {i}"
                )
        _checks.all_finite(sims, "similarities")
        self._indices = _frozen(np.array(idx, dtype=np.int64, order="C"))
        self._similarities = _frozen(np.array(sims, order="C"))

    @classmethod
    def _wrap(cls, indices: np.ndarray, similarities: np.ndarray) -> "KnnGraph":
        """A graph of arrays known to be valid and owned by nobody else (no checks, no copy)."""
        graph = cls.__new__(cls)
        graph._indices = _frozen(indices)
        graph._similarities = _frozen(similarities)
        return graph

    @property
    def indices(self) -> np.ndarray:
        return self._indices

    @property
    def similarities(self) -> np.ndarray:
        return self._similarities

    @property
    def n(self) -> int:
        return int(self._indices.shape[0])

    @property
    def k(self) -> int:
        return int(self._indices.shape[1])

    def __repr__(self) -> str:
        return f"KnnGraph(n={self.n}, k={self.k}, dtype={self._similarities.dtype})"


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def knn_graph(X: Any, k: int = DEFAULT_K) -> KnnGraph:
    """The exact kNN graph of the database by inner product.

    Args:
        X: database ``(n, d)``, float32 or float64, one descriptor per ROW, any layout.
        k: neighbours per item, default 50 (Iscen et al. CVPR 2017). Clamped to ``n - 1``.

    Returns:
        A :class:`KnnGraph`: ``indices (n, min(k, n - 1))`` int64 and ``similarities`` (inner
        products, ``X``'s dtype), best first. Each item is excluded from its own list BY INDEX:
        a duplicate of item i at another index is one of its neighbours (score equal to the
        self-similarity). Equal similarities are ordered by the lower index.

    Raises:
        InvalidDTypeError: a dtype other than float32/float64, ``k`` not an int.
        InvalidInputError: ``X`` not 2-D, NaN or infinity in ``X``, ``k < 1``.

    Complexity: ``n^2 d`` multiply-adds (blocked GEMM fused with the top-k selection, as in
    :func:`heatsearch.search`), memory ``O(n k)``; results do not depend on the number of
    threads.
    """
    x = database(X, "X")
    kk = count(k, "k", minimum=1, allow_none=False)
    assert kk is not None
    indices, sims = _core.knn_graph(x, min(kk, max(x.shape[0] - 1, 0)))
    return KnnGraph._wrap(indices, sims)
