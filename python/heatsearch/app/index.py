"""A persistent image index: extract, aggregate, post-process, search, re-rank, save, load.

An :class:`Index` holds the final descriptors of a collection of images (one row each), the
paths they came from, and everything needed to describe a new query the same way: the
extraction settings, the pooling method, the HeW centering mean learned on the database's own
local features, and an optional PCA-whitening fitted on a separate image set.

On disk an index is a directory::

    index.json        format name and version, configuration, paths, dimension
    descriptors.npy   (n, d) final descriptors (memory-mapped on load)
    pooled.npy        (n, C) pooled descriptors before post-processing (to re-fit whitening)
    mean.npy          (C,) HeW centering mean (HeW pooling only)
    whitening.npz     the fitted PCAWhitening (when there is one)

Defaults, chosen by measurement on the real multi-view photographs of ``tools/quality.py``
(README, "Retrieval quality"): EfficientNet-Lite0's head conv, longer side at most 1024 (never
upscaled), three scales (1, 1/sqrt 2, 1/2), HeW pooling, signed square root + L2, and a
PCA-whitening learned on the database's own pooled descriptors once it holds at least 64
images (capped at their rank), never on queries.

Saving writes a complete new directory beside the target and then swaps it in, so an existing
index is never lost or half-overwritten when saving fails.
"""

from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _validate
from ..errors import IndexFileError, InvalidInputError
from ..pipeline import RERANKERS, rank
from ..postprocess import PostProcess
from ..vision.images import SUPPORTED_EXTENSIONS
from ..whitening import PCAWhitening
from . import storage

__all__ = ["Index", "IndexConfig", "SearchHit", "IndexFileError", "find_images", "IMAGE_EXTENSIONS"]

#: Image files :func:`find_images` picks up (case-insensitive).
IMAGE_EXTENSIONS = SUPPORTED_EXTENSIONS

PathLike = Union[str, "os.PathLike[str]"]

#: Multi-scale extraction factors (cirtorch's 1, 1/sqrt 2, 1/2): +3.5 mAP for HeW on
#: smvs_paintings (33.9 -> 37.4), +3.4 for R-MAC, +4.1 for GeM (README, "Retrieval quality").
DEFAULT_SCALES = (1.0, 0.7071067811865476, 0.5)
#: "auto" whitening is learned on the database once it has this many images: measured on
#: smvs_paintings (91 references, dimension capped at 90), it lifts HeW from 37.4 to 50.3 mAP.
AUTO_WHITENING_MIN_IMAGES = 64


@dataclass(frozen=True)
class IndexConfig:
    """How images become descriptors (defaults: see the module docstring)."""

    backbone: str = "efficientnet_lite0"
    layer: Optional[str] = None
    max_size: int = 1024
    scales: Tuple[float, ...] = DEFAULT_SCALES
    pooling: str = "hew"
    #: Signed power before L2 (0.5: the paper's signed square root; None: L2 only).
    power: Optional[float] = 0.5
    #: "auto": learn a PCA-whitening on the database's pooled descriptors as soon as it holds
    #: AUTO_WHITENING_MIN_IMAGES images (then kept; ``refit_whitening()`` re-learns it);
    #: "none": never. A PCAWhitening passed to the Index (fitted elsewhere) wins over both.
    whiten: str = "auto"
    #: Images whose local features give the HeW centering mean (evenly spaced over the
    #: database; all of them when the database is smaller).
    mean_sample: int = 256

    def __post_init__(self) -> None:
        _validate.choice(self.whiten, "whiten", ("auto", "none"))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "IndexConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise IndexFileError(f"unknown index configuration keys: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class SearchHit:
    """One search result: the image path, its score and its row in the index."""

    path: str
    score: float
    row: int


