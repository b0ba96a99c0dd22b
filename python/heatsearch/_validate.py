"""The argument checks of every public function: the only place they are written.

What a user passes is turned here into exactly what the kernels take, visibly (NumPy
conversions, never silent casts in Rust), with one message per mistake that says what was
expected and what came in. The Rust path and the pure-NumPy reference call the same
functions, so they raise the same exception with the same message for the same bad input.

Two kinds of check, one home each:

* Checks of types, dtypes, shapes and scalar parameters (constant time): written here, in
  Python, before any kernel runs. The Rust core does not repeat them: a shape it is given
  is a precondition it documents (a violation would be a bug, reported as
  :class:`~heatsearch.errors.InternalError`).
* Checks that read the data (finite values; ranking entries in range and distinct): written
  once, in the Rust core (``rust/core/src/validate.rs``), because the kernels fold them into
  their own passes over the data and run them in parallel (the search's check of ``X``
  costs no pass of its own). :func:`finite` and :func:`rankings` reach the same code for
  the functions that have no Rust kernel (the reference, query expansion, pooling, ...).

Errors: a wrong type or dtype is :class:`~heatsearch.errors.InvalidDTypeError` (a
``TypeError``), anything else :class:`~heatsearch.errors.InvalidInputError` (a
``ValueError``).
"""

from __future__ import annotations

import math
import os
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .errors import InvalidDTypeError, InvalidInputError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------------------------
# Scalars.
# ---------------------------------------------------------------------------------------------
def integer(value: Any, name: str, *, minimum: int = 0, none_ok: bool = False) -> int:
    """An int (NumPy integers too, bools not) ``>= minimum``; ``none_ok``: the argument also
    takes None (said in the message; the caller handles None)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        kind = "an int or None" if none_ok else "an int"
        raise InvalidDTypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def optional_integer(value: Any, name: str, *, minimum: int = 0) -> Optional[int]:
    """None, or :func:`integer`."""
    return None if value is None else integer(value, name, minimum=minimum, none_ok=True)


def real(
    value: Any,
    name: str,
    *,
    low: Optional[float] = None,
    low_open: bool = False,
    high: Optional[float] = None,
    why: str = "",
) -> float:
    """A finite real number (ints and NumPy scalars too, bools not) as a float, within
    ``[low, high)`` (``(low, high)`` with ``low_open``); ``why`` explains the range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise InvalidDTypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    inside = math.isfinite(x)
    if low is not None:
        inside = inside and (x > low if low_open else x >= low)
    if high is not None:
        inside = inside and x < high
    if not inside:
        if low is not None and high is not None:
            bounds = f" in {'(' if low_open else '['}{low:g}, {high:g})"
        elif low is not None:
            bounds = f" {'>' if low_open else '>='} {low:g}"
        else:
            bounds = ""
        raise InvalidInputError(f"{name} must be a finite number{bounds}{why}, got {value}")
    return x


def cosine(value: Any, name: str) -> float:
    """A cosine similarity: a :func:`real` number in ``[-1, 1]`` (both ends included)."""
    c = real(value, name)
    if not -1.0 <= c <= 1.0:
        raise InvalidInputError(
            f"{name} must be a cosine similarity in [-1, 1] (1: identical descriptors), got {value}"
        )
    return c


