"""Every exception heatsearch raises on purpose.

All are :class:`HeatsearchError`, and each is also a subclass of the built-in a caller would
expect (``ValueError``, ``TypeError``, ``OSError``, ...), so ``except ValueError`` keeps
working. They are all importable from ``heatsearch`` itself.
"""

from __future__ import annotations

__all__ = [
    "HeatsearchError",
    "InvalidInputError",
    "InvalidDTypeError",
    "NumericalError",
    "ThreadPoolError",
    "MemoryLimitError",
    "MissingDependencyError",
    "InternalError",
    "ImageReadError",
    "IndexFileError",
    "WeightsNotFoundError",
    "InvalidWeightsError",
]

#: Where a bug is reported (named in :class:`InternalError` messages).
ISSUES_URL = "https://github.com/heatsearch/heatsearch/issues"


class HeatsearchError(Exception):
    """Base class of all heatsearch errors."""


class InvalidInputError(HeatsearchError, ValueError):
    """An argument has the wrong shape or size, a value out of range, NaN or infinity."""


class InvalidDTypeError(HeatsearchError, TypeError):
    """An argument has the wrong type, or an array a dtype heatsearch does not compute in
    (it takes float32 and float64)."""


class NumericalError(HeatsearchError, ArithmeticError):
    """A numerical failure that valid input should not cause (please report it)."""


class ThreadPoolError(HeatsearchError, RuntimeError):
    """The thread pool could not be sized or started (e.g. a bad HEATSEARCH_NUM_THREADS)."""


class MemoryLimitError(HeatsearchError, MemoryError):
    """A kernel could not have the memory it asks for before it starts, e.g. under a limit on
    the address space (``ulimit -v``, ``RLIMIT_AS``): the per-thread buffer of the matrix
    product (twice the L3 cache: 64 MB on a 32 MB L3, once per thread) or a search's
    candidate lists and results. Raised instead of the process being aborted (Rust aborts on
    a failed allocation); the kernels' other allocations are not checked."""


class MissingDependencyError(HeatsearchError, ImportError):
    """An optional dependency is not installed (SciPy for ``.mat`` files, torch for
    feature extraction); the message says which ``pip install`` brings it."""


class InternalError(HeatsearchError, RuntimeError):
    """A bug in heatsearch: the Rust core panicked, which valid or invalid input must never
    cause. The message says what happened and where to report it."""


class ImageReadError(HeatsearchError, OSError):
    """An image file is missing, unreadable, truncated or not an image; the message names it."""


class IndexFileError(HeatsearchError, ValueError):
    """An index directory is missing, corrupt, of another format version, or inconsistent."""


class WeightsNotFoundError(HeatsearchError, FileNotFoundError):
    """The weights of a backbone are not on this machine (heatsearch never downloads them)."""


class InvalidWeightsError(HeatsearchError, ValueError):
    """A weights file cannot be read, or does not fit the backbone (strict loading)."""
