"""Argument checks shared by the public API and the NumPy reference.

They turn what a user passes into the exact arrays the kernels take, with messages that say
what was expected and what came in. Conversions happen here, visibly, never in Rust.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from .errors import InvalidDTypeError, InvalidInputError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(x: Any, name: str) -> np.ndarray:
    """``x`` as an ndarray of float32 or float64 (kept as it is), else InvalidDTypeError."""
    arr = np.asarray(x)
    if arr.dtype not in FLOAT_DTYPES:
        raise InvalidDTypeError(
            f"{name} must be a float32 or float64 array, got dtype {arr.dtype}"
        )
    return arr


def feature_map(fmap: Any, name: str = "fmap") -> Tuple[np.ndarray, Tuple[int, ...]]:
    """A channels-last map ``(H, W, C)`` or ``(N, C)`` as an ``(N, C)`` matrix.

    Returns the matrix and the spatial shape (``(H, W)`` or ``(N,)``) the weights take.
    """
    arr = float_array(fmap, name)
    if arr.ndim == 3:
        h, w, c = arr.shape
        spatial: Tuple[int, ...] = (h, w)
        mat = arr.reshape(h * w, c)
    elif arr.ndim == 2:
        spatial = (arr.shape[0],)
        mat = arr
    else:
        raise InvalidInputError(
            f"{name} must be a channels-last (H, W, C) feature map or an (N, C) matrix of local "
            f"features, got an array of shape {arr.shape}"
        )
    if mat.shape[0] == 0 or mat.shape[1] == 0:
        raise InvalidInputError(
            f"{name} must have at least one cell and one channel, got shape {arr.shape}"
        )
    return mat, spatial


def feature_maps(fmaps: Any, name: str = "fmaps") -> List[np.ndarray]:
    """A non-empty sequence of maps, all of one dtype and one channel count, as (N_b, C)."""
    if isinstance(fmaps, np.ndarray) and fmaps.ndim in (3, 4) and fmaps.dtype != object:
        maps = list(fmaps)
    elif isinstance(fmaps, np.ndarray) and fmaps.ndim == 2:
        raise InvalidInputError(
            f"{name} must be a list of feature maps, got a single 2-D array of shape "
            f"{fmaps.shape} (wrap it in a list)"
        )
    else:
        maps = list(fmaps)
    if not maps:
        raise InvalidInputError(f"{name} must hold at least one feature map, got none")
    out = [feature_map(m, f"{name}[{b}]")[0] for b, m in enumerate(maps)]
    dtype, c = out[0].dtype, out[0].shape[1]
    for b, m in enumerate(out):
        if m.dtype != dtype:
            raise InvalidDTypeError(
                f"every map in {name} must have the same dtype: {name}[0] is {dtype}, "
                f"{name}[{b}] is {m.dtype}"
            )
        if m.shape[1] != c:
            raise InvalidInputError(
                f"every map in {name} must have the same number of channels: {name}[0] has "
                f"{c}, {name}[{b}] has {m.shape[1]}"
            )
    return out


def mean_vector(mean: Optional[Any], channels: int, dtype: np.dtype) -> Optional[np.ndarray]:
    """The centering mean as a contiguous ``(C,)`` array of the maps' dtype, or None."""
    if mean is None:
        return None
    arr = np.asarray(mean)
    if arr.dtype.kind not in "fiu":
        raise InvalidDTypeError(f"mean must be a numeric (C,) array, got dtype {arr.dtype}")
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or arr.shape[0] != channels:
        raise InvalidInputError(
            f"mean must have shape ({channels},) (one value per channel), got {arr.shape}"
        )
    out = np.ascontiguousarray(arr, dtype=dtype)
    if not np.all(np.isfinite(out)):
        raise InvalidInputError("mean must be finite, got NaN or infinity")
    return out


