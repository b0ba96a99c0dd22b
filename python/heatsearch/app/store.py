"""The rows of an index in memory: append-only shards, tombstones, and search by streaming.

An index's descriptors ``(n, d)`` (and, for an index of images, its pooled descriptors
``(n, C)``) are held as an ordered list of SEGMENTS, never as one array that every change
re-concatenates:

* a segment loaded from disk reads its rows from an immutable shard file (``.npy``) through
  an open file descriptor, one window at a time (a memory map of that window only, unmapped
  when done), so an index larger than RAM (or than the address space a process may use) is
  searched in bounded memory, and a shard that a later save removes stays readable while an
  old :class:`~heatsearch.app.index.Index` still uses it (POSIX keeps an open file);
* a segment added since (``add``, ``add_descriptors``) holds its rows in memory until the
  index is saved; a save turns it into a shard (:mod:`heatsearch.app.storage`) and the
  segment then reads from that file: the rows are not kept twice;
* ``remove`` records TOMBSTONES (the removed rows of each segment); the rows stay in their
  shard until a compaction rewrites it (:data:`COMPACT_DEAD_FRACTION`, or
  :meth:`Store.compact`).

Row numbers seen by users (``SearchHit.row``, ``Index.paths[row]``) are LIVE rows: the rows
of the segments in order, tombstoned ones skipped.

Exact search (:meth:`Store.search`) streams windows of about :data:`WINDOW_BYTES` through the
Rust top-k kernel (:func:`heatsearch.search.search`), converting float16 windows to float32,
and merges the per-window top-k: the same ranks and scores as one search over the
concatenation (ties still go to the lower row). Segments are never modified in place:
:meth:`Store.copy` is a cheap snapshot (the server changes a copy while searches run).
"""

from __future__ import annotations

import mmap
import os
import weakref
from dataclasses import dataclass, replace
from typing import IO, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InvalidInputError
from ..search import search

__all__ = ["Rows", "Segment", "Store", "segment_blocks", "open_rows", "WINDOW_BYTES", "COMPACT_DEAD_FRACTION", "STORAGE_DTYPES"]

#: Bytes of descriptors one search window holds (as float32): 32 MB, e.g. 16384 rows of
#: dimension 512. Large enough that the kernel's per-call cost vanishes (1M x 512 streamed
#: costs the same as in memory within the run-to-run spread, README "Descriptor store"),
#: small enough to bound the memory a search adds to what the process holds.
WINDOW_BYTES = 32 << 20
#: A shard whose removed rows exceed this fraction of its rows is rewritten with its live
#: rows only at the next save (so removed rows cost at most as much disk and search time as
#: live ones); :meth:`Store.compact` rewrites every shard holding removed rows.
COMPACT_DEAD_FRACTION = 0.5
#: What the descriptors may be stored as (``IndexConfig.storage_dtype``): float32, or float16
#: (half the disk and I/O; README "Descriptor store" measures its effect on mAP).
STORAGE_DTYPES = ("float32", "float16")


class Rows:
    """One column of a segment: ``(rows, width)`` values in memory or in a ``.npy`` file.

    File-backed rows keep the file open (``handle``) and map one window at a time.
    """

    def __init__(
        self,
        array: Optional[np.ndarray] = None,
        *,
        handle: Optional[IO[bytes]] = None,
        offset: int = 0,
        shape: Tuple[int, int] = (0, 0),
        dtype: "np.dtype | None" = None,
    ) -> None:
        self.array = array
        self.handle = handle
        self.offset = offset
        if array is not None:
            self.shape: Tuple[int, int] = (int(array.shape[0]), int(array.shape[1]))
            self.dtype = array.dtype
        else:
            self.shape = (int(shape[0]), int(shape[1]))
            self.dtype = np.dtype(dtype)
        self._whole: Optional[np.ndarray] = None
        if handle is not None:  # closed when these rows are let go (or at exit), not left to GC
            weakref.finalize(self, handle.close)

    @property
    def on_disk(self) -> bool:
        return self.array is None

    def window(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (a view of the memory array, or a fresh read-only map of
        just those rows of the file)."""
        if self.array is not None:
            return self.array[start:stop]
        assert self.handle is not None
        stop = min(stop, self.shape[0])
        width = self.shape[1]
        if stop <= start or width == 0:
            return np.empty((max(0, stop - start), width), self.dtype)
        row_bytes = width * self.dtype.itemsize
        begin = self.offset + start * row_bytes
        aligned = begin - begin % mmap.ALLOCATIONGRANULARITY
        length = (stop - start) * row_bytes + (begin - aligned)
        m = mmap.mmap(self.handle.fileno(), length, offset=aligned, access=mmap.ACCESS_READ)
        # The array keeps the map alive and unmaps it when it is collected.
        return np.frombuffer(m, self.dtype, (stop - start) * width, begin - aligned).reshape(stop - start, width)

    def whole(self) -> np.ndarray:
        """All rows: the memory array, or a memory map of the whole file (cached)."""
        if self.array is not None:
            return self.array
        if self._whole is None:
            assert self.handle is not None
            self._whole = np.memmap(self.handle, self.dtype, "r", self.offset, self.shape)
        return self._whole

    def take(self, rows: np.ndarray, window_rows: int) -> np.ndarray:
        """The rows ``rows`` (physical, any order), reading the file one window at a time."""
        if self.array is not None:
            return np.asarray(self.array[rows])
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        w = sorted_rows // window_rows
        cuts = np.flatnonzero(np.diff(w)) + 1
        for part in np.split(np.arange(len(rows)), cuts):
            start = int(w[part[0]]) * window_rows
            block = self.window(start, start + window_rows)
            out[order[part]] = block[sorted_rows[part] - start]
        return out


@dataclass(frozen=True)
class Segment:
    """Rows in order: final descriptors ``desc (rows, d)``, pooled ones ``pooled (rows, C)``
    (None for an index of descriptors computed elsewhere), ``dead`` (sorted int64 rows of the
    segment that were removed), and where its shard is (None: not saved yet).

    ``shard``: the shard's id; ``home``: the version directory holding its files (a save links
    them into the next one); ``stored_paths``: the paths its paths file holds (one per row,
    dead ones included), to tell whether the file still says what the index says."""

    desc: Rows
    pooled: Optional[Rows]
    dead: np.ndarray
    shard: Optional[str] = None
    home: Optional[str] = None
    stored_paths: Optional[Tuple[str, ...]] = None

    @property
    def rows(self) -> int:
        return self.desc.shape[0]

    @property
    def live(self) -> int:
        return self.rows - len(self.dead)

    def alive(self) -> np.ndarray:
        """The segment's live rows (physical, ascending)."""
        if not len(self.dead):
            return np.arange(self.rows, dtype=np.int64)
        mask = np.ones(self.rows, bool)
        mask[self.dead] = False
        return np.flatnonzero(mask)


