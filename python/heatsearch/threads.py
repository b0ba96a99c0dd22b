"""Thread control for heatsearch's kernels.

heatsearch runs its Rust kernels on its own thread pool (never rayon's global one), sized by
the environment variable ``HEATSEARCH_NUM_THREADS`` when set, else by the number of logical
CPUs. A forked child process builds a fresh pool on first use. The GIL is released while the
kernels run, so other Python threads keep going.
"""

from __future__ import annotations

from . import _core, _validate

__all__ = ["set_num_threads", "get_num_threads"]


def set_num_threads(n: int) -> None:
    """Use ``n >= 1`` threads from now on (the pool is rebuilt on its next use)."""
    _core.set_num_threads(_validate.integer(n, "n", minimum=1))


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return int(_core.get_num_threads())
