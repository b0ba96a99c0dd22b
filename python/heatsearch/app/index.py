"""A persistent image index: extract, aggregate, post-process, search, re-rank, find
near-duplicates, save, load.

An :class:`Index` holds the final descriptors of a collection of images (one row each), the
paths they came from, and everything needed to describe a new query the same way: the
extraction settings, the pooling method, the HeW centering mean learned on the database's own
local features, and an optional PCA-whitening fitted on a separate image set.

Paths: in memory, :attr:`Index.paths` are absolute, so search hits open from any working
directory. The index records the collection's root folder (:attr:`Index.root`: the folder
given to :meth:`Index.build`) and stores each path relative to it, so a collection moved
together with its index is found again with ``Index.load(directory, root=new_place)``;
:meth:`Index.sync` brings the index up to date with the files under the root.

On disk an index is a directory (:mod:`heatsearch.app.storage`): ``index.json`` names the
current version, a directory holding ``meta.json`` (configuration, root, the list of shards),
the shards (``<id>.desc.npy``, ``<id>.pooled.npy``, ``<id>.paths.json``), ``mean.npy`` and
``whitening.npz``. Saving writes a new version holding only the new rows (kept shards are
linked) and switches to it in one atomic step, so an existing index is never lost or
half-overwritten; loading checks every field and array. In memory the rows are those shards,
read a window at a time, plus the rows added since (:mod:`heatsearch.app.store`): search
streams them, so an index larger than RAM is searched. :meth:`Index.from_descriptors` makes
an index of rows computed elsewhere.

Defaults, chosen by measurement on the real multi-view photographs of ``tools/quality.py``
and the four protocols of ``tools/protocols.py`` (README, "Retrieval quality and the
defaults"): EfficientNet-Lite0's head conv, longer side at most 1024 (never upscaled), three
scales (1, 1/sqrt 2, 1/2), HeW pooling, signed square root + L2, and a PCA-whitening learned
on the database's own pooled descriptors once it holds at least 64 images (and again on all
of them each time it has doubled: :data:`WHITENING_REFIT_GROWTH`), with covariance
shrinkage :data:`DEFAULT_SHRINKAGE` (so that a collection of fewer images than dimensions
keeps its neighbourhoods) and the scatter of its near-duplicate groups added to the
covariance (:data:`WHITEN_DUPLICATES`, so that copies of one image stay together) and that
of a synthetic copy of every image (:data:`WHITEN_COPIES`, so that what a crop, a rescaling or
a re-encoding changes is not amplified), never on queries.

Services: queries may be paths, encoded image bytes, binary file objects, PIL images, RGB
arrays or final descriptors; :meth:`Index.search_many` describes many queries and ranks them
in one search call; :meth:`Index.warmup` builds the extractor and runs it once before the first
query. One extractor is built even when several threads make their first query together.
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Literal, Optional, Sequence, Tuple, Type, Union

import numpy as np

from .. import _validate
from ..aggregate import POOLINGS
from ..ann import ADD_BLOCK, ANN_KINDS, AUTO_MIN_ROWS, AnnIndex, AnnParams
from ..ann import available as ann_available
from ..diffusion import DEFAULT_TRUNCATION
from ..duplicates import DEFAULT_BLOCK, DEFAULT_THRESHOLD, WHITENED_THRESHOLD, DuplicateGroup, duplicate_groups
from ..errors import HeatsearchError, IndexFileError, InvalidDTypeError, InvalidInputError, MissingDependencyError
from ..pipeline import AUTO_DEPTH, DEFAULT_DEPTH, DEFAULT_NEIGHBORS, RERANKERS, rank
from ..postprocess import PostProcess
from ..query_expansion import alpha_query_expansion, average_query_expansion
from ..search import search
from ..vision.backbones import BACKBONES
from ..vision.images import SUPPORTED_EXTENSIONS
from ..vision.spatial import SpatialVerifier, spatial_order, split_rerank, with_spatial
from ..whitening import PCAWhitening
from . import storage
from .store import STORAGE_DTYPES, Rows, Segment, Store

__all__ = [
    "Index",
    "IndexConfig",
    "SearchHit",
    "SyncResult",
    "DuplicateGroup",
    "IndexFileError",
    "find_images",
    "IMAGE_EXTENSIONS",
    "SEARCH_RERANKERS",
]

#: Image files :func:`find_images` picks up (case-insensitive).
IMAGE_EXTENSIONS = SUPPORTED_EXTENSIONS

PathLike = Union[str, "os.PathLike[str]"]

#: What :meth:`Index.search` takes as ``rerank``: the descriptor re-rankers of
#: :data:`heatsearch.pipeline.RERANKERS`, ``"spatial"`` (geometric verification of the plain
#: ranking's top) and each re-ranker followed by it, ``"<re-ranker>+spatial"`` (e.g.
#: ``"heat+spatial"``: HeR's order, then verification of its top). Spatial verification needs
#: the images, so it lives here, in the image layer (:mod:`heatsearch.vision.spatial`).
SEARCH_RERANKERS = with_spatial(RERANKERS)

#: Multi-scale extraction factors (cirtorch's 1, 1/sqrt 2, 1/2): +3.5 mAP for HeW on
#: smvs_paintings (33.9 -> 37.4), +3.4 for R-MAC, +4.1 for GeM (README, "Retrieval quality").
DEFAULT_SCALES = (1.0, 0.7071067811865476, 0.5)
#: "auto" whitening is learned on the database once it has this many images: measured on
#: smvs_paintings (91 references, dimension capped at 90), it lifts HeW from 37.4 to 50.3 mAP.
AUTO_WHITENING_MIN_IMAGES = 64
#: An index re-learns its "auto" whitening, on all its images, once it holds this many times
#: the images it learned it on (so a whitening learned on the first 64 does not whiten the
#: next thousands: every image it was not learned on is whitened badly). Measured with the
#: 404-image ``bursts`` collections of ``tools/calibrate_duplicates.py`` (every image of 195
#: real and 17 demo photos, 3 edited copies of 30% of them; copy search, every copy a query
#: for the other copies of its photo): learned on all of them 88.6-91.8 mAP, on their first
#: half 81.1-86.2, on their first 64 78.2-80.0, on the originals alone (the copies added
#: later) 72.1-74.5, unwhitened 76.6-81.6. Doubling bounds the rows rewritten by re-learning
#: to about twice the index (each re-learning rewrites every row once, at the next save).
WHITENING_REFIT_GROWTH = 2
#: Covariance shrinkage of the whitening an index learns on itself (see
#: :meth:`heatsearch.PCAWhitening.fit`): 0.5, the largest of 0-0.95 that keeps query-to-database
#: mAP on smvs_paintings within a point of the unshrunk whitening (49.3 against 50.3). Without
#: shrinkage a collection of fewer images than dimensions collapses to equidistant points
#: (in-collection smvs 17.2, copy detection 20.9 mAP with ONNX Runtime's maps); 0.5 alone
#: gives 48.9 and 71.0 (unwhitened: 26.1 and 96.5): more shrinkage helps copy detection and
#: costs query-to-database accuracy. The README's "Retrieval quality" table, ``python
#: tools/protocols.py``.
DEFAULT_SHRINKAGE: Union[float, str] = 0.5
#: Centred cosine from which two images of the collection count as copies of one image when
#: the index learns its whitening (:meth:`heatsearch.PCAWhitening.fit`, ``duplicates``): their
#: groups, with the images whose two nearest neighbours are in one of them, add their scatter
#: to the covariance, so the whitening does not amplify what tells a copy from its original.
#: 0.8, measured with ``python tools/protocols.py --holidays`` (README, "Retrieval quality"):
#: copy detection 71.0 -> 96.5 mAP (96.5 unwhitened; every image a query 98.9 against 98.2),
#: 88.4 against 68.1 unwhitened among 1696 copies of real photos, Holidays 87.0 -> 87.5; the
#: paintings of smvs, look-alikes but no copies, give one pair at 0.8 (in-collection 48.8) and
#: none among the 91 references (query-to-database unchanged). With the neighbours' rule 0.75
#: and 0.7 give copy detection no more, and take 14 and 52 images of smvs into groups
#: (in-collection 48.8 and 44.4); without it 0.75 gave copy detection 93.5.
WHITEN_DUPLICATES: Optional[float] = 0.8
#: Whether an index that learns its whitening ("auto") also extracts a synthetic copy of every
#: image it adds (:func:`heatsearch.vision.copies.synthetic_copy`: a crop, a downscale, a
#: brightness change and JPEG, about a third of the image's pixels) and gives the whitening each
#: (image, copy) pair as matching vectors (:meth:`heatsearch.PCAWhitening.fit`'s ``pairs``),
#: kept as their difference scatter (:attr:`Index.copy_scatter`). Measured with ``python
#: tools/protocols.py`` (README, "Retrieval quality"): smvs query-to-database 49.3 -> 52.1
#: mAP, in-collection 48.8 -> 51.4, copy detection 96.5 -> 97.2 (96.5 unwhitened); the cost,
#: measured by benches/test_bench_server.py, 39% more time to index with ONNX Runtime (9.82
#: -> 7.07 images/s), 30% with torch.
WHITEN_COPIES = True
#: Rows whose descriptors :meth:`Index.load` recomputes from the pooled ones (evenly spaced,
#: first and last included) to check that the two files belong together: a whole recomputation
#: would cost a whitening product per row (seconds for 60k images), a sample catches a file of
#: another index, another configuration or another whitening.
CONSISTENCY_SAMPLE = 64
#: Database rows whose pairwise cosines all lie within this spread count as equidistant (no
#: neighbourhood structure; see ``_warn_if_equidistant``): a collapsed whitening leaves them
#: within 1e-6 of each other, real collections spread over tenths.
EQUIDISTANT_SPREAD = 1e-3
#: Images :meth:`Index.add` decodes and resizes ahead of the network, in one background thread,
#: so that decoding overlaps inference (0: none, decode then run, one image at a time). Pillow and
#: ONNX Runtime / torch release the GIL while they work. Each waiting image holds its resized
#: inputs (about 4 MB for 1024 x 768 at the three default scales). See benches/test_bench_server.py.
PREFETCH = 2
#: The side of the random image :meth:`Index.warmup` runs through the network.
WARMUP_SIZE = 224
#: Rows of the index whose cosine to a query :meth:`Index.search` computes at a time after a
#: re-ranking (16 MB of float32 descriptors of dimension 1024).
COSINE_CHUNK = 4096
#: Pooled rows post-processed at a time in float64 (then kept as float32): by
#: :meth:`Index.unwhitened`, :meth:`Index.refit_whitening` and :meth:`Index.duplicates`.
UNWHITENED_CHUNK = 4096
#: What :attr:`IndexConfig.ann` takes: None (exact search), "auto" (hnsw from
#: :data:`heatsearch.ann.AUTO_MIN_ROWS` rows on, exact below) or a kind of
#: :data:`heatsearch.ann.ANN_KINDS`.
ANN_CHOICES = (None, "auto") + ANN_KINDS
#: The least shortlist an approximate search ranks exactly (and re-ranks): the top 100, where
#: the backends' recall is measured (README, "Scale"); deeper when ``k`` or the re-ranker needs.
ANN_SHORTLIST = 100
#: Once more than this share of an approximate index's ids stand for removed rows, the next
#: search rebuilds it (until then a removal only marks ids, and searches fetch
#: ``1 / (1 - share)`` times the candidates, at most twice as many).
ANN_REBUILD_DEAD = 0.5
#: The file of the approximate index in a saved index's version directory.
ANN_FILE = "ann.faiss"


@dataclass(frozen=True)
class IndexConfig:
    """How images become descriptors (defaults: see the module docstring).

    Every field is checked on construction (and so when an index is loaded):
    InvalidInputError / InvalidDTypeError name the field.
    """

    #: One of :data:`heatsearch.vision.backbones.BACKBONES`.
    backbone: str = "efficientnet_lite0"
    #: A layer of the backbone (None: the backbone's default; checked when the extractor is
    #: built, which needs torch).
    layer: Optional[str] = None
    #: Longer image side after resizing, never upscaled (None: images as stored).
    max_size: Optional[int] = 1024
    scales: Tuple[float, ...] = DEFAULT_SCALES
    #: One of :data:`heatsearch.aggregate.POOLINGS`.
    pooling: str = "hew"
    #: Signed power before L2 (0.5: the paper's signed square root; None: L2 only).
    power: Optional[float] = 0.5
    #: "auto": learn a PCA-whitening on the database's pooled descriptors as soon as it holds
    #: AUTO_WHITENING_MIN_IMAGES images, and again on all of them each time it has grown to
    #: WHITENING_REFIT_GROWTH times the images it was learned on (``refit_whitening()`` any time);
    #: "none": never. A PCAWhitening passed to the Index (fitted elsewhere) wins over both.
    whiten: str = "auto"
    #: Shrinkage of the learned whitening's covariance, ``s`` in ``[0, 1)`` or
    #: ``"ledoit-wolf"`` (:meth:`heatsearch.PCAWhitening.fit`); :data:`DEFAULT_SHRINKAGE`.
    shrinkage: Union[float, str] = DEFAULT_SHRINKAGE
    #: Centred cosine from which two of the collection's images are copies whose differences
    #: the learned whitening does not amplify (``duplicates`` of
    #: :meth:`heatsearch.PCAWhitening.fit`), in ``(0, 1)``, or None (the whitening of the
    #: covariance alone); :data:`WHITEN_DUPLICATES`.
    whiten_duplicates: Optional[float] = WHITEN_DUPLICATES
    #: Whether an index that learns its whitening also extracts a synthetic copy of every image
    #: and learns from the (image, copy) pairs; :data:`WHITEN_COPIES`.
    whiten_copies: bool = WHITEN_COPIES
    #: Images whose local features give the HeW centering mean (evenly spaced over the
    #: database; all of them when the database is smaller).
    mean_sample: int = 256
    #: How the final descriptors are stored, one of
    #: :data:`heatsearch.app.store.STORAGE_DTYPES`: "float32" (default), or "float16" (half
    #: the disk and I/O; search converts each block to float32; effect on mAP in the README,
    #: "Descriptor store"). Pooled descriptors stay float32 (HeW sums may exceed float16).
    storage_dtype: str = "float32"
    #: Approximate search (:mod:`heatsearch.ann`, the ``ann`` extra), one of
    #: :data:`ANN_CHOICES`: None (default: exact search), "auto", "ivfpq" or "hnsw". See
    #: :meth:`Index.search` for how re-rankers run on its shortlist.
    ann: Optional[str] = None
    #: Overrides of the ANN parameters chosen from n (:class:`heatsearch.ann.AnnParams`, or a
    #: dict of its fields: nlist, m, nbits, nprobe, M, ef_construction, ef_search, refine,
    #: train_size); None: the rule of :func:`heatsearch.ann.ann_params`.
    ann_params: Optional[AnnParams] = None

    def __post_init__(self) -> None:
        _validate.choice(self.backbone, "backbone", BACKBONES)
        _validate.text(self.layer, "layer", none_ok=True)
        _validate.optional_integer(self.max_size, "max_size", minimum=1)
        scales = _validate.real_sequence(self.scales, "scales", low=0.0, low_open=True)
        object.__setattr__(self, "scales", scales)
        _validate.choice(self.pooling, "pooling", tuple(POOLINGS))
        if self.power is not None:
            object.__setattr__(self, "power", _validate.real(self.power, "power", low=0.0, low_open=True))
        _validate.choice(self.whiten, "whiten", ("auto", "none"))
        object.__setattr__(self, "shrinkage", _validate.shrinkage(self.shrinkage))
        object.__setattr__(self, "whiten_duplicates", _validate.duplicate_cosine(self.whiten_duplicates, "whiten_duplicates"))
        _validate.flag(self.whiten_copies, "whiten_copies")
        _validate.integer(self.mean_sample, "mean_sample", minimum=1)
        _validate.choice(self.storage_dtype, "storage_dtype", STORAGE_DTYPES)
        _validate.choice(self.ann, "ann", ANN_CHOICES)
        if isinstance(self.ann_params, dict):
            object.__setattr__(self, "ann_params", AnnParams.from_dict(self.ann_params))
        elif self.ann_params is not None and not isinstance(self.ann_params, AnnParams):
            raise InvalidDTypeError(f"ann_params must be AnnParams, a dict or None, got {type(self.ann_params).__name__}")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "IndexConfig":
        """The configuration ``to_dict`` wrote: every field present (a missing one would take
        today's default, which may not be the one the index was built with), no other."""
        if not isinstance(d, dict):
            raise InvalidDTypeError(f"a configuration must be a dict, got {type(d).__name__}")
        if "shrinkage" not in d:
            # Written before heatsearch 0.3, whose learned whitening had no shrinkage: the
            # index's whitening.npz holds it, and refit_whitening() re-learns it alike.
            d = {**d, "shrinkage": 0.0}
        if "whiten_duplicates" not in d:
            # Written before the whitening that keeps copies together: covariance alone.
            d = {**d, "whiten_duplicates": None}
        if "whiten_copies" not in d:
            # Written before the synthetic copies: a whitening of the images alone.
            d = {**d, "whiten_copies": False}
        if "storage_dtype" not in d:
            # Written before the descriptor store (format version 3): float32 rows.
            d = {**d, "storage_dtype": "float32"}
        # Written before the ANN backend: exact search, as then.
        d = {"ann": None, "ann_params": None, **d}
        known = list(cls.__dataclass_fields__)
        unknown = sorted(set(d) - set(known))
        missing = [k for k in known if k not in d]
        if unknown or missing:
            raise InvalidInputError(
                f"configuration keys: {'unknown ' + str(unknown) if unknown else ''}"
                f"{', ' if unknown and missing else ''}{'missing ' + str(missing) if missing else ''}"
            )
        return cls(**d)


@dataclass(frozen=True)
class SearchHit:
    """One search result.

    ``path``: the absolute path of the image (the index's root joined with the path stored
    relative to it, see :attr:`Index.paths`).

    ``score``: the cosine similarity of the query's and the image's final descriptors (their
    inner product: both are L2-normalised), in ``[-1, 1]``, whatever the re-ranker: 1 is the
    same descriptor, about 0 unrelated. With a whitening learned on a small collection the
    values crowd together (README, "Search scores"): compare hits of one index, not
    across indexes.

    ``row``: its row in :attr:`Index.descriptors`.

    ``rerank_score``: the re-ranker's own value, which decided the ORDER (None without a
    re-ranker, and with ``"spatial"`` alone). Its scale is the re-ranker's: ``"heat"``,
    ``"aqe+heat"`` and ``"auto"``: HeR's heat temperature (``>= 0``; the query's own would be
    ``G_qq >= 1``) within the re-ranked depth (800; ``"auto"``: 20, its first hit raised to
    the best temperature, see :func:`heatsearch.pipeline.rank`); ``"aqe"``, ``"alpha-qe"``:
    the cosine to the expanded query; ``"diffusion"``: the diffusion value ``f`` (Iscen et al.
    2017; no fixed range: from hundredths to about 10 on the demo's images) within the
    truncation. Hits beyond HeR's depth or diffusion's truncation carry the first-pass cosine
    there: compare rerank scores within one part only.

    ``inliers``: with spatial verification (``"spatial"``, ``"<re-ranker>+spatial"``), the
    inlier count of its geometric match with the query, which put the verified hits first
    (None: not verified, i.e. beyond the verified depth, no spatial re-ranking, or its image
    could not be read).
    """

    path: str
    score: float
    row: int
    rerank_score: Optional[float] = None
    inliers: Optional[int] = None


@dataclass(frozen=True)
class SyncResult:
    """What :meth:`Index.sync` changed: absolute paths ``added`` and ``removed``, and the new
    files ``skipped`` as unreadable, with the reason: ``(path, message)``."""

    added: List[str]
    removed: List[str]
    skipped: List[Tuple[str, str]]


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
    :meth:`search` / :meth:`search_many`, persist it with :meth:`save` / :meth:`load`, keep it
    up to date with :meth:`sync`.

    Attributes:
        paths: absolute image paths, one per row (relative paths given to :meth:`add` are
            made absolute against the current directory, as Python opens them).
        descriptors: ``(n, d)`` float32 final descriptors: memory-mapped after :meth:`load` or
            :meth:`save` when the rows are one shard with nothing removed, else read into a
            new array (O(n d) memory: search, add and remove never do this).
        pooled: ``(n, C)`` float32 pooled descriptors before post-processing (None for an
            index of descriptors computed elsewhere).
        mean: ``(C,)`` HeW centering mean (HeW pooling).
        root: the collection's folder (absolute): :meth:`build`'s folder, or ``root=``. Paths
            are saved relative to it; None until known (then :meth:`save` records the deepest
            folder holding every image).
    """

    config: IndexConfig = field(default_factory=IndexConfig)
    whitening: Optional[PCAWhitening] = None
    paths: List[str] = field(default_factory=list)
    # The rows (see heatsearch.app.store); descriptors and pooled are properties over it.
    _store: Store = field(default_factory=Store, init=False, repr=False, compare=False)
    # Arrays set that do not form rows (None with the other set, or other lengths): kept as
    # given so that the checks name what is wrong.
    _loose: Optional[Tuple[Any, Any]] = field(default=None, init=False, repr=False, compare=False)
    # True for an index of descriptors computed elsewhere (from_descriptors).
    _external: bool = field(default=False, init=False, repr=False, compare=False)
    descriptors: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    pooled: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    mean: Optional[np.ndarray] = None
    #: True when :attr:`whitening` was learned by the index itself ("auto").
    whitening_learned: bool = False
    #: How many images :attr:`mean` and a learned :attr:`whitening` came from (None: unknown,
    #: e.g. an index of heatsearch 0.1/0.2, or not learned by the index).
    mean_images: Optional[int] = None
    whitening_images: Optional[int] = None
    #: ``(C, C)`` float64: the sum of ``d d^T`` over the images added with a synthetic copy
    #: (:attr:`IndexConfig.whiten_copies`), ``d`` the difference of the copy's and the image's
    #: pooled descriptors after signed square root + L2: what a learned whitening takes as
    #: matching pairs. None until a copy was made. Removing an image keeps its pair (still an
    #: example of what copies differ by; adding it again adds a second one); the whitening
    #: weighs the pairs as at most one per image (:meth:`heatsearch.PCAWhitening.fit`). Made
    #: with the configuration's ``power``, which an index keeps for life.
    copy_scatter: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    #: How many pairs :attr:`copy_scatter` sums.
    copy_pairs: int = 0
    # (the copy_scatter array, the saved copies.npy holding it): saves link that file while
    # the index holds the same array (never changed in place: adding pairs makes a new one).
    _copies_file: Optional[Tuple[Any, str]] = field(default=None, init=False, repr=False, compare=False)
    #: Files that could not be read or gave no usable features, with the reason: ``(path, message)``.
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    extractor: Any = None
    _graph: Any = field(default=None, repr=False)
    #: The approximate index (an :class:`heatsearch.ann.AnnIndex` standing for the first
    #: ``nrows`` rows of :attr:`descriptors`): built at the first search, extended when rows
    #: are appended, told about removed rows (rebuilt past :data:`ANN_REBUILD_DEAD`), dropped
    #: when every row changes (a new whitening).
    _ann: Any = field(default=None, repr=False, compare=False)
    root: Optional[str] = None
    #: What runs the network when the index builds its extractor: "auto" (default: ONNX
    #: Runtime where installed and able, else torch), "torch" or "onnx"; see
    #: :class:`heatsearch.vision.extract.Extractor`. Not part of :class:`IndexConfig` nor saved:
    #: the two runtimes' maps agree within 1e-5 of their largest value, so an index built with
    #: one is searched with the other.
    runtime: str = "auto"
    #: The :class:`~heatsearch.vision.spatial.SpatialVerifier` of ``rerank="spatial"``: built
    #: with its defaults at the first such search (SIFT; the index's extractor for "cnn"); set
    #: your own to change the kind of features, the depth or the inlier threshold. Not saved:
    #: its cache of database features lives in memory only.
    spatial: Optional[SpatialVerifier] = field(default=None, repr=False, compare=False)
    # Guards the lazily built extractor and kNN graph: threads making their first query at the
    # same time build one, not one each (an extractor holds the network's weights).
    _lock: Any = field(default_factory=threading.RLock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from ..vision.extract import RUNTIMES

        _validate.choice(self.runtime, "runtime", RUNTIMES)
        self.paths = [_absolute(p, f"paths[{i}]") for i, p in enumerate(self.paths)]
        if self.root is not None:
            self.root = _absolute(self.root, "root")

    # -- the rows ----------------------------------------------------------------------------
    def _column(self, column: str) -> Optional[np.ndarray]:
        """:attr:`descriptors` ("desc") or :attr:`pooled`: the stored array itself when the
        rows are one array of float32/float64 with nothing removed (memory-mapped after
        :meth:`load`), else a new float32 array of the live rows (materialised: O(n) memory;
        search never does this)."""
        if self._loose is not None:
            return self._loose[0 if column == "desc" else 1]
        st = self._store
        if not st.segments or (column == "pooled" and not st.has_pooled):
            return None
        if len(st.segments) == 1 and not len(st.segments[0].dead):
            rows = st.segments[0].desc if column == "desc" else st.segments[0].pooled
            assert rows is not None
            if rows.dtype in (np.float32, np.float64):
                return rows.whole()
        return st.materialise(column, np.float32 if st.dtype == np.float16 else None)

    def _set_column(self, column: str, value: Any) -> None:
        """Replaces every row's descriptors (or pooled descriptors): the rows become one
        array in memory (the next save writes them all)."""
        if not hasattr(self, "_store"):  # the dataclass __init__ sets fields in order
            self._store, self._loose = Store(), None
        other = self._column("pooled" if column == "desc" else "desc")
        desc, pooled = (value, other) if column == "desc" else (other, value)
        self._graph = None
        self._ann = None  # every row may have changed
        if isinstance(desc, np.ndarray) and desc.ndim == 2 and desc.dtype == np.float32 and self.config.storage_dtype == "float16":
            desc = desc.astype(np.float16)
        ok = (
            isinstance(desc, np.ndarray) and desc.ndim == 2
            and (pooled is None or (isinstance(pooled, np.ndarray) and pooled.ndim == 2 and len(pooled) == len(desc)))
        )
        if ok:
            self._store = Store([Segment(Rows(desc), None if pooled is None else Rows(pooled), np.empty(0, np.int64))])
            self._loose = None
        elif desc is None and pooled is None:
            self._store, self._loose = Store(), None
        else:
            self._store, self._loose = Store(), (desc, pooled)

    @property
    def dim(self) -> int:
        """The dimension ``d`` of the final descriptors (0 before the first row)."""
        if self._loose is not None:
            return int(np.shape(self._loose[0])[-1]) if self._loose[0] is not None else 0
        return int(self._store.dim or 0)

    @property
    def source(self) -> str:
        """"images" (rows heatsearch computed from images) or "descriptors" (rows computed
        elsewhere: :meth:`from_descriptors`; searched with descriptor queries only)."""
        return "descriptors" if self._external else "images"

    def copy(self) -> "Index":
        """A copy to change (add, remove) while this one keeps serving searches: it shares
        the rows (never modified in place: changes make new segments) and the extractor."""
        out = replace(self, paths=[], descriptors=None, pooled=None, skipped=list(self.skipped), _graph=None)
        out.paths = list(self.paths)
        out._store, out._loose, out._external = self._store.copy(), self._loose, self._external
        return out

    def compact(self) -> None:
        """Makes the next :meth:`save` rewrite every shard holding removed rows with its live
        rows only (a shard is also rewritten by itself once more than
        :data:`heatsearch.app.store.COMPACT_DEAD_FRACTION` of its rows are removed)."""
        self._store.compact()

    def _append_rows(self, desc: np.ndarray, pooled: Optional[np.ndarray]) -> None:
        """New rows after the existing ones (``desc`` in the storage dtype)."""
        if self._loose is not None or (self._store.segments and (pooled is None) != (not self._store.has_pooled)):
            old_d, old_p = self._column("desc"), self._column("pooled")
            self.descriptors = desc if old_d is None else np.concatenate([np.asarray(old_d), desc])
            if pooled is not None:
                self.pooled = pooled if old_p is None else np.concatenate([np.asarray(old_p), pooled])
            return
        if self._store.dim is not None and self._store.dim != desc.shape[1]:
            raise InvalidInputError(f"new descriptors have dimension {desc.shape[1]}, the index's are {self._store.dim}")
        store = self._store.copy()
        store.append(desc, pooled)
        self._store = store
        self._graph = None

    @classmethod
    def from_descriptors(
        cls, X: Any, paths: Optional[Sequence[Any]] = None, config: Optional[IndexConfig] = None
    ) -> "Index":
        """An index of descriptors computed elsewhere (another extractor, another machine).

        Args:
            X: ``(n, d)`` float32/float64 rows, finite, none zero; L2-normalised here (the
                index's scores are cosines), then stored as ``config.storage_dtype``.
            paths: one name per row (any non-empty text: file paths, URLs, database keys; kept
                verbatim, never resolved against a folder), distinct; default ``"0"``,
                ``"1"``, ... (the row numbers).
            config: only ``storage_dtype`` matters; default ``IndexConfig(whiten="none")``.

        Such an index answers descriptor queries (``(d,)`` arrays, or an ``(nq, d)`` array to
        :meth:`search_many`) with every re-ranker but spatial verification; it cannot
        describe images (heatsearch does not know how its rows were made), so image queries,
        :meth:`add`, :meth:`sync` and :meth:`refit_whitening` raise InvalidInputError.

        Raises:
            InvalidInputError / InvalidDTypeError: as :meth:`add_descriptors`.
        """
        index = cls(config=config if config is not None else IndexConfig(whiten="none"))
        index._external = True
        index.add_descriptors(X, paths)
        return index

    def add_descriptors(self, X: Any, paths: Optional[Sequence[Any]] = None) -> None:
        """Adds rows computed elsewhere to an index of descriptors (:meth:`from_descriptors`,
        or an empty index, which becomes one); checked as :meth:`from_descriptors` checks
        them. Writes nothing until :meth:`save`, which then writes only these rows.

        Raises:
            InvalidInputError: ``X`` not 2-D, empty, of another dimension than the index, with
                NaN, infinity or a zero row; ``paths`` not one distinct name per row, or a name
                the index holds; the index holds images (their rows need pooled descriptors).
            InvalidDTypeError: ``X`` not float32/float64; ``paths`` not a list.
        """
        if not self._external:
            if len(self) or self._column("pooled") is not None:
                raise InvalidInputError(
                    "add_descriptors adds rows computed elsewhere, but this index describes images "
                    "itself (its rows carry pooled descriptors): add images with add(), or build an "
                    "index of descriptors with Index.from_descriptors"
                )
            self._external = True
        rows = _validate.descriptor_rows(X, "X", self.dim or None)
        n = len(self)
        names = [str(n + i) for i in range(len(rows))] if paths is None else paths
        ids = _validate.identifiers(names, "paths", len(rows), set(self.paths))
        self._append_rows(rows.astype(self.config.storage_dtype), None)
        self.paths.extend(ids)

    def _images_allowed(self, what: str) -> None:
        if self._external:
            raise InvalidInputError(
                f"this index holds descriptors computed elsewhere (Index.from_descriptors): it cannot "
                f"describe images, so {what} is not possible; query it with descriptors ((d,) arrays)"
            )

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
        runtime: str = "auto",
    ) -> "Index":
        """Indexes every image under ``folder`` (jpg, png, webp, bmp, tiff; recursive), which
        becomes the index's :attr:`root`.

        Unreadable files are reported in :attr:`skipped` (and by a warning), never fatal.
        ``runtime``: see :attr:`runtime`.
        """
        root = _validate.directory(folder, "folder")
        index = cls(config=config or IndexConfig(), whitening=whitening, extractor=extractor, root=root,
                    runtime=runtime)
        index.add(find_images(root, recursive), progress=progress)
        return index

    def _get_extractor(self) -> Any:
        self._images_allowed("describing an image")
        extractor = self.extractor
        if extractor is None:
            with self._lock:  # the check again under the lock: another thread may have built it
                if self.extractor is None:
                    from ..vision.extract import Extractor

                    self.extractor = Extractor(
                        backbone=self.config.backbone,
                        layer=self.config.layer,
                        max_size=self.config.max_size,
                        scales=self.config.scales,
                        runtime=self.runtime,
                    )
                extractor = self.extractor
        return extractor

    def _pool(self, fmaps: Any) -> np.ndarray:
        """The pooled descriptor ``(C,)`` of one image: one map, or the sum over scales."""
        from ..aggregate import pool

        kwargs = self._pool_arguments()
        maps = [fmaps] if isinstance(fmaps, np.ndarray) else list(fmaps)
        pooled = [pool(m, self.config.pooling, **kwargs) for m in maps]
        return np.asarray(np.sum(pooled, axis=0, dtype=np.float64))

    def _pool_arguments(self) -> Dict[str, Any]:
        """Keyword arguments of :func:`heatsearch.aggregate.pool` for this index's pooling:
        HeW's centring mean."""
        return {"mean": self.mean} if self.config.pooling == "hew" else {}

    def refit_whitening(self) -> None:
        """Learns the PCA-whitening on the database's pooled descriptors (signed sqrt + L2
        first; the configuration's ``shrinkage`` and ``whiten_duplicates``), dimension capped
        at their rank, and recomputes the final descriptors. The pooled rows are read a
        window at a time (:meth:`PostProcess._fit_blocks`): besides the new descriptors
        (``n x d``) it holds two ``d x d`` float64 matrices and, for the near-duplicate groups,
        a float64 copy of up to 20 000 rows. The index changes only once all is computed: an
        error (say a MemoryError) leaves it as it was."""
        self._images_allowed("learning a whitening")
        if self._column_missing("pooled") or not len(self):
            raise InvalidInputError("the index is empty: nothing to learn a whitening on")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*dimension is capped.*")
            post = PostProcess._fit_blocks(self._pooled_blocks, power=self.config.power,
                                           shrinkage=self.config.shrinkage, duplicates=self.config.whiten_duplicates,
                                           pair_scatter=self._pair_scatter())
        descriptors = self._postprocessed(post)
        self.whitening, self.whitening_learned, self.whitening_images = post.whitening, True, len(self)
        self.descriptors = descriptors
        self._graph = None
        self._ann = None  # every row changed

    def _pair_scatter(self, default: bool = False) -> Optional[Tuple[np.ndarray, int]]:
        """The synthetic copies' pairs a learned whitening takes (:attr:`copy_scatter`,
        :attr:`copy_pairs`), or None (none made, or ``whiten_copies`` off; ``default``: the
        default whitening's, :meth:`duplicates`', which takes the pairs whatever the
        configuration says)."""
        if not ((default or self.config.whiten_copies) and self.copy_pairs and self.copy_scatter is not None):
            return None
        return self.copy_scatter, self.copy_pairs

    def _makes_copies(self) -> bool:
        """Whether :meth:`add` extracts a synthetic copy of each image: the index learns its
        whitening ("auto", none given) with ``whiten_copies``."""
        return (self.config.whiten == "auto" and self.config.whiten_copies
                and (self.whitening is None or self.whitening_learned))

    def _add_copies(self, paths: List[str], pooled: np.ndarray, progress: bool) -> None:
        """Adds to :attr:`copy_scatter` the pairs of ``paths`` (just pooled: ``pooled``
        ``(len(paths), C)`` float32, same order) and their :meth:`_pooled_copies`."""
        sources, copies = self._pooled_copies(paths, progress)
        if len(sources):
            scatter, m = pair_scatter(self.config, pooled[sources], copies)
            self.copy_scatter = scatter if self.copy_scatter is None else self.copy_scatter + scatter
            self.copy_pairs += m

    def _pooled_copies(self, paths: List[str], progress: bool) -> Tuple[np.ndarray, np.ndarray]:
        """The pooled descriptors ``(m, C)`` float32 of a
        :func:`~heatsearch.vision.copies.synthetic_copy` of each of ``paths``, and which of
        ``paths`` each is a copy of (``(m,)`` int64 positions). The extractor is given each
        copy as an ``(H, W, 3)`` uint8 array. A copy that cannot be made or described (any
        error: its image was read a moment ago, so the file changed, or the extractor takes
        paths only) gives no pair, with one warning for all: the image itself is indexed. Also
        used by :mod:`heatsearch.distributed`'s workers."""
        from ..vision.copies import synthetic_copy

        make = functools.partial(synthetic_copy, max_size=self.config.max_size)
        row = {p: i for i, p in enumerate(paths)}
        sources, copies, failed = [], [], []
        for path, fmap, why in self._feature_maps(paths, progress, source=make, what="synthetic copies",
                                                  errors=(Exception,)):
            if fmap is None:
                failed.append((path, why))
            else:
                sources.append(row[path])
                copies.append(self._pool(fmap))
        if failed:
            warnings.warn(
                f"{len(failed)} synthetic cop{'y' if len(failed) == 1 else 'ies'} (for the whitening) could not be "
                f"made or described, e.g. of {failed[0][0]}: {failed[0][1]}; those images are indexed, without a pair"
            )
        width = 0 if not copies else len(copies[0])
        return np.asarray(sources, np.int64), np.asarray(copies, np.float32).reshape(len(copies), width)

    def _column_missing(self, column: str) -> bool:
        """Whether the index has no ``column`` ("pooled" or "desc") rows at all."""
        if self._loose is not None:
            return self._loose[0 if column == "desc" else 1] is None
        return not self._store.segments or (column == "pooled" and not self._store.has_pooled)

    def _pooled_blocks(self) -> Iterator[np.ndarray]:
        """The live pooled rows in order, as float64, :data:`UNWHITENED_CHUNK` rows at a time
        (read a window of the store at a time: never all of them at once)."""
        windows = [self._loose[1]] if self._loose is not None else (w for _, w in self._store.blocks("pooled"))
        for window in windows:
            for start in range(0, len(window), UNWHITENED_CHUNK):
                yield np.asarray(window[start : start + UNWHITENED_CHUNK], np.float64)

    def _postprocessed(self, post: PostProcess) -> np.ndarray:
        """``(n, d')`` float32: every pooled row through ``post`` (``d'``: its whitening's
        dimension, else the pooled rows'), :meth:`_pooled_blocks` at a time."""
        if post.whitening is not None and post.whitening.dim_ is not None:
            width = int(post.whitening.dim_)
        else:
            width = self._store.segments[0].pooled.shape[1] if self._loose is None else np.shape(self._loose[1])[1]  # type: ignore[union-attr]
        out = np.empty((len(self), width), np.float32)
        start = 0
        for rows in self._pooled_blocks():
            out[start : start + rows.shape[0]] = post(rows)
            start += rows.shape[0]
        return out

    @property
    def postprocess(self) -> PostProcess:
        return PostProcess(self.whitening, power=self.config.power)

    def _feature_maps(
        self, paths: Sequence[str], progress: bool, *, source: Optional[Callable[[str], Any]] = None,
        what: str = "extracting", errors: Tuple[Type[BaseException], ...] = (OSError, ValueError),
    ) -> Iterator[Tuple[str, Optional[np.ndarray], str]]:
        """``(path, fmap, "")`` for each path in order, or ``(path, None, reason)``: the map
        of the image at ``path``, or of ``source(path)`` (an image made from it: a synthetic
        copy). With heatsearch's own extractor (see ``_splits_feature_map``), up to
        :data:`PREFETCH` later images are decoded (made) and resized in a background thread
        while the network runs on the current one (the maps are the same either way).
        ``what``: the progress bar's label; ``errors``: the exceptions that skip an image
        (with their message as the reason) instead of propagating."""
        extractor = self._get_extractor()
        ahead = PREFETCH if _splits_feature_map(extractor) else 0
        load: Callable[[str], Any] = source if source is not None else (lambda path: path)
        if ahead < 1:
            compute: Iterable[Tuple[str, Callable[[], Any]]] = (
                (path, lambda path=path: extractor.feature_map(load(path))) for path in paths  # type: ignore[misc]
            )
            yield from self._checked_maps(_progress(compute, progress, what, len(paths)), errors)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="heatsearch-decode") as pool:
            waiting: "Deque[Tuple[str, Future[List[np.ndarray]]]]" = collections.deque()
            todo = iter(paths)

            def refill() -> None:
                while len(waiting) < ahead + 1:
                    path = next(todo, None)
                    if path is None:
                        return
                    waiting.append((path, pool.submit(lambda path=path: extractor.prepare(load(path)))))  # type: ignore[misc]

            def prefetched() -> Iterator[Tuple[str, Callable[[], Any]]]:
                refill()
                while waiting:
                    path, job = waiting.popleft()
                    refill()  # the next images decode while the network runs on this one
                    yield path, functools.partial(_forward_when_ready, extractor, job)

            try:
                yield from self._checked_maps(_progress(prefetched(), progress, what, len(paths)), errors)
            finally:  # a consumer that stops early: drop the images not yet started
                for _, job in waiting:
                    job.cancel()

    @staticmethod
    def _checked_maps(
        jobs: Iterable[Tuple[str, Callable[[], Any]]], errors: Tuple[Type[BaseException], ...] = (OSError, ValueError),
    ) -> Iterator[Tuple[str, Optional[np.ndarray], str]]:
        for path, compute in jobs:
            try:
                fmap = compute()
            except errors as e:  # unreadable or undecodable image (by default)
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

        Paths are stored absolute (relative ones are taken from the current directory). The
        first call learns the HeW centering mean on (a sample of) the images added; later
        calls reuse it, so descriptors stay comparable.
        """
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise InvalidDTypeError(f"paths must be a list of paths, got a single {type(paths).__name__}")
        self._images_allowed("adding images (use add_descriptors)")
        new = [_absolute(p, f"paths[{i}]") for i, p in enumerate(paths)]
        known = set(self.paths)
        duplicates = [p for p in new if p in known]
        if duplicates:
            raise InvalidInputError(f"already in the index: {duplicates[:3]}{' ...' if len(duplicates) > 3 else ''}")
        if len(set(new)) != len(new):
            twice = sorted({p for p in new if new.count(p) > 1})
            raise InvalidInputError(f"paths lists the same image twice: {twice[:3]}")
        cache: Dict[str, np.ndarray] = {}
        skipped: List[Tuple[str, str]] = []
        if self.config.pooling == "hew" and self.mean is None and new:
            from ..hew import local_mean

            for path, fmap, why in self._feature_maps(mean_sample(new, self.config.mean_sample), progress):
                if fmap is None:
                    skipped.append((path, why))
                else:
                    cache[path] = fmap
            if cache:
                self.mean = local_mean([m for f in cache.values() for m in ([f] if isinstance(f, np.ndarray) else f)])
                self.mean_images = len(cache)
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
            if self._makes_copies():
                self._add_copies(added, pooled, progress)
            self._append_pooled(added, pooled)
        self._report_skipped(skipped)
        return skipped

    def _append_pooled(self, added: List[str], pooled: np.ndarray) -> None:
        """Appends the rows of checked absolute paths ``added`` and their pooled descriptors
        ``(len(added), C)`` float32, learning the whitening once the index is large enough
        (:data:`AUTO_WHITENING_MIN_IMAGES`). The one place :meth:`add` and
        :meth:`_from_pooled` (:mod:`heatsearch.distributed`) turn pooled rows into an index."""
        # Only the new rows are appended (a new segment): nothing existing is copied.
        desc = self.postprocess(pooled.astype(np.float64)).astype(self.config.storage_dtype)
        self._append_rows(desc, pooled)
        self.paths.extend(added)
        self._graph = None
        learned_on = self.whitening_images if self.whitening_learned else None
        if learns_whitening(self.config, self.whitening, len(self), learned_on):
            self.refit_whitening()  # every descriptor changes: the next save rewrites them

    def _report_skipped(self, skipped: List[Tuple[str, str]]) -> None:
        """Records ``(path, reason)`` of images that were not indexed, with one warning."""
        if skipped:
            warnings.warn(
                f"{len(skipped)} image(s) could not be read or gave no usable features and were "
                f"skipped, e.g. {skipped[0][0]}: {skipped[0][1]}"
            )
            self.skipped.extend(skipped)

    @classmethod
    def _from_pooled(
        cls,
        config: IndexConfig,
        paths: Sequence[str],
        pooled: np.ndarray,
        *,
        mean: Optional[np.ndarray],
        mean_images: Optional[int],
        skipped: Sequence[Tuple[str, str]] = (),
        whitening: Optional[PCAWhitening] = None,
        root: Optional[PathLike] = None,
        runtime: str = "auto",
        copy_scatter: Optional[np.ndarray] = None,
        copy_pairs: int = 0,
    ) -> "Index":
        """The index :meth:`add` would have made of ``paths`` (absolute, in :meth:`add`'s row
        order: see :func:`mean_sample`) from their pooled descriptors ``(n, C)`` float32,
        pooled elsewhere with ``mean`` ``(C,)`` (learned on ``mean_images`` images): the
        whitening and the final descriptors are made here, as :meth:`add` makes them.
        ``skipped``: the ``(path, reason)`` of images that were not indexed (warned about).
        ``copy_scatter``, ``copy_pairs``: their synthetic copies' pairs (:func:`pair_scatter`).
        Used by :func:`heatsearch.distributed.build_index`.

        Raises:
            InvalidInputError: paths not unique, a row count or width that does not match,
                non-finite rows, a HeW index without a mean.
        """
        index = cls(config=config, whitening=whitening, root=None if root is None else os.fspath(root), runtime=runtime)
        added = [_absolute(p, f"paths[{i}]") for i, p in enumerate(paths)]
        if len(set(added)) != len(added):
            raise InvalidInputError("paths lists the same image twice")
        rows = _validate.rows(pooled, "pooled") if len(added) else None
        if rows is not None:
            _validate.finite(rows, "pooled")
            if rows.shape[0] != len(added):
                raise InvalidInputError(f"{len(added)} paths but {rows.shape[0]} pooled rows")
            if config.pooling == "hew" and (mean is None or np.shape(mean) != (rows.shape[1],)):
                raise InvalidInputError(
                    f"a HeW index needs its centering mean of shape ({rows.shape[1]},), got "
                    f"{None if mean is None else np.shape(mean)}"
                )
        index.mean = None if mean is None else np.asarray(mean, np.float32)
        index.mean_images = mean_images if mean is not None else None
        index.copy_scatter, index.copy_pairs = (copy_scatter, copy_pairs) if copy_pairs else (None, 0)
        if rows is not None:
            index._append_pooled(added, np.ascontiguousarray(rows, np.float32))
        index._report_skipped(list(skipped))
        return index

    @classmethod
    def _from_segment(
        cls,
        config: IndexConfig,
        paths: Sequence[str],
        segment: Segment,
        *,
        mean: Optional[np.ndarray],
        mean_images: Optional[int],
        whitening: Optional[PCAWhitening],
        whitening_learned: bool,
        skipped: Sequence[Tuple[str, str]] = (),
        root: Optional[PathLike] = None,
        runtime: str = "auto",
        copy_scatter: Optional[np.ndarray] = None,
        copy_pairs: int = 0,
    ) -> "Index":
        """The index :meth:`_from_pooled` would make, from rows already post-processed
        elsewhere, in bounded memory: ``segment`` (its rows in files: see
        :func:`heatsearch.app.storage.open_shard`) holds the pooled rows of ``paths``
        (absolute, in :meth:`add`'s order) and their final descriptors, computed with
        ``whitening`` (learned on all those rows when ``whitening_learned``: the rule of
        :func:`learns_whitening`). Used by :func:`heatsearch.distributed.build_index`; the
        caller has checked the rows (finite, shapes)."""
        index = cls(config=config, whitening=whitening, root=None if root is None else os.fspath(root), runtime=runtime)
        added = [_absolute(p, f"paths[{i}]") for i, p in enumerate(paths)]
        if len(set(added)) != len(added):
            raise InvalidInputError("paths lists the same image twice")
        if segment.rows != len(added):
            raise InvalidInputError(f"{len(added)} paths but {segment.rows} rows")
        index.mean = None if mean is None else np.asarray(mean, np.float32)
        index.mean_images = mean_images if mean is not None else None
        index._store = Store([segment])
        index.paths = added
        index.whitening_learned = whitening_learned
        index.whitening_images = len(added) if whitening_learned else None
        index.copy_scatter, index.copy_pairs = (copy_scatter, copy_pairs) if copy_pairs else (None, 0)
        index._report_skipped(list(skipped))
        return index

    def remove(self, paths: Iterable[PathLike]) -> int:
        """Removes images by path (absolute, or relative to the current directory); returns
        how many were removed (unknown paths are errors)."""
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise InvalidDTypeError(f"paths must be a list of paths, got a single {type(paths).__name__}")
        if self._external:  # names of rows, kept verbatim
            drop = {_validate.text(p, f"paths[{i}]") for i, p in enumerate(paths)}
        else:
            drop = {_absolute(p, f"paths[{i}]") for i, p in enumerate(paths)}
        unknown = drop - set(self.paths)
        if unknown:
            raise InvalidInputError(f"not in the index: {sorted(unknown)[:3]}")  # type: ignore[type-var]
        gone = [i for i, p in enumerate(self.paths) if p in drop]
        keep = [i for i, p in enumerate(self.paths) if p not in drop]
        ann = self._ann
        if ann is not None and gone:
            # The approximate index forgets the removed rows (its FAISS index is shared, not
            # rebuilt) until too many of its ids are gone.
            kept = np.ones(len(self.paths), bool)
            kept[gone] = False
            ann = ann.without(kept) if ann.nrows == len(self.paths) else None
            self._ann = None if ann is None or ann.dead_fraction > ANN_REBUILD_DEAD else ann
        self.paths = [self.paths[i] for i in keep]
        if self._loose is not None:
            if self.descriptors is not None:
                self.descriptors = np.asarray(self.descriptors)[keep]
                self.pooled = np.asarray(self.pooled)[keep]
        elif gone:
            # Tombstones: nothing is rewritten until a compaction (see heatsearch.app.store).
            store = self._store.copy()
            store.remove(gone)
            self._store = store
        if self.whitening_images is not None:  # at most this many of its images are left
            self.whitening_images = max(1, min(self.whitening_images, len(self)))
        self._graph = None
        return len(drop)

    def sync(self, *, recursive: bool = True, progress: bool = False) -> SyncResult:
        """Brings the index up to date with the image files under :attr:`root`: indexes the
        ones it does not hold (as :meth:`add`: unreadable ones are skipped and reported) and
        drops the entries whose file is gone. Files changed in place are not re-indexed.

        Raises:
            InvalidInputError: the index has no root, or its root is not a directory (a
                moved collection: load the index with ``root=`` its new place).
        """
        if self.root is None:
            raise InvalidInputError(
                "the index has no root folder to sync with: build it from a folder "
                "(Index.build) or give one (Index(root=...), Index.load(..., root=...))"
            )
        if not os.path.isdir(self.root):
            raise InvalidInputError(
                f"the index's root folder {self.root!r} is not a directory (moved? load the "
                "index with root= its new place)"
            )
        gone = [p for p in self.paths if not os.path.isfile(p)]
        known = set(self.paths)
        new = [p for p in find_images(self.root, recursive) if p not in known]
        if gone:
            self.remove(gone)
        skipped = self.add(new, progress=progress) if new else []
        failed = {p for p, _ in skipped}
        return SyncResult(added=[p for p in new if p not in failed], removed=gone, skipped=skipped)

    def __len__(self) -> int:
        return len(self.paths)

    # -- search ----------------------------------------------------------------------------
    def describe(self, image: Any, bbox: Optional[Sequence[float]] = None) -> np.ndarray:
        """The final descriptor ``(d,)`` float32 of an image, optionally cropped to
        ``bbox = [x1, y1, x2, y2]`` first (Oxford/Paris queries).

        ``image``: a path, encoded image bytes (JPEG, PNG, ...; ``bytes``, ``bytearray`` or
        ``memoryview``), a binary file object (read to its end), a PIL image or an RGB array
        ``(H, W, 3)`` (see :func:`heatsearch.vision.images.to_rgb`).
        """
        _validate.image_source(image, "image")
        if bbox is not None:
            _validate.bbox(bbox)
        return self._describe_images([image], [bbox], True)[0]

    def _describe_images(self, images: Sequence[Any], bboxes: Sequence[Any], single: bool) -> np.ndarray:
        """Final descriptors ``(m, d)`` float32 of checked images (batched extraction when the
        extractor streams, one post-processing for all); ``single``: errors are not prefixed
        with the query's position."""
        extractor = self._get_extractor()
        pooled: List[Optional[np.ndarray]] = [None] * len(images)
        if hasattr(extractor, "feature_maps") and not single:
            try:
                for i, fmap in extractor.feature_maps(images, bboxes):
                    pooled[i] = self._pool(fmap)
            except (OSError, ValueError, TypeError) as e:
                failed = next(i for i, p in enumerate(pooled) if p is None)
                raise _about_query(e, failed) from e
        else:
            for i, (image, box) in enumerate(zip(images, bboxes)):
                try:
                    pooled[i] = self._pool(extractor.feature_map(image, bbox=box))
                except (OSError, ValueError, TypeError) as e:
                    if single:
                        raise
                    raise _about_query(e, i) from e
        rows = np.stack([p for p in pooled if p is not None])
        return self.postprocess(rows).astype(np.float32)

    def search(
        self,
        query: Any,
        k: Optional[int] = 10,
        *,
        rerank: Optional[str] = None,
        bbox: Optional[Sequence[float]] = None,
    ) -> List[SearchHit]:
        """The ``k`` best matches of one query, best first.

        Args:
            query: an image path, encoded image bytes, a binary file object, a PIL image, an
                RGB array ``(H, W, 3)`` (see :meth:`describe`), or a final descriptor ``(d,)``
                (float32/float64, taken as it is).
            k: how many hits, an int >= 1 (default 10; None: the whole index); fewer when
                the index is smaller.
            rerank: one of :data:`SEARCH_RERANKERS`: ``None, "heat", "aqe", "alpha-qe",
                "aqe+heat", "diffusion"`` (see :mod:`heatsearch.pipeline`), ``"spatial"``, or
                one of those followed by ``"+spatial"`` (e.g. ``"heat+spatial"``). Spatial
                verification (:mod:`heatsearch.vision.spatial`, with :attr:`spatial`) matches
                local features of the query image with those of each of the previous
                ranking's top ``spatial.depth`` candidates (default 100, measured) and moves
                the ones with at least ``spatial.min_inliers`` RANSAC inliers (default 6 for SIFT,
                measured) to the front, most inliers first; the others, and ties, keep their
                previous order. Hits keep the previous ranking's ``score`` and carry their
                ``inliers``. Needs an image query (not a descriptor) and the database's image
                files (a file that cannot be read leaves its candidate unverified, with a
                warning).
            bbox: ``[x1, y1, x2, y2]`` crop of an image query (not for descriptors).

        Every argument is checked before any image is read.
        """
        return self._search([query], k, rerank, [bbox], single=True)[0]

    def search_many(
        self,
        queries: Any,
        k: Optional[int] = 10,
        *,
        rerank: Optional[str] = None,
        bboxes: Optional[Sequence[Optional[Sequence[float]]]] = None,
    ) -> List[List[SearchHit]]:
        """The ``k`` best matches of each of many queries: their images are described in one
        batch (the extractor groups images of equal size), then ONE search (and re-ranking)
        call ranks them all. Faster than :meth:`search` in a loop, and the same hits.

        Args:
            queries: a list of queries, each as :meth:`search` takes them (mixed kinds are
                fine), or an ``(nq, d)`` array of final descriptors.
            k, rerank: as :meth:`search`.
            bboxes: None, or one box (or None) per query.

        Returns:
            One list of hits per query, in the order of ``queries``.

        Raises:
            InvalidInputError / InvalidDTypeError: a bad argument (checked before any image
                is read); ImageReadError: a query image cannot be read (the message gives its
                position in ``queries``).
        """
        items = self._query_list(queries)
        return self._search(items, k, rerank, self._query_boxes(bboxes, len(items)), single=False)

    def _search(
        self, items: List[Any], k: Any, rerank: Any, boxes: List[Any], *, single: bool
    ) -> List[List[SearchHit]]:
        """:meth:`search` (``single``: its argument names in messages) and :meth:`search_many`."""
        kk = _validate.optional_integer(k, "k", minimum=1)
        _validate.choice(rerank, "rerank", SEARCH_RERANKERS)
        base, spatial = split_rerank(rerank)
        if not len(self):
            raise InvalidInputError("the index is empty: add images before searching")
        d = self.dim
        Q: np.ndarray = np.empty((len(items), d), self._query_dtype())
        images = []
        for i, (item, box) in enumerate(zip(items, boxes)):
            name = "query" if single else f"queries[{i}]"
            if isinstance(item, np.ndarray) and item.ndim == 1:
                if box is not None:
                    raise InvalidInputError(f"a bbox crops an image query, but {name} is a descriptor")
                if spatial:
                    raise InvalidInputError(
                        f"rerank={rerank!r} verifies the query's image against the candidates' images, "
                        f"but {name} is a descriptor (pass the image, or a re-ranker without 'spatial')"
                    )
                Q[i] = _validate.descriptor(item, name, d)
            else:
                _validate.image_source(item, name)
                if box is not None:
                    _validate.bbox(box, "bbox" if single else f"bboxes[{i}]")
                images.append(i)
        verifier = self._get_spatial() if spatial else None
        if spatial:
            # Decoded once: a file object cannot be read twice (description, then features).
            # With the extractor's EXIF rule, so the description is the one of the original.
            exif = bool(getattr(self._get_extractor(), "exif_transpose", True))
            items = list(items)
            for i in images:
                items[i] = self._decoded(items[i], i, single, exif)
        if images:
            Q[images] = self._describe_images([items[i] for i in images], [boxes[i] for i in images], single)
        if base is not None:
            _warn_if_equidistant(self._rows(np.arange(min(CONSISTENCY_SAMPLE, len(self))), np.float64), base)
        depth = 0 if verifier is None else min(verifier.depth, len(self))
        first_k = None if kk is None else max(kk, depth)
        ann = self._get_ann() if first_k is not None else None
        if ann is not None and first_k is not None:
            ranks, scores = _ann_rank(ann, _RowReader(self, Q.dtype), Q, first_k, base)
        else:
            ranks, scores = self._rank(Q, first_k, base)
        inliers: List[List[Optional[int]]] = [[None] * ranks.shape[1] for _ in range(len(items))]
        if verifier is not None:
            for i in range(len(items)):
                qf = verifier.describe(items[i], boxes[i])
                top = ranks[i, :depth]
                counts = verifier.verify(qf, [self.paths[r] for r in top])
                order = spatial_order(counts, verifier.min_inliers)
                ranks[i, :depth], scores[i, :depth] = top[order], scores[i, :depth][order]
                inliers[i][:depth] = [counts[j] for j in order]
        out_k = ranks.shape[1] if kk is None else min(kk, ranks.shape[1])
        ranks, scores = ranks[:, :out_k], scores[:, :out_k]
        # The first pass's scores are the cosines already; a re-ranker's are its own.
        cosines = scores if base is None else _cosines(self._rows, Q, ranks)
        return [
            [
                SearchHit(self.paths[r], float(c), int(r), None if base is None else float(s), n)
                for r, c, s, n in zip(rr, cc, ss, nn[:out_k])
            ]
            for rr, cc, ss, nn in zip(ranks, cosines, scores, inliers)
        ]

    def _query_dtype(self) -> type:
        """float64 for rows set as float64 arrays, else float32 (float16 rows are searched
        as float32)."""
        dtype = np.asarray(self._loose[0]).dtype if self._loose is not None else self._store.dtype
        return np.float64 if dtype == np.float64 else np.float32

    def _rows(self, live_rows: np.ndarray, dtype: Optional[type] = None) -> np.ndarray:
        """The descriptors of the given rows (any int array; ``+ (d,)``), read from the store
        without materialising it."""
        dtype = dtype or self._query_dtype()
        if self._loose is not None:
            return np.asarray(np.asarray(self._loose[0])[live_rows], dtype)
        return self._store.gather(live_rows, "desc", dtype)

    def _rank(self, Q: np.ndarray, k: Optional[int], base: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
        """:func:`heatsearch.pipeline.rank` over the index's rows without materialising them:
        the first pass streams the store (:meth:`heatsearch.app.store.Store.search`); HeR
        (``"heat"``, ``"aqe+heat"``, ``"auto"``) and query expansion read only the rows of the
        shortlists (the union of every query's first-pass top ``max(k, depth)``), on which
        ``rank`` gives the same result as on the whole index (the shortlist holds each query's
        whole first pass, in the index's row order, so ties break alike). Diffusion needs the
        kNN graph of every row: it materialises the descriptors (O(n d) memory)."""
        st = self._store
        single = (
            len(st.segments) == 1 and not len(st.segments[0].dead) and not st.segments[0].desc.on_disk
            and st.dtype == Q.dtype
        )
        if self._loose is not None or base == "diffusion" or single:
            X = np.asarray(self.descriptors)
            if X.dtype != Q.dtype:
                X = X.astype(Q.dtype)
            if base == "diffusion":
                with self._lock:
                    if self._graph is None:
                        from ..knn import knn_graph

                        self._graph = knn_graph(X)
            return rank(X, Q, k=k, rerank=base, graph=self._graph)
        n = len(self)
        kk = n if k is None else min(k, n)
        if base is None:
            return st.search(Q, kk)
        if base in ("aqe", "alpha-qe"):
            first, _ = st.search(Q, min(DEFAULT_NEIGHBORS, n))
            rows, inverse = np.unique(first, return_inverse=True)
            expand = average_query_expansion if base == "aqe" else alpha_query_expansion
            expanded = expand(st.gather(rows, "desc", Q.dtype), Q, inverse.reshape(first.shape), neighbors=DEFAULT_NEIGHBORS)
            return st.search(np.ascontiguousarray(expanded, Q.dtype), kk)
        depth = AUTO_DEPTH if base == "auto" else DEFAULT_DEPTH
        first, _ = st.search(Q, max(kk, min(depth, n)))
        rows, inverse = np.unique(first, return_inverse=True)
        ranks, scores = rank(st.gather(rows, "desc", Q.dtype), Q, k=kk, rerank=base)
        return rows[ranks], scores

    def ann_kind(self) -> Optional[str]:
        """The approximate index a search uses now: None (exact search), "ivfpq" or "hnsw"
        (:attr:`IndexConfig.ann`; "auto": "hnsw" from :data:`heatsearch.ann.AUTO_MIN_ROWS`
        rows on where FAISS is installed, else exact search)."""
        kind = self.config.ann
        if kind == "auto":
            return "hnsw" if len(self) >= AUTO_MIN_ROWS and ann_available() else None
        return kind

    def _get_ann(self) -> Optional[AnnIndex]:
        """The approximate index over every row, built (or extended by the appended rows)
        now if needed; None when the index searches exactly."""
        kind = self.ann_kind()
        n, d = len(self), self.dim
        if kind is None or not n:
            return None
        with self._lock:
            ann = self._ann
            if ann is not None and (ann.kind != kind or ann.d != d or ann.nrows > n):
                ann = None
            if ann is None:  # from the rows gathered from the store, never one array of them all
                ann = AnnIndex.build(_RowReader(self, np.float32), kind, params=self.config.ann_params)
            elif ann.nrows < n:
                # Rows appended by add(): the first nrows are unchanged. Extended on a clone:
                # an index copied for a change (Index.copy, the server) shares this ANN with
                # the original, which goes on searching it meanwhile.
                ann = ann.extended(self._row_blocks(ann.nrows, n))
            self._ann = ann
            return ann

    def _row_blocks(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """The live rows ``start:stop`` as float32 blocks of :data:`heatsearch.ann.ADD_BLOCK`
        rows (as :meth:`AnnIndex.build` adds them), read from the store (never the whole index
        at once)."""
        for a in range(start, stop, ADD_BLOCK):
            yield self._rows(np.arange(a, min(a + ADD_BLOCK, stop)), np.float32)

    def _get_spatial(self) -> SpatialVerifier:
        """:attr:`spatial`, built with its defaults at the first use."""
        with self._lock:
            if self.spatial is None:
                self.spatial = SpatialVerifier()
            if self.spatial.features == "cnn" and self.spatial.extractor is None:
                self.spatial.extractor = self._get_extractor()
            return self.spatial

    @staticmethod
    def _decoded(item: Any, position: int, single: bool, exif_transpose: bool) -> np.ndarray:
        """An image query as an RGB array (its errors as :meth:`_describe_images` words them)."""
        from ..vision.images import to_rgb

        try:
            return to_rgb(item, exif_transpose)
        except (OSError, ValueError, TypeError) as e:
            if single:
                raise
            raise _about_query(e, position) from e

    @staticmethod
    def _query_list(queries: Any) -> List[Any]:
        if isinstance(queries, np.ndarray):
            if queries.ndim != 2:
                raise InvalidInputError(
                    f"queries as an array must be (nq, d) final descriptors, got shape {queries.shape} "
                    "(pass images in a list)"
                )
            return list(queries)
        if isinstance(queries, (str, bytes, bytearray, memoryview, os.PathLike)) or not isinstance(queries, (list, tuple)):
            raise InvalidDTypeError(
                f"queries must be a list (or tuple) of queries or an (nq, d) array of descriptors, "
                f"got {type(queries).__name__}"
            )
        if not queries:
            raise InvalidInputError("queries must hold at least one query, got none")
        return list(queries)

    @staticmethod
    def _query_boxes(bboxes: Any, n: int) -> List[Any]:
        if bboxes is None:
            return [None] * n
        if not isinstance(bboxes, (list, tuple)) or len(bboxes) != n:
            got = f"{len(bboxes)} entries" if isinstance(bboxes, (list, tuple)) else type(bboxes).__name__
            raise InvalidInputError(f"bboxes must be a list of one box (or None) per query ({n}), got {got}")
        return list(bboxes)

    def duplicates(self, threshold: Optional[float] = None, *, block: int = DEFAULT_BLOCK) -> List[DuplicateGroup]:
        """Groups of near-duplicate images in the index (see :mod:`heatsearch.duplicates`).

        Two images are linked when the cosine similarity of their
        :attr:`duplicate_descriptors` is ``>= threshold``; a group is a connected component of
        links (so it may hold a chain: see :attr:`DuplicateGroup.complete`). From
        :data:`AUTO_WHITENING_MIN_IMAGES` images on, those are ``"whitened"``: the pooled
        descriptors whitened as the index would whiten them if it learned its whitening now,
        on all its images, with the default settings (:data:`DEFAULT_SHRINKAGE`, near-duplicate
        groups at :data:`WHITEN_DUPLICATES`, the synthetic copies' pairs it holds:
        :attr:`copy_scatter`), whatever whitening the index searches with (one
        learned when it held as few as half its images, none, a file's): that whitening keeps
        the collection's copies together and makes its other images nearly orthogonal, so it
        tells a copy from another photo of a look-alike subject (the same painting, landmark or
        product) far better than the unwhitened descriptors, whose cosines crowd on such
        collections; learned at each call, in blocks (:meth:`PostProcess._fit_blocks`).
        Below that, the unwhitened descriptors (:meth:`unwhitened`), and for an index of
        descriptors computed elsewhere (:meth:`from_descriptors`) its own rows. Each scale has
        its calibrated default, :attr:`duplicate_threshold` (README, "Near-duplicates").

        Args:
            threshold: a cosine in ``[-1, 1]``; default :attr:`duplicate_threshold`. Higher:
                fewer, closer copies.
            block: query rows per search call (bounds memory).

        Returns:
            The groups, largest first (singletons omitted), each a
            :class:`~heatsearch.DuplicateGroup` with its ``rows``, ``paths``, linked
            ``pairs`` and their ``scores``.

        Raises:
            InvalidInputError: the index is empty; a threshold outside ``[-1, 1]``;
            InvalidDTypeError: a threshold that is not a number.

        Memory: the compared rows, ``n x d`` float32 (512 MB for 100 000 images of 1280
        channels); learning the whitening adds one block of rows and two ``d x d`` float64
        matrices, and for the near-duplicate groups a float64 copy of up to 20 000 rows
        (205 MB at 1280 channels).
        """
        if not len(self):
            raise InvalidInputError("the index is empty: add images before looking for duplicates")
        t = self.duplicate_threshold if threshold is None else threshold
        _validate.cosine(t, "threshold")  # checked before the whitening is learned
        _validate.integer(block, "block", minimum=1)
        groups = duplicate_groups(self._duplicate_rows(), t, block=block)
        return [replace(g, paths=tuple(self.paths[r] for r in g.rows)) for g in groups]

    @property
    def duplicate_descriptors(self) -> Literal["whitened", "unwhitened", "given"]:
        """Which descriptors :meth:`duplicates` compares: ``"whitened"`` (an index of at least
        :data:`AUTO_WHITENING_MIN_IMAGES` images with pooled descriptors), ``"unwhitened"``
        (fewer images: :meth:`unwhitened`) or ``"given"`` (the rows of an index of descriptors
        computed elsewhere)."""
        if self._column_missing("pooled"):  # (never materialises the rows)
            return "given"
        return "whitened" if len(self) >= AUTO_WHITENING_MIN_IMAGES else "unwhitened"

    @property
    def duplicate_threshold(self) -> float:
        """The default threshold of :meth:`duplicates` for :attr:`duplicate_descriptors`:
        :data:`~heatsearch.duplicates.WHITENED_THRESHOLD` for the whitened ones, else
        :data:`~heatsearch.duplicates.DEFAULT_THRESHOLD` (calibrated for the unwhitened ones)."""
        return WHITENED_THRESHOLD if self.duplicate_descriptors == "whitened" else DEFAULT_THRESHOLD

    def _duplicate_rows(self) -> np.ndarray:
        """``(n, d)`` float32 unit rows: the :attr:`duplicate_descriptors`."""
        if self.duplicate_descriptors != "whitened":
            return self.unwhitened()
        try:
            with warnings.catch_warnings():  # a collection confined to few dimensions: still usable
                warnings.simplefilter("ignore", UserWarning)
                post = PostProcess._fit_blocks(self._pooled_blocks, power=self.config.power,
                                               shrinkage=DEFAULT_SHRINKAGE, duplicates=WHITEN_DUPLICATES,
                                               pair_scatter=self._pair_scatter(default=True))
        except InvalidInputError:  # every image the same: nothing to whiten, every pair a copy
            return self.unwhitened()
        return self._postprocessed(post)

    def unwhitened(self) -> np.ndarray:
        """``(n, C)`` float32: the index's descriptors before the whitening (signed power +
        L2 of :attr:`pooled`; the descriptors themselves when the index has no whitening),
        computed :data:`UNWHITENED_CHUNK` rows at a time (:meth:`_postprocessed`) so that no
        float64 copy of the whole collection is made."""
        if self.whitening is None or self._column_missing("pooled"):
            return np.asarray(self.descriptors, np.float32) if self.descriptors is not None else np.empty((0, 0), np.float32)
        return self._postprocessed(PostProcess(None, power=self.config.power))

    def warmup(self) -> None:
        """Builds the extractor and runs a random ``224 x 224`` image through the network,
        pooling, post-processing and a search, so that the first real query does not pay for
        loading the weights and the first-run set-up of torch and of heatsearch's threads."""
        image = np.random.default_rng(0).integers(0, 256, (WARMUP_SIZE, WARMUP_SIZE, 3), dtype=np.uint8)
        q = self._describe_images([image], [None], True)
        if len(self):
            self._rank(q.astype(self._query_dtype()), 1, None)

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: PathLike) -> None:
        """Writes the index to ``directory``: a new version switched in atomically; an
        existing directory is replaced only if it is a heatsearch index (see
        :mod:`heatsearch.app.storage`).

        Paths are stored relative to :attr:`root` (absolute when outside it). Only rows not
        yet in this directory's shards are written (see :mod:`heatsearch.app.storage`);
        afterwards the index reads its rows from the saved shards (memory-mapped), not from
        memory.

        Raises:
            InvalidInputError: the index is inconsistent (nothing is written);
            IndexFileError: ``directory`` is not an index and not empty; OSError.
        """
        root: Optional[str] = None
        if self._external:
            stored_paths = list(self.paths)
        else:
            root = self.root if self.root is not None else _common_folder(self.paths)
            stored_paths = [_relative(p, root) for p in self.paths]
        loose = self._loose
        saved = storage.write_index(
            directory,
            storage.StoredIndex(
                config=self.config.to_dict(),
                paths=stored_paths,
                descriptors=None if loose is None else loose[0],
                pooled=None if loose is None else loose[1],
                mean=self.mean,
                whitening=self.whitening,
                whitening_learned=self.whitening_learned,
                root=root,
                mean_images=self.mean_images if self.mean is not None else None,
                whitening_images=self.whitening_images if self.whitening_learned else None,
                store=self._store if loose is None else None,
                source=self.source,
                dtype=self.config.storage_dtype,
                copy_scatter=self.copy_scatter if self.copy_pairs else None,
                copy_pairs=self.copy_pairs,
                copies_file=self._copies_file[1] if self._copies_file and self._copies_file[0] is self.copy_scatter else None,
            ),
            check=lambda: self._check_consistency(lambda part, why: InvalidInputError(f"cannot save the index: {why}")),
            extra=self._ann_files(),
        )
        if loose is None:
            # The rows now read from their shards: what was held in memory is let go.
            self._store = saved
        copies = storage.current_file(directory, storage.COPIES) if self.copy_pairs else None
        self._copies_file = None if copies is None else (self.copy_scatter, str(copies))

    def _ann_files(self) -> Dict[str, Callable[[Path], None]]:
        """The approximate index as a file of the saved version (built now if the index
        uses one and has none yet), so that a loaded index searches without rebuilding it."""
        try:
            ann = self._get_ann()
        except MissingDependencyError:  # derived data: saved without it, built where FAISS is
            return {}
        return {} if ann is None else {ANN_FILE: ann.save}

    @classmethod
    def load(
        cls,
        directory: PathLike,
        *,
        mmap: bool = True,
        extractor: Any = None,
        root: Optional[PathLike] = None,
        runtime: str = "auto",
    ) -> "Index":
        """Reads an index written by :meth:`save` (or by heatsearch 0.1-0.4, whose format the
        next save converts), checked in full (rows read from the files a window at a time;
        ``mmap=False``: read into memory).

        Args:
            root: where the collection is now, overriding the root the index recorded (a
                collection moved together with its index): stored paths are taken relative
                to it. For an index of heatsearch 0.1/0.2, which recorded no root, relative
                paths are taken from ``root``, else from the current directory.
            runtime: what runs the network for new images and image queries (see
                :attr:`runtime`); any runtime searches an index built with another.

        Raises:
            IndexFileError: no index there, or a missing, corrupt or inconsistent file (the
                message names it).
            InvalidInputError: ``root`` is not a directory.
        """
        override = None if root is None else _validate.directory(root, "root")
        stored = storage.read_index(directory, mmap=mmap)
        meta_file = stored.files["meta"]
        try:
            config = IndexConfig.from_dict(stored.config)
        except HeatsearchError as e:
            raise IndexFileError(f"{meta_file}: bad 'config' ({e})") from None
        base = override if override is not None else stored.root
        index = cls(
            config=config,
            whitening=stored.whitening,
            whitening_learned=stored.whitening_learned,
            mean_images=stored.mean_images,
            whitening_images=stored.whitening_images,
            descriptors=stored.descriptors,
            pooled=stored.pooled,
            mean=stored.mean,
            extractor=extractor,
            root=base,
            runtime=runtime,
            copy_scatter=stored.copy_scatter,
            copy_pairs=stored.copy_pairs,
        )
        if stored.store is not None:
            store = stored.store
            if not mmap:  # every row read into memory now (the shards stay the saved copy)
                store = Store([
                    replace(seg, desc=Rows(np.array(seg.desc.whole())),
                            pooled=None if seg.pooled is None else Rows(np.array(seg.pooled.whole())))
                    for seg in store.segments
                ])
            index._store = store
        index._external = stored.source == "descriptors"
        if index._external:
            index.root = None
            index.paths = list(stored.paths)  # names of rows, kept verbatim
        else:
            # Resolved here (absolute, normalised): not again by the constructor (60k paths: 0.1 s).
            index.paths = _resolve_all(stored.paths, index.root, normalised=stored.version >= 2)
        files = stored.files
        index._check_consistency(lambda part, why: IndexFileError(f"{files.get(part, meta_file)}: {why}"))
        index._ann = _load_ann(storage.version_file(stored, ANN_FILE), index)
        copies = storage.version_file(stored, storage.COPIES) if stored.copy_pairs else None
        index._copies_file = None if copies is None else (index.copy_scatter, str(copies))
        if override is None and stored.root is not None and not os.path.isdir(stored.root):
            warnings.warn(
                f"{meta_file}: the collection folder {stored.root!r} recorded in the index does "
                "not exist: image paths will not resolve (searching by descriptor works); if "
                "the collection moved, load the index with root= its new place",
                stacklevel=2,
            )
        elif stored.version == 1 and override is None:
            relative = next((p for p in stored.paths if not os.path.isabs(p)), None)
            if relative is not None and not os.path.exists(relative):
                warnings.warn(
                    f"{meta_file}: an index of heatsearch 0.1/0.2 stores paths relative to the "
                    f"folder it was built from, which it did not record ({relative!r} is not "
                    f"found from {os.getcwd()!r}): load it with root= that folder (saving it "
                    "again then records the root)",
                    stacklevel=2,
                )
        return index

    def _check_consistency(self, error: Callable[[str, str], Exception]) -> None:
        """What the files cannot say alone: the configuration's meaning against the arrays.
        ``error(part, why)`` makes the exception (``part``: "meta", "pooled", ...)."""
        n = len(self)
        if self._external:
            if self._loose is not None or len(self._store) != n:
                raise error("descriptors", f"{n} names of rows but {len(self._store)} rows of descriptors")
            return
        if self.config.pooling == "hew" and n and self.mean is None:
            raise error(
                "meta",
                "a HeW index of images must have its centering mean ('has_mean' is false): "
                "queries could not be described like the database",
            )
        if self._loose is None:  # the rows are read from the store (a sample: no materialising)
            st = self._store
            if n == 0 or not st.segments or not st.has_pooled:
                if n:
                    raise error("meta", f"{n} paths but no descriptors or pooled descriptors")
                return
            if len(st) != n:
                raise error("descriptors", f"{n} paths, {len(st)} descriptors, {len(st)} pooled descriptors")
            rows = np.unique(np.linspace(0, n - 1, min(n, CONSISTENCY_SAMPLE)).astype(np.int64))
            pooled_rows, got = st.gather(rows, "pooled", np.float64), st.gather(rows, "desc", np.float32)
        else:
            X, P = self._loose
            if n == 0 or X is None or P is None:
                if n and (X is None or P is None):
                    raise error("meta", f"{n} paths but no descriptors or pooled descriptors")
                return
            X = np.asarray(X)
            if X.shape[0] != n or np.shape(P)[0] != n:
                raise error("descriptors", f"{n} paths, {X.shape[0]} descriptors, {np.shape(P)[0]} pooled descriptors")
            rows = np.unique(np.linspace(0, n - 1, min(n, CONSISTENCY_SAMPLE)).astype(np.int64))
            pooled_rows, got = np.asarray(P[rows], np.float64), np.asarray(X[rows], np.float32)
        try:
            expected = self.postprocess(pooled_rows).astype(np.float32)
        except HeatsearchError as e:
            raise error("pooled", f"the pooled descriptors cannot be post-processed ({e})") from None
        # float16 rows hold 11 significant bits: within 2^-11 of unit-norm values.
        rtol, atol = (1e-3, 1e-3) if self.config.storage_dtype == "float16" else (1e-4, 1e-5)
        if expected.shape != got.shape or not np.allclose(got, expected, rtol=rtol, atol=atol):
            bad = int(rows[0]) if expected.shape != got.shape else int(rows[np.argmax(np.abs(got - expected).max(axis=1))])
            raise error(
                "pooled",
                "the pooled descriptors do not give the stored final descriptors with this "
                f"configuration (power {self.config.power}) and whitening (e.g. row {bad}): "
                "pooled.npy, descriptors.npy or whitening.npz comes from another index",
            )


Index.descriptors = property(  # type: ignore[assignment]
    lambda self: self._column("desc"),
    lambda self, value: self._set_column("desc", value),
    doc="``(n, d)`` final descriptors, float32 (see ``Index._column``; setting it replaces every row).",
)
Index.pooled = property(  # type: ignore[assignment]
    lambda self: self._column("pooled"),
    lambda self, value: self._set_column("pooled", value),
    doc="``(n, C)`` float32 pooled descriptors, None for an index of descriptors (see ``Index._column``).",
)


def pair_scatter(config: IndexConfig, images: np.ndarray, copies: np.ndarray) -> Tuple[np.ndarray, int]:
    """The difference scatter ``(C, C)`` float64 and the count of the pairs (``images[i]``,
    ``copies[i]``): pooled descriptors ``(m, C)`` float32 of images and of their synthetic
    copies, signed-square-rooted and L2-normalised as ``config`` post-processes them before
    the whitening (:attr:`Index.copy_scatter`; :meth:`Index.add` and
    :func:`heatsearch.distributed.build_index` sum it alike)."""
    pre = PostProcess(None, power=config.power)
    diff = pre(np.asarray(copies, np.float64)) - pre(np.asarray(images, np.float64))
    return diff.T @ diff, int(diff.shape[0])


def learns_whitening(config: IndexConfig, whitening: Optional[PCAWhitening], n: int,
                     learned_on: Optional[int] = None) -> bool:
    """Whether an index of ``config`` with ``whitening`` (which it learned on ``learned_on``
    rows; None: not learned by it, or how many unknown) learns its whitening, on all its rows
    (:meth:`Index.refit_whitening`), once it holds ``n`` rows: "auto", and either none yet and
    at least :data:`AUTO_WHITENING_MIN_IMAGES` rows, or one it learned on ``n /``
    :data:`WHITENING_REFIT_GROWTH` rows or fewer."""
    if config.whiten != "auto":
        return False
    if whitening is None:
        return n >= AUTO_WHITENING_MIN_IMAGES
    return learned_on is not None and n >= WHITENING_REFIT_GROWTH * learned_on


def mean_sample(paths: Sequence[str], size: int) -> List[str]:
    """The images whose local features give the HeW centering mean of a new index of
    ``paths``: every ``len(paths) // size``-th one (at least every one), at most ``size``
    (``IndexConfig.mean_sample``). :meth:`Index.add` extracts them first and so puts their rows
    first, then the other images in their order; :mod:`heatsearch.distributed` follows the
    same rule and the same order."""
    step = max(1, len(paths) // max(1, size))
    return list(paths[::step][:size])


def _forward_when_ready(extractor: Any, job: "Future[List[np.ndarray]]") -> Any:
    return extractor.forward_prepared(job.result())  # re-raises the decoding's error here


def _splits_feature_map(extractor: Any) -> bool:
    """Whether ``extractor.feature_map(path)`` is heatsearch's own, i.e. exactly
    ``forward_prepared(prepare(path))``, so that the two halves may run in different threads.
    A stand-in, a subclass or an instance whose ``feature_map`` was replaced (to count calls,
    inject failures) keeps its own ``feature_map``."""
    from ..vision.extract import Extractor

    return (
        isinstance(extractor, Extractor)
        and type(extractor).feature_map is Extractor.feature_map
        and type(extractor).prepare is Extractor.prepare
        and type(extractor).forward_prepared is Extractor.forward_prepared
        and not {"feature_map", "prepare", "forward_prepared"} & set(vars(extractor))
    )


def equidistant(similarities: np.ndarray) -> bool:
    """Whether these similarities between distinct images (any shape; NaN entries ignored) all
    lie within :data:`EQUIDISTANT_SPREAD` of each other: a collection without neighbourhoods."""
    sims = np.asarray(similarities, np.float64)
    sims = sims[~np.isnan(sims)]
    return bool(sims.size) and float(sims.max() - sims.min()) < EQUIDISTANT_SPREAD


def _warn_if_equidistant(X: np.ndarray, rerank: str) -> None:
    """Warns that ``rerank`` cannot change anything when the database rows ``X (n, d)`` are all
    equally similar to each other (checked on the first :data:`CONSISTENCY_SAMPLE` rows): a
    re-ranker only reorders by the database's own neighbourhoods, and there are none. That is
    what a whitening learned without shrinkage on fewer images than dimensions does to its
    own collection (every pair at ``-1 / (n - 1)``)."""
    sample = np.ascontiguousarray(X[:CONSISTENCY_SAMPLE], np.float64)
    if len(sample) < 3:
        return
    # Every pair's inner product by heatsearch's own kernel, not NumPy's product: OpenBLAS's
    # threads go on spinning after it and took the cores from the search that follows (a
    # descriptor query on 100k rows went from 4.9 to 9.5 ms, measured).
    order, scores = search(sample, sample, len(sample))
    sims = np.empty((len(sample), len(sample)))
    np.put_along_axis(sims, order, scores, axis=1)
    sims = sims[~np.eye(len(sample), dtype=bool)]
    if equidistant(sims):
        warnings.warn(
            f"rerank={rerank!r} cannot change the ranking of this index: all its images are equally "
            f"similar to each other (cosine {sims.mean():.4f}), so it has no neighbourhoods to re-rank by; "
            "this happens when a whitening without shrinkage was learned on fewer images than dimensions "
            "(an index of heatsearch 0.2): Index.refit_whitening() with IndexConfig(shrinkage=...) or "
            "'heatsearch index' again fixes it",
            UserWarning,
            stacklevel=3,
        )


def _shortlist_depth(k: int, rerank: Optional[str], n: int) -> int:
    """How many candidates an approximate search ranks exactly for ``k`` hits: at least
    :data:`ANN_SHORTLIST`, and what the re-ranker reads (HeR: its depth 800, "auto": 20,
    diffusion: its truncation 1000), at most ``n``."""
    need = {"heat": DEFAULT_DEPTH, "aqe+heat": DEFAULT_DEPTH, "auto": AUTO_DEPTH, "diffusion": DEFAULT_TRUNCATION}
    return min(n, max(k, ANN_SHORTLIST, need.get(rerank or "", 0)))


class _RowReader:
    """The rows of an index as :func:`_ann_rank` and :class:`heatsearch.ann.AnnIndex` (build,
    search) read them: ``shape``, ``dtype`` and ``reader[ids]`` or ``reader[a:b]`` (gathered
    from the store, in ``dtype``), without materialising the index."""

    def __init__(self, index: "Index", dtype: Any) -> None:
        self._index, self.dtype = index, np.dtype(dtype)
        self.shape = (len(index), index.dim)

    def __getitem__(self, ids: Any) -> np.ndarray:
        if isinstance(ids, slice):
            ids = np.arange(*ids.indices(self.shape[0]))
        return self._index._rows(np.asarray(ids, np.int64), self.dtype.type)


def _ann_rank(
    ann: AnnIndex, X: Any, Q: np.ndarray, k: int, rerank: Optional[str]
) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`heatsearch.pipeline.rank` on each query's approximate shortlist.

    The shortlist (:func:`_shortlist_depth` rows) comes from ``ann`` with EXACT cosines from
    ``X``, the stored descriptors (never the ANN's codes); without a re-ranker it is the
    ranking. A re-ranker runs on the shortlist's own rows as its database: HeR and AQE read
    only a ranking's top, inside it; diffusion's kNN graph is the shortlist's own graph (its
    1000 rows, each linked to its neighbours among them), i.e. the neighbourhood of the query
    in which diffusion's truncation works anyway. Ranks map back to rows of ``X``. A query
    whose shortlist is shorter (ivfpq probing too few cells) gives every query that length.
    """
    depth = _shortlist_depth(k, rerank, X.shape[0])
    ids, scores = ann.search(Q, depth, exact=X)
    found = int((ids >= 0).sum(axis=1).min())
    out_k = min(k, found)
    if rerank is None:
        return ids[:, :out_k], scores[:, :out_k].astype(X.dtype)
    ranks = np.empty((len(Q), out_k), np.int64)
    out_scores = np.empty((len(Q), out_k), np.float64)
    for i in range(len(Q)):
        rows = ids[i, :found]
        sub = np.ascontiguousarray(np.asarray(X[rows]), dtype=X.dtype)
        r, s = rank(sub, Q[i : i + 1], k=out_k, rerank=rerank)
        ranks[i], out_scores[i] = rows[r[0]], s[0]
    return ranks, out_scores


def _load_ann(path: Optional[Path], index: "Index") -> Optional[AnnIndex]:
    """The approximate index saved beside a version's descriptors, if it is there, FAISS is
    installed and it fits them (else None: built again at the first search that needs it)."""
    if path is None or not path.is_file() or index.ann_kind() is None:
        return None
    try:
        ann = AnnIndex.load(path)
    except HeatsearchError as e:  # MissingDependencyError is raised by the search instead
        if isinstance(e, IndexFileError):
            warnings.warn(f"{e}: the approximate index is built again at the first search", stacklevel=3)
        return None
    if ann.nrows != len(index) or ann.d != index.dim:
        return None
    return ann


def _cosines(rows: Callable[[np.ndarray], np.ndarray], Q: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """``(nq, m)``: ``X[ranks[i, j]] . Q[i]``, gathering at most :data:`COSINE_CHUNK` rows of
    ``X`` at a time with ``rows`` (a whole-index ranking of a large index would otherwise copy it)."""
    out = np.empty(ranks.shape, np.float64)
    for i in range(ranks.shape[0]):
        for start in range(0, ranks.shape[1], COSINE_CHUNK):
            part = ranks[i, start : start + COSINE_CHUNK]
            out[i, start : start + part.shape[0]] = rows(part) @ Q[i]
    return out


def _absolute(path: Any, name: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidDTypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    p = os.fspath(path)
    if not isinstance(p, str) or not p:
        raise InvalidInputError(f"{name} must be a non-empty text path, got {path!r}")
    return os.path.abspath(p)


def _relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` with ``/`` separators, or as it is (absolute) outside it."""
    try:
        inside = os.path.commonpath([path, root]) == root
    except ValueError:  # another drive (Windows)
        inside = False
    if not inside:
        return path
    return os.path.relpath(path, root).replace(os.sep, "/")


def _resolve_all(stored: Sequence[str], root: Optional[str], *, normalised: bool) -> List[str]:
    """Stored paths as absolute ones: relative ones joined to ``root`` (the current directory
    when None: version-1 indexes, whose paths are as they were given)."""
    if root is None:
        return [os.path.abspath(p) for p in stored]
    if not normalised:
        return [os.path.normpath(os.path.join(root, p)) for p in stored]
    # Version 2's relative paths are normalised ('/' separators, no '.' or '..': checked on
    # load), so joining is a concatenation.
    prefix = os.path.join(os.path.normpath(root), "")
    isabs, normpath, sep = os.path.isabs, os.path.normpath, os.sep
    return [
        normpath(p) if isabs(p) else prefix + (p if sep == "/" else p.replace("/", sep))
        for p in stored
    ]


def _common_folder(paths: Sequence[str]) -> str:
    """The deepest folder holding every path (the current directory when there is none)."""
    if not paths:
        return os.getcwd()
    try:
        return os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # paths on several drives (Windows): no common folder
        return os.path.dirname(paths[0])


def _about_query(error: Exception, position: int) -> Exception:
    """``error`` of one of many queries, with its position in the message (same type)."""
    try:
        return type(error)(f"queries[{position}]: {error}")
    except Exception:  # an exception type that takes other arguments
        return InvalidInputError(f"queries[{position}]: {type(error).__name__}: {error}")


def _progress(items: Iterable[Any], enabled: bool, desc: str, total: Optional[int] = None) -> Iterable[Any]:
    if not enabled:
        return items
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:  # progress bars are a nicety
        return items
    return tqdm(items, desc=desc, unit="img", total=total)
