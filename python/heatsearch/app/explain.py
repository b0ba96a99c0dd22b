"""Pictures of what HeW does: the weight of every region of an image drawn over it, with a
colour bar that says what the colours mean.

HeW gives each local feature a weight from the heat diffusion over the image's features: a
feature repeated across the image (sky, a wall, foliage, a texture: a *bursty* one) spreads
its heat over its many similar neighbours, gets a LOW weight and counts little in the
descriptor; a distinctive one gets a HIGH weight and is kept. The picture colours low weights
dark (black, purple) and high ones bright (orange, pale yellow), and prints the scale under
the image: by default each picture spans its own weights (lowest to highest), and
``scale=(low, high)`` fixes one scale for several pictures so that their colours compare.

Pillow only (no plotting library).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["weight_overlay", "with_colour_bar", "explain_image", "colormap", "LEGEND_LOW", "LEGEND_HIGH"]

# Anchor colours of a perceptually ordered dark-to-bright colour map (black, purple, red,
# orange, pale yellow), interpolated linearly.
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)

#: What the two ends of the colour bar mean (printed on the picture).
LEGEND_LOW = "low: bursty, repeated features (down-weighted)"
LEGEND_HIGH = "high: distinctive features (kept)"
#: The legend needs this width to be readable; narrower images get a wider canvas.
_MIN_WIDTH = 520


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] ``(H, W)`` to RGB uint8 ``(H, W, 3)``."""
    v = np.clip(values, 0, 1) * (len(_ANCHORS) - 1)
    i = np.minimum(v.astype(int), len(_ANCHORS) - 2)
    t = (v - i)[..., None]
    return ((1 - t) * _ANCHORS[i] + t * _ANCHORS[i + 1]).astype(np.uint8)


def _scale(weights: np.ndarray, scale: Optional[Tuple[float, float]]) -> Tuple[float, float]:
    if scale is not None:
        return float(scale[0]), float(scale[1])
    return float(weights.min()), float(weights.max())


def weight_overlay(
    image: np.ndarray,
    weights: np.ndarray,
    alpha: float = 0.55,
    scale: Optional[Tuple[float, float]] = None,
) -> np.ndarray:
    """Blends the weight map ``(h, w)``, scaled to the image ``(H, W, 3)`` uint8, over the
    image; returns an RGB uint8 array ``(H, W, 3)``. ``scale``: the weights drawn darkest and
    brightest (default: the map's own lowest and highest; weights outside are clipped)."""
    from PIL import Image

    w = np.asarray(weights, np.float64)
    lo, hi = _scale(w, scale)
    norm = np.clip((w - lo) / (hi - lo), 0, 1) if hi > lo else np.ones_like(w)
    h, wd = image.shape[:2]
    heat = Image.fromarray((norm * 255).astype(np.uint8)).resize((wd, h), resample=Image.Resampling.BILINEAR)
    colour = colormap(np.asarray(heat, np.float64) / 255)
    return ((1 - alpha) * image.astype(np.float64) + alpha * colour).astype(np.uint8)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def with_colour_bar(overlay: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The overlay ``(H, W, 3)`` with a legend below it: the colour bar from ``lo`` to ``hi``
    (the HeW weights drawn darkest and brightest) and what low and high weights mean.
    Returns ``(H + legend, max(W, 520), 3)`` uint8; the image keeps its pixels, top left."""
    from PIL import Image, ImageDraw

    h, w = overlay.shape[:2]
    width = max(w, _MIN_WIDTH)
    font = _font(14)
    pad, bar_h, line = 10, 18, 20
    legend_h = pad + line + bar_h + 4 + 3 * line + pad  # title, bar, scale, low, high
    canvas = Image.new("RGB", (width, h + legend_h), "white")
    canvas.paste(Image.fromarray(overlay), (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = h + pad
    draw.text((pad, y), "HeW weight of each region (colour scale):", fill="black", font=font)
    y += line
    bar = colormap(np.linspace(0, 1, width - 2 * pad)[None, :].repeat(bar_h, axis=0))
    canvas.paste(Image.fromarray(bar), (pad, y))
    draw.rectangle((pad - 1, y - 1, width - pad, y + bar_h), outline="black")
    y += bar_h + 4
    lo_text, hi_text = f"{lo:.3g}", f"{hi:.3g}"
    draw.text((pad, y), lo_text, fill="black", font=font)
    draw.text((width - pad - draw.textlength(hi_text, font=font), y), hi_text, fill="black", font=font)
    y += line
    draw.text((pad, y), LEGEND_LOW, fill="black", font=font)
    y += line
    draw.text((width - pad - draw.textlength(LEGEND_HIGH, font=font), y), LEGEND_HIGH, fill="black", font=font)
    return np.asarray(canvas)


def explain_image(
    image: Any,
    output: str,
    *,
    extractor: Any = None,
    mean: Optional[np.ndarray] = None,
    scale: Optional[Tuple[float, float]] = None,
) -> np.ndarray:
    """Writes ``output`` (PNG): the image with its HeW weight map on top and the colour bar
    below. Returns the weights ``(h, w)``. ``mean``: the centering mean (an index's);
    ``None`` uses the image's own. ``scale``: see :func:`weight_overlay`."""
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
    lo, hi = _scale(np.asarray(weights, np.float64), scale)
    picture = with_colour_bar(weight_overlay(rgb, weights, scale=(lo, hi)), lo, hi)
    with atomic_write(output, "wb") as f:
        Image.fromarray(picture).save(f, format="PNG")
    return weights
