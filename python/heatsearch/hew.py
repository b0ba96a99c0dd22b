"""HeW: heat-diffusion weighting and aggregation of local CNN features.

Pang et al., "Deep Feature Aggregation and Image Re-ranking with Heat Diffusion for Image
Retrieval", IEEE TMM 21(6), 2019, section III; the exact computation is the project's
docs/ALGORITHM.md, section 1. Every local feature (cell) of a feature map is in turn a heat source;
the system temperature ``T_j`` it causes is large for bursty features (similar to many other
cells), which get the small weight ``w_j = 1 / T_j``. The descriptor is ``sum_j w_j f_j`` over
the raw features.

FEATURE MAPS ARE CHANNELS-LAST: ``(H, W, C)``, or ``(N, C)`` for N local features. A torch
tensor ``(C, H, W)`` must be permuted first: ``t.permute(1, 2, 0).numpy()``.

The work runs in Rust (Cholesky of the SPD matrix ``M = D - A`` and its triangular inverse,
``2 N^3 / 3`` flops, plus ``N^2 C`` for the affinity) with the GIL released. The results have
the input's dtype (float32 or float64); float32 maps are computed with float32 products and
float64 accumulations. The pure-NumPy transcription is :mod:`heatsearch.reference`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import _core, _validate

__all__ = ["hew_weights", "hew_pool", "hew_pool_batch", "local_mean"]

# The defaults are the Rust core's (rust/core/src/hew.rs), the one place they are written.
#: Affinity threshold ``tau``: 0 in the authors' first code release (0.1 in a later one).
DEFAULT_THRESHOLD: float = _core.HEW_THRESHOLD
#: Ground conductance factor: ``z = 0.1 * mean of the positive affinities`` (the paper).
DEFAULT_GROUND: float = _core.HEW_GROUND
#: A cell counts as equal to the mean (zero affinity to all) when
#: ``||f - mu|| <= 16 eps (||f|| + ||mu||)``: rounding noise of the mean is not a direction.
EQUAL_TO_MEAN_ULPS: float = _core.EQUAL_TO_MEAN_ULPS


def hew_weights(
    fmap: ArrayLike,
    mean: Optional[ArrayLike] = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    ground: float = DEFAULT_GROUND,
) -> np.ndarray:
    """HeW weight of every cell of one feature map.

    Args:
        fmap: channels-last feature map ``(H, W, C)`` or ``(N, C)`` local features, float32 or
            float64, any memory layout (after ReLU in the paper, but any real values work).
        mean: centering mean ``(C,)`` of local features, learned on a training set with
            :func:`local_mean` (the paper's ``mean_CNN``). ``None``: the map's own mean of
            local features.
        threshold: affinities below it are removed (``tau >= 0``); default 0 (the authors'
            first code release; their later release used 0.1).
        ground: ground conductance factor (``> 0``): ``z = ground * mean of the positive
            affinities``; default 0.1 (the paper).

    Returns:
        Weights ``(H, W)`` for a 3-D map, ``(N,)`` for a 2-D one, in the map's dtype; all
        positive and finite. A map with one cell or no positive affinity gets weights 1; a
        cell with no positive affinity gets the largest weight of the other cells; a cell
        equal to the mean (up to rounding, see ``EQUAL_TO_MEAN_ULPS``) has no affinity.

    Raises:
        InvalidDTypeError (a TypeError): a dtype other than float32 / float64.
        InvalidInputError (a ValueError): wrong ndim, an empty map, NaN/Inf, a mean of the
            wrong length, ``threshold < 0`` or ``ground <= 0``.
    """
    mat, spatial, mu, t, g = _validate.hew_arguments(fmap, mean, threshold, ground)
    return _core.hew_weights(mat, mu, threshold=t, ground=g).reshape(spatial)


def hew_pool(
    fmap: ArrayLike,
    mean: Optional[ArrayLike] = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    ground: float = DEFAULT_GROUND,
) -> np.ndarray:
    """HeW descriptor ``sum_j w_j f_j`` of one feature map, ``(C,)``, in the map's dtype.

    Arguments and errors as in :func:`hew_weights` (channels-last maps). The descriptor is
    not normalised: the paper's post-processing is signed square root, L2, PCA-whitening, L2.
    """
    mat, _, mu, t, g = _validate.hew_arguments(fmap, mean, threshold, ground)
    return _core.hew_pool(mat, mu, threshold=t, ground=g)


def hew_pool_batch(
    fmaps: Sequence[ArrayLike],
    mean: Optional[ArrayLike] = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    ground: float = DEFAULT_GROUND,
) -> np.ndarray:
    """HeW descriptors of many feature maps, ``(B, C)``.

    Args:
        fmaps: a sequence of B channels-last maps ``(H_b, W_b, C)`` or ``(N_b, C)``, spatial
            sizes free, C and dtype the same for all; or one 4-D ``(B, H, W, C)`` array. (One
            3-D array is refused: a single map must be wrapped in a list.)
        mean, threshold, ground: as in :func:`hew_weights`; ``mean=None`` centres each map by
            its own mean.

    Maps are pooled in parallel (one thread each; a batch smaller than the thread pool gives
    each map all threads). Row b equals ``hew_pool(fmaps[b], ...)`` exactly.
    """
    mats, mu, t, g = _validate.hew_batch_arguments(fmaps, mean, threshold, ground)
    return _core.hew_pool_batch(mats, mu, threshold=t, ground=g)


def local_mean(fmaps: Sequence[ArrayLike]) -> np.ndarray:
    """Mean of all local features of all maps, ``(C,)``, in the maps' dtype.

    The centering mean of HeW (the paper learns it on a training image set): the sum of every
    cell of every map divided by the total number of cells, not a mean of per-map means.
    Accumulated in float64. ``fmaps``: a sequence of channels-last maps of one dtype and C.
    """
    return _core.local_mean(_validate.feature_maps(fmaps))
