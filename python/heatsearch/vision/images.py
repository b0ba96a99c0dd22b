"""Image loading and preprocessing for CNN feature extraction.

The pipeline of :mod:`heatsearch.vision.extract`, step by step (each step is a public function):

1. :func:`to_rgb` / :func:`load_image`: decode with Pillow (files, encoded bytes, file objects), apply the EXIF orientation (photos
   from phones are stored sideways with an orientation tag; ``exif_transpose=False`` keeps the
   stored orientation, which is what cirtorch's loader, used for the revisitop results, sees:
   use it to reproduce a benchmark whose images carry orientation tags), convert to RGB:
   grayscale is replicated to three channels, transparency (RGBA, LA, palette with a
   transparent colour) is composited over white, 16-bit images are reduced to 8 bits. The
   result is an ``(H, W, 3)`` uint8 array; float arrays passed in (values in [0, 1]) stay float32.
2. :func:`crop`: the query's bounding box ``[x1, y1, x2, y2]``, in pixel coordinates of the
   ORIGINAL image (after the EXIF rotation), x2/y2 exclusive, rounded like Pillow's
   ``Image.crop`` (Python's ``round``) and clipped to the image.
3. :func:`resize`: by ``base_scale(H, W, max_size) * scale`` where ``H, W`` is the size of the
   full image, not of the crop, and ``base_scale = min(1, max_size / max(H, W))``: the longer
   side of a database image becomes at most ``max_size`` (default 1024, the paper's size; never
   upscaled), and a query crop is resized by the factor its full image gets, so queries and
   database images are seen at the same scale. This is the query cropping of
   docs/ALGORITHM.md, section 1 (a crop is not rescaled to ``max_size`` on its own) and what
   cirtorch/revisitop extraction does (``imresize(crop, imsize * max(crop.size) /
   max(full.size))``, never upscaling). For the Oxford/Paris images (longer side 1024 or less
   at ``max_size=1024``) the factor is 1: the crop is used as is. Cropping before resizing keeps
   pixels outside the box out of the resampling filter. Resampling is Pillow's bicubic with
   antialiasing (what MATLAB's ``imresize``, used by the paper's code, does).
4. :func:`normalize`: scale to [0, 1] and apply the ImageNet mean/std (torchvision's values),
   giving the float32 ``(H, W, 3)`` input of every backbone heatsearch ships.

:func:`prepare_image` chains 1-3. Pillow is imported on first use; this module imports without
it (Pillow comes with torchvision, i.e. with ``pip install "heatsearch[torch]"``).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _validate
from .._compat import accepts_old_arguments
from ..errors import ImageReadError, InvalidDTypeError, InvalidInputError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DEFAULT_MAX_SIZE",
    "ImageReadError",
    "is_image_file",
    "list_images",
    "load_image",
    "to_rgb",
    "crop",
    "base_scale",
    "scaled_size",
    "resize",
    "prepare_image",
    "normalize",
]

#: File name extensions :func:`list_images` picks up (lower case; matched case-insensitively).
SUPPORTED_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: ImageNet channel mean and standard deviation of RGB in [0, 1] (torchvision's values).
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Longer image side after resizing: 1024 in the paper (and in cirtorch/revisitop).
DEFAULT_MAX_SIZE = 1024

PathLike = Union[str, "os.PathLike[str]"]
#: What the functions take as an image: a path, encoded image bytes, a binary file object, a PIL
#: image or an ``(H, W[, 1|3|4])`` array.
ImageLike = Union[PathLike, bytes, bytearray, memoryview, BinaryIO, "PILImage.Image", np.ndarray]


def _pil() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as e:  # pragma: no cover - Pillow comes with torchvision
        raise MissingDependencyError(
            'reading images needs Pillow: pip install pillow (or pip install "heatsearch[torch]")'
        ) from e
    return Image, ImageOps


# --------------------------------------------------------------------------------------------
# Files


def is_image_file(path: PathLike) -> bool:
    """Whether ``path`` has one of :data:`SUPPORTED_EXTENSIONS` (by name only)."""
    return Path(path).suffix.lower() in SUPPORTED_EXTENSIONS


def list_images(folder: PathLike, recursive: bool = False) -> List[Path]:
    """The image files of ``folder`` (by extension), sorted by path; hidden files skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a directory")
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p for p in it if p.is_file() and not p.name.startswith(".") and is_image_file(p)
    )


