"""The exceptions heatsearch raises.

Every exception raised on purpose is a :class:`HeatsearchError`, and also a subclass of the
built-in a caller would expect (``ValueError``, ``TypeError``, ...), so ``except ValueError``
keeps working.
"""

from __future__ import annotations

__all__ = [
    "HeatsearchError",
    "InvalidInputError",
    "InvalidDTypeError",
    "NumericalError",
    "ThreadPoolError",
    "MissingDependencyError",
]


class HeatsearchError(Exception):
    """Base class of all heatsearch errors."""


class InvalidInputError(HeatsearchError, ValueError):
    """An argument has the wrong shape or size, a value out of range, NaN or infinity."""


class InvalidDTypeError(HeatsearchError, TypeError):
    """An array has a dtype heatsearch does not compute in (it takes float32 and float64)."""


class NumericalError(HeatsearchError, ArithmeticError):
    """A numerical failure that valid input should not cause (please report it)."""


class ThreadPoolError(HeatsearchError, RuntimeError):
    """The thread pool could not be sized or started (e.g. a bad HEATSEARCH_NUM_THREADS)."""


class MissingDependencyError(HeatsearchError, ImportError):
    """An optional dependency is not installed (SciPy for ``.mat`` files, torch for
    feature extraction); the message says which ``pip install`` brings it."""
