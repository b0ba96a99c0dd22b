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