def flag(value: Any, name: str) -> bool:
    """True or False (NumPy bools too)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidDTypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def choice(value: Any, name: str, options: Sequence[Any]) -> Any:
    """One of ``options``."""
    if not any(value is o or (isinstance(value, str) and value == o) for o in options):
        raise InvalidInputError(
            f"{name} must be one of {', '.join(repr(o) for o in options)}, got {value!r}"
        )
    return value


def text(value: Any, name: str, *, none_ok: bool = False) -> Optional[str]:
    """A non-empty str (or None with ``none_ok``)."""
    if value is None and none_ok:
        return None
    if not isinstance(value, str):
        kind = "a string or None" if none_ok else "a string"
        raise InvalidDTypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{name} must be a non-empty string, got ''")
    return value


def shrinkage(value: Any, name: str = "shrinkage") -> Union[float, str]:
    """A covariance shrinkage (:meth:`heatsearch.PCAWhitening.fit`): a :func:`real` in
    ``[0, 1)`` or ``"ledoit-wolf"``."""
    if isinstance(value, str):
        return choice(value, name, ("ledoit-wolf",))
    return real(value, name, low=0.0, high=1.0)


def duplicate_cosine(value: Any, name: str) -> Optional[float]:
    """None, or the cosine from which two training vectors of a whitening are copies
    (:meth:`heatsearch.PCAWhitening.fit`'s ``duplicates``): a :func:`real` in ``(0, 1)``."""
    if value is None:
        return None
    return real(value, name, low=0.0, low_open=True, high=1.0,
                why=" (a cosine after centring from which two images are copies)")


def matching_pairs(value: Any, d: int, name: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """None, or ``(A, B)``: two ``(m, d)`` float32/float64 arrays of training vectors, row ``i``
    of ``A`` matching row ``i`` of ``B`` (:meth:`heatsearch.PCAWhitening.fit`'s ``pairs``),
    ``m >= 1``, finite."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = f"a {type(value).__name__} of {len(value)}" if isinstance(value, (tuple, list)) else type(value).__name__
        raise InvalidDTypeError(f"{name} must be a pair (A, B) of (m, {d}) arrays of matching vectors, got {got}")
    a, b = rows(value[0], f"{name}[0]", "m"), rows(value[1], f"{name}[1]", "m")
    if a.shape != b.shape or a.shape[1] != d or a.shape[0] < 1:
        raise InvalidInputError(
            f"{name} must be two arrays of one shape (m, {d}), m >= 1 (row i of each: one matching pair), "
            f"got {a.shape} and {b.shape}"
        )
    finite(a, f"{name}[0]")
    finite(b, f"{name}[1]")
    return a, b


def real_sequence(
    value: Any, name: str, *, low: Optional[float] = None, low_open: bool = False
) -> Tuple[float, ...]:
    """A non-empty list or tuple of :func:`real` numbers (each within ``low``), as floats."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise InvalidDTypeError(
            f"{name} must be a list or tuple of numbers, got {type(value).__name__}"
        )
    if not value:
        raise InvalidInputError(f"{name} must hold at least one number, got none")
    return tuple(real(v, f"{name}[{i}]", low=low, low_open=low_open) for i, v in enumerate(value))


def bbox(value: Any, name: str = "bbox") -> Tuple[int, int, int, int]:
    """A box ``[x1, y1, x2, y2]``: four finite numbers rounded to whole pixels with Python's
    ``round`` (what Pillow's ``Image.crop`` does), ``x1 < x2`` and ``y1 < y2`` after rounding."""
    try:
        values = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{name} must be four numbers [x1, y1, x2, y2], got {value!r}"
        ) from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"{name} must be four finite numbers [x1, y1, x2, y2], got {value!r}")
    x1, y1, x2, y2 = (int(round(v)) for v in values)
    if x2 <= x1 or y2 <= y1:
        raise InvalidInputError(
            f"{name} must have x1 < x2 and y1 < y2 (after rounding to whole pixels), got {value!r}"
        )
    return x1, y1, x2, y2


def directory(value: Any, name: str) -> str:
    """An existing directory given as a str or ``os.PathLike``, as an absolute path (not
    resolving symbolic links: the path the user sees)."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidDTypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise InvalidInputError(f"{name} must be a non-empty text path, got {value!r}")
    if not os.path.isdir(path):
        raise InvalidInputError(f"{name} must be an existing directory, got {path!r} (not a directory)")
    return os.path.abspath(path)


def image_source(value: Any, name: str) -> Any:
    """Something :func:`heatsearch.vision.images.to_rgb` reads: a path (str or
    ``os.PathLike``), encoded image bytes (``bytes``, ``bytearray``, ``memoryview``), a binary
    file object (with ``read``), a PIL image or a NumPy array (its shape and dtype are checked
    where it is decoded). Only the type is checked here: reading is the decoder's job."""
    if isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)):
        return value
    if type(value).__module__.startswith("PIL.") or callable(getattr(value, "read", None)):
        return value
    raise InvalidDTypeError(
        f"{name} must be an image: a path, encoded image bytes, a binary file object, a PIL "
        f"image or a NumPy array, got {type(value).__name__}"
    )


