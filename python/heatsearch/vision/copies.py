"""Synthetic copies: an edited copy of an image, made so that a whitening learns what copies
of one image differ by (docs/ALGORITHM.md, "Whitening", and README, "Retrieval quality").

An index that learns its whitening on its own images (``IndexConfig(whiten="auto")``) also
extracts one :func:`synthetic_copy` of every image it adds and gives the whitening the pair
(image, copy) as matching vectors (:meth:`heatsearch.PCAWhitening.fit`'s ``pairs``): the
directions along which a crop, a rescaling and a re-encoding move a descriptor are then not
amplified. The edits are unlike the demo's (:data:`heatsearch.app.demo.EDITS`), so the copy
detection protocol does not measure them on their own kind.

>>> copy = synthetic_copy("photo.jpg", max_size=1024)   # (H', W', 3) uint8
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Optional, Union

import numpy as np

from .images import _pil, base_scale, load_image, resize

__all__ = ["synthetic_copy", "copy_seed", "CROP", "DOWNSCALE", "GAIN", "OFFSET", "JPEG_QUALITY"]

#: The edits, each drawn uniformly in its range (measured with these by ``python
#: tools/protocols.py``; README, "Retrieval quality"): a crop keeping this fraction of each
#: side at a random place, a downscale by this factor (bilinear), brightness ``x * gain +
#: offset`` (clipped to 0-255), then JPEG at this quality. The copy has about a third of the
#: pixels of the image the network sees (``0.85^2 x 0.7^2``); decoded, edited and encoded
#: again, it makes indexing take 39% longer with ONNX Runtime, 30% with torch (README,
#: "Indexing").
CROP = (0.75, 0.95)
DOWNSCALE = (0.5, 0.9)
GAIN = (0.85, 1.15)
OFFSET = (-15.0, 15.0)
JPEG_QUALITY = (30, 75)

PathLike = Union[str, "os.PathLike[str]"]


def copy_seed(path: PathLike) -> int:
    """The seed of an image's copy: from its path (the same copy on every run and machine that
    names the image alike, whatever the order images are added in), a 64-bit int."""
    return int.from_bytes(hashlib.sha1(os.fspath(path).encode("utf-8", "surrogateescape")).digest()[:8], "little")


def synthetic_copy(image: Union[PathLike, np.ndarray], *, max_size: Optional[int] = None, seed: Optional[int] = None) -> np.ndarray:
    """An edited copy of ``image`` as the network would see it.

    Args:
        image: a path (read with EXIF orientation, as :class:`~heatsearch.vision.extract.Extractor`
            reads it) or an ``(H, W, 3)`` uint8 RGB array.
        max_size: the image is first resized so that its longer side is at most this (the
            extractor's ``max_size``; None: as stored), so that the edits act at the scale the
            network sees, whatever the file's resolution.
        seed: of the random edits (default: :func:`copy_seed` of the path; 0 for an array).

    Returns:
        ``(H', W', 3)`` uint8: a random crop of :data:`CROP` of each side, downscaled by
        :data:`DOWNSCALE`, brightness :data:`GAIN` and :data:`OFFSET`, JPEG-encoded at
        :data:`JPEG_QUALITY` and decoded again. At least 16 pixels a side.

    Raises:
        ImageReadError (an OSError): the file cannot be read.
    """
    if isinstance(image, np.ndarray):
        pixels, default_seed = image, 0
    else:
        pixels, default_seed = load_image(image), copy_seed(image)
    rng = np.random.default_rng(default_seed if seed is None else seed)
    pixels = resize(pixels, base_scale(pixels.shape[0], pixels.shape[1], max_size))
    Image, _ = _pil()
    h, w = pixels.shape[:2]
    side = rng.uniform(*CROP)
    ch, cw = max(1, int(h * side)), max(1, int(w * side))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    edited = Image.fromarray(np.ascontiguousarray(pixels[y : y + ch, x : x + cw]))
    f = rng.uniform(*DOWNSCALE)
    edited = edited.resize((max(16, int(cw * f)), max(16, int(ch * f))), Image.BILINEAR)
    values = np.asarray(edited).astype(np.float32) * rng.uniform(*GAIN) + rng.uniform(*OFFSET)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(rng.integers(*JPEG_QUALITY)))
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"))