class Store:
    """The segments of an index (see the module docstring)."""

    def __init__(self, segments: Optional[List[Segment]] = None) -> None:
        self.segments: List[Segment] = list(segments or [])
        #: Set by :meth:`compact`: the next save rewrites every shard holding removed rows.
        self.compact_all = False

    def copy(self) -> "Store":
        out = Store(self.segments)
        out.compact_all = self.compact_all
        return out

    # -- shape -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(s.live for s in self.segments)

    @property
    def dim(self) -> Optional[int]:
        return self.segments[0].desc.shape[1] if self.segments else None

    @property
    def dtype(self) -> Optional[np.dtype]:
        return self.segments[0].desc.dtype if self.segments else None

    @property
    def has_pooled(self) -> bool:
        return bool(self.segments) and all(s.pooled is not None for s in self.segments)

    def window_rows(self) -> int:
        d = max(1, self.dim or 1)
        return max(1024, WINDOW_BYTES // (4 * d))

    # -- changes ---------------------------------------------------------------------------
    def append(self, desc: np.ndarray, pooled: Optional[np.ndarray]) -> None:
        """New rows (held in memory until saved). ``desc`` and ``pooled`` as they will be
        stored (the caller checked and converted them)."""
        if len(desc):
            self.segments.append(
                Segment(Rows(desc), None if pooled is None else Rows(pooled), np.empty(0, np.int64))
            )

    def remove(self, live_rows: Sequence[int]) -> None:
        """Tombstones the given live rows (distinct, in range: the caller checked)."""
        rows = np.sort(np.asarray(live_rows, np.int64))
        out, start = [], 0
        for seg in self.segments:
            stop = start + seg.live
            mine = rows[(rows >= start) & (rows < stop)] - start
            if len(mine):
                phys = seg.alive()[mine]
                seg = replace(seg, dead=np.union1d(seg.dead, phys).astype(np.int64))
            if seg.live:  # a segment left with no row is dropped (its shard is no longer referenced)
                out.append(seg)
            start = stop
        if not out and self.segments:  # everything removed: keep the dimensions
            first = self.segments[0]
            empty = Segment(Rows(np.empty((0, first.desc.shape[1]), first.desc.dtype)),
                            None if first.pooled is None else Rows(np.empty((0, first.pooled.shape[1]), first.pooled.dtype)),
                            np.empty(0, np.int64))
            out = [empty]
        self.segments = out

    def compact(self) -> None:
        """Asks the next save to rewrite every shard that holds removed rows."""
        self.compact_all = True

    # -- reading ---------------------------------------------------------------------------
    def blocks(self, column: str = "desc") -> Iterator[Tuple[int, np.ndarray]]:
        """``(first live row, block)``: the live rows of ``column`` ("desc" or "pooled") in
        order, a window at a time (views of memory or of the file where nothing was removed,
        copies otherwise)."""
        step = self.window_rows()
        start = 0
        for seg in self.segments:
            for _, block in segment_blocks(seg, column, step):
                yield start, block
                start += len(block)

    def materialise(self, column: str = "desc", dtype: Optional[type] = None) -> np.ndarray:
        """All live rows of ``column`` as one in-memory array (``dtype``: converted to)."""
        width = (self.segments[0].desc if column == "desc" else self.segments[0].pooled).shape[1]  # type: ignore[union-attr]
        base = (self.segments[0].desc if column == "desc" else self.segments[0].pooled).dtype  # type: ignore[union-attr]
        out = np.empty((len(self), width), dtype or base)
        for start, block in self.blocks(column):
            out[start : start + len(block)] = block
        return out

    def gather(self, live_rows: np.ndarray, column: str = "desc", dtype: "type | np.dtype" = np.float32) -> np.ndarray:
        """The live rows ``live_rows`` (any shape of int, any order) of ``column``, as
        ``dtype``: ``live_rows.shape + (width,)``. Reads only the windows holding them."""
        flat = np.asarray(live_rows, np.int64).ravel()
        first = self.segments[0].desc if column == "desc" else self.segments[0].pooled
        width = first.shape[1]  # type: ignore[union-attr]
        out = np.empty((len(flat), width), dtype)
        step = self.window_rows()
        start = 0
        for seg in self.segments:
            stop = start + seg.live
            pick = np.flatnonzero((flat >= start) & (flat < stop))
            if len(pick):
                local = flat[pick] - start
                phys = local if not len(seg.dead) else seg.alive()[local]
                rows: Rows = seg.desc if column == "desc" else seg.pooled  # type: ignore[assignment]
                out[pick] = rows.take(phys, step)
            start = stop
        return out.reshape(np.shape(live_rows) + (width,))

    def search(self, Q: np.ndarray, k: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Exact top-k of each query over the live rows: as
        :func:`heatsearch.search.search` over their concatenation (``Q``: float32, or
        float64 for a float64 store), streamed window by window. ``k=None``: every row."""
        n = len(self)
        kk = n if k is None else min(k, n)
        if len(self.segments) == 1 and not len(self.segments[0].dead) and not self.segments[0].desc.on_disk:
            X = self.segments[0].desc.array
            assert X is not None
            if X.dtype == Q.dtype:
                return search(X, Q, kk)
        ranks: List[np.ndarray] = []
        scores: List[np.ndarray] = []
        for start, block in self.blocks("desc"):
            if block.dtype != Q.dtype:
                block = block.astype(Q.dtype)
            r, s = search(block, Q, min(kk, len(block)))
            ranks.append(r + start)
            scores.append(s)
        if not ranks:
            return np.empty((len(Q), 0), np.int64), np.empty((len(Q), 0), Q.dtype)
        if len(ranks) == 1:
            return ranks[0], scores[0]
        R = np.concatenate(ranks, axis=1)
        S = np.concatenate(scores, axis=1)
        # Best score first; equal scores: the lower row first (as the kernel orders them).
        order = np.lexsort((R, -S), axis=1)[:, :kk]
        return np.take_along_axis(R, order, 1), np.take_along_axis(S, order, 1)

    def check_finite(self, name: str) -> None:
        """InvalidInputError naming the first live row holding NaN or infinity."""
        for column in ("desc", "pooled") if self.has_pooled else ("desc",):
            for start, block in self.blocks(column):
                bad = ~np.isfinite(block).all(axis=1)
                if bad.any():
                    raise InvalidInputError(
                        f"{name}: row {start + int(np.argmax(bad))} of the "
                        f"{'descriptors' if column == 'desc' else 'pooled descriptors'} holds NaN or infinity"
                    )


def segment_blocks(seg: Segment, column: str, step: int) -> Iterator[Tuple[int, np.ndarray]]:
    """``(first live row of the segment, block)``: its live rows of ``column``, ``step`` rows
    of the file at a time."""
    rows: Rows = seg.desc if column == "desc" else seg.pooled  # type: ignore[assignment]
    dead = seg.dead
    start = 0
    for lo in range(0, seg.rows, step):
        hi = min(lo + step, seg.rows)
        block = rows.window(lo, hi)
        if len(dead):
            gone = dead[(dead >= lo) & (dead < hi)] - lo
            if len(gone):
                block = np.delete(block, gone, axis=0)
        if len(block):
            yield start, block
            start += len(block)


def open_rows(path: "os.PathLike[str] | str") -> Rows:
    """File-backed :class:`Rows` of a 2-D ``.npy`` file (C order), its file kept open.

    Raises ValueError (a damaged header, a wrong shape or order) or OSError."""
    handle = open(path, "rb")
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if len(shape) != 2 or fortran:
            raise ValueError(f"expected a 2-D array in C order, got shape {shape}{' (Fortran order)' if fortran else ''}")
        offset = handle.tell()
        size = os.fstat(handle.fileno()).st_size
        need = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
        if size < need:
            raise ValueError(f"truncated: {size} bytes, its header says {need}")
        return Rows(handle=handle, offset=offset, shape=shape, dtype=dtype)
    except BaseException:
        handle.close()
        raise
