"""Pure-NumPy reference implementations of heatsearch's kernels.

Literal transcriptions of docs/ALGORITHM.md (dense matrices, explicit inverses, computed in the
input's dtype), with the same signatures, argument checks and degenerate-case rules as the
Rust path, and no Rust. They are slow on purpose: their job is to be obviously right, so the
fast path can be tested against them and users can compare the two.
"""

from .hew import hew_pool, hew_pool_batch, hew_weights, local_mean
from .rerank import heat_rerank
from .search import knn_graph, search
from .diffusion import diffusion_rerank

__all__ = ["hew_weights", "hew_pool", "hew_pool_batch", "local_mean", "heat_rerank", "search", "knn_graph", "diffusion_rerank"]
