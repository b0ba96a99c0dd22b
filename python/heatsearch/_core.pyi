# Type stubs of the Rust extension (rust/python), checked with `python -m mypy.stubtest heatsearch._core`.
#
# The extension is private: call the Python API (heatsearch.hew, heatsearch.search, ...),
# which checks every argument first (heatsearch._validate). Arguments are keyword-only after
# the arrays, named and ordered as in the Python API.
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import NDArray

# A float32 or float64 array: results have the dtype of the first array argument.
_Floats = Union[NDArray[np.float32], NDArray[np.float64]]
_Ints = NDArray[np.int64]

__all__ = [
    "__version__",
    "hew_weights",
    "hew_pool",
    "hew_pool_batch",
    "local_mean",
    "search",
    "knn_graph",
    "heat_rerank",
    "diffusion_rerank",
    "check_finite",
    "check_rankings",
    "check_finite_rows",
    "check_products",
    "set_num_threads",
    "get_num_threads",
    "gemm_buffer_bytes",
    "HEW_THRESHOLD",
    "HEW_GROUND",
    "GROUND_RANGE",
    "EQUAL_TO_MEAN_ULPS",
    "HER_DEPTH",
    "HER_GROUND",
    "KNN_NEIGHBORS",
    "DIFFUSION_QUERY_NEIGHBORS",
    "DIFFUSION_ALPHA",
    "DIFFUSION_GAMMA",
    "DIFFUSION_TRUNCATION",
    "DIFFUSION_ITERATIONS",
    "DIFFUSION_TOL",
    "MAX_ITEMS",
]

__version__: str

# The Rust core's defaults (the one place they are written).
HEW_THRESHOLD: float
HEW_GROUND: float
GROUND_RANGE: Tuple[float, float]
EQUAL_TO_MEAN_ULPS: float
HER_DEPTH: int
HER_GROUND: float
KNN_NEIGHBORS: int
DIFFUSION_QUERY_NEIGHBORS: int
DIFFUSION_ALPHA: float
DIFFUSION_GAMMA: float
DIFFUSION_TRUNCATION: int
DIFFUSION_ITERATIONS: int
DIFFUSION_TOL: float
MAX_ITEMS: int

def hew_weights(
    fmap: _Floats, mean: Optional[_Floats], *, threshold: float, ground: float
) -> _Floats:
    """HeW weights ``(N,)`` of one ``(N, C)`` map; ``mean (C,)`` of its dtype or None."""

def hew_pool(fmap: _Floats, mean: Optional[_Floats], *, threshold: float, ground: float) -> _Floats:
    """HeW descriptor ``(C,)`` of one ``(N, C)`` map."""

def hew_pool_batch(
    fmaps: Sequence[_Floats], mean: Optional[_Floats], *, threshold: float, ground: float
) -> _Floats:
    """HeW descriptors ``(B, C)`` of B maps ``(N_b, C)`` of one dtype, in parallel."""

def local_mean(fmaps: Sequence[_Floats]) -> _Floats:
    """Mean ``(C,)`` of all local features of all maps."""

def search(x: _Floats, q: _Floats, *, k: int) -> Tuple[_Ints, _Floats]:
    """Top ``k <= n`` ``(ranks (nq, k), scores (nq, k))`` of ``q (nq, d)`` in ``x (n, d)``."""

def knn_graph(x: _Floats, *, neighbors: int) -> Tuple[_Ints, _Floats]:
    """``(indices (n, k'), similarities (n, k'))``, ``k' = min(neighbors, n - 1)``."""

def heat_rerank(
    x: _Floats,
    q: _Floats,
    ranks: _Ints,
    *,
    depth: int,
    ground: float,
    scores: Optional[_Floats],
) -> Tuple[_Ints, _Floats]:
    """HeR of the first-pass ``ranks (nq, m)``: ``(ranks (nq, m), scores (nq, m))``."""

def diffusion_rerank(
    x: _Floats,
    q: _Floats,
    ranks: _Ints,
    *,
    scores: Optional[_Floats],
    graph_indices: _Ints,
    graph_similarities: _Floats,
    query_neighbors: int,
    alpha: float,
    gamma: float,
    truncation: Optional[int],
    iterations: int,
    tol: float,
) -> Tuple[_Ints, _Floats]:
    """Diffusion re-ranking of the first-pass ``ranks (nq, m)`` on a kNN graph."""

def check_finite(a: _Floats, name: str) -> None:
    """InvalidInputError naming the first NaN or infinity of a 1-D or 2-D array."""

def check_finite_rows(a: _Floats, ranks: _Ints, name: str) -> None:
    """InvalidInputError naming the first NaN or infinity (smallest row, then column) in the
    rows of the 2-D ``a`` that ``ranks (nq, m)`` names; entries must be in ``[0, n)``."""

def check_products(products: _Floats, what: str) -> None:
    """InvalidInputError saying that the inner products ``what`` overflow the dtype, when
    the 2-D ``products`` hold a non-finite value."""

def check_rankings(ranks: _Ints, n: Optional[int], name: str) -> None:
    """InvalidInputError naming the first entry of ``ranks (nq, m)`` outside ``[0, n)`` (or
    negative, ``n = None``) or repeated within its row."""

def set_num_threads(n: int) -> None:
    """Use ``n >= 1`` threads from now on."""

def get_num_threads() -> int:
    """The number of threads the kernels use."""

def gemm_buffer_bytes() -> int:
    """Bytes of address space each kernel thread takes for the matrix product's buffer."""
