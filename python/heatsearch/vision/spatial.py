"""Spatial verification: re-ordering the top of a ranking by geometric agreement.

A global descriptor confuses similar-looking items (two paintings of one school, two book
covers of one series); local features matched between the query and each of its top
candidates, and a RANSAC fit of one geometric transform to the matches, tell the one that is
really the same object: it has many matches consistent with one transform (inliers), the
others a handful that fit only by chance. :func:`spatial_order` re-orders a ranking by inlier
count; :class:`SpatialVerifier` computes the counts.

Two kinds of local features (``features=``):

* ``"sift"`` (default): OpenCV's SIFT keypoints (``cv2.SIFT_create``, at most
  :data:`DEFAULT_KEYPOINTS` per image, on the grey image resized to a longer side of at most
  :data:`DEFAULT_MAX_SIZE`), Lowe's ratio test (:data:`DEFAULT_RATIO`), one to one, and a
  RANSAC homography (``cv2.findHomography`` with ``USAC_DEFAULT``,
  :data:`DEFAULT_SIFT_THRESHOLD` pixels). Needs the ``spatial`` extra
  (``opencv-python-headless``).
* ``"cnn"``: the cells of the extractor's own feature maps (every scale) as local descriptors
  (signed square root + L2), each at the centre of its cell in the image, mutual nearest
  neighbours and a RANSAC similarity transform (``cv2.estimateAffinePartial2D``, a threshold
  of :data:`DEFAULT_CELL_THRESHOLD` cells). Needs the extractor (torch) and OpenCV.

Measured with ``tools/spatial_verification.py`` (README, "Spatial verification"), SIFT won on
mAP and time, hence the default: on smvs_paintings query -> database, verifying the top 100
of the default index lifts mAP from 50.3 to 80.5 with SIFT and to 57.2 with the CNN cells,
for about 0.2-0.35 s a query with SIFT once the database's features are cached (2.3-3.6 s
before), against 1.1-1.4 s (15-19 s) with the cells; on phototourism 54.3 -> 80.7 against
74.8.

Database images' features are computed lazily from their paths when they first come up as a
candidate and kept in a bounded in-memory LRU cache (:data:`DEFAULT_CACHE_BYTES`, about
1 900 images of SIFT features at 1 000 keypoints each); an entry is keyed by path, size and
modification time, so a file changed in place is described again. A candidate whose image
cannot be read any more is left unverified, with a warning.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import _validate
from ..errors import HeatsearchError, InvalidInputError, MissingDependencyError

__all__ = [
    "LOCAL_FEATURES",
    "LocalFeatures",
    "SpatialVerifier",
    "spatial_order",
    "split_rerank",
    "with_spatial",
    "DEFAULT_DEPTH",
    "DEFAULT_MIN_INLIERS",
]

#: The kinds of local features :class:`SpatialVerifier` knows.
LOCAL_FEATURES = ("sift", "cnn")
#: Candidates verified per query (the top of the previous ranking). Measured on smvs_paintings
#: with SIFT (README, "Spatial verification"): mAP 50.3 plain, 71.8 / 76.2 / 80.5 verifying
#: the top 20 / 50 / 100, for about 0.1 / 0.15 / 0.2-0.35 s a query once the database's
#: features are cached (0.5-0.8 / 1.2-1.9 / 2.3-3.6 s before; two runs on a shared machine).
#: The deepest measured, because every step paid; also DELG's depth (Cao et al. 2020 verify
#: the top 100).
DEFAULT_DEPTH = 100
#: A candidate with fewer inliers counts as unverified (keeps its previous place), per kind of
#: features: chance matches fit a transform with a few inliers, more for the coarse CNN cells.
#: Measured (README, "Spatial verification"; mAP against the threshold, and the inliers of
#: each query's best WRONG candidate). SIFT: 6, the best or nearly the best on both sets measured (README): smvs (one positive
#: per query) 80.5 mAP verifying the top 100 (81.4 at 0-4, 78.3 at 8-9, 74.1 at 10-12),
#: phototourism (several) 80.7 (74.1 at 4, 72.8 at 9). Wrong candidates reach 6-8 inliers by
#: chance in a few queries (at most 8 on smvs, 7 on phototourism), which a threshold above 8
#: would rule out, but it also leaves too many true matches of 6-8 unverified. CNN cells: 12,
#: the best on smvs (57.2; 54.1 at 15, 55-58 at 6-10 depending on the depth) and within 0.1
#: of the best on phototourism.
DEFAULT_MIN_INLIERS = {"sift": 6, "cnn": 12}
#: Longer side of the grey image SIFT runs on (never upscaled): the size of the smvs images
#: (phototourism's 800 are reduced to it). Not tuned; it bounds SIFT's time (25-55 ms).
DEFAULT_MAX_SIZE = 640
#: Most SIFT keypoints kept per image (the strongest): bounds the matching time and the cache
#: (136 KB an image). Not tuned (smvs references have 200-1000).
DEFAULT_KEYPOINTS = 1000
#: Lowe's ratio test (Lowe 2004 used 0.8).
DEFAULT_RATIO = 0.8
#: RANSAC reprojection threshold of the SIFT homography, in pixels of the image SIFT ran on
#: (resized to DEFAULT_MAX_SIZE; not tuned; OpenCV's homography tutorial uses 5 too).
DEFAULT_SIFT_THRESHOLD = 5.0
#: RANSAC threshold of the CNN cells' similarity transform, in cells (of the finest map); 1.0
#: measured the same within noise on smvs (58.0 against 57.2 at the best thresholds).
DEFAULT_CELL_THRESHOLD = 1.5
#: Bytes of database features the cache keeps (least recently used dropped first).
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
#: Matches below this give no transform (RANSAC needs 4 for a homography).
_MIN_MATCHES = 4

_PIP = 'pip install "heatsearch[spatial]"'


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise MissingDependencyError(
            f"spatial verification needs OpenCV (opencv-python-headless): {_PIP}"
        ) from e
    return cv2


@dataclass(frozen=True)
class LocalFeatures:
    """The local features of one image.

    Attributes:
        points: ``(m, 2)`` float32 positions ``(x, y)`` in pixels of the image as given.
        descriptors: ``(m, D)``: uint8 SIFT descriptors (D = 128) or float32 L2-normalised
            CNN cells (D = the map's channels).
        cell: the unit of the RANSAC threshold, in pixels of the image: for SIFT one pixel
            of the resized image it ran on (``1 / s`` for a resizing by ``s``; 1.0 when not
            resized), for CNN cells the side of a cell of the finest map.
    """

    points: np.ndarray
    descriptors: np.ndarray
    cell: float = 1.0

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self.descriptors.nbytes)


#: The name of spatial verification in a ``rerank`` argument: alone, or last after ``+``.
SPATIAL = "spatial"


def with_spatial(rerankers: Sequence[Optional[str]]) -> Tuple[Optional[str], ...]:
    """``rerankers`` (descriptor re-rankers, None = plain), then ``"spatial"`` and
    ``"<r>+spatial"`` for each named one: the order of ``r``, then verification of its top."""
    return tuple(rerankers) + (SPATIAL,) + tuple(f"{r}+{SPATIAL}" for r in rerankers if r)


def split_rerank(rerank: Optional[str]) -> Tuple[Optional[str], bool]:
    """``(descriptor re-ranker or None, whether spatial verification follows)`` of a checked
    ``rerank`` value: ``"heat+spatial"`` -> ``("heat", True)``, ``"spatial"`` ->
    ``(None, True)``, ``"heat"`` -> ``("heat", False)``."""
    if rerank == SPATIAL:
        return None, True
    suffix = "+" + SPATIAL
    if isinstance(rerank, str) and rerank.endswith(suffix):
        return rerank[: -len(suffix)], True
    return rerank, False


def spatial_order(inliers: Sequence[Optional[int]], min_inliers: int) -> np.ndarray:
    """The new order of ``m`` candidates given their inlier counts.

    Candidates with at least ``min_inliers`` inliers come first, most inliers first; the
    others (fewer inliers, or None: not verified) follow. Ties, and the unverified among
    themselves, keep their previous order (a stable sort).

    Args:
        inliers: per candidate in its previous order, an int or None.
        min_inliers: an int >= 0.

    Returns:
        ``(m,)`` int64 positions into the previous order.
    """
    mi = _validate.integer(min_inliers, "min_inliers")
    counts = [c if c is not None and c >= mi else -1 for c in inliers]
    return np.array(sorted(range(len(counts)), key=lambda i: -counts[i]), dtype=np.int64)


class SpatialVerifier:
    """Counts the inliers of geometric matches between a query and candidate images.

    Args:
        features: ``"sift"`` (default) or ``"cnn"`` (see the module docstring).
        depth: candidates verified per query (default :data:`DEFAULT_DEPTH`, measured).
        min_inliers: fewer inliers count as unverified (None: :data:`DEFAULT_MIN_INLIERS` of
            the kind of features, measured).
        extractor: the :class:`~heatsearch.vision.Extractor` whose maps give ``"cnn"``
            features (None: an Index sets its own at the first search); unused by ``"sift"``.
        max_size: longer side SIFT runs at (default :data:`DEFAULT_MAX_SIZE`).
        keypoints: most SIFT keypoints per image (default :data:`DEFAULT_KEYPOINTS`).
        cache_bytes: bytes of database features kept (default :data:`DEFAULT_CACHE_BYTES`;
            0 keeps none).

    Thread-safe: the cache is guarded by a lock; OpenCV releases the GIL while it works.
    """

    def __init__(
        self,
        features: str = "sift",
        *,
        depth: int = DEFAULT_DEPTH,
        min_inliers: Optional[int] = None,
        extractor: Any = None,
        max_size: int = DEFAULT_MAX_SIZE,
        keypoints: int = DEFAULT_KEYPOINTS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.features = _validate.choice(features, "features", LOCAL_FEATURES)
        self.depth = _validate.integer(depth, "depth", minimum=1)
        self.min_inliers = (
            DEFAULT_MIN_INLIERS[self.features] if min_inliers is None
            else _validate.integer(min_inliers, "min_inliers", none_ok=True)
        )
        self.max_size = _validate.integer(max_size, "max_size", minimum=16)
        self.keypoints = _validate.integer(keypoints, "keypoints", minimum=1)
        self.cache_bytes = _validate.integer(cache_bytes, "cache_bytes")
        self.extractor = extractor
        _cv2()  # a missing OpenCV is said now, not at the first query
        self._cache: "OrderedDict[Tuple[str, int, int], LocalFeatures]" = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"SpatialVerifier({self.features!r}, depth={self.depth}, min_inliers={self.min_inliers}, "
            f"cache {len(self._cache)} images / {self._cached_bytes} bytes)"
        )

    # -- features ------------------------------------------------------------------------
    def describe(self, image: Any, bbox: Optional[Sequence[float]] = None) -> LocalFeatures:
        """The local features of one image (any source :func:`~heatsearch.vision.images.to_rgb`
        reads), optionally cropped to ``bbox`` first. Points are in pixels of the (cropped)
        image. A flat or tiny image gives no features (not an error)."""
        from . import images

        rgb = images.to_rgb(image)
        if bbox is not None:
            rgb = images.crop(rgb, bbox)
        if self.features == "sift":
            return self._sift_features(rgb)
        return self._cnn_features(rgb)

    def _sift_features(self, rgb: np.ndarray) -> LocalFeatures:
        cv2 = _cv2()
        if rgb.dtype != np.uint8:  # float in [0, 1] (see to_rgb)
            rgb = np.round(rgb * 255).astype(np.uint8)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        s = min(1.0, self.max_size / max(h, w))
        if s < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        # A detector per call (about 1 us), so that threads never share one: OpenCV does not
        # promise that a Feature2D object may be used by several threads at once.
        kps, desc = cv2.SIFT_create(nfeatures=self.keypoints).detectAndCompute(grey, None)
        if desc is None or not kps:
            return LocalFeatures(np.empty((0, 2), np.float32), np.empty((0, 128), np.uint8), 1.0 / s)
        pts = np.array([kp.pt for kp in kps], np.float32) / np.float32(s)
        # SIFT's descriptors are whole numbers in [0, 255] stored as float: uint8 is exact.
        return LocalFeatures(pts, np.clip(desc, 0, 255).astype(np.uint8), 1.0 / s)

    def _cnn_features(self, rgb: np.ndarray) -> LocalFeatures:
        if self.extractor is None:
            raise InvalidInputError(
                "features='cnn' needs the extractor whose maps give the cells (extractor=...; "
                "an Index gives its own), got None"
            )
        fmaps = self.extractor.feature_map(rgb)
        maps = [fmaps] if isinstance(fmaps, np.ndarray) else list(fmaps)
        h, w = rgb.shape[:2]
        points, descs, cell = [], [], float("inf")
        for m in maps:
            mh, mw = m.shape[:2]
            ys = (np.arange(mh, dtype=np.float32) + 0.5) * (h / mh)
            xs = (np.arange(mw, dtype=np.float32) + 0.5) * (w / mw)
            gx, gy = np.meshgrid(xs, ys)
            points.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
            d = np.sqrt(np.maximum(m.reshape(mh * mw, -1), 0)).astype(np.float32)
            descs.append(d)
            cell = min(cell, h / mh, w / mw)
        d = np.concatenate(descs)
        norms = np.linalg.norm(d, axis=1, keepdims=True)
        keep = norms[:, 0] > 0  # an all-zero cell matches nothing
        return LocalFeatures(
            np.concatenate(points)[keep].astype(np.float32),
            (d[keep] / norms[keep]).astype(np.float32),
            float(cell),
        )

    def cached(self, path: str) -> Optional[LocalFeatures]:
        """The local features of the image file ``path``, from the cache or computed (then
        cached); None, with a warning, when the file cannot be read any more."""
        try:
            st = os.stat(path)
            key = (path, int(st.st_size), int(st.st_mtime_ns))
        except OSError as e:
            warnings.warn(f"spatial verification: cannot read {path!r} ({e}); the candidate stays unverified", stacklevel=3)
            return None
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        try:
            feats = self.describe(path)
        except (HeatsearchError, OSError, ValueError) as e:
            warnings.warn(f"spatial verification: cannot read {path!r} ({e}); the candidate stays unverified", stacklevel=3)
            return None
        with self._lock:
            if key not in self._cache and feats.nbytes <= self.cache_bytes:
                self._cache[key] = feats
                self._cached_bytes += feats.nbytes
                while self._cached_bytes > self.cache_bytes:
                    _, old = self._cache.popitem(last=False)
                    self._cached_bytes -= old.nbytes
        return feats

    def clear_cache(self) -> None:
        """Forgets every database image's features."""
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0

    # -- matching ------------------------------------------------------------------------
    def inliers(self, query: LocalFeatures, candidate: LocalFeatures) -> int:
        """Inliers of the best transform between two images' features (0 when fewer than 4
        matches)."""
        if len(query) < _MIN_MATCHES or len(candidate) < _MIN_MATCHES:
            return 0
        if self.features == "sift":
            qi, ci = _ratio_matches(query.descriptors, candidate.descriptors)
        else:
            qi, ci = _mutual_matches(query.descriptors, candidate.descriptors)
        if len(qi) < _MIN_MATCHES:
            return 0
        cv2 = _cv2()
        src = np.ascontiguousarray(query.points[qi], np.float32)
        dst = np.ascontiguousarray(candidate.points[ci], np.float32)
        if self.features == "sift":
            # USAC (OpenCV's universal RANSAC: SPRT, local optimisation) rather than plain
            # RANSAC: measured on smvs, the same mAP at 9 inliers (78.3 at 100 verified) and
            # the same most inliers of a wrong candidate (8), in a third of the time (0.16
            # against 0.51 s a query on average: plain RANSAC ran its 2000 iterations on
            # every wrong pair); below 9 USAC's counts ranked better (81.4 against 77.2 at 4).
            # The threshold in the candidate's pixels: keypoints found at a reduced size are
            # only as precise as that size's pixels.
            H, mask = cv2.findHomography(
                src, dst, cv2.USAC_DEFAULT, DEFAULT_SIFT_THRESHOLD * candidate.cell, maxIters=2000, confidence=0.995
            )
            if H is None or not _plausible(H):
                return 0
        else:
            # The candidate's cells are the unit: its side sets the threshold in its pixels.
            _, mask = cv2.estimateAffinePartial2D(
                src, dst, method=cv2.RANSAC,
                ransacReprojThreshold=DEFAULT_CELL_THRESHOLD * candidate.cell, maxIters=2000, confidence=0.995,
            )
        return 0 if mask is None else int(mask.sum())

    def verify(self, query: LocalFeatures, paths: Sequence[str]) -> List[Optional[int]]:
        """Inliers between ``query`` and each image of ``paths`` (None: unreadable)."""
        out: List[Optional[int]] = []
        for p in paths:
            feats = self.cached(p)
            out.append(None if feats is None else self.inliers(query, feats))
        return out


def _ratio_matches(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Lowe's ratio test, one to one: each row of ``a`` with its nearest row of ``b`` (L2),
    kept when closer than :data:`DEFAULT_RATIO` times the second nearest; a row of ``b``
    chosen by several rows of ``a`` keeps only the closest. Without that last rule a RANSAC
    homography that collapses the image onto a few points of a repetitive texture counted
    20-94 "inliers" on smvs between unrelated paintings (1-5 distinct points in the
    database image), as many as many true matches."""
    if len(b) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    cv2 = _cv2()
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.astype(np.float32), b.astype(np.float32), k=2)
    best: Dict[int, Tuple[float, int]] = {}  # candidate row -> (distance, query row)
    for p in pairs:
        if len(p) == 2 and p[0].distance < DEFAULT_RATIO * p[1].distance:
            m = p[0]
            if m.trainIdx not in best or m.distance < best[m.trainIdx][0]:
                best[m.trainIdx] = (m.distance, m.queryIdx)
    if not best:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    g = np.array([(qi, ti) for ti, (_, qi) in best.items()], np.int64)
    return g[:, 0], g[:, 1]


#: Largest area ratio between the two images a plausible homography maps (either way): a
#: linear scale change of up to 20.
_MAX_AREA_RATIO = 400.0


def _plausible(H: np.ndarray) -> bool:
    """Whether a homography could map a photo of an object onto another one: it keeps the
    orientation (a positive determinant of its linear part: a photo is not a mirror image)
    and scales areas by at most :data:`_MAX_AREA_RATIO` either way."""
    det = float(np.linalg.det(H[:2, :2]))
    return np.isfinite(det) and 1.0 / _MAX_AREA_RATIO <= det <= _MAX_AREA_RATIO


def _mutual_matches(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours by inner product of L2-normalised rows."""
    s = a @ b.T
    ab = s.argmax(axis=1)
    ba = s.argmax(axis=0)
    qi = np.nonzero(ba[ab] == np.arange(len(a)))[0]
    return qi, ab[qi]
