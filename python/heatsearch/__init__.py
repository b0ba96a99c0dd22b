"""heatsearch: content-based image retrieval with heat diffusion.

HeW aggregation and HeR re-ranking (Pang et al., IEEE TMM 2019) on a Rust core, the
baselines users compare them with (SPoC, MAC, GeM, R-MAC, CroW, query expansion, diffusion),
and the evaluation protocols of the field; a pure-NumPy reference of every kernel lives in
:mod:`heatsearch.reference`.

Conventions: feature maps are channels-last ``(H, W, C)`` (or ``(N, C)`` local features);
descriptors are rows (``X (n, d)``, ``Q (nq, d)``); rankings are ``(nq, m)`` arrays of
0-based database indices, best first (cirtorch/revisitop use the transpose).
"""

from __future__ import annotations

from . import datasets, evaluate, reference
from ._core import __version__
from .datasets import load_descriptors, load_ground_truth
from .errors import (
    HeatsearchError,
    InvalidDTypeError,
    InvalidInputError,
    MissingDependencyError,
    NumericalError,
    ThreadPoolError,
)
from .diffusion import diffusion_rerank
from .evaluate import compute_map, revisited
from .hew import hew_pool, hew_pool_batch, hew_weights, local_mean
from .index import Index, IndexConfig
from .knn import KnnGraph, knn_graph
from .postprocess import PostProcess, l2_normalize, power_normalize
from .rerank import heat_rerank
from .search import search
from .query_expansion import (
    alpha_database_augmentation,
    alpha_query_expansion,
    average_query_expansion,
)
from .threads import get_num_threads, set_num_threads
from .whitening import PCAWhitening

__all__ = [
    "__version__",
    # HeW aggregation
    "hew_weights",
    "hew_pool",
    "hew_pool_batch",
    "local_mean",
    # search and re-ranking
    "search",
    "heat_rerank",
    "knn_graph",
    "KnnGraph",
    "diffusion_rerank",
    # query expansion / database augmentation
    "average_query_expansion",
    "alpha_query_expansion",
    "alpha_database_augmentation",
    # post-processing
    "power_normalize",
    "l2_normalize",
    "PCAWhitening",
    "PostProcess",
    # image collections (feature extraction needs the "torch" extra)
    "Index",
    "IndexConfig",
    # evaluation and data
    "compute_map",
    "revisited",
    "load_ground_truth",
    "load_descriptors",
    "evaluate",
    "datasets",
    # threads
    "set_num_threads",
    "get_num_threads",
    "reference",
    # errors
    "HeatsearchError",
    "InvalidInputError",
    "InvalidDTypeError",
    "MissingDependencyError",
    "NumericalError",
    "ThreadPoolError",
]
