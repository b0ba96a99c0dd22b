"""Descriptor post-processing: signed power, L2 normalisation, and the paper's chain of them.

Pang et al. (IEEE TMM 2019) post-process every HeW descriptor ``v`` as (docs/ALGORITHM.md,
section 1)::

    v <- sign(v) |v|^0.5      signed square root       power_normalize(v, p=0.5)
    v <- v / ||v||            L2                       l2_normalize(v)
    v <- PCA-whitening(v)     learned on ANOTHER set   PCAWhitening.transform(v)
    v <- v / ||v||            L2                       l2_normalize(v)

and search by inner product. :class:`PostProcess` is that chain as one reusable object.

Vectors are rows: a database ``X (n, d)``, queries ``Q (nq, d)``; float32 or float64, any
memory layout. Every function returns a new array of the input's dtype and never modifies its
input.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from ._compat import accepts_old_arguments
from .errors import InvalidDTypeError, InvalidInputError
from .whitening import PCAWhitening

__all__ = ["power_normalize", "l2_normalize", "PostProcess", "DEFAULT_POWER", "L2_EPS"]

#: Exponent of the signed power: 0.5, the paper's signed square root (also CroW's and
#: cirtorch's "power normalisation").
DEFAULT_POWER = 0.5
#: Rows with an L2 norm below ``L2_EPS`` are divided by ``L2_EPS`` instead of their norm:
#: 1e-6, cirtorch's ``l2n`` default (which adds it to the norm; see :func:`l2_normalize`).
L2_EPS = 1e-6


@accepts_old_arguments(positional=("p",))
def power_normalize(X: ArrayLike, *, p: float = DEFAULT_POWER) -> np.ndarray:
    """Signed power ``sign(x) |x|^p``, elementwise.

    Args:
        X: float32 or float64 array of any shape (usually descriptors ``(n, d)`` or ``(d,)``),
            any memory layout.
        p: exponent, a finite real ``> 0``; default 0.5, the signed square root of the paper
            (Pang et al. 2019), CroW and cirtorch. ``p = 1`` returns a copy.

    Returns:
        A new array of ``X``'s shape and dtype. Signs are kept, zeros stay zero (``p > 0``);
        a value whose power underflows (e.g. ``1e-200`` with ``p = 2``) becomes a zero of
        its sign.

    Raises:
        InvalidDTypeError (a TypeError): ``X`` not float32/float64, ``p`` not a real number.
        InvalidInputError (a ValueError): NaN or infinity in ``X``; ``p <= 0``, NaN or inf
            (``p <= 0`` would turn zeros into infinities or ones); ``|x|^p`` past the dtype's
            largest value (e.g. ``1e30`` in float32 with ``p = 2``).
    """
    arr = _validate.array(X, "X")
    exponent = _validate.real(p, "p", low=0.0, low_open=True)
    _validate.finite(arr, "X")
    # A Python float exponent keeps float32 as float32 (a NumPy float64 scalar would not
    # under NEP 50). copysign is sign(x) * |x|^p in one pass.
    with np.errstate(over="ignore"):
        out = np.copysign(np.abs(arr) ** exponent, arr)
    if out.size and not np.isfinite(out).all():
        raise InvalidInputError(
            f"X ** p overflows {arr.dtype} (largest {np.finfo(arr.dtype).max:.3g}): |X| up to "
            f"{float(np.abs(arr).max()):.6g} raised to p = {exponent:g}"
        )
    return out


@accepts_old_arguments(positional=("eps",))
def l2_normalize(X: ArrayLike, *, eps: float = L2_EPS) -> np.ndarray:
    """Scale every row of ``X`` (or the vector ``X``) to unit L2 norm.

    Each row ``x`` becomes ``x / max(||x||, eps)``: rows with a norm of at least ``eps`` get
    norm 1 (to rounding), a zero row stays exactly zero (never NaN, no warning), and a row
    with a tiny norm below ``eps`` is scaled by ``1 / eps`` and keeps a norm below 1, so
    rounding noise is not blown up into a full-size descriptor. ``eps = 0`` normalises every
    non-zero row, however small. cirtorch's ``l2n`` divides by ``||x|| + eps`` instead, which
    also shrinks unit-norm rows by ``1 / (1 + 1e-6)``; ``max`` leaves them exact.

    Norms are accumulated in float64 and computed without overflow or underflow, so huge
    (``1e200``) or tiny (``1e-200``) but finite rows normalise correctly.

    Args:
        X: ``(n, d)`` rows or one ``(d,)`` vector, float32 or float64, any memory layout.
        eps: a finite real ``>= 0``; default :data:`L2_EPS` = 1e-6 (cirtorch's ``l2n``).

    Returns:
        A new C-contiguous array of ``X``'s shape and dtype.

    Raises:
        InvalidDTypeError (a TypeError): ``X`` not float32/float64, ``eps`` not a real number.
        InvalidInputError (a ValueError): ``X`` not 1-D or 2-D, NaN or infinity in ``X``,
            ``eps < 0`` or not finite.
    """
    arr = _validate.vectors(X, "X")
    floor = _validate.real(eps, "eps", low=0.0)
    _validate.finite(arr, "X")
    rows = arr.reshape(1, -1) if arr.ndim == 1 else arr
    denom = np.maximum(_row_norms(rows), floor)
    denom[denom == 0] = 1.0  # zero rows (only possible with eps = 0) stay zero
    out = np.empty(rows.shape, dtype=arr.dtype)
    # The float64 divisor makes NumPy divide in float64 (in buffered chunks, no full copy)
    # and round once into out: exact for float32 rows whose norm overflows float32.
    np.divide(rows, denom[:, None], out=out, casting="same_kind")
    return out.reshape(arr.shape)


class PostProcess:
    """The paper's post-processing chain: signed power, L2, [PCA-whitening, L2].

    ``PostProcess(whitening)(X)`` computes ``l2(whitening.transform(l2(power(X))))``; without
    ``whitening`` it stops after the first L2. Whitening is applied only when a FITTED
    :class:`~heatsearch.whitening.PCAWhitening` is given: the object never learns anything
    from the data it transforms. The paper learns the whitening on a different dataset
    (Paris6k for Oxford5k, Oxford5k for Paris6k and Holidays), on vectors that went through
    the same signed power and L2; :meth:`fit` does exactly that.

    Example::

        pp = PostProcess.fit(X_paris)        # learn the whitening on the training set
        Xo, Qo = pp(X_oxford), pp(Q_oxford)  # then apply it to database and queries

    Args:
        whitening: a fitted PCAWhitening, or None (no whitening, no second L2).
        power: exponent of the signed power; default 0.5 (the paper's signed square root);
            None skips it (the "L2 only" baseline).
        eps: the ``eps`` of both :func:`l2_normalize` steps; default :data:`L2_EPS`.

    Raises:
        InvalidDTypeError (a TypeError): ``whitening`` is not a PCAWhitening (or None).
        InvalidInputError (a ValueError): ``whitening`` is not fitted; a bad ``power`` or
            ``eps`` (as in :func:`power_normalize` and :func:`l2_normalize`).
    """

    def __init__(
        self,
        whitening: Optional[PCAWhitening] = None,
        *,
        power: Optional[float] = DEFAULT_POWER,
        eps: float = L2_EPS,
    ) -> None:
        if whitening is not None:
            if not isinstance(whitening, PCAWhitening):
                raise InvalidDTypeError(
                    f"whitening must be a fitted PCAWhitening or None, got "
                    f"{type(whitening).__name__}"
                )
            if not whitening.is_fitted:
                raise InvalidInputError(
                    "whitening is not fitted: fit it on a separate training set "
                    "(PCAWhitening().fit(X_train)) or load one (PCAWhitening.load(path)); "
                    "PostProcess never learns it from the data it transforms"
                )
        self._whitening = whitening
        self._power = None if power is None else _validate.real(power, "power", low=0.0, low_open=True)
        self._eps = _validate.real(eps, "eps", low=0.0)

    @classmethod
    @accepts_old_arguments(positional=("dim",))
    def fit(
        cls,
        X_train: ArrayLike,
        *,
        dim: Optional[int] = None,
        power: Optional[float] = DEFAULT_POWER,
        eps: float = L2_EPS,
        shrinkage: Union[float, str] = 0.0,
        duplicates: Optional[float] = None,
        pairs: Optional[Tuple[ArrayLike, ArrayLike]] = None,
    ) -> "PostProcess":
        """Learn the whitening on a TRAINING set and return the full chain.

        ``X_train (n, d)`` goes through the signed power and L2 first, then
        :meth:`PCAWhitening.fit` learns on the result (with ``dim``: None keeps every usable
        dimension, as the paper does; ``shrinkage``: the covariance shrinkage, 0 in the
        paper; ``duplicates``: the cosine from which two training vectors are copies whose
        differences the whitening must not amplify, None in the paper; ``pairs``: ``(A, B)``
        raw matching vectors, put through the same power and L2 first). Warnings and errors
        as in :meth:`PCAWhitening.fit`.
        """
        pre = cls(None, power=power, eps=eps)
        train = pre(X_train)
        matched = _validate.matching_pairs(pairs, train.shape[1], "pairs")
        if matched is not None:
            matched = (pre(matched[0]), pre(matched[1]))
        whitening = PCAWhitening().fit(train, dim=dim, shrinkage=shrinkage, duplicates=duplicates, pairs=matched)
        return cls(whitening, power=power, eps=eps)

    @classmethod
    def _fit_blocks(
        cls,
        blocks: Callable[[], Iterable[np.ndarray]],
        *,
        power: Optional[float] = DEFAULT_POWER,
        eps: float = L2_EPS,
        shrinkage: Union[float, str] = 0.0,
        duplicates: Optional[float] = None,
        pair_scatter: Optional[Tuple[np.ndarray, int]] = None,
    ) -> "PostProcess":
        """:meth:`fit` (at full dimension) on the rows of ``blocks()``, one ``(rows, d)`` block
        at a time: :meth:`PCAWhitening._fit_blocks` (``blocks`` is called twice and must give
        the same blocks each time). The same result as :meth:`fit` on their concatenation up
        to float64 rounding, in memory for one block and two ``d x d`` float64 matrices."""
        pre = cls(None, power=power, eps=eps)
        whitening = PCAWhitening()._fit_blocks(
            lambda: (pre(np.asarray(b, np.float64)) for b in blocks()), shrinkage=shrinkage, duplicates=duplicates,
            pair_scatter=pair_scatter,
        )
        return cls(whitening, power=power, eps=eps)

    @property
    def whitening(self) -> Optional[PCAWhitening]:
        """The fitted PCAWhitening applied after the first L2, or None."""
        return self._whitening

    @property
    def power(self) -> Optional[float]:
        """Exponent of the signed power, or None when that step is skipped."""
        return self._power

    @property
    def eps(self) -> float:
        """``eps`` of the L2 steps."""
        return self._eps

    def __call__(self, X: ArrayLike) -> np.ndarray:
        """Post-process ``X``: ``(n, d)`` rows or one ``(d,)`` vector, float32 or float64.

        Returns ``(n, d')`` (or ``(d',)``) in ``X``'s dtype, ``d' = whitening.dim_`` with
        whitening, else ``d``; every non-zero row has unit L2 norm. Errors as in the steps
        (``X`` of the wrong width for the whitening is an InvalidInputError).
        """
        out = X if self._power is None else power_normalize(X, p=self._power)
        out = l2_normalize(out, eps=self._eps)
        if self._whitening is not None:
            out = l2_normalize(self._whitening.transform(out), eps=self._eps)
        return out

    def __repr__(self) -> str:
        return f"PostProcess(whitening={self._whitening!r}, power={self._power}, eps={self._eps})"


def _row_norms(rows: np.ndarray) -> np.ndarray:
    """L2 norm of every row of a finite 2-D array, float64, free of overflow and underflow."""
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    # Squares overflow past ~1e154 and underflow below ~1e-162 (float64 accumulation, so
    # only float64 input can get there): redo those rows scaled by their largest entry.
    suspect = ~np.isfinite(norms) | (norms < 1e-150)
    if rows.shape[1] and suspect.any():
        idx = np.flatnonzero(suspect)
        sub = rows[idx].astype(np.float64)
        scale = np.max(np.abs(sub), axis=1)
        scale[scale == 0] = 1.0
        sub /= scale[:, None]
        norms[idx] = scale * np.sqrt(np.einsum("ij,ij->i", sub, sub))
    return norms