def heat_params(threshold: Any, ground: Any) -> Tuple[float, float]:
    """HeW's and HeR's ``threshold >= 0`` (a negative one keeps negative affinities, and the
    heat system ``M = D - A`` is no longer positive definite) and ``ground`` within the range
    both float types compute accurately (the Rust core's ``GROUND_RANGE``, ``[1e-6, 1e6]``:
    the ground is the heat system's smallest eigenvalue, see rust/core/src/hew.rs)."""
    t = real(
        threshold,
        "threshold",
        low=0.0,
        why=" (a negative one keeps negative affinities and the heat system is no longer "
        "positive definite)",
    )
    lo, hi = _core.GROUND_RANGE
    g = real(ground, "ground", low=0.0, low_open=True)
    if not lo <= g <= hi:
        raise InvalidInputError(
            f"ground must be in [{lo:g}, {hi:g}] (the ground conductance is the heat system's "
            f"smallest eigenvalue: outside this range it is lost to rounding or overflows), "
            f"got {ground}"
        )
    return t, g


# ---------------------------------------------------------------------------------------------
# Arrays.
# ---------------------------------------------------------------------------------------------
def array(x: Any, name: str) -> np.ndarray:
    """``x`` as an ndarray of float32 or float64 (the dtype is kept, never converted; an
    unaligned array is copied, see :func:`aligned`)."""
    arr = np.asarray(x)
    if arr.dtype not in FLOAT_DTYPES:
        raise InvalidDTypeError(
            f"{name} must be a float32 or float64 array, got dtype {arr.dtype}"
        )
    return aligned(arr)


def aligned(arr: np.ndarray) -> np.ndarray:
    """``arr``, or an aligned copy of it when its data or strides are not multiples of its
    item size (a float field of a structured array, a view into raw bytes). The kernels
    address elements by element strides; such an array would be misread, not rejected."""
    return arr if arr.flags.aligned else np.array(arr, copy=True)


def rows(x: Any, name: str, count: str = "n") -> np.ndarray:
    """``x`` as a 2-D ``(count, d)`` float32/float64 array of row vectors (kept as it is)."""
    arr = array(x, name)
    if arr.ndim != 2:
        hint = " (for one query pass q[None, :])" if count == "nq" and arr.ndim == 1 else ""
        raise InvalidInputError(
            f"{name} must be a 2-D array of row vectors ({count}, d), one per row, got shape "
            f"{arr.shape}{hint}"
        )
    return arr


def vectors(x: Any, name: str, d: Optional[int] = None) -> np.ndarray:
    """One ``(d,)`` vector or ``(n, d)`` row vectors, float32/float64; ``d`` checked if given."""
    arr = array(x, name)
    if arr.ndim not in (1, 2) or (d is not None and arr.shape[-1] != d):
        width = "d" if d is None else str(d)
        raise InvalidInputError(
            f"{name} must be a ({width},) vector or an (n, {width}) matrix of row vectors, got "
            f"shape {arr.shape}"
        )
    return arr


def descriptor(x: Any, name: str, d: int) -> np.ndarray:
    """One final descriptor: a float32/float64 vector of length ``d`` (kept as it is)."""
    arr = array(x, name)
    if arr.shape != (d,):
        got = f"length {arr.shape[0]}" if arr.ndim == 1 else f"shape {arr.shape}"
        raise InvalidInputError(
            f"{name} as a descriptor must be a vector of length {d} (the index's dimension), "
            f"got {got}"
        )
    return arr


