"""Global pooling of one CNN feature map into one descriptor: HeW and the usual baselines.

Every function takes ONE channels-last feature map ``(H, W, C)`` (after ReLU in the papers)
and returns a ``(C,)`` descriptor in the map's dtype (float32 or float64), NOT normalised
(the usual post-processing is in :mod:`heatsearch.postprocess`). A torch tensor
``(C, H, W)`` must be permuted first: ``t.permute(1, 2, 0).numpy()``.

=========  ==============================================  =====================  ===========
method     paper                                           defaults match         (N, C) ok
=========  ==============================================  =====================  ===========
``hew``    Pang et al., IEEE TMM 2019                      the authors' MATLAB    yes
``spoc``   Babenko & Lempitsky, ICCV 2015                  cirtorch, PyRetri [1]_ yes [2]_
``mac``    Tolias et al., ICLR 2016                        cirtorch               yes
``gem``    Radenovic et al., TPAMI 2018                    cirtorch (p=3, 1e-6)   yes
``rmac``   Tolias et al., ICLR 2016                        cirtorch (L=3, 0.4)    no
``crow``   Kalantidis et al., ECCV workshops 2016          yahoo/crow (a=b=2)     yes
=========  ==============================================  =====================  ===========

.. [1] ``centering=False`` (default): cirtorch's ``spoc`` times ``H*W`` (a sum, not a mean);
   ``centering=True``: PyRetri's SPoC with its Gaussian centre prior.
.. [2] not with ``centering=True``, whose prior is spatial.

:func:`pool` and :func:`pool_batch` dispatch by name through :data:`POOLINGS`.

Float32 maps are pooled with float64 arithmetic (sums, powers, norms) and the result is
rounded once to float32; MAC and the R-MAC region maxima are exact in any dtype.
Every method is vectorised over cells (one pass or a matrix-vector product over the
``(H*W, C)`` matrix, ``O(H W C)``); R-MAC loops over its few regions (21 for a 7 x 10 map).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from ._compat import accepts_old_arguments
from .errors import InvalidInputError
from .hew import DEFAULT_GROUND, DEFAULT_THRESHOLD, hew_pool, hew_pool_batch

__all__ = [
    "spoc",
    "mac",
    "gem",
    "rmac",
    "rmac_regions",
    "crow",
    "crow_weights",
    "hew",
    "pool",
    "pool_batch",
    "POOLINGS",
    "GEM_P",
    "GEM_EPS",
    "RMAC_LEVELS",
    "RMAC_OVERLAP",
    "RMAC_EPS",
    "CROW_A",
    "CROW_B",
]

#: GeM exponent and clamp: cirtorch's ``gem(x, p=3, eps=1e-6)``.
GEM_P = 3.0
GEM_EPS = 1e-6
#: R-MAC scale levels and wanted overlap of neighbouring regions: cirtorch's ``rmac(x, L=3)``
#: with its fixed ``ovr = 0.4`` (Tolias et al. 2016).
RMAC_LEVELS = 3
RMAC_OVERLAP = 0.4
#: Each region vector is divided by ``||v|| + RMAC_EPS``: cirtorch's ``rmac(..., eps=1e-6)``.
RMAC_EPS = 1e-6
#: The region counts along the longer side that R-MAC chooses from at level 1 (cirtorch's
#: ``steps``): 2 to 7, i.e. 1 to 6 regions more than along the shorter side.
_RMAC_STEPS = (2, 3, 4, 5, 6, 7)
#: CroW spatial weight ``(S / ||S||_a) ** (1 / b)``: a = b = 2 in the paper and yahoo/crow.
CROW_A = 2.0
CROW_B = 2.0


def _matrix(fmap: ArrayLike) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """A finite ``(H, W, C)`` or ``(N, C)`` map as an ``(N, C)`` matrix + its spatial shape."""
    mat, spatial = _validate.feature_map(fmap)
    _validate.finite(mat, "fmap")
    return mat, spatial


def _spatial(fmap: ArrayLike, method: str, why: str) -> np.ndarray:
    """A finite channels-last ``(H, W, C)`` map, for the methods that need the layout."""
    arr = _validate.spatial_map(fmap, method, why)
    _validate.finite(arr, "fmap")
    return arr


def _positive(value: float, name: str) -> float:
    return _validate.real(value, name, low=0.0, low_open=True)


def _non_negative(value: float, name: str) -> float:
    return _validate.real(value, name, low=0.0)


# ---------------------------------------------------------------------------------------------
# SPoC, MAC, GeM.
# ---------------------------------------------------------------------------------------------
def spoc(fmap: ArrayLike, *, centering: bool = False) -> np.ndarray:
    """SPoC: sum pooling, ``sum_i f_i`` over the cells (Babenko & Lempitsky, ICCV 2015).

    Returns the SUM, as the paper does. cirtorch's ``spoc`` is average pooling (the sum
    divided by ``H*W``): the two differ by a per-map scale that L2 normalisation removes.

    Args:
        fmap: channels-last map ``(H, W, C)`` or ``(N, C)`` local features, float32/float64.
        centering: weight cell ``(i, j)`` by the paper's centering prior, a Gaussian
            ``exp(-((i - (H-1)/2)^2 + (j - (W-1)/2)^2) / (2 sigma^2))`` with ``sigma`` one
            third of the distance from the centre to the nearest border, ``min(H, W) / 6``
            (cell indices as PyRetri's SPoC, which applies this prior by default). Default
            False: plain sum pooling, as cirtorch. Needs an ``(H, W, C)`` map.

    Returns:
        ``(C,)`` in the map's dtype. An all-zero map gives zeros.
    """
    if not _validate.flag(centering, "centering"):
        mat, _ = _matrix(fmap)
        total: np.ndarray = mat.sum(axis=0, dtype=np.float64)
        return total.astype(mat.dtype)
    arr = _spatial(fmap, "spoc with centering=True", "the centering prior is spatial")
    h, w, c = arr.shape
    sigma = min(h, w) / 6.0
    # The Gaussian is separable: the (H, W) prior is the outer product of two 1-D ones.
    gy = np.exp(-((np.arange(h) - (h - 1) / 2.0) ** 2) / (2.0 * sigma**2))
    gx = np.exp(-((np.arange(w) - (w - 1) / 2.0) ** 2) / (2.0 * sigma**2))
    weights = np.outer(gy, gx).reshape(h * w)
    out: np.ndarray = weights @ arr.reshape(h * w, c)
    return out.astype(arr.dtype)


def mac(fmap: ArrayLike) -> np.ndarray:
    """MAC: max pooling, ``max_i f_ic`` per channel (Tolias et al., ICLR 2016; cirtorch ``mac``).

    ``fmap``: ``(H, W, C)`` or ``(N, C)``, float32/float64. Returns ``(C,)`` in its dtype.
    """
    mat, _ = _matrix(fmap)
    out: np.ndarray = mat.max(axis=0)
    return out


@accepts_old_arguments(positional=("p", "eps"))
def gem(fmap: ArrayLike, *, p: float = GEM_P, eps: float = GEM_EPS) -> np.ndarray:
    """GeM: generalised mean ``(mean_i max(f_ic, eps)^p)^(1/p)`` (Radenovic et al., TPAMI 2018).

    Clamp at ``eps``, power ``p``, mean over the cells, power ``1/p``: cirtorch's ``gem``,
    whose defaults ``p = 3``, ``eps = 1e-6`` are kept. ``p = 1`` is average pooling of the
    clamped map; ``p -> inf`` tends to MAC.

    Args:
        fmap: ``(H, W, C)`` or ``(N, C)``, float32/float64.
        p: the exponent, a finite number > 0.
        eps: the clamp, a finite number >= 0; with ``eps > 0`` an all-zero (or all-negative)
            channel gives exactly ``eps``, with ``eps = 0`` it gives 0 (never NaN).

    Returns:
        ``(C,)`` in the map's dtype. Computed as ``m (mean_i (x_ic / m_c)^p)^(1/p)`` with
        ``m_c = max_i x_ic`` (``x`` the clamped map): equal to the formula above, but
        ``x^p`` cannot overflow or underflow whatever ``p`` and the scale of the map.
    """
    mat, _ = _matrix(fmap)
    exponent = _positive(p, "p")
    floor = _non_negative(eps, "eps")
    x = np.maximum(mat, floor, dtype=np.float64)
    top = x.max(axis=0)
    safe = np.where(top > 0, top, 1.0)  # top = 0 only when eps = 0 and the channel is <= 0
    out: np.ndarray = top * np.mean((x / safe) ** exponent, axis=0) ** (1.0 / exponent)
    return out.astype(mat.dtype)


# ---------------------------------------------------------------------------------------------
# R-MAC.
# ---------------------------------------------------------------------------------------------
@accepts_old_arguments(positional=("levels", "overlap"))
def rmac_regions(
    height: int, width: int, *, levels: int = RMAC_LEVELS, overlap: float = RMAC_OVERLAP
) -> List[Tuple[int, int, int]]:
    """The R-MAC region grid of a ``height x width`` map: ``(top, left, size)`` squares.

    The grid of cirtorch's ``rmac`` / ``roipool`` (after Tolias et al., ICLR 2016), in its
    order (level by level, then row-major). With ``w = min(H, W)``:

    - level ``l = 1 .. levels`` has square regions of side ``floor(2 w / (l + 1))``
      (level 1: ``w``); a level whose side is 0 is skipped;
    - along the shorter side there are ``l`` regions, along the longer one ``l + d``, where
      ``d`` in 1..6 (0 for a square map) is chosen once so that two neighbouring level-1
      regions overlap by the fraction closest to ``overlap`` (first candidate on a tie);
    - ``n`` regions of side ``s`` along a side of length ``m`` start at
      ``floor(k (m - s) / (n - 1))``, ``k = 0 .. n-1`` (one region starts at 0), so the
      first touches one border and the last the other. Regions may repeat on tiny maps
      (a 2 x 2 map at level 3 has starts 0, 0, 1).

    This list does NOT contain the whole map, which :func:`rmac` adds as one more region
    (as cirtorch does). The arithmetic is cirtorch's float32 (its ``torch.Tensor`` grids),
    operation for operation, so the regions are the same as cirtorch's for every map size,
    including those where two region counts overlap equally well in exact arithmetic and
    rounding decides: a 5 x 9 map (2 or 3 regions along the longer side: cirtorch takes 2,
    Tolias's MATLAB, in double, takes 3) or a 3 x 11 map (5 or 6: both take 6).

    Args:
        height, width: the map's spatial size (>= 1 each).
        levels: number of scales ``L`` (>= 1); default 3 (cirtorch).
        overlap: wanted overlap fraction in [0, 1); default 0.4 (cirtorch, fixed there).
    """
    h = _validate.integer(height, "height", minimum=1)
    wd = _validate.integer(width, "width", minimum=1)
    n_levels = _validate.integer(levels, "levels", minimum=1)
    ovr = _validate.real(overlap, "overlap", low=0.0, high=1.0)

    f32 = np.float32
    w = min(h, wd)
    # Overlap of two level-1 regions (side w) spread over the longer side with n = steps
    # regions: (w^2 - w b) / w^2 with b = (max - w) / (n - 1). torch computes
    # `int / tensor` as `tensor.reciprocal() * int`, and each step rounds to float32.
    steps = np.array(_RMAC_STEPS, dtype=f32)
    b = (f32(1) / (steps - f32(1))) * f32(max(h, wd) - w)
    err = np.abs((f32(w * w) - f32(w) * b) / f32(w * w) - f32(ovr))
    extra = int(np.argmin(err)) + 1  # argmin takes the first minimum, as torch.min does
    extra_h = extra if h > wd else 0
    extra_w = extra if wd > h else 0

    regions: List[Tuple[int, int, int]] = []
    for level in range(1, n_levels + 1):
        side = (2 * w) // (level + 1)
        if side == 0:
            continue
        # cirtorch offsets the starts by floor(side/2 - 1) and removes it again (centre
        # coordinates in Tolias's MATLAB); in float32 the detour can change the rounding.
        half = f32(math.floor(side / 2 - 1))

        def starts(count: int, length: int) -> List[int]:
            step = f32(0.0 if count == 1 else (length - side) / (count - 1))
            pos = np.floor(half + np.arange(count, dtype=f32) * step) - half
            return [int(v) for v in pos]

        rows = starts(level + extra_h, h)
        cols = starts(level + extra_w, wd)
        regions.extend((top, left, side) for top in rows for left in cols)
    return regions


@accepts_old_arguments(positional=("levels", "overlap", "eps"))
def rmac(
    fmap: ArrayLike,
    *,
    levels: int = RMAC_LEVELS,
    overlap: float = RMAC_OVERLAP,
    eps: float = RMAC_EPS,
) -> np.ndarray:
    """R-MAC: sum of L2-normalised MACs of square regions (Tolias et al., ICLR 2016).

    ``v = m(whole map) + sum_r m(region r)`` with ``m(R) = MAC(R) / (||MAC(R)|| + eps)`` over
    the regions of :func:`rmac_regions`: cirtorch's ``rmac(x, L=3, eps=1e-6)``, including
    its extra term for the whole map (on a square map the level-1 region IS the whole map,
    so it counts twice, as in cirtorch). Like cirtorch, and unlike the paper's full
    pipeline, there is no PCA-whitening of each region vector before the sum; whiten the
    sum with :mod:`heatsearch.whitening` if wanted.

    Args:
        fmap: channels-last ``(H, W, C)`` map, float32/float64 (the regions need the layout).
        levels: number of scales ``L`` (>= 1); default 3 (cirtorch).
        overlap: wanted overlap of neighbouring regions in [0, 1); default 0.4 (cirtorch).
        eps: added to every region norm (>= 0); default 1e-6 (cirtorch). An all-zero region
            contributes 0 (with ``eps = 0`` too: a zero norm is left as it is).

    Returns:
        ``(C,)`` in the map's dtype, not normalised. Invariant to scaling the map by a
        positive factor (up to ``eps``). Any map size works: a 1 x 1 map has one region
        (levels 2, 3 have side 0), so ``rmac = 2 f / (||f|| + eps)``.
    """
    arr = _spatial(fmap, "rmac", "R-MAC regions are spatial")
    regions = rmac_regions(arr.shape[0], arr.shape[1], levels=levels, overlap=overlap)
    floor = _non_negative(eps, "eps")
    c = arr.shape[2]
    vecs = np.empty((len(regions) + 1, c), dtype=np.float64)
    vecs[0] = arr.reshape(-1, c).max(axis=0)
    for k, (top, left, side) in enumerate(regions, start=1):
        vecs[k] = arr[top : top + side, left : left + side].max(axis=(0, 1))
    norms = np.linalg.norm(vecs, axis=1) + floor
    norms[norms == 0] = 1.0  # an all-zero region with eps = 0 stays zero
    out: np.ndarray = (vecs / norms[:, None]).sum(axis=0)
    return out.astype(arr.dtype)


# ---------------------------------------------------------------------------------------------
# CroW.
# ---------------------------------------------------------------------------------------------
@accepts_old_arguments(positional=("a", "b"))
def crow_weights(
    fmap: ArrayLike, *, a: float = CROW_A, b: float = CROW_B
) -> Tuple[np.ndarray, np.ndarray]:
    """CroW's spatial and channel weights of one map (Kalantidis et al., ECCVW 2016).

    - Spatial: ``S_i = sum_c f_ic`` (the channel-sum map), weight ``(S_i / ||S||_a)^(1/b)``.
      If ``S`` is 0 everywhere (an all-zero map) every spatial weight is 0, where the
      reference code would divide 0 by 0.
    - Channel: ``Q_c`` = fraction of the cells where channel c is non-zero, weight
      ``log(sum_k Q_k / Q_c)``; a channel that is zero in every cell (``Q_c = 0``) gets
      weight 0. That is exactly what yahoo/crow's ``compute_crow_channel_weight`` does
      (``log(nzsum / d) if d > 0 else 0``; no epsilon). PyRetri instead adds 1e-6 to every
      ``Q_c``, which makes the dead channel's weight about ``log(1e6 sum Q)`` and shifts every
      other weight slightly. A dead channel's descriptor entry is 0 whatever its weight
      (its weighted sum is 0), so 0 changes nothing there and keeps the live channels'
      weights exact. Note that a map with exactly one live channel gets channel weight
      ``log 1 = 0`` everywhere, hence a zero CroW descriptor, as in the reference code.

    Args:
        fmap: ``(H, W, C)`` or ``(N, C)`` (neither weight uses the layout), float32/float64,
            with non-negative channel sums (a map after ReLU, as in the paper): a negative
            ``S_i`` has no real ``(S_i / ||S||)^(1/b)`` and is an InvalidInputError.
        a: the norm of the spatial normalisation (> 0); default 2 (paper, yahoo/crow).
        b: the root of the spatial weight (> 0); default 2 (paper, yahoo/crow).

    Returns:
        ``(spatial, channel)``: ``(H, W)`` (``(N,)`` for an (N, C) map) and ``(C,)``, in the
        map's dtype.
    """
    mat, spatial_shape = _matrix(fmap)
    sw, cw = _crow_weights(mat, _positive(a, "a"), _positive(b, "b"))
    return sw.astype(mat.dtype).reshape(spatial_shape), cw.astype(mat.dtype)


def _crow_weights(mat: np.ndarray, a: float, b: float) -> Tuple[np.ndarray, np.ndarray]:
    s = mat.sum(axis=1, dtype=np.float64)
    if np.any(s < 0):
        i = int(np.argmin(s))
        raise InvalidInputError(
            f"crow needs non-negative channel sums (a feature map after ReLU), got "
            f"{s[i]:.6g} at cell {i} (row-major)"
        )
    top = s.max()
    if top > 0:
        # ||S||_a scaled by max S, so S^a cannot overflow or underflow.
        norm = top * np.sum((s / top) ** a) ** (1.0 / a)
        spatial = (s / norm) ** (1.0 / b)
    else:
        spatial = np.zeros_like(s)
    nonzero = np.count_nonzero(mat, axis=0) / mat.shape[0]
    live = nonzero > 0
    channel = np.zeros(mat.shape[1])
    channel[live] = np.log(nonzero.sum() / nonzero[live])
    return spatial, channel


@accepts_old_arguments(positional=("a", "b"))
def crow(fmap: ArrayLike, *, a: float = CROW_A, b: float = CROW_B) -> np.ndarray:
    """CroW: cross-dimensional weighting (Kalantidis et al., ECCV workshops 2016).

    ``v_c = channel_c * sum_i spatial_i f_ic``, the weights of :func:`crow_weights` both
    computed from the unweighted map: the order of yahoo/crow's
    ``apply_crow_aggregation`` (weight cells, sum, then weight channels), with its defaults
    ``a = b = 2``. Its result is this descriptor before normalisation; yahoo/crow's
    ``compute_crow_channel_weight`` keeps ``Q`` in float32, we use float64, so the two agree
    to float32 rounding.

    Args:
        fmap: ``(H, W, C)`` or ``(N, C)``, float32/float64, non-negative channel sums.
        a, b: see :func:`crow_weights`.

    Returns:
        ``(C,)`` in the map's dtype. An all-zero map gives zeros (no NaN).
    """
    mat, _ = _matrix(fmap)
    spatial, channel = _crow_weights(mat, _positive(a, "a"), _positive(b, "b"))
    out: np.ndarray = channel * (spatial @ mat)
    return out.astype(mat.dtype)


# ---------------------------------------------------------------------------------------------
# HeW and the dispatcher.
# ---------------------------------------------------------------------------------------------
def hew(
    fmap: ArrayLike,
    mean: Optional[ArrayLike] = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    ground: float = DEFAULT_GROUND,
) -> np.ndarray:
    """HeW: heat-diffusion weighting (Pang et al., IEEE TMM 2019); :func:`heatsearch.hew_pool`.

    Arguments, defaults (``threshold = 0``, ``ground = 0.1``, the authors' code) and errors
    as there; ``(H, W, C)`` or ``(N, C)``; runs in Rust.
    """
    return hew_pool(fmap, mean, threshold=threshold, ground=ground)


#: Every pooling by name, for :func:`pool` and :func:`pool_batch`.
POOLINGS: Dict[str, Callable[..., np.ndarray]] = {
    "hew": hew,
    "spoc": spoc,
    "mac": mac,
    "gem": gem,
    "rmac": rmac,
    "crow": crow,
}


def _method(method: str) -> Callable[..., np.ndarray]:
    return POOLINGS[_validate.choice(method, "method", tuple(POOLINGS))]


def pool(fmap: ArrayLike, method: str = "hew", **kwargs: Any) -> np.ndarray:
    """``POOLINGS[method](fmap, **kwargs)``: one map to a ``(C,)`` descriptor.

    ``method`` is one of ``"hew"`` (default), ``"spoc"``, ``"mac"``, ``"gem"``, ``"rmac"``,
    ``"crow"``; ``kwargs`` are that method's parameters (a wrong name is a TypeError), e.g.
    ``pool(fmap, "gem", p=4.0)``.
    """
    return _method(method)(fmap, **kwargs)


def pool_batch(fmaps: Sequence[ArrayLike], method: str = "hew", **kwargs: Any) -> np.ndarray:
    """Descriptors of many maps, ``(B, C)``: row b is ``pool(fmaps[b], method, **kwargs)``.

    ``fmaps``: a sequence of B maps (or one ``(B, H, W, C)`` array), spatial
    sizes free, C and dtype the same for all (else InvalidInputError / InvalidDTypeError).
    ``"hew"`` runs :func:`heatsearch.hew_pool_batch` (maps in parallel in Rust); the NumPy
    methods pool one map after the other.
    """
    func = _method(method)
    if func is hew:
        return hew_pool_batch(fmaps, **kwargs)
    maps = list(fmaps)
    _validate.feature_maps(fmaps if isinstance(fmaps, np.ndarray) else maps)  # shape, C, dtype
    return np.stack([func(m, **kwargs) for m in maps])
