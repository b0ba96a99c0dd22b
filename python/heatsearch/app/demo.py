"""An offline copy-detection benchmark built from the photographs shipped inside scikit-image.

Every photo is turned into several edited copies (crop, rotation, scaling, JPEG, colour
change, blur, partial occlusion), deterministically from a seed. The originals and all copies
form the database; some copies are also the queries, Holidays-style: a query is in the
database and counts as junk for itself, its positives are the original and the other copies
of the same photo. Nothing is downloaded: scikit-image carries these files in its wheel.

``run_demo`` extracts feature maps once with the default backbone, pools them with SPoC, MAC,
GeM, CroW and HeW, post-processes (signed square root, L2) and prints mAP with and without
HeR re-ranking, with timings.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["PHOTOS", "EDITS", "CopyDetectionSet", "build_copy_detection_set", "run_demo"]

#: Real photographs (and photographed textures) shipped with scikit-image. `cat` is the same
#: photo as `chelsea`, so it is left out; drawings, logos and binary masks are left out too.
PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
    "stereo_motorcycle",
)


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs: the left image
        img = img[0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


def _pil(a: np.ndarray):
    from PIL import Image

    return Image.fromarray(a)


def _crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    s = rng.uniform(0.55, 0.8)
    ch, cw = int(h * s), int(w * s)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return img[y : y + ch, x : x + cw]


def _rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = float(rng.choice([-1, 1]) * rng.uniform(8, 25))
    return np.asarray(_pil(img).rotate(angle, resample=3, expand=False, fillcolor=(0, 0, 0)))


def _scale(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = rng.uniform(0.4, 0.6)
    h, w = img.shape[:2]
    return np.asarray(_pil(img).resize((max(16, int(w * s)), max(16, int(h * s))), resample=3))


def _jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    _pil(img).save(buf, format="JPEG", quality=int(rng.integers(8, 20)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    gray = x.mean(axis=2, keepdims=True)
    sat = rng.uniform(0.2, 0.5)
    gain = rng.uniform(0.7, 1.3, size=3)
    out = (gray + sat * (x - gray)) * gain + rng.uniform(-25, 25)
    return np.clip(out, 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import ImageFilter

    return np.asarray(_pil(img).filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(2.0, 4.0)))))


def _occlude(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    h, w = img.shape[:2]
    bh, bw = int(h * rng.uniform(0.3, 0.45)), int(w * rng.uniform(0.3, 0.45))
    y, x = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
    out[y : y + bh, x : x + bw] = rng.integers(0, 256, size=3, dtype=np.uint8)
    return out


#: The edits, by name, each ``(image, rng) -> image``.
EDITS: Dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "crop": _crop,
    "rotate": _rotate,
    "scale": _scale,
    "jpeg": _jpeg,
    "colour": _colour,
    "blur": _blur,
    "occlude": _occlude,
}


@dataclass(frozen=True)
class CopyDetectionSet:
    """Images (RGB uint8), their names, the query rows and the evaluation ground truth."""

    images: List[np.ndarray]
    names: List[str]
    query_rows: np.ndarray
    gnd: List[Dict[str, np.ndarray]]


def build_copy_detection_set(
    photos: Sequence[str] = PHOTOS, edits: Sequence[str] = tuple(EDITS), queries_per_photo: int = 2, seed: int = 0
) -> CopyDetectionSet:
    """The benchmark: every photo and one copy per edit; ``queries_per_photo`` copies of each
    photo (chosen by the seed) are also queries."""
    rng = np.random.default_rng(seed)
    images: List[np.ndarray] = []
    names: List[str] = []
    group: List[int] = []
    query_rows: List[int] = []
    for p, name in enumerate(photos):
        original = _photo(name)
        images.append(original)
        names.append(f"{name}/original")
        group.append(p)
        rows = []
        for edit in edits:
            rows.append(len(images))
            images.append(EDITS[edit](original, rng))
            names.append(f"{name}/{edit}")
            group.append(p)
        query_rows.extend(sorted(rng.choice(rows, size=min(queries_per_photo, len(rows)), replace=False)))
    groups = np.array(group)
    gnd = []
    for q in query_rows:
        same = np.flatnonzero(groups == groups[q])
        gnd.append({"ok": same[same != q], "junk": np.array([q])})
    return CopyDetectionSet(images, names, np.array(query_rows), gnd)


def run_demo(
    *,
    photos: Sequence[str] = PHOTOS,
    edits: Sequence[str] = tuple(EDITS),
    poolings: Sequence[str] = ("spoc", "mac", "gem", "crow", "hew"),
    max_size: int = 512,
    seed: int = 0,
    extractor=None,
    progress: bool = True,
    out: Callable[[str], None] = print,
) -> List[Tuple[str, float, float, float]]:
    """Builds the benchmark, extracts, pools, evaluates; prints a table.

    Returns ``[(pooling, mAP, mAP with HeR, seconds), ...]`` (mAP in [0, 1]).
    """
    from ..aggregate import pool
    from ..eval.evaluate import compute_map
    from ..hew import local_mean
    from ..pipeline import rank
    from ..postprocess import PostProcess

    t0 = time.perf_counter()
    data = build_copy_detection_set(photos, edits, seed=seed)
    if extractor is None:
        from ..vision.extract import Extractor

        extractor = Extractor(max_size=max_size)
    out(f"copy detection: {len(data.images)} images ({len(photos)} photos x (original + {len(edits)} edits)), "
        f"{len(data.query_rows)} queries; backbone {extractor.backbone}, layer {extractor.layer}, max side {max_size}")
    items = data.images
    if progress:
        try:
            from tqdm import tqdm  # type: ignore[import-untyped]

            items = tqdm(items, desc="extracting", unit="img")
        except ImportError:
            pass
    fmaps = [extractor.feature_map(img) for img in items]
    t_extract = time.perf_counter() - t0
    out(f"extraction: {t_extract:.1f} s ({len(fmaps) / t_extract:.1f} images/s)")
    mean = local_mean(fmaps)
    post = PostProcess()
    rows = []
    out(f"{'pooling':<8} {'mAP':>7} {'+HeR':>7} {'time':>8}")
    for method in poolings:
        t = time.perf_counter()
        kwargs = {"mean": mean} if method == "hew" else {}
        X = post(np.stack([pool(f, method, **kwargs) for f in fmaps]))
        Q = X[data.query_rows]
        plain = compute_map(rank(X, Q)[0], data.gnd).map
        her = compute_map(rank(X, Q, rerank="heat")[0], data.gnd).map
        dt = time.perf_counter() - t
        rows.append((method, plain, her, dt))
        out(f"{method:<8} {100 * plain:7.2f} {100 * her:7.2f} {dt:7.2f}s")
    return rows
