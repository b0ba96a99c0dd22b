"""Thread control for heatsearch's kernels.

heatsearch runs its Rust kernels on its own thread pool (never rayon's global one), sized by
the environment variable ``HEATSEARCH_NUM_THREADS`` when set, else by the number of logical
CPUs. A forked child process builds a fresh pool on first use. The GIL is released while the
kernels run, so other Python threads keep going.
"""

from __future__ import annotations

from . import _core
from .errors import InvalidDTypeError, InvalidInputError

__all__ = ["set_num_threads", "get_num_threads"]


def set_num_threads(n: int) -> None:
    """Use ``n >= 1`` threads from now on (the pool is rebuilt on its next use)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidDTypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise InvalidInputError(f"n must be >= 1, got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return int(_core.get_num_threads())
