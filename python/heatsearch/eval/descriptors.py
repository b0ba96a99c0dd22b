"""Descriptor files: a matrix of global descriptors from ``.npy`` or MATLAB ``.mat``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from .. import _validate
from ..errors import InvalidDTypeError, InvalidInputError
from ._matlab import loadmat, variables

__all__ = ["load_descriptors"]

PathLike = Union[str, "os.PathLike[str]"]
_LAYOUTS = ("auto", "rows", "columns")


def load_descriptors(
    path: PathLike,
    *,
    layout: str = "auto",
    expected_count: Optional[int] = None,
    key: Optional[str] = None,
) -> np.ndarray:
    """Load a descriptor matrix ``(n, d)``, one vector per row, from ``.npy`` or ``.mat``.

    Args:
        path: a ``.npy`` file (a 2-D array, rows are vectors) or a MATLAB ``.mat`` file
            holding a numeric matrix or a cell array with one vector per cell (the authors'
            ``holidays/vecs_ho.mat``: a 1 x 1491 cell of 512 x 1 vectors gives
            ``(1491, 512)``).
        layout: how a numeric matrix holds its vectors. ``"rows"``: one per row (NumPy
            convention). ``"columns"``: one per column, MATLAB's ``(d, n)`` convention, so the
            matrix is transposed. ``"auto"`` (default): one per row, except that when
            ``expected_count`` is given and equals the number of columns but not of rows the
            matrix is taken as columns, and that a MATLAB vector (``(d, 1)`` or ``(1, d)``) is
            one descriptor ``(1, d)``. Cell arrays are always one vector per cell (in MATLAB's
            linear order); a 1-D ``.npy`` array is one descriptor.
        expected_count: the number of descriptors ``n`` the caller expects (e.g. the number
            of database images); checked, and used by ``"auto"`` to pick the orientation.
        key: the variable to read from a ``.mat`` file holding several.

    Returns:
        A C-contiguous ``(n, d)`` array, float32 or float64 as stored.

    Raises:
        InvalidInputError: a corrupt file, an unknown format, an ambiguous or missing ``key``,
            a non-matrix, an empty matrix, unequal cell vectors or a count that is not
            ``expected_count``.
        InvalidDTypeError: the values are not float32 or float64.
        MissingDependencyError: a ``.mat`` file and SciPy is not installed.
    """
    _validate.choice(layout, "layout", _LAYOUTS)
    _validate.optional_integer(expected_count, "expected_count", minimum=1)
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(128)
    if head.startswith(b"\x93NUMPY"):
        try:
            raw = np.load(p, allow_pickle=False)
        except Exception as e:
            raise InvalidInputError(
                f"{p}: not a readable .npy array ({type(e).__name__}: {e}); expected a numeric "
                "(n, d) array"
            ) from e
        from_mat = False
    elif head.startswith(b"MATLAB") or p.suffix.lower() == ".mat":
        raw = _mat_variable(loadmat(p), key, p)
        from_mat = True
    else:
        raise InvalidInputError(
            f"{p}: expected a NumPy .npy file or a MATLAB .mat file, got a file starting with "
            f"{head[:16]!r}"
        )
    try:
        vecs = _orient(np.asarray(raw), layout, expected_count, from_mat)
    except InvalidInputError as e:
        raise InvalidInputError(f"{p}: {e}") from e
    except InvalidDTypeError as e:
        raise InvalidDTypeError(f"{p}: {e}") from e
    return np.ascontiguousarray(vecs)


def _mat_variable(mat: Mapping[str, Any], key: Optional[str], p: Path) -> Any:
    v = variables(mat)
    if key is not None:
        if key not in v:
            raise InvalidInputError(f"{p}: no variable {key!r}; it holds {sorted(v)}")
        return v[key]
    if len(v) != 1:
        raise InvalidInputError(
            f"{p}: expected a single variable, found {sorted(v)}: choose one with key="
        )
    return next(iter(v.values()))


def _orient(
    arr: np.ndarray, layout: str, expected_count: Optional[int], from_mat: bool
) -> np.ndarray:
    if arr.dtype == object:  # a MATLAB cell array: one vector per cell
        if layout == "columns":
            raise InvalidInputError(
                "layout='columns' applies to numeric matrices; a cell array holds one vector "
                "per cell (use layout='auto' or 'rows')"
            )
        cells = [np.asarray(c) for c in arr.ravel(order="F")]
        if not cells:
            raise InvalidInputError("the cell array is empty, expected one vector per cell")
        for k, c in enumerate(cells):
            if c.dtype.kind not in "iuf" or c.size == 0 or sum(s > 1 for s in c.shape) > 1:
                raise InvalidInputError(
                    f"cell {k + 1} must hold a non-empty numeric vector, got {c.dtype} of shape "
                    f"{c.shape}"
                )
        sizes = {c.size for c in cells}
        if len(sizes) != 1:
            raise InvalidInputError(
                f"every cell must hold a vector of the same length, got lengths {sorted(sizes)}"
            )
        dtypes = {c.dtype for c in cells}
        if len(dtypes) != 1:
            raise InvalidDTypeError(
                f"every cell must hold the same dtype, got {sorted(map(str, dtypes))}"
            )
        out = np.stack([c.reshape(-1) for c in cells])
    elif arr.dtype.kind not in "biufc":
        raise InvalidInputError(f"expected a numeric matrix, got dtype {arr.dtype}")
    elif arr.ndim == 1:
        out = arr.reshape(1, -1)
    elif arr.ndim != 2:
        raise InvalidInputError(f"expected a 2-D matrix of descriptors, got shape {arr.shape}")
    elif layout == "rows":
        out = arr
    elif layout == "columns":
        out = arr.T
    elif expected_count is not None:
        if arr.shape[0] == expected_count:
            out = arr
        elif arr.shape[1] == expected_count:
            out = arr.T
        else:
            raise InvalidInputError(
                f"expected {expected_count} descriptors (rows or columns), got a matrix of "
                f"shape {arr.shape}"
            )
    elif from_mat and arr.shape[1] == 1 and arr.shape[0] > 1:
        out = arr.T  # a MATLAB column vector is one descriptor
    else:
        out = arr
    if out.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidDTypeError(
            f"descriptors must be float32 or float64, got {out.dtype} (convert them with "
            ".astype(np.float32) first)"
        )
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise InvalidInputError(f"expected a non-empty (n, d) matrix, got shape {out.shape}")
    if expected_count is not None and out.shape[0] != expected_count:
        raise InvalidInputError(
            f"expected {expected_count} descriptors, got {out.shape[0]} (of dimension "
            f"{out.shape[1]}; layout={layout!r})"
        )
    return out