def descriptor_rows(x: Any, name: str, d: Optional[int]) -> np.ndarray:
    """Rows computed elsewhere for an index (``Index.from_descriptors``): a 2-D ``(n, d)``
    float32/float64 array, ``n >= 1``, of the index's dimension ``d`` (any when None), finite,
    with no zero row; returned L2-normalised as float64 (the index's scores are cosines).
    Rows already of unit norm (within 1e-6, float32's rounding) are kept exactly as given."""
    arr = rows(x, name)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"{name} must hold at least one row of at least one dimension, got shape {arr.shape}")
    if d is not None and arr.shape[1] != d:
        raise InvalidInputError(f"{name} must have {d} columns (the index's dimension), got shape {arr.shape}")
    finite(arr, name)
    out = np.asarray(arr, np.float64)
    norms = np.linalg.norm(out, axis=1)
    if not norms.all():
        raise InvalidInputError(f"{name}[{int(np.argmin(norms))}] is a zero vector: it has no direction to compare")
    norms[np.abs(norms - 1.0) <= 1e-6] = 1.0
    return out / norms[:, None]


def identifiers(ids: Any, name: str, count: int, taken: Any) -> List[str]:
    """``count`` names of rows (any non-empty text without NUL), distinct, and none in
    ``taken`` (a container of the names an index holds)."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple)):
        raise InvalidDTypeError(f"{name} must be a list of {count} strings, got {type(ids).__name__}")
    if len(ids) != count:
        raise InvalidInputError(f"{name} must name each of the {count} rows, got {len(ids)} names")
    out = []
    for i, p in enumerate(ids):
        if isinstance(p, os.PathLike):
            p = os.fspath(p)
        if not isinstance(p, str) or not p or "\x00" in p:
            raise InvalidInputError(f"{name}[{i}] must be a non-empty string without NUL, got {p!r}")
        out.append(p)
    seen: set = set()
    for p in out:
        if p in seen:
            raise InvalidInputError(f"{name} lists {p!r} twice")
        if p in taken:
            raise InvalidInputError(f"{name}: {p!r} is already in the index")
        seen.add(p)
    return out


def descriptor_pair(X: Any, Q: Any, *, nonempty: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """A database ``X (n, d)`` and queries ``Q (nq, d)``: float32/float64, one dtype, one
    ``d`` (checked, not converted); ``nonempty``: ``n >= 1`` and ``d >= 1``."""
    x = rows(X, "X", "n")
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
    q = rows(q, "Q", "nq")
    if nonempty and (x.shape[0] == 0 or x.shape[1] == 0):
        raise InvalidInputError(f"X must have at least one row and one column, got {x.shape}")
    if q.shape[1] != x.shape[1]:
        raise InvalidInputError(
            f"Q must have the dimension of X: expected d = {x.shape[1]} columns (X is "
            f"{x.shape}), got Q of shape {q.shape}"
        )
    return x, q


def database_size(n: int) -> None:
    """At most ``2**32 - 1`` database items (the kernels index them with 32 bits)."""
    if n > _core.MAX_ITEMS:
        raise InvalidInputError(
            f"X may have at most {_core.MAX_ITEMS} rows (database items), got {n}"
        )


def feature_map(fmap: Any, name: str = "fmap") -> Tuple[np.ndarray, Tuple[int, ...]]:
    """A channels-last map ``(H, W, C)`` or ``(N, C)`` as an ``(N, C)`` matrix, and the
    spatial shape (``(H, W)`` or ``(N,)``) that per-cell results take."""
    arr = array(fmap, name)
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


def spatial_map(fmap: Any, method: str, why: str) -> np.ndarray:
    """A channels-last ``(H, W, C)`` map, for methods that need the spatial layout."""
    arr = array(fmap, "fmap")
    if arr.ndim != 3:
        raise InvalidInputError(
            f"{method} needs a channels-last (H, W, C) feature map ({why}), got an array of "
            f"shape {arr.shape}"
        )
    feature_map(arr)  # the empty-map message
    return arr


def feature_maps(fmaps: Any, name: str = "fmaps") -> List[np.ndarray]:
    """A non-empty sequence of maps of one dtype and one channel count, as ``(N_b, C)``:
    a list (or other sequence) of maps, or one 4-D ``(B, H, W, C)`` array. A single 3-D array
    is refused: one ``(H, W, C)`` map and ``B`` maps of ``(N, C)`` local features look alike,
    and guessing wrong pools every row of the map as a separate image."""
    if isinstance(fmaps, np.ndarray) and fmaps.dtype != object:
        if fmaps.ndim != 4:
            raise InvalidInputError(
                f"{name} must be a list of feature maps or a 4-D (B, H, W, C) array, got one "
                f"array of shape {fmaps.shape} (one map: pass [fmap]; a stack of (N, C) "
                "matrices: pass list(fmaps))"
            )
        maps = list(fmaps)
    else:
        try:
            maps = list(fmaps)
        except TypeError:
            raise InvalidDTypeError(
                f"{name} must be a list of feature maps, got {type(fmaps).__name__}"
            ) from None
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
    """HeW's centering mean as a contiguous ``(C,)`` array of the maps' dtype, or None (its
    values are the kernel's to check, see :func:`hew_data`)."""
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
    return np.ascontiguousarray(arr, dtype=dtype)


def search_arguments(X: Any, Q: Any, k: Any) -> Tuple[np.ndarray, np.ndarray, int]:
    """Search: ``X (n, d)``, ``Q (nq, d)`` and the result count ``k`` clamped to ``n``
    (``None``: all ``n``)."""
    x, q = descriptor_pair(X, Q)
    database_size(x.shape[0])
    kk = optional_integer(k, "k")
    return x, q, x.shape[0] if kk is None else min(kk, x.shape[0])


def expansion_arguments(
    X: Any, Q: Any, ranks: Any, neighbors: Any
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query expansion: finite ``X``, ``Q`` and the checked top ``neighbors`` columns of
    ``ranks`` (int64)."""
    x, q = descriptor_pair(X, Q)
    finite(x, "X")
    finite(q, "Q")
    nb = integer(neighbors, "neighbors")
    return x, q, ranking(ranks, q.shape[0], x.shape[0], top=nb)


def knn_arguments(X: Any, neighbors: Any) -> Tuple[np.ndarray, int]:
    """kNN graph: ``X (n, d)`` and ``neighbors >= 1`` clamped to ``n - 1``."""
    x = rows(X, "X", "n")
    database_size(x.shape[0])
    nb = integer(neighbors, "neighbors", minimum=1)
    return x, min(nb, max(x.shape[0] - 1, 0))


def her_arguments(
    X: Any, Q: Any, ranks: Any, scores: Any, depth: Any, ground: Any
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], int, float]:
    """HeR: ``X``, ``Q``, the checked int64 ``ranks (nq, m)``, their ``scores`` in ``X``'s
    dtype (or None), ``depth`` clamped to ``m`` and ``ground``."""
    x, q = descriptor_pair(X, Q, nonempty=True)
    # The kernel checks the entries (and X, Q, scores for NaN) itself, in parallel.
    r = ranking(ranks, q.shape[0], x.shape[0], max_columns=x.shape[0], check_values=False)
    dp = integer(depth, "depth")
    _, g = heat_params(0.0, ground)
    s = None if scores is None else shaped_like(scores, "scores", "ranks", r.shape, x.dtype)
    return x, q, r, s, min(dp, r.shape[1]), g


#: How far from 1 the norm of a row given to :func:`duplicates_arguments` may be (float32
#: descriptors that went through L2 are within a few 1e-7 of 1).
UNIT_NORM_TOLERANCE = 1e-3


def duplicates_arguments(X: Any, threshold: Any, block: Any) -> Tuple[np.ndarray, float, int]:
    """Near-duplicates: ``X (n, d)`` with ``n >= 1``, finite, every row of unit L2 norm (or
    zero), so inner products are cosines; ``threshold`` a cosine in ``[-1, 1]``; ``block >= 1``."""
    x = rows(X, "X", "n")
    t = cosine(threshold, "threshold")
    b = integer(block, "block", minimum=1)
    if x.shape[0] == 0:
        raise InvalidInputError(f"X must hold at least one row to find duplicates among, got shape {x.shape}")
    database_size(x.shape[0])
    finite(x, "X")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    bad = np.flatnonzero((np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE) & (norms != 0.0))
    if bad.size:
        raise InvalidInputError(
            f"X must have L2-normalised rows (norm 1, so that inner products are cosine "
            f"similarities; see heatsearch.l2_normalize), got row {bad[0]} of norm {norms[bad[0]]:.6g}"
            + (f" and {bad.size - 1} more" if bad.size > 1 else "")
        )
    return x, t, b


class DiffusionArguments(NamedTuple):
    """The checked arguments of :func:`heatsearch.diffusion_rerank`."""

    X: np.ndarray
    Q: np.ndarray
    ranks: Optional[np.ndarray]
    scores: Optional[np.ndarray]
    graph: Any  # a KnnGraph of n items, or None
    neighbors: int
    query_neighbors: int
    alpha: float
    gamma: float
    truncation: Optional[int]
    iterations: int
    tol: float


def diffusion_arguments(
    X: Any,
    Q: Any,
    ranks: Any,
    scores: Any,
    graph: Any,
    neighbors: int,
    query_neighbors: int,
    alpha: float,
    gamma: float,
    truncation: Optional[int],
    iterations: int,
    tol: float,
    graph_type: Any,
) -> DiffusionArguments:
    """Checks the arguments of :func:`heatsearch.diffusion_rerank` (shapes, types,
    parameters; the entries of ``ranks`` and NaN are the kernel's to check) and converts them
    visibly: ``ranks`` to int64, ``scores`` to ``X``'s dtype. Counts are clamped to what the
    data has, so that any Python int fits the kernel's integers. ``graph_type``: the class a
    ``graph`` must be (:class:`heatsearch.KnnGraph`, passed in: knn.py uses this module)."""
    x, q = descriptor_pair(X, Q)
    n, nq = x.shape[0], q.shape[0]
    nb = integer(neighbors, "neighbors", minimum=1)
    qn = integer(query_neighbors, "query_neighbors", minimum=1)
    tr = optional_integer(truncation, "truncation", minimum=1)
    it = integer(iterations, "iterations")
    al = real(
        alpha, "alpha", low=0.0, high=1.0, why=" (at 1 the system I - alpha S is singular)"
    )
    ga = real(gamma, "gamma", low=0.0, low_open=True)
    to = real(tol, "tol", low=0.0)
    if graph is not None:
        if not isinstance(graph, graph_type):
            raise InvalidDTypeError(
                f"graph must be a KnnGraph (see heatsearch.knn_graph), got {type(graph).__name__}"
            )
        if graph.n != n:
            raise InvalidInputError(
                f"graph must have one row per database item (n = {n}), got n = {graph.n}"
            )
    r: Optional[np.ndarray] = None
    s: Optional[np.ndarray] = None
    if ranks is None:
        if scores is not None:
            raise InvalidInputError(
                "scores were given without ranks (pass both or neither)"
            )
    else:
        r = ranking(ranks, nq, n, max_columns=n, check_values=False)
        if scores is not None:
            s = shaped_like(scores, "scores", "ranks", r.shape, x.dtype)
    return DiffusionArguments(
        x, q, r, s, graph, nb, min(qn, n), al, ga, None if tr is None else min(tr, n),
        min(it, 1 << 31), to,
    )


def hew_arguments(
    fmap: Any, mean: Any, threshold: Any, ground: Any
) -> Tuple[np.ndarray, Tuple[int, ...], Optional[np.ndarray], float, float]:
    """HeW on one map: the ``(N, C)`` matrix, its spatial shape, the mean, threshold, ground."""
    mat, spatial = feature_map(fmap)
    mu = mean_vector(mean, mat.shape[1], mat.dtype)
    t, g = heat_params(threshold, ground)
    return mat, spatial, mu, t, g


def hew_batch_arguments(
    fmaps: Any, mean: Any, threshold: Any, ground: Any
) -> Tuple[List[np.ndarray], Optional[np.ndarray], float, float]:
    """HeW on a batch: the ``(N_b, C)`` matrices, the mean, threshold, ground."""
    mats = feature_maps(fmaps)
    mu = mean_vector(mean, mats[0].shape[1], mats[0].dtype)
    t, g = heat_params(threshold, ground)
    return mats, mu, t, g


def shaped_like(
    a: Any, name: str, other: str, shape: Tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """A float array of the shape of ``other`` (a ranking's scores beside its ranks, a graph's
    similarities beside its indices), converted to ``dtype`` (a visible conversion: the
    kernels take one dtype)."""
    arr = array(a, name)
    if arr.shape != shape:
        raise InvalidInputError(f"{name} must have the shape of {other} {shape}, got {arr.shape}")
    return arr if arr.dtype == dtype else arr.astype(dtype)


# ---------------------------------------------------------------------------------------------
# Checks that read the data (implemented by the Rust core, see the module docstring).
# ---------------------------------------------------------------------------------------------
def finite(a: np.ndarray, name: str) -> None:
    """InvalidInputError naming the first NaN or infinity of the float32/float64 array ``a``
    (row-major order). A vector's entry is named by its index, a matrix's by row and column;
    an array of more axes is read as a matrix of its last axis (``(H, W, C)``: row = cell)."""
    if a.ndim > 2:
        a = a.reshape(-1, a.shape[-1]) if a.shape[-1] else a.reshape(-1, 1)
    elif a.ndim == 0:
        a = a.reshape(1)
    _core.check_finite(a, name)


def ranking(
    ranks: Any,
    nq: int,
    n: Optional[int],
    *,
    max_columns: Optional[int] = None,
    top: Optional[int] = None,
    check_values: bool = True,
) -> np.ndarray:
    """A ranking ``(nq, m)`` of 0-based database indices (best first) as a checked int64 array.

    Checked: an integer dtype (with a hint when similarities were passed instead of their
    argsort), the shape ``(nq, m)`` (with a hint for cirtorch/revisitop's transposed
    ``(n, nq)`` layout), ``m <= max_columns``, and (by :func:`rankings`) every entry in
    ``[0, n)`` (``>= 0`` when ``n`` is None) and no index twice in a row. ``top``: only the
    first ``min(top, m)`` columns are checked and returned. ``check_values=False`` leaves the
    entries to a Rust kernel that checks them itself (the same check, in parallel).
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
    if top is not None:
        r = r[:, : min(top, r.shape[1])]
    r = _int64(r, "ranks")
    if check_values:
        rankings(r, n)
    return r


def products(s: np.ndarray, what: str) -> None:
    """InvalidInputError when inner products of finite vectors (2-D ``s``) overflowed their
    dtype, worded as the kernels word it ("the inner products of Q and X overflow ...")."""
    _core.check_products(s, what)


def rankings(r: np.ndarray, n: Optional[int], name: str = "ranks") -> None:
    """InvalidInputError naming the first entry (row-major) of the 2-D int64 ``r`` outside
    ``[0, n)`` (``< 0`` when ``n`` is None) or repeated within its row."""
    _core.check_rankings(r, n, name)


def knn_graph_arrays(indices: Any, similarities: Any) -> Tuple[np.ndarray, np.ndarray]:
    """A kNN graph given as neighbour lists: ``indices (n, k)`` of an integer dtype (as int64)
    in ``[0, n)``, distinct within a row (an item may list itself), and finite float
    ``similarities`` of the same shape."""
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise InvalidDTypeError(f"indices must be an integer array, got dtype {idx.dtype}")
    if idx.ndim != 2:
        raise InvalidInputError(f"indices must be a 2-D (n, k) array, got shape {idx.shape}")
    sims = array(similarities, "similarities")
    sims = shaped_like(sims, "similarities", "indices", idx.shape, sims.dtype)
    idx = _int64(idx, "indices")
    rankings(idx, idx.shape[0], "indices")
    finite(sims, "similarities")
    return idx, sims


def hew_data(maps: Sequence[np.ndarray], mean: Optional[np.ndarray], names: Sequence[str]) -> None:
    """The data checks the Rust HeW kernels run, in their order: the mean, then each map (for
    the reference; ``names``: how the maps are called, ``fmap`` or ``fmaps[b]``)."""
    if mean is not None:
        finite(mean, "mean")
    for m, name in zip(maps, names):
        finite(m, name)


def rerank_data(x: np.ndarray, q: np.ndarray, scores: Optional[np.ndarray], r: np.ndarray) -> None:
    """The data checks the Rust re-ranking kernels (HeR, diffusion) run, in their order (for
    the reference): the ranking's entries, then the rows of ``X`` the ranking names finite
    (the only rows a re-ranker reads), then ``Q`` and ``scores`` finite."""
    rankings(r, x.shape[0])
    _core.check_finite_rows(x, r, "X")
    finite(q, "Q")
    if scores is not None:
        finite(scores, "scores")


def _int64(r: np.ndarray, name: str) -> np.ndarray:
    """An integer array as an aligned int64 one; unsigned values beyond int64 are an error,
    not a wrap."""
    if r.dtype == np.int64:
        return aligned(r)
    if r.dtype.kind == "u" and r.size and int(r.max()) > np.iinfo(np.int64).max:
        i, j = (int(v) for v in np.argwhere(r > np.iinfo(np.int64).max)[0])
        raise InvalidInputError(
            f"{name} must hold database indices within int64, got {r[i, j]} at row {i}, "
            f"column {j}"
        )
    return r.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Command-line values and the files a command reads or writes (heatsearch.app.cli). Each is
# checked before any work starts, so that a mistake costs no extraction time.
# ---------------------------------------------------------------------------------------------
def integer_text(text: str, name: str, *, minimum: int = 0, maximum: Optional[int] = None) -> int:
    """A decimal integer written on the command line, in ``[minimum, maximum]``: ``"1e20"``,
    ``"2.5"`` or ``"many"`` are refused with a message saying what is expected."""
    span = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number {span}, got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise InvalidInputError(f"{name} must be a whole number {span}, got {text}")
    return value


def real_text(text: str, name: str, what: str) -> float:
    """One finite number written on the command line; ``what`` says what it is."""
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be {what}, got {text!r}")
    return value


def reals_text(text: str, name: str, count: int, what: str) -> List[float]:
    """``count`` finite numbers separated by commas (``"-10,20.5,300,400"``); ``what`` names
    them in the message (e.g. ``"x1,y1,x2,y2"``)."""
    parts = [p for p in text.replace(" ", "").split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"{name} must be {what} ({count} numbers), got {text!r}")
    return values


def existing_file(path: str, name: str) -> str:
    """A path that names an existing file (not a folder)."""
    if os.path.isdir(path):
        raise InvalidInputError(f"{name} must be a file, got the folder {path!r}")
    if not os.path.isfile(path):
        why = "a broken symbolic link" if os.path.islink(path) else "no such file"
        raise InvalidInputError(f"{name} must be an existing file, got {path!r} ({why})")
    return path


def existing_folder(path: str, name: str) -> str:
    """A path that names an existing folder."""
    if not os.path.isdir(path):
        why = "a file, not a folder" if os.path.exists(path) else "no such folder"
        raise InvalidInputError(f"{name} must be an existing folder, got {path!r} ({why})")
    return path


def output_file(path: str, name: str) -> str:
    """A file a command will write: its folder exists and it is not itself a folder (checked
    before any work, and so that no temporary name of the atomic write reaches a message)."""
    if os.path.isdir(path):
        raise InvalidInputError(f"{name} must be a file to write, got the folder {path!r}")
    existing_folder(os.path.dirname(os.path.abspath(path)), f"the folder of {name} {path!r}")
    return path
