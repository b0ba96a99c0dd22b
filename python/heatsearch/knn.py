"""Exact k-nearest-neighbour graph of a database: the graph diffusion runs on.

Build it once with :func:`knn_graph` and pass it to :func:`heatsearch.diffusion_rerank` for
every batch of queries (``graph=``), or wrap neighbour lists computed elsewhere (faiss, as in
fyang93/diffusion) in a :class:`KnnGraph`.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from . import _core, _validate
from ._compat import accepts_old_arguments

__all__ = ["KnnGraph", "knn_graph", "DEFAULT_NEIGHBORS"]

#: Neighbours per database item: 50 in Iscen et al., "Efficient Diffusion on Region
#: Manifolds", CVPR 2017 (their diffusion-retrieval code and fyang93/diffusion alike). The
#: value is the Rust core's (rust/core/src/knn.rs), the one place it is written.
DEFAULT_NEIGHBORS: int = _core.KNN_NEIGHBORS


class KnnGraph:
    """The k nearest neighbours of every database item, best first.

    Attributes (read-only arrays):
        indices: ``(n, k)`` int64, ``indices[i, p]`` the 0-based database index of item i's
            p-th nearest neighbour.
        similarities: ``(n, k)`` float32 or float64, the inner products beside them,
            non-increasing along each row for a graph built by :func:`knn_graph`.
        n: number of database items (rows).
        neighbors: neighbours per item (columns); ``k`` is its deprecated 0.1 name.

    Build one with :func:`knn_graph`, or from neighbour lists of your own: ``KnnGraph(indices,
    similarities)`` checks that the shapes agree, that every index is in ``[0, n)`` and that
    no row repeats an index. An item listed as its own neighbour (faiss does that) is allowed;
    diffusion ignores such self links. The arrays are copied (indices as int64), so changing
    yours afterwards does not change the graph.
    """

    __slots__ = ("_indices", "_similarities")

    def __init__(self, indices: ArrayLike, similarities: ArrayLike) -> None:
        idx, sims = _validate.knn_graph_arrays(indices, similarities)
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
    def neighbors(self) -> int:
        return int(self._indices.shape[1])

    @property
    def k(self) -> int:
        """Deprecated name of :attr:`neighbors` (removed in heatsearch 0.3)."""
        warnings.warn(
            "KnnGraph.k is now KnnGraph.neighbors; the old name is removed in heatsearch 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.neighbors

    def __repr__(self) -> str:
        return (
            f"KnnGraph(n={self.n}, neighbors={self.neighbors}, "
            f"dtype={self._similarities.dtype})"
        )


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@accepts_old_arguments(positional=("neighbors",), renamed={"k": "neighbors"})
def knn_graph(X: ArrayLike, *, neighbors: int = DEFAULT_NEIGHBORS) -> KnnGraph:
    """The exact kNN graph of the database by inner product.

    Args:
        X: database ``(n, d)``, float32 or float64, one descriptor per ROW, any layout.
        neighbors: neighbours per item (``>= 1``), default 50 (Iscen et al. CVPR 2017).
            Clamped to ``n - 1``. (Called ``k`` before heatsearch 0.2; the old spelling
            still works, with a DeprecationWarning.)

    Returns:
        A :class:`KnnGraph`: ``indices (n, min(neighbors, n - 1))`` int64 and
        ``similarities`` (inner products, ``X``'s dtype), best first. Each item is excluded
        from its own list BY INDEX: a duplicate of item i at another index is one of its
        neighbours (score equal to the self-similarity). Equal similarities are ordered by
        the lower index.

    Raises:
        InvalidDTypeError: a dtype other than float32/float64, ``neighbors`` not an int.
        InvalidInputError: ``X`` not 2-D, NaN or infinity in ``X``, ``neighbors < 1``.

    Complexity: ``n^2 d / 2`` multiply-adds (blocked GEMM fused with the top-k selection,
    as in :func:`heatsearch.search`), memory ``O(n k)``; results do not depend on the
    number of threads.
    """
    x, nb = _validate.knn_arguments(X, neighbors)
    indices, sims = _core.knn_graph(x, neighbors=nb)
    return KnnGraph._wrap(indices, sims)
