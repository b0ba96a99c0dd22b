"""Pictures of what HeW does: the weight of every region of an image drawn over it.

Bright regions keep their weight; dark ones are the bursty features (repeated patterns,
sky, texture) that the heat diffusion suppresses.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["weight_overlay", "explain_image"]

# Anchor colours of a perceptually ordered dark-to-bright colour map (black, purple, red,
# orange, pale yellow), interpolated linearly.
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] ``(H, W)`` to RGB uint8 ``(H, W, 3)``."""
    v = np.clip(values, 0, 1) * (len(_ANCHORS) - 1)
    i = np.minimum(v.astype(int), len(_ANCHORS) - 2)
    t = (v - i)[..., None]
    return ((1 - t) * _ANCHORS[i] + t * _ANCHORS[i + 1]).astype(np.uint8)


def weight_overlay(image: np.ndarray, weights: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blends the weight map ``(h, w)`` (any positive values), scaled to the image
    ``(H, W, 3)`` uint8, over the image; returns an RGB uint8 array ``(H, W, 3)``."""
    from PIL import Image

    w = np.asarray(weights, np.float64)
    lo, hi = float(w.min()), float(w.max())
    norm = (w - lo) / (hi - lo) if hi > lo else np.ones_like(w)
    h, wd = image.shape[:2]
    heat = Image.fromarray((norm * 255).astype(np.uint8)).resize((wd, h), resample=Image.Resampling.BILINEAR)
    colour = colormap(np.asarray(heat, np.float64) / 255)
    return ((1 - alpha) * image.astype(np.float64) + alpha * colour).astype(np.uint8)


def explain_image(image: Any, output: str, *, extractor: Any = None, mean: Optional[np.ndarray] = None) -> np.ndarray:
    """Writes ``output`` (PNG): the image with its HeW weight map on top. Returns the weights
    ``(h, w)``. ``mean``: the centering mean (an index's); ``None`` uses the image's own."""
    from PIL import Image

    from .._atomic import atomic_write
    from ..hew import hew_weights
    from ..vision.images import load_image

    if extractor is None:
        from ..vision.extract import Extractor

        extractor = Extractor()
    rgb = load_image(image) if isinstance(image, (str,)) or hasattr(image, "__fspath__") else np.asarray(image)
    fmap = extractor.feature_map(rgb)
    if not isinstance(fmap, np.ndarray):  # a multi-scale extractor: draw the full-scale map
        fmap = fmap[0]
    weights = hew_weights(fmap, mean)
    with atomic_write(output, "wb") as f:
        Image.fromarray(weight_overlay(rgb, weights)).save(f, format="PNG")
    return weights
