"""Helpers shared by several test modules (not a test module): memory layouts of one matrix,
ranking assertions, and the check that a kernel releases the GIL."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict

import numpy as np


def layouts(a: np.ndarray) -> Dict[str, np.ndarray]:
    """The same matrix as C order, Fortran order, and strided views (rows every other one of
    a bigger array, columns every other one, rows reversed)."""
    n, d = a.shape
    big_rows = np.zeros((2 * n, d), a.dtype)
    big_rows[::2] = a
    big_cols = np.zeros((n, 2 * d), a.dtype)
    big_cols[:, ::2] = a
    out = {
        "C": np.ascontiguousarray(a),
        "F": np.asfortranarray(a),
        "row-strided": big_rows[::2],
        "col-strided": big_cols[:, ::2],
        "reversed": np.ascontiguousarray(a[::-1])[::-1],
    }
    for v in out.values():
        np.testing.assert_array_equal(v, a)
    return out


LAYOUTS = ["C", "F", "row-strided", "col-strided", "reversed"]


def integer_data(rng: np.random.Generator, n: int, d: int, dtype, low: int = -2, high: int = 2) -> np.ndarray:
    """Small integers: every inner product is exact in float32, whatever the summation order,
    and many are equal (ties)."""
    return rng.integers(low, high + 1, size=(n, d)).astype(dtype)


def unit_rows(rng: np.random.Generator, n: int, d: int, dtype) -> np.ndarray:
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(dtype)


def tolerance(dtype) -> float:
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-12


def assert_rankings_close(r1, s1, r2, s2, tol: float) -> None:
    """Two rankings of the same items by nearly equal scores: the scores agree (they are both
    sorted, so position by position), and wherever the indices differ the two items' scores
    are within ``tol`` of each other (a near-tie that rounding may order either way)."""
    assert r1.shape == r2.shape and s1.shape == s2.shape == r1.shape
    assert r1.dtype == r2.dtype == np.int64
    np.testing.assert_allclose(s1, s2, rtol=tol, atol=tol)
    diff = r1 != r2
    if diff.any():
        np.testing.assert_allclose(s1[diff], s2[diff], rtol=tol, atol=tol)
        # Near-ties only: the differing positions must be a small minority.
        assert diff.mean() < 0.05, f"{diff.sum()} of {diff.size} positions differ"


def assert_valid_ranking(ranks: np.ndarray, scores: np.ndarray, truth: Callable[[int, np.ndarray], np.ndarray]) -> None:
    """Each row: distinct indices, non-increasing scores, equal scores in ascending index."""
    for i, (r, s) in enumerate(zip(ranks, scores)):
        assert np.unique(r).size == r.size
        assert np.all(np.diff(s) <= 0)
        ties = np.diff(s) == 0
        assert np.all(np.diff(r)[ties] > 0)
        np.testing.assert_allclose(s, truth(i, r), rtol=1e-5, atol=1e-5)


def ticks_while(work: Callable[[], Any]) -> int:
    """How many times a second Python thread counts while ``work()`` runs. A kernel that holds
    the GIL leaves it at a few ticks (the interpreter's switch interval is 5 ms); one that
    releases it lets it count freely (tens of thousands per second)."""
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        before = ticks
        work()
        return ticks - before
    finally:
        done.set()
        counter.join()
