"""Approximate nearest-neighbour search on FAISS: a shortlist for large collections.

Exact search (:func:`heatsearch.search`) reads every database row for every query; past a
few hundred thousand rows an approximate index answers faster. :class:`AnnIndex` wraps one of
two FAISS indexes (``faiss-cpu``, the ``ann`` extra: ``pip install "heatsearch[ann]"``):

``"ivfpq"``  ``IndexIVFPQ``: an inverted file of ``nlist`` k-means cells over product-quantised
             codes (``m`` sub-quantisers of 8 bits: ``m`` bytes a row). Small (1M x 512: 128 MB
             of codes at ``m = 128``), trained on a sample, approximate scores.
``"hnsw"``   ``IndexHNSWSQ``: an HNSW graph (``M`` links a node, ``efConstruction``) over 8-bit
             scalar-quantised rows (``d`` bytes a row, a quarter of float32). Fast and accurate,
             larger, slower to build.

Both score by inner product: heatsearch's descriptors are L2-normalised rows, for which it is
the cosine. Ids are row numbers: the i-th row added is id ``i``.

**Exact re-scoring.** Neither index keeps the float32 rows. :meth:`AnnIndex.search` with
``exact=X`` (the ``(n, d)`` rows the ids point to, e.g. an index's memory-mapped descriptors)
asks FAISS for a shortlist of ``refine * k`` candidates (``k`` capped at :data:`REFINE_CAP`)
and orders them by their exact inner products with the query, so the scores returned are
exact and the ANN only decides WHICH rows are looked at. :class:`heatsearch.Index` re-ranks (HeR, AQE, diffusion, spatial) on such
exactly scored shortlists, so re-ranking quality never depends on the quantised codes.

**Parameters from n** (:func:`ann_params`; every one overridable). ``n``: rows expected.

* ivfpq: ``nlist`` = the power of two nearest ``4 sqrt(n)`` (FAISS's guideline is
  ``4-16 sqrt(n)``), at most ``n / 39`` (FAISS wants 39 training rows a cell) and at least 1;
  ``m`` = ``d / 8`` sub-quantisers (the largest divisor of ``d`` not above it; FAISS trains
  ``d / 4`` twenty times slower: 96 s against 4.3 s on 20k x 512), 8 bits each (fewer for
  tiny training sets: at least 39 rows per centroid); ``nprobe`` = ``nlist / 8`` cells
  visited, at least 1; ``refine`` = 30 (a shortlist of ``30 k`` re-scored; 100 from 3M rows
  on, :data:`_LONG_SHORTLIST_ROWS`); training on
  ``min(n, max(40 nlist, 256 * 39))`` rows, k-means of 10 iterations. Measured on 1M x 512
  Holidays-plus-distractors (README, "Scale"; nlist 4096), recall@100: 0.87 at nprobe 512 and
  refine 10, 0.95 at refine 20, 0.96 at nprobe 256 and refine 30, 0.97 at nprobe 512 and
  refine 30 (the rule); at 100k (nlist 1024) nprobe 64 (``nlist / 16``) and refine 30 gave
  only 0.93, hence ``nlist / 8``.
* hnsw: ``M`` = 32, ``efConstruction`` = 40 (FAISS's defaults), ``efSearch`` = 128 (at least
  the shortlist), ``refine`` = 3 (6 from 3M rows on); the scalar quantiser is trained
  (per-dimension ranges) on ``min(n, 65536)`` rows. Measured: recall@100 0.998 at 100k x 512,
  0.977 at 1M, 0.952 at 10M with refine 6 (README, "Scale").

**Threads**: FAISS's OpenMP pool is set to heatsearch's thread count
(:func:`heatsearch.get_num_threads`, ``HEATSEARCH_NUM_THREADS``) before each build and search.

**Files**: :meth:`AnnIndex.save` writes one file: a short header (magic, JSON with the kind,
the parameters, ``d`` and ``ntotal``) followed by FAISS's own serialisation, written through
:func:`heatsearch._atomic.atomic_write` (temporary file in the same directory, fsync,
``os.replace``): a save killed at any moment leaves the previous file intact.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Iterable, Iterator, Optional, Protocol, Tuple, Union, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from ._atomic import atomic_write
from .search import search
from .errors import IndexFileError, InvalidDTypeError, InvalidInputError, MissingDependencyError
from .threads import get_num_threads

__all__ = ["AnnIndex", "AnnParams", "ANN_KINDS", "ann_params", "available", "AUTO_MIN_ROWS", "FILE_NAME", "PIP"]

#: The kinds of approximate index.
ANN_KINDS = ("ivfpq", "hnsw")
#: ``ann="auto"`` uses an approximate index (hnsw) from this many rows on, and exact search
#: below: past the measured crossover where hnsw (at recall@100 >= 0.95) answers batched queries
#: faster than heatsearch's exact Rust search (README, "Scale"; ``python tools/scale.py
#: --crossover``, idle 2-core VM). Per query, 500 queries in one call, k = 100, 2 threads:
#: exact 0.35 ms at 100k x 512, 0.56 ms at 200k, 1.13 ms at 400k, 2.97 ms at 1M; hnsw 0.64 ms
#: at 100k and 0.91 ms at 1M. The crossover is near 250k (hnsw interpolated); at 300k hnsw is
#: the faster. One query per call, hnsw is faster from 100k on (1.3 against 5.0 ms), but
#: costs a build (90 s at 100k) and recall: choose ``ann="hnsw"`` explicitly for a service of
#: single queries.
AUTO_MIN_ROWS = 300_000
#: The file :meth:`AnnIndex.save` writes into a directory.
FILE_NAME = "ann.faiss"
#: How to install FAISS (named in :class:`~heatsearch.errors.MissingDependencyError`).
PIP = "pip install 'heatsearch[ann]'"
#: ``exact=`` re-scores ``refine * min(k, REFINE_CAP)`` candidates (at least ``k``): the
#: recall target is at k = 100; deeper shortlists (HeR's 800, diffusion's 1000) get 3000 with
#: ivfpq's refine, not 30000 (a 60 MB gather a query at d = 512).
REFINE_CAP = 100
#: The rows of ``X`` :meth:`AnnIndex.build` hands to FAISS at a time (64 MB of float32 at d=512).
ADD_BLOCK = 32768

_MAGIC = b"HSANN1\n"
_HEADER = struct.Struct("<Q")
#: Rows per centroid FAISS's k-means wants (it warns below 39).
_MIN_PER_CENTROID = 39
_IVF_TRAIN_PER_CELL = 40
#: k-means iterations of the IVF cells (FAISS's default: 25).
_IVF_NITER = 10
_SQ_TRAIN = 65536
#: From this many rows on, the shortlists re-scored exactly are longer (``refine``: ivfpq 100
#: instead of 30, hnsw 6 instead of 3): measured on 10M x 512 Holidays-plus-distractors
#: (README, "Scale"), recall@100 with the shorter ones fell to 0.882 / 0.896 (0.972 / 0.977 at
#: 1M), with these 0.974 / 0.952 (``tools/scale.py --reuse``; in a first look on the saved
#: indexes, ivfpq gave 0.945 at refine 60, hnsw 0.975 at 10). 3M is about the geometric middle
#: of the two sizes measured.
_LONG_SHORTLIST_ROWS = 3_000_000
_EXACT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _faiss() -> Any:
    """The faiss module, or MissingDependencyError naming the extra."""
    try:
        import faiss
    except ImportError as e:
        raise MissingDependencyError(f"approximate search needs FAISS (faiss-cpu): {PIP}") from e
    return faiss


def available() -> bool:
    """Whether FAISS is installed (``ann="auto"`` falls back to exact search without it)."""
    try:
        _faiss()
    except MissingDependencyError:
        return False
    return True


@dataclass(frozen=True)
class AnnParams:
    """The parameters of an approximate index; None: from the rule of :func:`ann_params`.

    ivfpq: ``nlist`` (cells), ``m`` (sub-quantisers, a divisor of d), ``nbits`` (bits per
    code), ``nprobe`` (cells visited per query). hnsw: ``M`` (links per node),
    ``ef_construction``, ``ef_search``. Both: ``refine`` (``exact=`` re-scores ``refine * k``
    candidates), ``train_size`` (rows of the training sample).
    """

    nlist: Optional[int] = None
    m: Optional[int] = None
    nbits: Optional[int] = None
    nprobe: Optional[int] = None
    M: Optional[int] = None
    ef_construction: Optional[int] = None
    ef_search: Optional[int] = None
    refine: Optional[int] = None
    train_size: Optional[int] = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            _validate.optional_integer(value, name, minimum=1)

    def to_dict(self) -> Dict[str, Optional[int]]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "AnnParams":
        if not isinstance(d, dict):
            raise InvalidDTypeError(f"ANN parameters must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidInputError(f"unknown ANN parameters {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def ann_params(kind: str, n: int, d: int, overrides: Optional[AnnParams] = None) -> AnnParams:
    """The parameters for ``n`` rows of dimension ``d`` (module docstring), with every field of
    ``overrides`` that is not None taking precedence. Returns an :class:`AnnParams` with the
    fields of ``kind`` filled (the other kind's stay None)."""
    _validate.choice(kind, "kind", ANN_KINDS)
    n = _validate.integer(n, "n", minimum=1)
    d = _validate.integer(d, "d", minimum=1)
    o = overrides if overrides is not None else AnnParams()
    if not isinstance(o, AnnParams):
        raise InvalidDTypeError(f"overrides must be AnnParams or None, got {type(o).__name__}")
    if kind == "ivfpq":
        nlist = o.nlist or _nlist(n)
        m = o.m or max(q for q in range(1, max(1, d // 8) + 1) if d % q == 0)
        if d % m:
            raise InvalidInputError(f"m (PQ sub-quantisers) must divide d = {d}, got m = {m}")
        train = o.train_size or min(n, max(_IVF_TRAIN_PER_CELL * nlist, 256 * _MIN_PER_CENTROID))
        nbits = o.nbits or max(1, min(8, int(math.log2(max(2, train // _MIN_PER_CENTROID)))))
        if nbits > 16:
            raise InvalidInputError(f"nbits must be at most 16, got {nbits}")
        nprobe = min(o.nprobe or max(1, nlist // 8), nlist)
        refine = o.refine or (100 if n >= _LONG_SHORTLIST_ROWS else 30)
        return AnnParams(nlist=nlist, m=m, nbits=nbits, nprobe=nprobe, refine=refine, train_size=train)
    return AnnParams(
        M=o.M or 32,
        ef_construction=o.ef_construction or 40,
        ef_search=o.ef_search or 128,
        refine=o.refine or (6 if n >= _LONG_SHORTLIST_ROWS else 3),
        train_size=o.train_size or min(n, _SQ_TRAIN),
    )


def _nlist(n: int) -> int:
    """The power of two nearest 4 sqrt(n), at most n / 39, at least 1."""
    target = 4.0 * math.sqrt(n)
    nlist = 2 ** int(round(math.log2(target)))
    cap = max(1, n // _MIN_PER_CENTROID)
    while nlist > cap:
        nlist //= 2
    return max(1, nlist)


@runtime_checkable
class _RowSource(Protocol):
    """Rows read on demand: an array, a memmap, or a reader of an index's store (``shape
    (n, d)``, ``dtype``, and ``source[ids]`` or ``source[a:b]`` giving an array of those rows),
    as opposed to an iterable of blocks."""

    @property
    def shape(self) -> Tuple[int, ...]: ...

    @property
    def dtype(self) -> Any: ...

    def __getitem__(self, ids: Any) -> Any: ...


class AnnIndex:
    """An approximate inner-product index over ``d``-dimensional rows (module docstring).

    Make one with :meth:`build` (from an array, or blocks of rows), or ``AnnIndex(kind, d, n)``
    then :meth:`train` on a sample and :meth:`add` blocks; search with :meth:`search`; persist
    with :meth:`save` / :meth:`load`.

    Args:
        kind: one of :data:`ANN_KINDS`.
        d: the rows' dimension.
        n: the number of rows expected (chooses the parameters, :func:`ann_params`).
        params: overrides of the rule (an :class:`AnnParams`, or a dict of its fields).
    """

    def __init__(self, kind: str, d: int, n: int, params: Union[AnnParams, Dict[str, Any], None] = None) -> None:
        if isinstance(params, dict):
            params = AnnParams.from_dict(params)
        self.kind: str = _validate.choice(kind, "kind", ANN_KINDS)
        self.d: int = _validate.integer(d, "d", minimum=1)
        self.n_expected: int = _validate.integer(n, "n", minimum=1)
        self.params: AnnParams = ann_params(kind, n, d, params)
        self._index: Any = self._new_index()
        #: The row each id stands for now, -1 once removed (:meth:`without`); None: id i is
        #: row i. Removing never touches the FAISS index: removed ids are just never returned.
        self.row_of_id: Optional[np.ndarray] = None
        self._nrows: Optional[int] = None

    def _new_index(self) -> Any:
        faiss = _faiss()
        p = self.params
        if self.kind == "ivfpq":
            quantizer = faiss.IndexFlatIP(self.d)
            index = faiss.IndexIVFPQ(quantizer, self.d, p.nlist, p.m, p.nbits, faiss.METRIC_INNER_PRODUCT)
            index.own_fields = True
            quantizer.this.disown()  # the IVF owns its quantiser now
            index.nprobe = p.nprobe
            index.cp.niter = _IVF_NITER
            return index
        index = faiss.IndexHNSWSQ(self.d, faiss.ScalarQuantizer.QT_8bit, p.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p.ef_construction
        index.hnsw.efSearch = p.ef_search
        return index

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        rows: Union[ArrayLike, _RowSource, Iterable[ArrayLike]],
        kind: str = "hnsw",
        *,
        n: Optional[int] = None,
        params: Union[AnnParams, Dict[str, Any], None] = None,
        seed: int = 0,
    ) -> "AnnIndex":
        """Builds an index of ``rows``: an ``(n, d)`` array (float32/float64, e.g. a memmap), a
        reader of rows (``shape``, ``dtype``, ``rows[ids]`` and ``rows[a:b]`` giving arrays: an
        index's store, :class:`heatsearch.Index`), or an iterable of ``(b, d)`` blocks (then
        ``n``, the total, is required: it chooses the parameters).

        Training sample: ``params.train_size`` rows drawn uniformly (``seed``) from an array or
        a reader; from blocks, the first ``train_size`` rows (shuffle the blocks' order
        beforehand when it is biased, e.g. sorted by folder). Rows are then added in blocks of
        :data:`ADD_BLOCK`, so an array is never copied whole.
        """
        if isinstance(rows, _RowSource):
            X: Any = _validate.rows(rows, "rows") if isinstance(rows, np.ndarray) else rows
            if len(X.shape) != 2:
                raise InvalidInputError(f"rows must be (n, d) row vectors, got shape {X.shape}")
            count = X.shape[0]
            if n is not None and _validate.integer(n, "n", minimum=1) != count:
                raise InvalidInputError(f"n must be the number of rows ({count}), got {n}")
            if count == 0 or X.shape[1] == 0:
                raise InvalidInputError(f"rows must have at least one row and one column, got shape {X.shape}")
            index = cls(kind, X.shape[1], count, params)
            size = min(count, index.params.train_size or count)
            pick = np.sort(np.random.default_rng(seed).choice(count, size, replace=False))
            index.train(_block(X[pick], "rows", index.d))
            for start in range(0, count, ADD_BLOCK):
                index.add(_block(X[start : start + ADD_BLOCK], "rows", index.d))
            return index
        if n is None:
            raise InvalidInputError("n (the total number of rows) is required when rows come in blocks")
        total = _validate.integer(n, "n", minimum=1)
        blocks = iter(rows)  # type: ignore[arg-type]
        first = _block(next(blocks, None), "rows[0]", None)
        index = cls(kind, first.shape[1], total, params)
        want = min(total, index.params.train_size or total)
        held = [first]
        while sum(len(b) for b in held) < want:
            more = next(blocks, None)
            if more is None:
                break
            held.append(_block(more, f"rows[{len(held)}]", index.d))
        index.train(np.concatenate(held)[:want])
        for block in held:
            index.add(block)
        for i, more in enumerate(blocks, start=len(held)):
            index.add(_block(more, f"rows[{i}]", index.d))
        return index

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def ntotal(self) -> int:
        """Rows added so far (ids ``0 .. ntotal - 1``)."""
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def nrows(self) -> int:
        """Rows the ids stand for now: :attr:`ntotal` less the removed ones."""
        return self.ntotal if self._nrows is None else self._nrows

    @property
    def dead_fraction(self) -> float:
        """The share of ids whose rows were removed (searches fetch that many more candidates;
        an index rebuilds its ANN past :data:`heatsearch.app.index.ANN_REBUILD_DEAD`)."""
        return 1.0 - self.nrows / self.ntotal if self.ntotal else 0.0

    def _map(self) -> np.ndarray:
        return np.arange(self.ntotal, dtype=np.int64) if self.row_of_id is None else self.row_of_id

    def _with_map(self, index: Any, row_of_id: Optional[np.ndarray]) -> "AnnIndex":
        out = AnnIndex(self.kind, self.d, self.n_expected, self.params)
        out._index = index
        if row_of_id is not None:
            out.row_of_id = row_of_id
            out._nrows = int(np.count_nonzero(row_of_id >= 0))
        return out

    def without(self, keep: ArrayLike) -> "AnnIndex":
        """This index after a removal of rows: ``keep`` (bool, one per row, :attr:`nrows` of
        them) says which rows stay; those are renumbered ``0..`` in their order, as an index's
        live rows are after ``remove``. The FAISS index is shared, not copied or changed (a
        removed id is only never returned again): a removal costs one int64 per id, instead of
        a rebuild (837 s for hnsw over 1M rows on the 2-vCPU VM, README "Scale")."""
        mask = np.asarray(keep)
        if mask.dtype != np.bool_ or mask.shape != (self.nrows,):
            raise InvalidInputError(f"keep must be a bool array of shape ({self.nrows},), got {mask.dtype} {mask.shape}")
        renumber = np.cumsum(mask, dtype=np.int64) - 1
        renumber[~mask] = -1
        current = self._map()
        return self._with_map(self._index, np.where(current >= 0, renumber[np.maximum(current, 0)], -1))

    def _to_rows(self, ids: np.ndarray) -> np.ndarray:
        """FAISS ids ``(nq, c)`` (-1: none) as rows (-1: none or removed)."""
        if self.row_of_id is None:
            return np.asarray(ids, np.int64)
        ids = np.asarray(ids, np.int64)
        rows = self.row_of_id[np.maximum(ids, 0)]
        rows[ids < 0] = -1
        return rows

    def _depth(self, depth: int) -> int:
        """Candidates to ask FAISS for so that about ``depth`` live ones come back."""
        if self.row_of_id is None:
            return depth
        return min(self.ntotal, int(np.ceil(depth * self.ntotal / max(1, self.nrows))))

    def train(self, sample: ArrayLike) -> None:
        """Trains the quantisers on ``sample (s, d)`` (ivfpq: k-means of the cells and the PQ
        codebooks, at least ``nlist`` and ``2**nbits`` rows; hnsw: the scalar quantiser's ranges).
        """
        x = self._rows(sample, "sample")
        need = self.params.nlist or 1
        if self.kind == "ivfpq":
            need = max(need, 2 ** (self.params.nbits or 8))
        if x.shape[0] < need:
            raise InvalidInputError(
                f"sample must have at least {need} rows to train {self.kind} ({self.params}), got {x.shape[0]}"
            )
        _set_threads()
        self._index.train(x)

    def add(self, rows: ArrayLike) -> None:
        """Appends ``rows (b, d)``; they get the ids ``ntotal .. ntotal + b - 1``."""
        if not self.is_trained:
            raise InvalidInputError("the ANN index is not trained: call train(sample) first (or use AnnIndex.build)")
        x = self._rows(rows, "rows")
        if x.shape[0]:
            _set_threads()
            self._index.add(x)

    def extended(self, rows: Union[ArrayLike, Iterable[ArrayLike]]) -> "AnnIndex":
        """A copy of this index with ``rows`` (an array ``(b, d)`` or an iterable of such
        blocks) appended, ids ``ntotal ..``; this one is left as it is (another thread may be
        searching it: FAISS does not let one add while others search)."""
        out = self._with_map(_faiss().clone_index(self._index), None)
        blocks: Iterable[Any] = [rows] if isinstance(rows, np.ndarray) else rows  # type: ignore[assignment]
        for b in blocks:
            out.add(b)
        if self.row_of_id is not None:  # the new ids stand for the rows after the live ones
            added = out.ntotal - self.ntotal
            tail = np.arange(self.nrows, self.nrows + added, dtype=np.int64)
            out.row_of_id = np.concatenate([self.row_of_id, tail])
            out._nrows = self.nrows + added
        return out

    # -- searching ---------------------------------------------------------------------------
    def search(self, Q: ArrayLike, k: int, *, exact: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows of each query by inner product.

        Args:
            Q: queries ``(nq, d)`` float32/float64 (a ``(d,)`` vector is one query).
            k: results per query, ``>= 1`` (clamped to :attr:`ntotal`).
            exact: None, or the ``(ntotal, d)`` rows the ids point to (an array, a memmap, or
                an object with ``shape``, ``dtype`` and ``X[ids]`` that gathers rows, e.g.
                :class:`heatsearch.Index`'s sharded store; float16, float32 or float64, read
                in float32):
                then FAISS returns ``refine * min(k, REFINE_CAP)`` candidates (at least ``k``),
                which are ordered by their exact inner products with the query (module
                docstring).

        Returns:
            ``(ids, scores)``, both ``(nq, min(k, ntotal))``: int64 row ids, best first, and
            float32 scores (exact with ``exact``, else FAISS's approximate ones). A query with
            fewer reachable rows than ``k`` (ivfpq: too few cells probed) is padded with id -1
            and score -inf.
        """
        k = _validate.integer(k, "k", minimum=1)
        if not self.is_trained or self.ntotal == 0:
            raise InvalidInputError("the ANN index is empty (untrained, or no rows added): nothing to search")
        q = _validate.vectors(Q, "Q")
        q = q[None, :] if q.ndim == 1 else q
        q = self._rows(q, "Q")
        kk = min(k, self.nrows)
        if kk == 0:
            raise InvalidInputError("every row of the ANN index was removed: nothing to search")
        if exact is None:
            scores, ids = self._search(q, self._depth(kk))
            return _live_first(self._to_rows(ids), scores, kk)
        X: Any = exact if isinstance(exact, _RowSource) else np.asarray(exact)
        if X.dtype not in _EXACT_DTYPES:
            raise InvalidDTypeError(f"exact must be a float16, float32 or float64 array, got dtype {X.dtype}")
        if X.shape != (self.nrows, self.d):
            raise InvalidInputError(
                f"exact must hold the ({self.nrows}, {self.d}) rows the index stands for, got shape {X.shape}"
            )
        depth = min(self.nrows, max(kk, (self.params.refine or 1) * min(kk, REFINE_CAP)))
        _, cand = self._search(q, self._depth(depth))
        return rescore(X, q, self._to_rows(cand), kk)

    def _search(self, q: np.ndarray, k: int) -> Tuple[Any, Any]:
        """FAISS's search with this index's nprobe / efSearch passed per call (never stored
        in the shared index, so concurrent searches do not race)."""
        faiss = _faiss()
        p = self.params
        if self.kind == "hnsw":
            sp = faiss.SearchParametersHNSW()
            sp.efSearch = max(p.ef_search or 0, k)
        else:
            sp = faiss.SearchParametersIVF()
            sp.nprobe = p.nprobe
        _set_threads()
        return self._index.search(q, k, params=sp)

    # -- files ------------------------------------------------------------------------------
    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the index to ``path`` (a file; a directory: ``path/ann.faiss``) atomically:
        the previous file stays whole until the new one is complete and synced."""
        faiss = _faiss()
        target = os.fspath(path)
        if os.path.isdir(target):
            target = os.path.join(target, FILE_NAME)
        # The row of each id (after removals) goes between the header and FAISS's bytes.
        row_map = b"" if self.row_of_id is None else np.ascontiguousarray(self.row_of_id, "<i8").tobytes()
        header = json.dumps(
            {"kind": self.kind, "d": self.d, "n": self.n_expected, "ntotal": self.ntotal,
             "params": self.params.to_dict(), "row_map_bytes": len(row_map)}
        ).encode("utf-8")
        with atomic_write(target) as f:
            f.write(_MAGIC + _HEADER.pack(len(header)) + header + row_map)
            faiss.write_index(self._index, faiss.PyCallbackIOWriter(f.write))

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "AnnIndex":
        """Reads a file :meth:`save` wrote (a directory: ``path/ann.faiss``).

        Raises:
            IndexFileError: not such a file, corrupt, or its header disagrees with its content.
            MissingDependencyError: faiss-cpu is not installed.
        """
        faiss = _faiss()
        source = os.fspath(path)
        if os.path.isdir(source):
            source = os.path.join(source, FILE_NAME)
        try:
            with open(source, "rb") as f:
                if f.read(len(_MAGIC)) != _MAGIC:
                    raise IndexFileError(f"{source}: not a heatsearch ANN file (bad magic)")
                (size,) = _HEADER.unpack(f.read(_HEADER.size))
                if size > 1 << 20:
                    raise IndexFileError(f"{source}: corrupt header (length {size})")
                meta = json.loads(f.read(size).decode("utf-8"))
                map_bytes = int(meta.get("row_map_bytes", 0)) if isinstance(meta, dict) else 0
                raw_map = f.read(map_bytes) if map_bytes > 0 else b""
                if len(raw_map) != max(map_bytes, 0):
                    raise IndexFileError(f"{source}: truncated (the row map)")
                index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        except FileNotFoundError:
            raise IndexFileError(f"{source}: no ANN file there") from None
        except IndexFileError:
            raise
        except (OSError, ValueError, struct.error, RuntimeError) as e:
            raise IndexFileError(f"{source}: corrupt ANN file ({type(e).__name__}: {e})") from None
        try:
            out = cls(meta["kind"], meta["d"], meta["n"], AnnParams.from_dict(meta["params"]))
        except (KeyError, TypeError, InvalidInputError, InvalidDTypeError) as e:
            raise IndexFileError(f"{source}: bad header ({e})") from None
        if index.d != out.d or index.ntotal != meta.get("ntotal"):
            raise IndexFileError(
                f"{source}: the header says d={out.d}, {meta.get('ntotal')} rows; the index holds "
                f"d={index.d}, {index.ntotal} rows"
            )
        out._index = index
        if raw_map:
            row_of_id = np.frombuffer(raw_map, "<i8").astype(np.int64)
            live = row_of_id[row_of_id >= 0]
            if len(row_of_id) != index.ntotal or (live.size and not np.array_equal(live, np.arange(live.size))):
                raise IndexFileError(f"{source}: its row map does not fit its {index.ntotal} ids")
            out.row_of_id, out._nrows = row_of_id, int(live.size)
        return out

    def _rows(self, x: ArrayLike, name: str) -> np.ndarray:
        """``x`` as C-contiguous float32 ``(b, d)`` (FAISS computes in float32), finite."""
        arr = _validate.rows(x, name)
        if arr.shape[1] != self.d:
            raise InvalidInputError(f"{name} must have d = {self.d} columns (the index's), got shape {arr.shape}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        _validate.finite(arr, name)
        return arr

    def __repr__(self) -> str:
        fields = {k: v for k, v in self.params.to_dict().items() if v is not None}
        return f"AnnIndex(kind={self.kind!r}, d={self.d}, ntotal={self.ntotal}, params={fields})"


def rescore(X: Any, Q: np.ndarray, candidates: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Orders each query's ``candidates (nq, c)`` (ids into ``X``; -1 = none) by their exact
    inner products with ``Q (nq, d)``; returns the best ``k`` as ``(ids int64, scores float32)``
    padded with -1 / -inf. Rows are gathered in increasing order (sequential reads of a memmap).
    Equal scores: the lower id first (as :func:`heatsearch.search`)."""
    nq = Q.shape[0]
    ids = np.full((nq, k), -1, np.int64)
    scores = np.full((nq, k), -np.inf, np.float32)
    q32 = np.ascontiguousarray(Q, dtype=np.float32)
    for i in range(nq):
        rows = np.unique(candidates[i][candidates[i] >= 0])
        if not rows.size:
            continue
        # heatsearch's exact kernel on the gathered rows (its own pool): NumPy's matrix-vector
        # product goes to OpenBLAS, whose threads fight FAISS's OpenMP ones (measured: 30 ms
        # for 3000 x 512 on the loaded 2-core machine, against 6.5 ms for the gather).
        top, s = search(np.ascontiguousarray(X[rows], dtype=np.float32), q32[i : i + 1], k)
        m = top.shape[1]
        ids[i, :m], scores[i, :m] = rows[top[0]], s[0]
    return ids, scores


def _live_first(rows: np.ndarray, scores: Any, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Each query's first ``k`` rows that were found and not removed (FAISS's order kept),
    padded with -1 / -inf."""
    rows = np.asarray(rows, np.int64)
    scores = np.asarray(scores, np.float32)
    out_ids = np.full((rows.shape[0], k), -1, np.int64)
    out_scores = np.full((rows.shape[0], k), -np.inf, np.float32)
    for i in range(rows.shape[0]):
        alive = rows[i] >= 0
        r, s = rows[i][alive][:k], scores[i][alive][:k]
        out_ids[i, : len(r)], out_scores[i, : len(r)] = r, s
    return out_ids, out_scores



def _block(b: Any, name: str, d: Optional[int]) -> np.ndarray:
    if b is None:
        raise InvalidInputError("rows holds no block: nothing to build an index of")
    arr = _validate.rows(b, name)
    if d is not None and arr.shape[1] != d:
        raise InvalidInputError(f"{name} must have d = {d} columns (the first block's), got shape {arr.shape}")
    return arr


def _set_threads() -> None:
    _faiss().omp_set_num_threads(get_num_threads())
