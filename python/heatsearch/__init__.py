"""heatsearch: content-based image retrieval with heat diffusion.

HeW aggregation and HeR re-ranking (Pang et al., IEEE TMM 2019) on a Rust core, with a
pure-NumPy reference in :mod:`heatsearch.reference`.

Feature maps are channels-last ``(H, W, C)`` (or ``(N, C)`` local features).
"""

from __future__ import annotations

from . import reference
from ._core import __version__
from .errors import (
    HeatsearchError,
    InvalidDTypeError,
    InvalidInputError,
    NumericalError,
    ThreadPoolError,
)
from .hew import hew_pool, hew_pool_batch, hew_weights, local_mean
from .threads import get_num_threads, set_num_threads

__all__ = [
    "__version__",
    "hew_weights",
    "hew_pool",
    "hew_pool_batch",
    "local_mean",
    "set_num_threads",
    "get_num_threads",
    "reference",
    "HeatsearchError",
    "InvalidInputError",
    "InvalidDTypeError",
    "NumericalError",
    "ThreadPoolError",
]
