"""heatsearch: content-based image retrieval with heat diffusion.

HeW aggregation and HeR re-ranking (Pang et al., IEEE TMM 2019) on a Rust core, the
baselines users compare them with (SPoC, MAC, GeM, R-MAC, CroW, query expansion, diffusion),
and the evaluation protocols of the field; a pure-NumPy reference of every kernel lives in
:mod:`heatsearch.reference`.

The package, by layer:

* here: the algorithms on arrays (:mod:`~heatsearch.hew`, :mod:`~heatsearch.search`,
  :mod:`~heatsearch.rerank`, :mod:`~heatsearch.knn`, :mod:`~heatsearch.diffusion`,
  :mod:`~heatsearch.query_expansion`, :mod:`~heatsearch.duplicates`, :mod:`~heatsearch.aggregate`,
  :mod:`~heatsearch.postprocess`, :mod:`~heatsearch.whitening`, :mod:`~heatsearch.pipeline`);
* :mod:`heatsearch.reference`: the same kernels in pure NumPy;
* :mod:`heatsearch.eval`: ground truth, descriptor files, mAP;
* :mod:`heatsearch.vision`: images to CNN feature maps (the ``torch`` extra);
* :mod:`heatsearch.app`: the image index, its on-disk format, the command line.

Conventions: feature maps are channels-last ``(H, W, C)`` (or ``(N, C)`` local features);
descriptors are rows (``X (n, d)``, ``Q (nq, d)``); rankings are ``(nq, m)`` arrays of
0-based database indices, best first (cirtorch/revisitop use the transpose). ``k`` is always
the number of results returned.
"""

from __future__ import annotations

import types

from . import _compat
from ._core import __version__
from .errors import (
    HeatsearchError,
    ImageReadError,
    IndexFileError,
    InternalError,
    InvalidDTypeError,
    InvalidInputError,
    InvalidWeightsError,
    MemoryLimitError,
    MissingDependencyError,
    NumericalError,
    ThreadPoolError,
    WeightsNotFoundError,
)
from .hew import hew_pool, hew_pool_batch, hew_weights, local_mean
from .search import search
from .rerank import heat_rerank
from .knn import KnnGraph, knn_graph
from .diffusion import diffusion_rerank
from .duplicates import DuplicateGroup, duplicate_groups
from .query_expansion import (
    alpha_database_augmentation,
    alpha_query_expansion,
    average_query_expansion,
)
from .pipeline import RERANKERS, rank
from .postprocess import PostProcess, l2_normalize, power_normalize
from .whitening import PCAWhitening
from .threads import gemm_buffer_bytes, get_num_threads, limit_blas_threads, set_num_threads, threads_per_worker
from . import eval, reference
from .eval import compute_map, load_descriptors, load_ground_truth, revisited
from .app import Index, IndexConfig

_compat.install_moved_module_finder()

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
    "rank",
    "RERANKERS",
    # near-duplicates
    "duplicate_groups",
    "DuplicateGroup",
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
    "eval",
    "compute_map",
    "revisited",
    "load_ground_truth",
    "load_descriptors",
    # threads
    "set_num_threads",
    "get_num_threads",
    "gemm_buffer_bytes",
    "threads_per_worker",
    "limit_blas_threads",
    "reference",
    # errors
    "HeatsearchError",
    "InvalidInputError",
    "InvalidDTypeError",
    "MissingDependencyError",
    "NumericalError",
    "ThreadPoolError",
    "MemoryLimitError",
    "InternalError",
    "ImageReadError",
    "IndexFileError",
    "WeightsNotFoundError",
    "InvalidWeightsError",
]


def __getattr__(name: str) -> types.ModuleType:
    """``heatsearch.datasets`` and ``heatsearch.evaluate``, the 0.1 names of modules that
    moved to :mod:`heatsearch.eval` (with a DeprecationWarning)."""
    old = f"{__name__}.{name}"
    if old in _compat.MOVED_MODULES:
        return _compat.moved_module(old)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
