"""PCA-whitening of descriptors, learned on a separate training set.

The paper's post-processing (Pang et al., IEEE TMM 2019; docs/ALGORITHM.md section 1) whitens the
signed-square-rooted, L2-normalised descriptors with a PCA learned on ANOTHER dataset (Paris6k
for Oxford5k, Oxford5k for Paris6k and Holidays), at full dimension by default, then
L2-normalises again. :class:`PCAWhitening` is the PCA step only: ``transform`` is the pure
affine map ``(x - mean) P`` and does not normalise; :class:`heatsearch.postprocess.PostProcess`
chains the steps.

Vectors are rows. The projection is stored as ``projection_ (d, dim)``, so
``transform(X) = (X - mean_) @ projection_``; cirtorch stores its transpose ``P (dim, d)`` and
applies it to column vectors as ``P (x - m)``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import numpy as np

from numpy.typing import ArrayLike

from . import _validate
from ._atomic import atomic_write
from ._compat import accepts_old_arguments
from .duplicates import DEFAULT_BLOCK, _component_labels, _linked_pairs
from .errors import InvalidInputError

__all__ = ["PCAWhitening", "EIGENVALUE_FLOOR", "DUPLICATE_WEIGHT", "DUPLICATE_SAMPLE", "DUPLICATE_WINDOW",
           "DUPLICATE_NEIGHBOURS", "DUPLICATE_JOIN_COSINE", "FILE_FORMAT", "FILE_VERSION"]

#: Eigenvalues below ``EIGENVALUE_FLOOR * largest eigenvalue`` are raised to that floor before
#: dividing by their square root. Why 1e-12: float64 ``eigh`` computes the eigenvalues of the
#: covariance with an absolute error of about ``d * 2.2e-16 * largest`` (1e-13 for d = 512,
#: 1e-12 for d = 4096), so anything smaller is rounding noise, not variance; and the floor caps
#: the gain of any whitened direction at ``1e6`` times that of the strongest one, so a
#: direction without real variance cannot swamp the others with amplified noise.
EIGENVALUE_FLOOR = 1e-12
#: Weight of the near-duplicate groups' scatter in the covariance of a whitening learned with
#: ``duplicates`` (:meth:`PCAWhitening.fit`). Measured with the default index (shrinkage 0.5,
#: pairs at a centred cosine >= 0.8, the neighbours' rule) by ``python tools/protocols.py
#: --holidays`` (the weight set in this module): weights 4 / 8 / 16 give copy detection 96.1
#: / 96.5 / 96.5 mAP (71.0 without the groups) and INRIA Holidays 87.5 / 87.5 / 87.0 (87.0
#: without); without the neighbours' rule (pairs at 0.75), 4 / 8 / 16 / 32 gave 92.7 / 93.5 /
#: 93.9 / 93.7 and 87.6 / 87.7 / 87.8 / 87.1.
DUPLICATE_WEIGHT = 8.0
#: Training vectors among which :meth:`PCAWhitening.fit` looks for near-duplicate pairs: all
#: of them up to this many, else this many in evenly spaced windows (:data:`DUPLICATE_WINDOW`). The
#: search is exact, ``m^2 d`` multiply-adds (and the rows with more than 31 copies searched
#: again): the whole fit of 20 000 vectors of 1280 dimensions with 2 000 copies takes 5.4 s
#: instead of 1.1 s without (2 cores, a build running beside), small beside extracting 20 000
#: images (hours on those cores). Memory at 1280 dimensions: a float32 unit copy of the searched rows (102 MB), then
#: the grouped rows' residuals in float64 (up to 205 MB if every row has a copy).
DUPLICATE_SAMPLE = 20_000
#: Consecutive training vectors per window of the sample beyond :data:`DUPLICATE_SAMPLE`: an
#: index's rows follow its paths' order, where copies often sit side by side (burst shots, an
#: edit saved beside its original), so windows of neighbours keep such pairs together where
#: single evenly spaced rows would almost never hold both (a stride of 2 already loses 5 of
#: 6 pairs of groups of 4 adjacent copies). Copies far apart in path order are found only
#: when both fall in the sample, so beyond 20 000 images the term weakens towards the
#: covariance-alone whitening for them.
DUPLICATE_WINDOW = 200
#: Nearest neighbours that must all lie in one group of copies for an image outside every group
#: to join it (:meth:`PCAWhitening.fit`), and the least cosine (after centring) to each of
#: them. Copies edited further than the pair threshold (a strong blur: 0.53-0.72 to the other
#: copies of its photo on the demo's set) keep that photo's copies as their nearest neighbours;
#: two of them, both in the same group at 0.5 or more, is the evidence asked. Measured with
#: ``python tools/protocols.py --holidays`` and ``tools/calibrate_duplicates.py --photos ...``
#: (README, "Retrieval quality"): with pairs at 0.8 the groups take 133 of the demo's 136
#: images instead of 114 (at 0.75 without the rule), copy detection 93.5 -> 96.5 mAP (every
#: image a query 96.5 -> 98.9; unwhitened 96.5 and 98.2), among the 1696 images of real
#: photos' copies 85.0 -> 88.4, while smvs in-collection (48.8) and Holidays (87.5, 87.7
#: before) keep their numbers; a cosine of 0.6 instead of 0.5: copy detection 96.1.
DUPLICATE_NEIGHBOURS = 2
DUPLICATE_JOIN_COSINE = 0.5
#: The ``format`` entry of a saved file.
FILE_FORMAT = "heatsearch-pca-whitening"
#: The ``version`` entry this heatsearch writes (and the only one it reads).
FILE_VERSION = 1

_FILE_KEYS = {"format", "version", "mean", "projection", "eigenvalues", "dim"}
_Path = Union[str, "os.PathLike[str]"]


class PCAWhitening:
    """PCA-whitening: centre, project on the top principal components, scale to unit variance.

    Learn it with :meth:`fit` on a TRAINING set (not the database or queries it will be applied
    to), apply it with :meth:`transform`, keep it with :meth:`save` / :meth:`load`.

    Attributes (None until fitted; float64 whatever the training dtype):
        mean_: ``(d,)`` mean of the training vectors.
        projection_: ``(d, dim_)``; column ``j`` is the ``j``-th principal direction (unit
            eigenvector of the covariance, largest eigenvalue first, sign fixed so that its
            largest-magnitude entry is positive) divided by ``sqrt(eigenvalues_[j])``.
        eigenvalues_: ``(dim_,)`` covariance eigenvalues used for the scaling, descending,
            after the :data:`EIGENVALUE_FLOOR` (so all > 0).
        dim_: output dimension (int).
        shrinkage_: the covariance shrinkage used by :meth:`fit` (float in ``[0, 1]``; None
            after :meth:`load`, whose file keeps the resulting eigenvalues only).
        duplicate_images_: how many of the training vectors :meth:`fit` searched are in a
            group of near-duplicates (int; None when fitted without ``duplicates``, and after
            :meth:`load`, whose file keeps the result only).
    """

    def __init__(self) -> None:
        self.mean_: Optional[np.ndarray] = None
        self.projection_: Optional[np.ndarray] = None
        self.eigenvalues_: Optional[np.ndarray] = None
        self.dim_: Optional[int] = None
        self.shrinkage_: Optional[float] = None
        self.duplicate_images_: Optional[int] = None

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` or :meth:`load` has set the attributes."""
        return self.projection_ is not None

    @accepts_old_arguments(positional=("dim",))
    def fit(
        self,
        X: ArrayLike,
        *,
        dim: Optional[int] = None,
        shrinkage: Union[float, str] = 0.0,
        duplicates: Optional[float] = None,
        pairs: Optional[Tuple[ArrayLike, ArrayLike]] = None,
    ) -> "PCAWhitening":
        """Learn the whitening from training vectors ``X``.

        Centres ``X`` by its mean, eigen-decomposes the sample covariance
        ``Xc^T Xc / (n - 1)`` in float64 and keeps the ``dim`` leading components, each
        divided by the square root of its eigenvalue: the whitened training set has zero mean
        and identity covariance on the kept dimensions. (cirtorch omits the ``1 / (n - 1)``;
        the scale is irrelevant once the result is L2-normalised, as the paper does.)

        Usable dimension: after centring, ``n`` vectors span at most ``n - 1`` dimensions, so
        at most ``min(d, n - 1)`` components carry variance. When ``dim`` (or ``d`` for
        ``dim=None``) exceeds that, which always happens for ``n <= d``, ``dim_`` is capped at
        ``n - 1`` with a UserWarning instead of dividing by zero eigenvalues.
        Eigenvalues below ``EIGENVALUE_FLOOR * largest`` (1e-12; see :data:`EIGENVALUE_FLOOR`)
        are raised to that floor, with a UserWarning suggesting a smaller ``dim``.

        Shrinkage (regularised whitening): with ``shrinkage = s > 0`` the covariance ``C`` is
        replaced by ``(1 - s) C + s (tr C / d) I`` before the decomposition (same eigenvectors,
        eigenvalues ``(1 - s) l + s tr C / d``), which has full rank whatever ``n``: all ``d``
        components are usable, and directions the training set does not span keep a finite
        gain instead of being dropped. Without it, a set of ``n <= d`` vectors whitened with
        itself becomes a regular simplex (every pair of training vectors at the same
        similarity), which destroys the neighbourhoods of an image collection whitened on
        itself; with it, the leading directions are still flattened. ``"ledoit-wolf"``
        chooses ``s`` from the data (Ledoit and Wolf 2004, the estimator of scikit-learn's
        ``ledoit_wolf_shrinkage``): the ``s`` minimising the expected squared error of the
        shrunk covariance. The value used is :attr:`shrinkage_`.

        Near-duplicates (``duplicates = t``): a training set that holds copies of the same
        image (edits, re-saves, bursts) has small variance along what tells a copy from its
        original, and a whitening amplifies small-variance directions, so copies drift apart
        (the demo's 136 images, 17 photos x 8 copies, whitened on themselves: copy detection
        96.5 mAP unwhitened, 71.0 whitened with shrinkage 0.5). With ``t``, every pair of
        training vectors whose cosine after centring on the training mean is ``>= t`` (an
        exact search, :mod:`heatsearch.duplicates`, among all of them up to
        :data:`DUPLICATE_SAMPLE`, else among that many in windows of neighbouring rows:
        :data:`DUPLICATE_WINDOW`) counts as copies of one image; the pairs join groups
        (connected components), which an image outside them joins when its
        :data:`DUPLICATE_NEIGHBOURS` nearest neighbours are all in one group at a cosine of
        at least :data:`DUPLICATE_JOIN_COSINE` (a copy edited too far to pair with its
        original, whose nearest neighbours are still its photo's copies); the groups' scatter
        around their means,
        ``A = DUPLICATE_WEIGHT * sum_g sum_{i in g} (x_i - mean_g)(x_i - mean_g)^T / m`` over
        the ``m`` searched vectors (each image once, whatever its group's size), is added to
        ``C`` before the shrinkage, whose target stays ``tr C / d``: ``(1 - s)(C + A) + s
        (tr C / d) I``. The directions along which copies differ are then not amplified, as in
        the learned whitening of Radenovic et al. (2016), which whitens by the covariance of
        matching pairs; here the pairs come from the training set itself and only complement
        ``C`` (the within-class scatter of linear discriminant analysis, with near-duplicate
        groups as the classes). Without such pairs the result is the plain whitening's.
        ``"ledoit-wolf"`` chooses its ``s`` from ``C`` alone. :attr:`duplicate_images_` says
        how many images are in groups.

        Matching pairs (``pairs = (A, B)``): vectors known to show the same image, row ``i`` of
        ``A`` and of ``B`` (in ``X``'s space: the same post-processing), e.g. images of ``X``
        and an edited copy of each (a crop, a rescaling, a re-encoding). Their difference
        scatter ``DUPLICATE_WEIGHT * (A - B)^T (A - B) / (2 max(m, n))`` is added to ``C`` with the
        groups' (each pair weighs as a group of two): the learned whitening of Radenovic et al.
        (2016) from matching pairs, on top of ``C``. Measured with a synthetic copy of every
        image of the index (:func:`heatsearch.vision.copies.synthetic_copy`, what an index
        does by default; ``python tools/protocols.py --candidates no-copies,default``; README,
        "Retrieval quality"): smvs query-to-database 49.3 -> 52.1, in-collection 48.8 -> 51.4,
        copy detection 96.5 -> 97.2 mAP; with copies of every other image only (an earlier
        measurement), 50.7, 48.0 and 96.7: each image needs its own.

        Args:
            X: training vectors ``(n, d)``, ``n >= 2``, float32 or float64, any layout.
            dim: number of output dimensions, ``1 <= dim <= d``; default None = all usable
                dimensions (the paper whitens at full dimension).
            shrinkage: ``s`` in ``[0, 1)`` (default 0: the paper's plain PCA-whitening),
                or ``"ledoit-wolf"``.
            duplicates: a cosine ``t`` in ``(0, 1)``, or None (default: no pairs, the
                paper's whitening).
            pairs: ``(A, B)``, two ``(m, d)`` float32/float64 arrays of matching vectors, or
                None (default).

        Returns:
            ``self``, fitted.

        Raises:
            InvalidDTypeError (a TypeError): ``X`` not float32/float64, ``dim`` not an int.
            InvalidInputError (a ValueError): ``X`` not 2-D, ``n < 2`` or ``d = 0``, NaN or
                infinity, ``dim`` outside ``[1, d]``, all training vectors equal, a covariance
                that overflows float64 (values near ``1e154`` or beyond), ``duplicates``
                outside ``(0, 1)``, ``pairs`` of another shape than ``(m, d)`` each or holding
                NaN or infinity (``pairs`` not a pair of arrays: InvalidDTypeError).

        Complexity: ``O(n d^2)`` for the covariance plus ``O(d^3)`` for the eigen-decomposition;
        with ``duplicates``, ``O(m^2 d)`` more for the pair search and ``O(g d^2)`` for the
        scatter of the ``g`` grouped images (``m = min(n,`` :data:`DUPLICATE_SAMPLE` ``)``).
        Memory: a float64 copy of ``X`` and three ``d x d`` float64 matrices; with
        ``duplicates``, a float32 unit copy of the searched rows and the grouped ones in
        float64 (beyond :data:`DUPLICATE_SAMPLE` rows, the sample in float64 too: 205 MB more
        at 1280 dimensions).

        The cosines are those of 1280-dimensional image descriptors (the thresholds were
        measured there): in a few dozen dimensions unrelated vectors reach a cosine of 0.5
        by chance, so low-dimensional data needs higher ``duplicates`` and
        :data:`DUPLICATE_JOIN_COSINE`.
        """
        arr = _validate.rows(X, "X", "n")
        n, d = arr.shape
        if n < 2 or d < 1:
            raise InvalidInputError(
                f"X must hold at least 2 training vectors of at least 1 dimension, got shape "
                f"{arr.shape}"
            )
        wanted = d if dim is None else _dimension(dim, d)
        _validate.finite(arr, "X")
        shrinkage = _validate.shrinkage(shrinkage)
        copies = _validate.duplicate_cosine(duplicates, "duplicates")
        matched = _validate.matching_pairs(pairs, d, "pairs")

        centred = arr.astype(np.float64)  # always a copy: centred in place below
        with np.errstate(over="ignore", invalid="ignore"):
            mean = centred.mean(axis=0)
            centred -= mean
            cov = centred.T @ centred
            cov /= n - 1
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            raise InvalidInputError(
                f"X's covariance overflows float64: its values (up to {float(np.abs(arr).max()):.6g} in "
                "magnitude) are far too large to whiten (L2-normalise the rows first, as "
                "heatsearch's descriptors are)"
            )
        amount = _ledoit_wolf(centred, cov) if isinstance(shrinkage, str) else shrinkage
        copy_terms: Optional[Tuple[np.ndarray, Optional[int]]] = None
        if copies is not None:  # centred is not needed after this: searched in place when it is the whole sample
            copy_terms = _copy_scatter(centred if n <= DUPLICATE_SAMPLE else centred[_duplicate_sample(n)], copies)
        del centred
        if matched is not None:
            diff = matched[0].astype(np.float64) - matched[1]
            copy_terms = _with_pairs(copy_terms, diff.T @ diff, diff.shape[0], n)
        return self._from_covariance(mean, cov, n, wanted, amount, dim, copy_terms)

    def _fit_blocks(
        self,
        blocks: Callable[[], Iterable[np.ndarray]],
        *,
        shrinkage: Union[float, str] = 0.0,
        duplicates: Optional[float] = None,
        pair_scatter: Optional[Tuple[np.ndarray, int]] = None,
    ) -> "PCAWhitening":
        """:meth:`fit` on the rows of ``blocks()`` without holding them all: ``blocks`` is
        called twice (a pass for the mean, then one for the covariance and, for
        ``"ledoit-wolf"``, the fourth moments), each time giving the same ``(rows, d)`` float64
        blocks in the same order. Memory: one block and two ``d x d`` float64 matrices (with
        ``duplicates``, three, and the searched rows as in :meth:`fit`). The
        result is :meth:`fit`'s on the concatenation up to float64 rounding (the covariance
        is summed block by block instead of in one product). Always at full dimension.
        Errors as :meth:`fit` (``n < 2``, NaN, a block of another width, no variance). With
        ``duplicates``, the searched rows (:data:`DUPLICATE_SAMPLE` at most) are copied out
        of the blocks during the second pass. ``pair_scatter``: matching pairs given by
        their difference scatter ``(A - B)^T (A - B)`` ``(d, d)`` float64 and their count
        ``m`` (what :meth:`fit`'s ``pairs`` computes; an index keeps these, not the pairs)."""
        shrinkage = _validate.shrinkage(shrinkage)
        copies = _validate.duplicate_cosine(duplicates, "duplicates")
        total: Optional[np.ndarray] = None
        n = 0
        for block in blocks():
            arr = _validate.rows(block, "X", "n")
            _validate.finite(arr, "X")
            if total is not None and arr.shape[1] != total.shape[0]:
                raise InvalidInputError(f"X's blocks have different widths: {total.shape[0]} and {arr.shape[1]}")
            s = arr.sum(axis=0, dtype=np.float64)
            total = s if total is None else total + s
            n += arr.shape[0]
        if total is None or n < 2 or not total.shape[0]:
            raise InvalidInputError(f"X must hold at least 2 training vectors of at least 1 dimension, got {n}")
        d = total.shape[0]
        mean = total / n
        cov = np.zeros((d, d))
        fourth = 0.0
        sample = _duplicate_sample(n) if copies is not None else np.empty(0, np.int64)
        sampled = np.empty((sample.size, d))  # filled during the pass, in the sample's order
        start = 0
        for block in blocks():
            centred = np.asarray(block, np.float64) - mean
            lo, hi = np.searchsorted(sample, [start, start + len(centred)])
            sampled[lo:hi] = centred[sample[lo:hi] - start]
            start += len(centred)
            cov += centred.T @ centred
            sq = np.einsum("ij,ij->i", centred, centred)
            fourth += float(np.sum(sq * sq))
        cov /= n - 1
        if not np.isfinite(cov).all():
            raise InvalidInputError("X's covariance overflows float64 (L2-normalise the rows first)")
        if isinstance(shrinkage, str):
            # sum_k x_k^T S x_k = tr(S sum_k x_k x_k^T) = n ||S||_F^2 for the biased S = cov (n-1)/n.
            s_biased = cov * ((n - 1) / n)
            amount = _ledoit_wolf_from(cov, n, fourth - 2 * n * float(np.sum(s_biased * s_biased)))
        else:
            amount = shrinkage
        copy_terms: Optional[Tuple[np.ndarray, Optional[int]]] = None if copies is None else _copy_scatter(sampled, copies)
        if pair_scatter is not None and pair_scatter[1] > 0:
            scatter = np.asarray(pair_scatter[0], np.float64)
            if scatter.shape != (d, d):
                raise InvalidInputError(f"pair_scatter must be ({d}, {d}) as the rows are {d} wide, got {scatter.shape}")
            copy_terms = _with_pairs(copy_terms, scatter, int(pair_scatter[1]), n)
        return self._from_covariance(mean, cov, n, d, amount, None, copy_terms)

    def _from_covariance(
        self, mean: np.ndarray, cov: np.ndarray, n: int, wanted: int, amount: float, dim: Optional[int],
        copy_terms: Optional[Tuple[np.ndarray, Optional[int]]] = None,
    ) -> "PCAWhitening":
        """The rest of :meth:`fit` once the ``(d,)`` mean and ``(d, d)`` covariance (with
        ``1 / (n - 1)``, modified in place) of ``n`` vectors are known, and, when asked for,
        the near-duplicate groups' scatter and the number of images in them
        (:func:`_copy_scatter`)."""
        d = cov.shape[0]
        target = np.trace(cov) / d  # the shrinkage's scale: the collection's own variance
        if copy_terms is not None:
            cov += copy_terms[0]
        if amount > 0:
            cov *= 1.0 - amount
            cov[np.diag_indices(d)] += amount * target
        eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending; reads one triangle
        eigenvalues = eigenvalues[::-1]
        eigenvectors = eigenvectors[:, ::-1]
        largest = float(eigenvalues[0])
        if not largest > 0:
            raise InvalidInputError(
                f"X has no variance: all {n} training vectors are equal, there is nothing "
                "to whiten"
            )

        usable = d if amount > 0 else min(d, n - 1)
        if wanted > usable:
            warnings.warn(
                f"PCAWhitening.fit: {n} training vectors span at most n - 1 = {usable} "
                f"dimensions after centring, so the output dimension is capped at {usable} "
                f"(asked for {wanted}{' (dim=None: all d)' if dim is None else ''}); "
                "use more training vectors than dimensions to whiten at full dimension",
                UserWarning,
                stacklevel=2,
            )
        kept = min(wanted, usable)
        values = eigenvalues[:kept].copy()
        vectors = eigenvectors[:, :kept]
        floor = EIGENVALUE_FLOOR * largest
        low = int(np.count_nonzero(values < floor))
        if low:
            warnings.warn(
                f"PCAWhitening.fit: {low} of the {kept} kept covariance eigenvalues are below "
                f"{EIGENVALUE_FLOOR:g} x the largest ({floor:.3g}): the training vectors are "
                f"(numerically) confined to fewer dimensions; those eigenvalues are raised to "
                f"the floor. Consider dim <= {kept - low}.",
                UserWarning,
                stacklevel=2,
            )
            values = np.maximum(values, floor)
        # eigh's eigenvector signs are arbitrary (they differ between LAPACK builds): fix them
        # so that each column's largest-magnitude entry is positive (as sklearn's svd_flip).
        pivots = np.argmax(np.abs(vectors), axis=0)
        signs = np.sign(vectors[pivots, np.arange(kept)])
        signs[signs == 0] = 1.0

        self.mean_ = mean
        self.projection_ = np.ascontiguousarray(vectors * (signs / np.sqrt(values)))
        self.eigenvalues_ = values
        self.dim_ = kept
        self.shrinkage_ = float(amount)
        self.duplicate_images_ = None if copy_terms is None else copy_terms[1]
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Whiten ``X``: ``(X - mean_) @ projection_``, no normalisation.

        Args:
            X: ``(n, d)`` rows or one ``(d,)`` vector, float32 or float64, any layout; ``d``
                must be the training dimension.

        Returns:
            ``(n, dim_)`` (or ``(dim_,)``), C-contiguous, in ``X``'s dtype (float32 input is
            computed in float32 with the float64 parameters rounded to float32). The paper
            L2-normalises this next (:class:`~heatsearch.postprocess.PostProcess` does).

        Raises:
            InvalidDTypeError (a TypeError): ``X`` not float32/float64.
            InvalidInputError (a ValueError): not fitted, ``X`` not 1-D/2-D, a width other
                than the training ``d``, NaN or infinity.
        """
        self._require_fitted("transform")
        assert self.mean_ is not None and self.projection_ is not None
        arr = _validate.vectors(X, "X", self.mean_.shape[0])
        _validate.finite(arr, "X")
        # float32 input is computed in float32, unless the parameters leave float32's range:
        # data of scale 1e-42 gives a projection of scale 1e42, which overflows float32 (all
        # NaN before); then float64, rounded once at the end.
        work = arr.dtype if self._fits(arr.dtype) else np.dtype(np.float64)
        # Centre first, then project: projecting X and the mean separately would subtract two
        # large, nearly equal numbers along low-variance directions.
        centred = arr.astype(work, copy=False) - self.mean_.astype(work)
        with np.errstate(over="ignore"):  # an overflow is reported just below
            out = np.ascontiguousarray(centred @ self.projection_.astype(work), dtype=arr.dtype)
        if not np.isfinite(out).all():
            raise InvalidInputError(
                f"X is too far from the training set: its whitened values overflow {arr.dtype} "
                "(pass float64, or check that X was post-processed like the training set)"
            )
        return out

    def _fits(self, dtype: np.dtype) -> bool:
        """Whether the parameters keep their precision in ``dtype``: every non-zero entry of
        the mean and the projection within ``[1e-30, 1e30]`` for float32 (normal numbers with
        eight orders of magnitude to spare for the products)."""
        if dtype == np.float64:
            return True
        assert self.mean_ is not None and self.projection_ is not None
        values = np.abs(np.concatenate([self.mean_.ravel(), self.projection_.ravel()]))
        values = values[values > 0]
        return not values.size or (values.min() >= 1e-30 and values.max() <= 1e30)

    def save(self, path: _Path) -> None:
        """Write the fitted whitening to ``path``, atomically.

        Format: an uncompressed NumPy ``.npz`` (no pickle) with the entries ``format`` =
        ``"heatsearch-pca-whitening"``, ``version`` = 1, ``mean (d,)``, ``projection
        (d, dim)``, ``eigenvalues (dim,)`` (float64) and ``dim``. ``path`` is used exactly as
        given (no ``.npz`` is appended). The file is written to a temporary file beside it,
        fsync-ed and renamed over ``path`` (:func:`heatsearch._atomic.atomic_write`): an
        existing file is replaced whole or, on any error, left byte-for-byte as it was.

        Raises:
            InvalidInputError: not fitted.
            OSError: the file cannot be written (``path`` is then unchanged).
        """
        self._require_fitted("save")
        assert self.mean_ is not None and self.projection_ is not None  # for type checkers
        assert self.eigenvalues_ is not None
        with atomic_write(path, "wb") as f:
            np.savez(
                f,
                format=np.array(FILE_FORMAT),
                version=np.array(FILE_VERSION, dtype=np.int64),
                mean=self.mean_,
                projection=self.projection_,
                eigenvalues=self.eigenvalues_,
                dim=np.array(self.dim_, dtype=np.int64),
            )

    @classmethod
    def load(cls, path: _Path) -> "PCAWhitening":
        """Read a whitening written by :meth:`save`.

        Raises:
            FileNotFoundError / PermissionError / IsADirectoryError: ``path`` cannot be opened.
            InvalidInputError: ``path`` is not a heatsearch PCA-whitening file, is truncated
                or corrupt, has an unknown ``version`` or inconsistent contents; the message
                names the file.
        """
        name = os.fspath(path)
        with open(name, "rb") as f:  # open() errors propagate as they are
            try:
                npz = np.load(f, allow_pickle=False)
                if not isinstance(npz, np.lib.npyio.NpzFile):
                    raise _BadFile("it holds a single .npy array, not an .npz archive")
                with npz:
                    # Reading every entry now checks each member's CRC: a damaged file fails
                    # here, not later.
                    entries = {key: npz[key] for key in npz.files if key in _FILE_KEYS}
            except _BadFile as e:
                raise InvalidInputError(_bad_file_message(name, str(e))) from None
            except Exception as e:  # zipfile, zlib, numpy header errors, EOF: all "corrupt"
                why = f"not a readable .npz archive, truncated or corrupt ({type(e).__name__}: {e})"
                raise InvalidInputError(_bad_file_message(name, why)) from e
        try:
            return cls._from_entries(entries)
        except _BadFile as e:
            raise InvalidInputError(_bad_file_message(name, str(e))) from None

    @classmethod
    def _from_entries(cls, entries: Dict[str, np.ndarray]) -> "PCAWhitening":
        """Validate the arrays of a loaded file (raises _BadFile) and build the object."""
        fmt = entries.get("format")
        if fmt is None:
            raise _BadFile(f"it has no 'format' entry (expected {FILE_FORMAT!r})")
        if fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != FILE_FORMAT:
            raise _BadFile(f"its format is {str(fmt)!r}, expected {FILE_FORMAT!r}")
        version = entries.get("version")
        if version is None or version.shape != () or version.dtype.kind not in "iu":
            raise _BadFile("its 'version' entry is missing or not an integer")
        if int(version) != FILE_VERSION:
            raise _BadFile(
                f"unsupported version {int(version)} (this heatsearch reads version "
                f"{FILE_VERSION}; a newer heatsearch may have written it)"
            )
        missing = sorted(_FILE_KEYS - set(entries))
        if missing:
            raise _BadFile(f"entries {missing} are missing")
        mean, proj, vals, dim = (entries[k] for k in ("mean", "projection", "eigenvalues", "dim"))
        for key, arr in (("mean", mean), ("projection", proj), ("eigenvalues", vals)):
            if arr.dtype != np.float64:
                raise _BadFile(f"{key!r} must be float64, found {arr.dtype}")
            if not np.all(np.isfinite(arr)):
                raise _BadFile(f"{key!r} holds NaN or infinity")
        if dim.shape != () or dim.dtype.kind not in "iu":
            raise _BadFile(f"'dim' must be an integer, found {dim.dtype} of shape {dim.shape}")
        k = int(dim)
        d = mean.shape[0] if mean.ndim == 1 else -1
        if not (1 <= k <= d and proj.shape == (d, k) and vals.shape == (k,)):
            raise _BadFile(
                f"inconsistent shapes: mean {mean.shape}, projection {proj.shape}, eigenvalues "
                f"{vals.shape}, dim {k} (expected (d,), (d, dim), (dim,) with 1 <= dim <= d)"
            )
        if not np.all(vals > 0):
            raise _BadFile("'eigenvalues' must all be > 0")
        out = cls()
        out.mean_ = np.ascontiguousarray(mean)
        out.projection_ = np.ascontiguousarray(proj)
        out.eigenvalues_ = np.ascontiguousarray(vals)
        out.dim_ = k
        return out

    def _require_fitted(self, what: str) -> None:
        if not self.is_fitted:
            raise InvalidInputError(
                f"PCAWhitening.{what}: not fitted; call fit(X_train) or PCAWhitening.load(path) "
                "first"
            )

    def __repr__(self) -> str:
        if not self.is_fitted:
            return "PCAWhitening(not fitted)"
        assert self.mean_ is not None
        return f"PCAWhitening(d={self.mean_.shape[0]}, dim={self.dim_})"


class _BadFile(Exception):
    """Internal: why a loaded file is rejected (turned into InvalidInputError)."""


def _bad_file_message(name: str, why: str) -> str:
    return f"{name!r} is not a valid heatsearch PCA-whitening file ({FILE_FORMAT}): {why}"


def _duplicate_sample(n: int) -> np.ndarray:
    """The rows among which :meth:`PCAWhitening.fit` looks for near-duplicates, ascending
    int64: all ``n`` up to :data:`DUPLICATE_SAMPLE`, else that many in
    ``DUPLICATE_SAMPLE // DUPLICATE_WINDOW`` windows of :data:`DUPLICATE_WINDOW` consecutive
    rows, evenly spaced (the first window at row 0, the last ending at row ``n - 1``)."""
    if n <= DUPLICATE_SAMPLE:
        return np.arange(n, dtype=np.int64)
    starts = np.linspace(0, n - DUPLICATE_WINDOW, DUPLICATE_SAMPLE // DUPLICATE_WINDOW).astype(np.int64)
    return np.unique((starts[:, None] + np.arange(DUPLICATE_WINDOW)).ravel())


def _copy_scatter(rows: np.ndarray, cosine: float) -> Tuple[np.ndarray, int]:
    """The near-duplicate term of :meth:`PCAWhitening.fit` and the number of images in groups.

    ``rows``: ``(m, d)`` float64 centred training rows, left unchanged. On a float32 unit copy
    (a zero row, the mean itself, scores 0 with all): the pairs at cosine ``>= cosine``,
    found by the exact blocked search of :mod:`heatsearch.duplicates`, join groups
    (connected components); then an image outside every group joins one when its
    :data:`DUPLICATE_NEIGHBOURS` nearest neighbours all belong to it, each at a cosine ``>=``
    :data:`DUPLICATE_JOIN_COSINE` (:func:`_join_neighbours`). Returns ``DUPLICATE_WEIGHT *
    sum_g sum_{i in g} (x_i - mean_g)(x_i - mean_g)^T / m`` ``(d, d)`` float64, which for a
    group of two is ``(x_i - x_j)(x_i - x_j)^T / 2``: each image counts once, however large
    its group. Memory: the float32 unit copy during the search, then the grouped rows."""
    m = rows.shape[0]
    unit = rows.astype(np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", unit, unit))[:, None]
    np.divide(unit, norms, out=unit, where=norms > 0)
    k = min(DUPLICATE_NEIGHBOURS + 1, m)
    nearest = (np.empty((m, k), np.int64), np.empty((m, k), np.float32))
    first, second, _ = _linked_pairs(unit, cosine, DEFAULT_BLOCK, nearest)
    del unit
    label = _component_labels(m, first, second)
    grouped = np.bincount(label, minlength=m)[label] >= 2
    if grouped.any() and m > DUPLICATE_NEIGHBOURS:
        _join_neighbours(*nearest, label, grouped)
    members = np.flatnonzero(grouped)
    members = members[np.argsort(label[members], kind="stable")]
    residuals = rows[members]  # images without a copy add nothing
    bounds = np.flatnonzero(np.diff(label[members])) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, members.size]) if members.size else ():
        residuals[lo:hi] -= residuals[lo:hi].mean(axis=0)
    return (residuals.T @ residuals) * (DUPLICATE_WEIGHT / m), int(members.size)


def _with_pairs(
    copy_terms: Optional[Tuple[np.ndarray, Optional[int]]], scatter: np.ndarray, m: int, n: int
) -> Tuple[np.ndarray, Optional[int]]:
    """``copy_terms`` (the groups' scatter and count, or None) plus the term of ``m`` matching
    pairs whose difference scatter is ``scatter`` ``(d, d)``, for a fit on ``n`` vectors:
    ``DUPLICATE_WEIGHT * scatter / (2 max(m, n))``: each pair weighs as a group of two among
    the ``n`` images, and more pairs than images (an index keeps the pairs of images it no
    longer holds) weigh as one per image."""
    term = scatter * (DUPLICATE_WEIGHT / (2 * max(m, n)))
    return (term, None) if copy_terms is None else (copy_terms[0] + term, copy_terms[1])


def _join_neighbours(ranks: np.ndarray, sims: np.ndarray, label: np.ndarray, grouped: np.ndarray) -> None:
    """Adds to the groups (``label``, ``grouped``: ``(m,)``, updated in place) every image
    outside them whose :data:`DUPLICATE_NEIGHBOURS` nearest other rows are all in one group
    at cosines ``>=`` :data:`DUPLICATE_JOIN_COSINE`, including through images that joined
    before it, until none can: the copies edited too far to pair with their original (a
    strong blur, a rescaling) whose nearest neighbours are still that photo's other copies.
    ``ranks``, ``sims``: ``(m, DUPLICATE_NEIGHBOURS + 1)`` each row's nearest rows (itself
    included) and cosines, best first. A grouped image never changes group, so the result is
    the same in any order; a work list visits each image once per neighbour that joins,
    ``O(m k)`` in all."""
    m = ranks.shape[0]
    k = DUPLICATE_NEIGHBOURS
    # Each row's k nearest OTHER rows (a row is not always its own first hit: exact copies tie).
    other = np.argsort(ranks == np.arange(m)[:, None], axis=1, kind="stable")[:, :k]
    near = np.take_along_axis(ranks, other, 1)
    close = np.take_along_axis(sims, other, 1).min(axis=1) >= DUPLICATE_JOIN_COSINE
    # listers[starts[i]:starts[i + 1]]: the rows that have row i among their k nearest.
    order = np.argsort(near.ravel(), kind="stable")
    listers, starts = order // k, np.searchsorted(near.ravel()[order], np.arange(m + 1))

    def ready(i: int) -> bool:
        return bool(not grouped[i] and close[i] and grouped[near[i]].all() and (label[near[i]] == label[near[i, 0]]).all())

    todo = [int(i) for i in np.flatnonzero(~grouped & close) if ready(int(i))]
    while todo:
        i = todo.pop()
        if grouped[i]:
            continue
        label[i], grouped[i] = label[near[i, 0]], True
        todo.extend(int(j) for j in listers[starts[i] : starts[i + 1]] if ready(int(j)))


def _dimension(dim: int, d: int) -> int:
    """``dim`` as an int in ``[1, d]``."""
    out = _validate.integer(dim, "dim", minimum=1, none_ok=True)
    if out > d:
        raise InvalidInputError(f"dim must be at most d = {d} (the input dimension), got {dim}")
    return out


def _ledoit_wolf(centred: np.ndarray, cov: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage of ``cov`` towards ``mu I`` (``mu = tr(cov) / d``), in ``[0, 1]``.

    Ledoit and Wolf (2004), "A well-conditioned estimator for large-dimensional covariance
    matrices", eq. 14: ``s = min(b2, d2) / d2`` with ``d2 = ||S - mu I||_F^2 / d`` and ``b2`` the
    estimated variance of ``S`` around the true covariance,
    ``sum_k ||x_k x_k^T - S||_F^2 / (n^2 d)``, computed without forming the ``n`` outer
    products: ``||x x^T - S||^2 = ||x||^4 - 2 x^T S x + ||S||^2``. ``S`` is the biased
    covariance ``Xc^T Xc / n`` here (the scale cancels in ``s``). ``centred``: ``(n, d)``
    float64 rows minus their mean; ``cov``: their ``(d, d)`` covariance with ``1 / (n - 1)``.
    """
    n = centred.shape[0]
    s = cov * ((n - 1) / n)
    sq = np.einsum("ij,ij->i", centred, centred)
    quad = np.einsum("ij,ij->i", centred @ s, centred)
    return _ledoit_wolf_from(cov, n, float(np.sum(sq * sq - 2 * quad)))


def _ledoit_wolf_from(cov: np.ndarray, n: int, spread: float) -> float:
    """:func:`_ledoit_wolf` given ``spread = sum_k (||x_k||^4 - 2 x_k^T S x_k)`` (centred rows)."""
    d = cov.shape[0]
    s = cov * ((n - 1) / n)
    mu = np.trace(s) / d
    d2 = (np.sum(s * s) - 2 * mu * np.trace(s) + mu * mu * d) / d
    if not d2 > 0:
        return 1.0  # S is already a multiple of the identity
    b2 = float(spread / n + np.sum(s * s)) / (n * d)
    return float(min(max(b2, 0.0), d2) / d2)