def heat_params(threshold: Any, ground: Any) -> Tuple[float, float]:
    """``threshold >= 0`` and ``ground > 0`` as floats (else the heat system is not SPD)."""
    for name, value in (("threshold", threshold), ("ground", ground)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidDTypeError(f"{name} must be a real number, got {type(value).__name__}")
    t, g = float(threshold), float(ground)
    if not (np.isfinite(t) and t >= 0):
        raise InvalidInputError(
            f"threshold must be a finite number >= 0 (a negative one keeps negative affinities "
            f"and the heat system is no longer positive definite), got {threshold}"
        )
    if not (np.isfinite(g) and g > 0):
        raise InvalidInputError(
            f"ground must be a finite number > 0 (without a ground conductance the heat "
            f"system is singular), got {ground}"
        )
    return t, g


def all_finite(x: np.ndarray, name: str) -> None:
    """InvalidInputError if ``x`` holds NaN or infinity."""
    if not np.all(np.isfinite(x)):
        raise InvalidInputError(f"{name} must be finite, got NaN or infinity")



def row_matrix(x: Any, name: str, rows: str, *, finite: bool = False) -> np.ndarray:
    """``x`` as a 2-D ``(rows, d)`` float32/float64 array of row vectors (kept as it is).

    ``finite=True`` also rejects NaN and infinity (InvalidInputError).
    """
    arr = float_array(x, name)
    if arr.ndim != 2:
        hint = " (for one query pass q[None, :])" if rows == "nq" and arr.ndim == 1 else ""
        raise InvalidInputError(
            f"{name} must be a 2-D array of row vectors ({rows}, d), one per row, got shape "
            f"{arr.shape}{hint}"
        )
    if finite:
        all_finite(arr, name)
    return arr


def descriptor_pair(
    X: Any, Q: Any, *, finite: bool = False, nonempty: bool = False
) -> Tuple[np.ndarray, np.ndarray]:
    """A database ``X (n, d)`` and queries ``Q (nq, d)``: float32/float64, one dtype, one ``d``.

    Checked, not converted. In order: ``X`` (float dtype, 2-D, finite when ``finite``), ``Q``
    (float dtype, ``X``'s dtype, 2-D, finite when ``finite``), ``n >= 1`` and ``d >= 1`` when
    ``nonempty``, then the same ``d``. Dtype errors are InvalidDTypeError, the rest
    InvalidInputError.
    """
    x = row_matrix(X, "X", "n", finite=finite)
    q = np.asarray(Q)
    if q.dtype not in FLOAT_DTYPES:
        raise InvalidDTypeError(
            f"Q must be a float32 or float64 array of the dtype of X ({x.dtype}), got dtype "
            f"{q.dtype}"
        )
    if q.dtype != x.dtype:
        raise InvalidDTypeError(
            f"Q must have the dtype of X: expected {x.dtype}, got {q.dtype} "
            "(convert one of them with .astype)"
        )
    q = row_matrix(q, "Q", "nq", finite=finite)
    if nonempty and (x.shape[0] == 0 or x.shape[1] == 0):
        raise InvalidInputError(f"X must have at least one row and one column, got {x.shape}")
    if q.shape[1] != x.shape[1]:
        raise InvalidInputError(
            f"Q must have the dimension of X: expected d = {x.shape[1]} columns (X is "
            f"{x.shape}), got Q of shape {q.shape}"
        )
    return x, q


def ranking(
    ranks: Any,
    nq: int,
    n: Optional[int],
    *,
    max_columns: Optional[int] = None,
    check_range: bool = True,
    check_repeats: bool = True,
    top: Optional[int] = None,
) -> np.ndarray:
    """A ranking ``(nq, m)`` of 0-based database indices (best first) as int64.

    Always checked: an integer dtype (InvalidDTypeError, with a hint when similarities were
    passed instead of their argsort) and the shape ``(nq, m)`` (with a hint when it looks like
    cirtorch/revisitop's transposed ``(n, nq)`` layout), plus ``m <= max_columns`` when given.
    ``check_range``: every value in ``[0, n)`` (with a hint for 1-based indices), or only
    ``>= 0`` when the database size ``n`` is not known (None); ``check_repeats``: no index
    twice in a row. ``top``: only the first ``min(top, m)`` columns are checked for repeats,
    converted and returned. Callers whose core checks values itself pass
    ``check_range=False`` / ``check_repeats=False``.
    """
    r = np.asarray(ranks)
    if r.dtype.kind not in "iu":
        raise InvalidDTypeError(
            f"ranks must be an integer array of 0-based database indices, got dtype {r.dtype}"
            + (" (the similarities instead of their argsort?)" if r.dtype.kind == "f" else "")
        )
    if r.ndim != 2:
        raise InvalidInputError(
            f"ranks must be a 2-D array (nq, m) = ({nq}, m), one row per query, got {r.ndim}-D "
            f"shape {r.shape}" + (" (for a single query use ranks[None, :])" if r.ndim == 1 else "")
        )
    if r.shape[0] != nq:
        if r.shape[1] == nq:
            hint = (
                "this looks like the cirtorch/revisitop layout (n, nq), one column per "
                "query: pass ranks.T"
            )
        else:
            hint = "cirtorch/revisitop's (n, nq) layout needs ranks.T"
        raise InvalidInputError(
            f"ranks must have one row per query: expected shape (nq, m) = ({nq}, m), got "
            f"{r.shape} ({hint})"
        )
    if max_columns is not None and r.shape[1] > max_columns:
        raise InvalidInputError(
            f"ranks must have shape (nq, m) = ({nq}, m) with at most n = {max_columns} columns "
            f"(m <= n, the database size), got {r.shape}"
        )
    if check_range:
        index_range(r, n)
    if top is not None:
        r = r[:, : min(top, r.shape[1])]
    if check_repeats:
        no_repeats(r)
    return r if r.dtype == np.int64 else r.astype(np.int64)


def index_range(r: np.ndarray, n: Optional[int]) -> None:
    """InvalidInputError naming the first entry of the 2-D integer ``r`` outside ``[0, n)``
    (``n`` None: the first negative entry, or one too large for int64)."""
    if not r.size:
        return
    lo, hi = int(r.min()), int(r.max())
    if n is None:
        limit = int(np.iinfo(np.int64).max) + 1
        if lo < 0 or hi >= limit:
            i, j = (int(v) for v in np.argwhere(r < 0 if lo < 0 else r >= limit)[0])
            raise InvalidInputError(
                f"ranks must hold 0-based database indices >= 0 (and within int64), got "
                f"{r[i, j]} at row {i}, column {j}"
            )
        return
    if lo < 0 or hi >= n:
        i, j = (int(v) for v in np.argwhere((r < 0) | (r >= n))[0])
        hint = " (1-based indices? heatsearch counts from 0)" if lo >= 1 and hi == n else ""
        raise InvalidInputError(
            f"ranks must hold database indices in [0, {n}), got {r[i, j]} at row {i}, column "
            f"{j} (n = {n}; got values in [{lo}, {hi}]){hint}"
        )


# no_repeats sorts short rows (at most _SORT_ROWS_MAX_COLUMNS) together, in blocks of about
# _SORT_BLOCK entries (a vectorised sort whatever the number of rows, in bounded memory);
# longer rows are checked one by one: with a table that stamps each index with its position
# in the row when the largest index allows one of at most
# max(_STAMP_TABLE_SLACK * m, _STAMP_TABLE_MIN) entries (O(m) a row, no reset), else by
# sorting the row.
_SORT_ROWS_MAX_COLUMNS = 1024
_SORT_BLOCK = 1 << 20
_STAMP_TABLE_SLACK = 16
_STAMP_TABLE_MIN = 1 << 22


def no_repeats(r: np.ndarray) -> None:
    """InvalidInputError naming the first row of the 2-D integer ``r`` holding an index twice."""
    nq, m = r.shape
    if m < 2 or nq == 0:
        return
    if m <= _SORT_ROWS_MAX_COLUMNS:
        step = max(1, _SORT_BLOCK // m)
        for start in range(0, nq, step):
            s = np.sort(r[start : start + step], axis=1)
            rows = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1))
            if rows.size:
                _raise_repeat(r, start + int(rows[0]))
        return
    lo, size = int(r.min()), int(r.max()) + 1
    if lo >= 0 and size <= max(_STAMP_TABLE_SLACK * m, _STAMP_TABLE_MIN):
        # Every index of a row is stamped with its position, then read back: an index that
        # appears twice keeps only one of its stamps, so the other position reads a mismatch.
        stamp = np.empty(size, dtype=np.intp)
        positions = np.arange(m, dtype=np.intp)
        for i in range(nq):
            row = r[i].astype(np.intp, copy=False)
            stamp[row] = positions
            if np.any(stamp[row] != positions):
                _raise_repeat(r, i)
    else:
        for i in range(nq):
            s = np.sort(r[i])
            if np.any(s[1:] == s[:-1]):
                _raise_repeat(r, i)


def _raise_repeat(r: np.ndarray, i: int) -> None:
    _, first = np.unique(r[i], return_index=True)
    p = int(np.setdiff1d(np.arange(r.shape[1]), first)[0])
    raise InvalidInputError(
        f"ranks[{i}] repeats database index {r[i, p]} (again at row {i}, column {p}) "
        f"among its first {r.shape[1]} entries (a ranking must not hold an index twice)"
    )
