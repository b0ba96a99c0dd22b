"""Pure-NumPy reference implementations of heatsearch's kernels.

Literal transcriptions of docs/ALGORITHM.md (dense matrices, explicit inverses, computed in the
input's dtype), with the same signatures, degenerate-case rules and errors as the Rust path.
Every result is computed by NumPy (SciPy for diffusion's conjugate gradient), never by Rust;
only the input checks are shared with the Rust path (heatsearch._validate, whose data checks
are the core's), so that a mistake gets the same message on both. They are slow on purpose:
their job is to be obviously right, so the fast path can be tested against them and users
can compare the two.
"""

from .diffusion import diffusion_rerank
from .duplicates import duplicate_groups
from .hew import hew_pool, hew_pool_batch, hew_weights, local_mean
from .rerank import heat_rerank
from .search import knn_graph, search

__all__ = [
    "hew_weights",
    "hew_pool",
    "hew_pool_batch",
    "local_mean",
    "heat_rerank",
    "search",
    "knn_graph",
    "diffusion_rerank",
    "duplicate_groups",
]