def find_images(folder: PathLike, recursive: bool = True) -> List[str]:
    """All image files under ``folder`` (sorted, so an index is reproducible)."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"expected a folder of images, got {str(root)!r} (not a directory)")
    pattern = root.rglob("*") if recursive else root.glob("*")
    return sorted(str(p) for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


@dataclass
class Index:
    """Final descriptors of a collection of images and the means to describe queries alike.

    Build one with :meth:`build` (a folder) or :meth:`add` (paths), search it with
    :meth:`search`, persist it with :meth:`save` / :meth:`load`.
    """

    config: IndexConfig = field(default_factory=IndexConfig)
    whitening: Optional[PCAWhitening] = None
    paths: List[str] = field(default_factory=list)
    descriptors: Optional[np.ndarray] = None
    pooled: Optional[np.ndarray] = None
    mean: Optional[np.ndarray] = None
    #: True when :attr:`whitening` was learned by the index itself ("auto").
    whitening_learned: bool = False
    #: Files that could not be read or gave no usable features, with the reason: ``(path, message)``.
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    extractor: Any = None
    _graph: Any = field(default=None, repr=False)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        folder: PathLike,
        config: Optional[IndexConfig] = None,
        *,
        whitening: Optional[PCAWhitening] = None,
        extractor: Any = None,
        recursive: bool = True,
        progress: bool = False,
    ) -> "Index":
        """Indexes every image under ``folder`` (jpg, png, webp, bmp, tiff; recursive).

        Unreadable files are reported in :attr:`skipped` (and by a warning), never fatal.
        """
        index = cls(config=config or IndexConfig(), whitening=whitening, extractor=extractor)
        index.add(find_images(folder, recursive), progress=progress)
        return index

    def _get_extractor(self) -> Any:
        if self.extractor is None:
            from ..vision.extract import Extractor

            self.extractor = Extractor(
                backbone=self.config.backbone,
                layer=self.config.layer,
                max_size=self.config.max_size,
                scales=self.config.scales,
            )
        return self.extractor

    def _pool(self, fmaps: Any) -> np.ndarray:
        """The pooled descriptor ``(C,)`` of one image: one map, or the sum over scales."""
        from ..aggregate import pool

        kwargs = {"mean": self.mean} if self.config.pooling == "hew" else {}
        maps = [fmaps] if isinstance(fmaps, np.ndarray) else list(fmaps)
        pooled = [pool(m, self.config.pooling, **kwargs) for m in maps]
        return np.asarray(np.sum(pooled, axis=0, dtype=np.float64))

    def refit_whitening(self) -> None:
        """Learns the PCA-whitening on the database's pooled descriptors (signed sqrt + L2
        first), dimension capped at their rank, and recomputes the final descriptors."""
        if self.pooled is None or not len(self):
            raise InvalidInputError("the index is empty: nothing to learn a whitening on")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*dimension is capped.*")
            self.whitening = PostProcess.fit(np.asarray(self.pooled, np.float64), power=self.config.power).whitening
        self.whitening_learned = True
        self.descriptors = self.postprocess(np.asarray(self.pooled, np.float64)).astype(np.float32)
        self._graph = None

    @property
    def postprocess(self) -> PostProcess:
        return PostProcess(self.whitening, power=self.config.power)

    def _feature_maps(self, paths: Sequence[str], progress: bool) -> Iterator[Tuple[str, Optional[np.ndarray], str]]:
        extractor = self._get_extractor()
        for path in _progress(paths, progress, "extracting"):
            try:
                fmap = extractor.feature_map(path)
            except (OSError, ValueError) as e:  # unreadable or undecodable image
                yield path, None, f"{type(e).__name__}: {e}"
                continue
            # A map with NaN or infinity (broken weights, an overflow) is reported with its
            # path here rather than failing the whole batch later without one.
            if not all(np.isfinite(m).all() for m in ([fmap] if isinstance(fmap, np.ndarray) else fmap)):
                yield path, None, "the network's feature map holds NaN or infinity"
                continue
            yield path, fmap, ""

    def add(self, paths: Iterable[PathLike], *, progress: bool = False) -> List[Tuple[str, str]]:
        """Adds images; returns the ``(path, reason)`` of those that could not be read (or whose
        feature map held NaN or infinity).

        The first call learns the HeW centering mean on (a sample of) the images added; later
        calls reuse it, so descriptors stay comparable.
        """
        new = [str(p) for p in paths]
        known = set(self.paths)
        duplicates = [p for p in new if p in known]
        if duplicates:
            raise InvalidInputError(f"already in the index: {duplicates[:3]}{' ...' if len(duplicates) > 3 else ''}")
        cache: Dict[str, np.ndarray] = {}
        skipped: List[Tuple[str, str]] = []
        if self.config.pooling == "hew" and self.mean is None and new:
            from ..hew import local_mean

            step = max(1, len(new) // max(1, self.config.mean_sample))
            for path, fmap, why in self._feature_maps(new[::step][: self.config.mean_sample], progress):
                if fmap is None:
                    skipped.append((path, why))
                else:
                    cache[path] = fmap
            if cache:
                self.mean = local_mean([m for f in cache.values() for m in ([f] if isinstance(f, np.ndarray) else f)])
        rows, added = [], []
        bad = {p for p, _ in skipped}
        todo = [p for p in new if p not in cache and p not in bad]
        cached = ((p, cache.pop(p), "") for p in list(cache))
        for path, fmap, why in itertools.chain(cached, self._feature_maps(todo, progress)):
            if fmap is None:
                skipped.append((path, why))
                continue
            rows.append(self._pool(fmap))
            added.append(path)
        if rows:
            pooled = np.stack(rows).astype(np.float32)
            old = self.pooled if self.pooled is not None else np.empty((0, pooled.shape[1]), np.float32)
            self.pooled = np.concatenate([np.asarray(old), pooled])
            self.paths.extend(added)
            self._graph = None
            if self.config.whiten == "auto" and self.whitening is None and len(self) >= AUTO_WHITENING_MIN_IMAGES:
                self.refit_whitening()  # learned once, then kept: descriptors stay comparable
            else:
                desc = self.postprocess(pooled.astype(np.float64)).astype(np.float32)
                old_d = self.descriptors if self.descriptors is not None else np.empty((0, desc.shape[1]), np.float32)
                self.descriptors = np.concatenate([np.asarray(old_d), desc])
        if skipped:
            warnings.warn(
                f"{len(skipped)} image(s) could not be read or gave no usable features and were "
                f"skipped, e.g. {skipped[0][0]}: {skipped[0][1]}"
            )
            self.skipped.extend(skipped)
        return skipped

    def remove(self, paths: Iterable[PathLike]) -> int:
        """Removes images by path; returns how many were removed (unknown paths are errors)."""
        drop = {str(p) for p in paths}
        unknown = drop - set(self.paths)
        if unknown:
            raise InvalidInputError(f"not in the index: {sorted(unknown)[:3]}")
        keep = [i for i, p in enumerate(self.paths) if p not in drop]
        self.paths = [self.paths[i] for i in keep]
        if self.descriptors is not None:
            self.descriptors = np.asarray(self.descriptors)[keep]
            self.pooled = np.asarray(self.pooled)[keep]
        self._graph = None
        return len(drop)

    def __len__(self) -> int:
        return len(self.paths)

    # -- search ----------------------------------------------------------------------------
    def describe(self, image: Any, bbox: Optional[Sequence[float]] = None) -> np.ndarray:
        """The final descriptor ``(d,)`` of an image (a path, a PIL image or an RGB array),
        optionally cropped to ``bbox = [x1, y1, x2, y2]`` first (Oxford/Paris queries)."""
        fmap = self._get_extractor().feature_map(image, bbox=bbox)
        return self.postprocess(self._pool(fmap)[None]).astype(np.float32)[0]

    def search(
        self,
        query: Any,
        k: int = 10,
        *,
        rerank: Optional[str] = None,
        bbox: Optional[Sequence[float]] = None,
    ) -> List[SearchHit]:
        """The ``k`` best matches of one query, best first.

        ``query``: an image path, a PIL image, an RGB array ``(H, W, 3)``, or a final
        descriptor ``(d,)`` (taken as it is). ``rerank``: one of
        ``None, "heat", "aqe", "alpha-qe", "aqe+heat", "diffusion"`` (see
        :mod:`heatsearch.pipeline`).
        """
        if not len(self):
            raise InvalidInputError("the index is empty: add images before searching")
        _validate.choice(rerank, "rerank", RERANKERS)
        X = np.asarray(self.descriptors)
        arr = None if isinstance(query, (str, os.PathLike)) else np.asarray(query) if isinstance(query, np.ndarray) else None
        if arr is not None and arr.ndim == 1:
            if arr.shape[0] != X.shape[1]:
                raise InvalidInputError(f"a descriptor query must have length {X.shape[1]}, got {arr.shape[0]}")
            q = arr.astype(X.dtype)
        else:
            q = self.describe(query, bbox=bbox)
        if rerank == "diffusion" and self._graph is None:
            from ..knn import knn_graph

            self._graph = knn_graph(X)
        ranks, scores = rank(X, q[None], k=k, rerank=rerank, graph=self._graph)
        return [SearchHit(self.paths[r], float(s), int(r)) for r, s in zip(ranks[0], scores[0])]

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: PathLike) -> None:
        """Writes the index to ``directory`` (created or replaced as a whole, atomically; see
        :mod:`heatsearch.app.storage`)."""
        storage.write_index(
            directory,
            storage.StoredIndex(
                config=self.config.to_dict(),
                paths=list(self.paths),
                descriptors=self.descriptors,
                pooled=self.pooled,
                mean=self.mean,
                whitening=self.whitening,
                whitening_learned=self.whitening_learned,
            ),
        )

    @classmethod
    def load(cls, directory: PathLike, *, mmap: bool = True, extractor: Any = None) -> "Index":
        """Reads an index written by :meth:`save` (descriptors memory-mapped by default)."""
        stored = storage.read_index(directory, mmap=mmap)
        try:
            config = IndexConfig.from_dict(stored.config)
        except (TypeError, InvalidInputError) as e:
            raise IndexFileError(f"{directory}: bad configuration in index.json ({e})") from e
        return cls(
            config=config,
            whitening=stored.whitening,
            whitening_learned=stored.whitening_learned,
            paths=stored.paths,
            descriptors=stored.descriptors,
            pooled=stored.pooled,
            mean=stored.mean,
            extractor=extractor,
        )


def _progress(items: Sequence[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return items
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:  # progress bars are a nicety
        return items
    return tqdm(items, desc=desc, unit="img")