# --------------------------------------------------------------------------------------------
# Decoding


def load_image(path: PathLike, exif_transpose: bool = True) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array, EXIF orientation applied.

    ``exif_transpose=False`` keeps the pixels as stored (the orientation tag is ignored).

    Grayscale becomes three equal channels; transparency is composited over white; 16-bit
    images keep their 8 most significant bits. Any format Pillow decodes is read (the
    extension is not checked; :data:`SUPPORTED_EXTENSIONS` is what :func:`list_images` lists).

    Raises:
        ImageReadError: missing file, not an image, truncated or corrupt data, or a
            "decompression bomb" (more than twice Pillow's ``Image.MAX_IMAGE_PIXELS``); the
            message names the file. It is an ``OSError``.
    """
    return _decode(os.fspath(path), repr(os.fspath(path)), exif_transpose)


def pillow_message(error: BaseException) -> str:
    """Pillow's message for ``error`` on one line, without the file or file object it names:
    for an unknown format Pillow says ``cannot identify image file <_io.BytesIO object at
    0x...>`` (or the path again), and the caller names the image already."""
    Image, _ = _pil()
    if isinstance(error, Image.UnidentifiedImageError):
        return "cannot identify image file"
    return " ".join(str(error).split())


def _decode(source: Any, name: str, exif_transpose: bool) -> np.ndarray:
    """Decodes a file name or a binary file object (``name``: how messages call it)."""
    Image, _ = _pil()
    try:
        with Image.open(source) as img:
            img.load()
            return _pil_to_rgb(_exif_transpose(img, name) if exif_transpose else img)
    except ImageReadError as e:
        if name in str(e):
            raise
        raise ImageReadError(f"cannot read image {name!r}: {e}") from e
    except FileNotFoundError as e:
        raise ImageReadError(f"cannot read image {name}: no such file") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image {name}: {pillow_message(e)}") from e


def _decode_bytes(data: Any, name: str, exif_transpose: bool) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ... as a file holds them)."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    if not data:
        raise ImageReadError(f"cannot read image {name}: no data (0 bytes)")
    return _decode(io.BytesIO(bytes(data)), name, exif_transpose)


def _exif_transpose(img: Any, name: str) -> Any:
    _, ImageOps = _pil()
    try:
        return ImageOps.exif_transpose(img)
    except Exception as e:  # a broken EXIF block should not make a readable image unreadable
        warnings.warn(f"{name}: ignoring unreadable EXIF orientation ({e})", stacklevel=3)
        return img


def _pil_to_rgb(img: Any) -> np.ndarray:
    """A PIL image as ``(H, W, 3)`` uint8 RGB (see :func:`load_image`)."""
    Image, _ = _pil()
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "F":  # 32-bit float grayscale (TIFF): values in [0, 1] or in [0, 255]
        return _float_gray_to_rgb(np.asarray(img, dtype=np.float64))
    if mode.startswith("I"):  # "I", "I;16", "I;16B", ...: 16-bit grayscale (PNG, TIFF)
        a = np.asarray(img).astype(np.float64)
        gray = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        alpha = rgba[:, :, 3:] / 255.0
        rgb = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except ValueError as e:
        raise ImageReadError(f"cannot convert an image of mode {mode!r} to RGB: {e}") from e


def _float_gray_to_rgb(a: np.ndarray) -> np.ndarray:
    """A float grayscale image as uint8 RGB: values in [0, 1] are scaled by 255, values in
    [0, 255] kept (Pillow's own conversion clipped [0, 1] images to black); anything else is
    not an image heatsearch can read the intensities of."""
    if not np.isfinite(a).all():
        raise ImageReadError("a floating-point image holding NaN or infinity")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 255:
        raise ImageReadError(
            f"a floating-point image with values in [{lo:g}, {hi:g}]; heatsearch reads float "
            "images with values in [0, 1] or [0, 255]"
        )
    scale = 255.0 if hi <= 1.0 else 1.0
    gray = np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def to_rgb(image: ImageLike, exif_transpose: bool = True) -> np.ndarray:
    """Any accepted image as an ``(H, W, 3)`` RGB array.

    Args:
        image: a path (read with :func:`load_image`); encoded image bytes (``bytes``,
            ``bytearray``, ``memoryview``: the content of a JPEG, PNG, ... file); a binary file
            object (read to its end, then decoded like bytes); a PIL image (EXIF orientation applied, as
            for its file, unless ``exif_transpose=False``; converted as in :func:`load_image`);
            or an array ``(H, W)``, ``(H, W, 1)`` (grayscale), ``(H, W, 3)`` (RGB) or
            ``(H, W, 4)`` (RGBA, composited over white) of dtype uint8 (0-255), uint16
            (0-65535, becomes float32) or float (values in [0, 1], as skimage's
            ``img_as_float`` and torchvision's ``ToTensor``).
        exif_transpose: apply the EXIF orientation of files and PIL images (default).

    Returns:
        uint8 for paths, bytes, file objects, PIL images and uint8 arrays; float32 in [0, 1] for float and uint16
        arrays. A new array (the input is never modified).

    Raises:
        ImageReadError: a path, bytes or file object that cannot be read or decoded.
        InvalidInputError: wrong shape, empty, NaN/inf, or float values outside [0, 1] (a
            float image in 0-255 is the usual cause: divide it by 255).
        InvalidDTypeError: another dtype or type.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, exif_transpose)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode_bytes(image, f"from {len(image)} bytes", exif_transpose)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    if type(image).__module__.startswith("PIL."):
        Image, _ = _pil()
        if isinstance(image, Image.Image):
            name = getattr(image, "filename", "") or "a PIL image"
            try:
                image.load()
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise ImageReadError(f"cannot read image {name!r}: {e}") from e
            return _pil_to_rgb(_exif_transpose(image, name) if exif_transpose else image)
    if callable(getattr(image, "read", None)):
        # A file object (an open file, an upload stream): read to its end, so that streams
        # that cannot seek (pipes, sockets) decode too.
        stream: Any = image
        file_name = getattr(stream, "name", None)
        name = f"{file_name!r}" if isinstance(file_name, str) else "from a file object"
        try:
            data = stream.read()
        except OSError as e:
            raise ImageReadError(f"cannot read image {name}: {e}") from e
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidDTypeError(
                f"an image file object must be opened in binary mode ('rb'), got one whose "
                f"read() returns {type(data).__name__}"
            )
        return _decode_bytes(data, name, exif_transpose)
    raise InvalidDTypeError(
        "image must be a path, encoded image bytes, a binary file object, a PIL image or a "
        f"NumPy array, got {type(image).__name__}"
    )


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise InvalidInputError(
            f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape "
            f"{a.shape}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidInputError(f"the image is empty: shape {a.shape}")
    if a.dtype == np.uint8:
        out: np.ndarray = a
    elif a.dtype == np.uint16:
        out = a.astype(np.float32) / np.float32(65535)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise InvalidInputError("the image array contains NaN or infinity")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InvalidInputError(
                f"a float image must have values in [0, 1], got [{lo:g}, {hi:g}] (for a "
                "0-255 float image pass image / 255 or image.astype(np.uint8))"
            )
        out = np.clip(a, 0, 1).astype(np.float32)
    else:
        raise InvalidDTypeError(
            f"an image array must be uint8, uint16 or float (values in [0, 1]), got {a.dtype}"
        )
    if out.ndim == 2:
        return np.repeat(out[:, :, None], 3, axis=2)
    if out.shape[2] == 4:
        return _composite_white(out)
    return np.array(out, copy=True, order="C")


def _composite_white(rgba: np.ndarray) -> np.ndarray:
    if rgba.dtype == np.uint8:
        f = rgba.astype(np.float64)
        alpha = f[:, :, 3:] / 255.0
        return np.clip(np.round(f[:, :, :3] * alpha + 255.0 * (1 - alpha)), 0, 255).astype(np.uint8)
    alpha = rgba[:, :, 3:]
    return np.ascontiguousarray(rgba[:, :, :3] * alpha + (1 - alpha), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Geometry


def crop(image: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
    """``image[y1:y2, x1:x2]`` for a box ``[x1, y1, x2, y2]`` in pixel coordinates.

    Coordinates are rounded with Python's ``round`` (what Pillow's ``Image.crop`` does, hence
    cirtorch/revisitop), x2 and y2 exclusive, then clipped to the image; the Oxford/Paris boxes
    (``.pkl`` and ``.mat`` alike) are used as they are, never shifted.

    Args:
        image: ``(H, W, 3)`` array.
        bbox: four finite numbers ``x1 < x2``, ``y1 < y2``.

    Returns:
        A new C-contiguous ``(y2 - y1, x2 - x1, 3)`` array of the same dtype.

    Raises:
        InvalidInputError: not four finite numbers, or no pixel left inside the image.
    """
    x1, y1, x2, y2 = _box(bbox)
    h, w = image.shape[:2]
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if cx2 <= cx1 or cy2 <= cy1:
        raise InvalidInputError(
            f"the box {list(bbox)} (rounded to [{x1}, {y1}, {x2}, {y2}]) leaves no pixel of "
            f"the {w} x {h} (width x height) image"
        )
    return np.ascontiguousarray(image[cy1:cy2, cx1:cx2])


def _box(bbox: Sequence[float]) -> Tuple[int, int, int, int]:
    return _validate.bbox(bbox)


def base_scale(height: int, width: int, max_size: Optional[int]) -> float:
    """``min(1, max_size / max(height, width))``; 1 when ``max_size`` is None (never upscales)."""
    if max_size is None:
        return 1.0
    return min(1.0, max_size / max(height, width))


def scaled_size(height: int, width: int, scale: float) -> Tuple[int, int]:
    """``(round(height * scale), round(width * scale))``, at least 1 pixel each."""
    if scale == 1:
        return (height, width)
    return (max(1, int(round(height * scale))), max(1, int(round(width * scale))))


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize ``(H, W, 3)`` to :func:`scaled_size` with Pillow's antialiased bicubic filter.

    uint8 stays uint8 (Pillow rounds and clips); float32 is resampled per channel in float
    and clipped to [0, 1]. ``scale == 1`` (or a size that rounds to the same) returns the
    input itself.
    """
    h, w = image.shape[:2]
    nh, nw = scaled_size(h, w, scale)
    if (nh, nw) == (h, w):
        return image
    Image, _ = _pil()
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((nw, nh), Image.BICUBIC))
    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32), mode="F")
            .resize((nw, nh), Image.BICUBIC)
        )
        for c in range(image.shape[2])
    ]
    return np.clip(np.stack(chans, axis=2), 0, 1).astype(np.float32)


@accepts_old_arguments(positional=("max_size", "scale", "exif_transpose"))
def prepare_image(
    image: ImageLike,
    bbox: Optional[Sequence[float]] = None,
    *,
    max_size: Optional[int] = DEFAULT_MAX_SIZE,
    scale: float = 1.0,
    exif_transpose: bool = True,
) -> np.ndarray:
    """Load, crop and resize one image: steps 1-3 of the module docstring.

    Args:
        image: see :func:`to_rgb`.
        bbox: ``[x1, y1, x2, y2]`` in pixels of the original image, or None.
        max_size: bound on the longer side of the FULL image after resizing (default 1024,
            the paper's); None keeps the original size.
        scale: extra factor (multi-scale extraction), applied on top of the ``max_size``
            factor; a scale above 1 does upscale (on request).
        exif_transpose: apply the EXIF orientation of files and PIL images (default).

    Returns:
        ``(H', W', 3)`` uint8 (float32 in [0, 1] for float input) with
        ``H' = round(h * s)``, ``W' = round(w * s)``, ``(h, w)`` the size of the (cropped)
        image and ``s = scale * min(1, max_size / max(H, W))`` for the full image's ``H, W``.
    """
    max_size = _validate.optional_integer(max_size, "max_size", minimum=1)
    s = _validate.real(scale, "scale", low=0.0, low_open=True)
    rgb = to_rgb(image, exif_transpose)
    full_h, full_w = rgb.shape[:2]
    if bbox is not None:
        rgb = crop(rgb, bbox)
    return resize(rgb, s * base_scale(full_h, full_w, max_size))


def normalize(
    image: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """``(image / 255 - mean) / std`` for uint8 (``(image - mean) / std`` for float in [0, 1]).

    Args:
        image: ``(H, W, 3)`` uint8 or float in [0, 1].
        mean, std: per channel; ImageNet's by default (torchvision's values, which all the
            shipped backbones were trained with; the EfficientNet-Lite0 weights too, see the
            data README).

    Returns:
        ``(H, W, 3)`` float32, C-contiguous.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"normalize takes an (H, W, 3) image, got shape {image.shape}")
    m = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
    sd = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
    x = image.astype(np.float32)
    if image.dtype == np.uint8:
        x /= np.float32(255)
    x -= m
    x /= sd
    return x
