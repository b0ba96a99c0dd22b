"""The on-disk format of an image index, written so that nothing a user had is ever lost.

An index is a directory (format version 3)::

    INDEX/
      index.json                {"format": "heatsearch-index", "version": 3, "data": "data-..."}
      data-<writer>-<random>/   the current version, the one index.json names:
        meta.json                 configuration, source, collection root, sizes, dtype, and the
                                  ordered list of shards: {"rows", "removed", "descriptors",
                                  "pooled", "paths"} (file names, and the removed rows)
        <id>.desc.npy             (rows, d) final descriptors of one shard, float32 or float16
        <id>.pooled.npy           (rows, C) float32 pooled descriptors (indexes of images)
        <id>.paths.json           the shard's paths (relative to the root, or absolute), or the
                                  names of its rows (indexes of descriptors)
        mean.npy                  (C,) HeW centering mean (HeW pooling, once images were added)
        whitening.npz             the fitted PCAWhitening (when there is one)
        copies.npy                (C (C + 1) / 2,) float32: the upper triangle (row by row) of
                                  the difference scatter of the images' synthetic copies, which
                                  the learned whitening uses (3.3 MB at C = 1280, whatever the
                                  number of images); its pair count is meta.json's "copy_pairs"
        writer.json               who wrote this version (host, pid, time), for people
      .heatsearch-parts/        only while heatsearch.distributed builds the index: its
                                finished parts, what a rerun resumes from (PARTS_DIR), and
                                the shard its last stage writes there (write_shard_column),
                                which the save hard-links into the new version

``index.json`` is the pointer: it names the one complete version. A version's rows are its
shards in order, less the rows each lists as ``removed`` (tombstones: a remove rewrites no
shard; see :mod:`heatsearch.app.store` for when a save compacts one). Shard files are
immutable: written once (fsync-ed), never modified. A version directory holds each shard it
uses, either written by the save that made it (new rows, compacted shards) or as a HARD LINK to
the same file in the version it replaced: so a save of ``m`` new rows writes ``O(m)`` bytes
(plus one link per kept shard and the small metadata), and every version directory stays
complete by itself (removing one never removes a file another uses, whatever saves run
concurrently; where the file system has no hard links, the shard is copied).

Version 2 (heatsearch 0.3/0.4) held ``descriptors.npy``, ``pooled.npy`` and the paths in
``meta.json`` of its version directory; version 1 (heatsearch 0.1/0.2) kept those files
directly in ``INDEX/`` (its ``index.json`` was the metadata). Both are still read (one
memory-mapped array, as then), and the next save converts them to version 3 (writing every
row once).

**Saving** (:func:`write_index`) never touches the current version: it writes a complete new
version directory inside the index (every file and the directory fsync-ed), then writes the
new pointer inside that directory and renames it over ``index.json``. (Linking a kept shard
is one step; a shard whose file a concurrent save already removed is written again from the
file this process holds open.) That rename is the
switch, one atomic step (``os.replace``, atomic on POSIX and Windows): a process killed at any
moment leaves ``index.json`` naming either the complete old version or the complete new one.
Only after the switch is the old version removed (for version 1, its files). The directory
name says which process writes it (:mod:`heatsearch.app._writers`), so that what a killed save
left behind can be told from a save still running.

**Loading** (:func:`read_index`) follows the pointer, checks every field of the metadata and
every array against it (each shard's header, dtype and shape; its values finite, read a window
at a time) (:class:`~heatsearch.errors.IndexFileError` naming the file otherwise),
retries when a concurrent save removed the version being read, and then removes leftovers
(:func:`collect_leftovers`): versions written by processes that are gone and are not current,
and the version-1 files a conversion did not get to remove. Never another index's files (it
looks only inside its own directory), never the version a running save is writing.

What heatsearch 0.1/0.2's saves left BESIDE an index (hidden ``.NAME.tmp-*`` / ``.NAME.old-*``
folders) is reported by a warning on load and save, never deleted (nothing says whether a
0.1/0.2 process still writes one, and an ``.old`` one may be the only copy); an index that such
a save moved aside and never put back (killed between its two renames) is put back by load.

**Replacing** (:func:`check_target`): an existing directory is replaced only if it is a
heatsearch index holding nothing but an index's own files; anything else is refused before
anything is written (the command line checks it before extracting features).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Literal, NoReturn, Optional, Tuple, Union

import numpy as np

from .. import _validate
from ..errors import HeatsearchError, IndexFileError, InvalidInputError
from ..whitening import PCAWhitening
from . import _writers
from .store import COMPACT_DEAD_FRACTION, Rows, Segment, Store, open_rows, segment_blocks

__all__ = [
    "is_internal_name",
    "INDEX_FORMAT",
    "INDEX_VERSION",
    "PARTS_DIR",
    "new_shard_id",
    "write_shard_column",
    "open_shard",
    "READ_VERSIONS",
    "StoredIndex",
    "check_target",
    "write_index",
    "read_index",
    "collect_leftovers",
    "version_file",
]

#: Format name and version written into ``index.json``.
INDEX_FORMAT = "heatsearch-index"
INDEX_VERSION = 3
#: Versions :func:`read_index` reads (1: heatsearch 0.1/0.2, files directly in the directory;
#: 2: heatsearch 0.3-0.4, one descriptors.npy per version).
READ_VERSIONS = (1, 2, 3)

POINTER = "index.json"
META = "meta.json"
WRITER = "writer.json"
DESCRIPTORS = "descriptors.npy"
POOLED = "pooled.npy"
MEAN = "mean.npy"
WHITENING = "whitening.npz"
COPIES = "copies.npy"
#: The array files of a version (in INDEX/ itself for version 1).
DATA_FILES = (DESCRIPTORS, POOLED, MEAN, WHITENING)
#: The folder inside an index where :func:`heatsearch.distributed.build_index` keeps the parts
#: of a build in progress (what a rerun resumes from); removed once the index is saved. A target
#: holding it is still an index (or an interrupted build of one) that may be written.
PARTS_DIR = ".heatsearch-parts"
#: The new pointer, written inside the new version's directory and renamed over index.json.
_NEW_POINTER = "index.json.new"

_META_KEYS = {
    1: ("format", "version", "config", "count", "dim", "paths", "has_mean", "has_whitening",
        "whitening_learned"),
    2: ("format", "version", "config", "root", "count", "dim", "channels", "paths", "has_mean",
        "has_whitening", "whitening_learned", "mean_images", "whitening_images"),
    3: ("format", "version", "config", "source", "root", "count", "dim", "channels", "dtype",
        "has_mean", "has_whitening", "whitening_learned", "mean_images", "whitening_images",
        "shards", "copy_pairs"),
}
#: Keys of version 3 that earlier writers of it did not write, and their value then.
_META_LATER = {3: {"copy_pairs": 0}}
#: The keys of one entry of version 3's ``shards``.
_SHARD_KEYS = ("rows", "removed", "descriptors", "pooled", "paths")
#: Names of shard files: 16 hex digits (random, so that two saves never pick the same) and
#: what the file holds.
SHARD_FILE = re.compile(r"^[0-9a-f]{16}\.(desc\.npy|pooled\.npy|paths\.json)$")
#: What an index holds (version 3's ``source``): rows heatsearch computed from images, or
#: descriptors computed elsewhere (:meth:`heatsearch.app.index.Index.from_descriptors`), whose
#: ``paths`` are the caller's identifiers, kept verbatim, and which have no pooled rows.
SOURCES = ("images", "descriptors")
#: Dtypes of stored final descriptors (version 3's ``dtype``); pooled ones are float32.
DESCRIPTOR_DTYPES = ("float32", "float16")
#: A reader retries this many times when the version it reads is replaced under it.
_READ_ATTEMPTS = 5

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class StoredIndex:
    """What an index version holds. Arrays may be memory-mapped (read-only).

    ``descriptors (n, d)`` and ``pooled (n, C)`` are float32; both are None for an index that
    never held an image (``n = d = C = 0``). ``paths``: as stored, relative to ``root`` with
    ``/`` separators, or absolute (images outside the root); version 1 stored them as they were
    given (relative to an unrecorded working directory) and has no ``root`` (None).
    """

    config: Dict[str, Any]
    paths: List[str]
    descriptors: Optional[np.ndarray]
    pooled: Optional[np.ndarray]
    mean: Optional[np.ndarray]
    whitening: Optional[PCAWhitening]
    whitening_learned: bool
    root: Optional[str] = None
    #: How many images the HeW centering mean / the learned whitening came from (None: not
    #: recorded, as in version 1, or not learned by the index).
    mean_images: Optional[int] = None
    whitening_images: Optional[int] = None
    #: The format version read (what :func:`write_index` writes: :data:`INDEX_VERSION`).
    version: int = INDEX_VERSION
    #: The file each part was read from (``"meta"``, ``"descriptors"``, ...), for messages.
    files: Dict[str, str] = field(default_factory=dict)
    #: Version 3: the rows as shards (then ``descriptors`` and ``pooled`` are None and
    #: ``paths`` are the live rows' paths). Written from this when it is set.
    store: Optional[Store] = None
    #: One of :data:`SOURCES`.
    source: str = "images"
    #: The dtype of the stored final descriptors (one of :data:`DESCRIPTOR_DTYPES`).
    dtype: str = "float32"
    #: The difference scatter ``(C, C)`` float64 of ``copy_pairs`` images and their synthetic
    #: copies (:attr:`heatsearch.app.index.Index.copy_scatter`); None when ``copy_pairs`` is 0.
    copy_scatter: Optional[np.ndarray] = None
    copy_pairs: int = 0
    #: A ``copies.npy`` that holds exactly ``copy_scatter`` (the one it was read from or last
    #: saved to): a save hard-links it instead of writing it again.
    copies_file: Optional[str] = None


class _Bad(Exception):
    """Internal: what is wrong, and in which file (turned into IndexFileError)."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(message)
        self.file = file


# ---------------------------------------------------------------------------------------------
# The target check.
# ---------------------------------------------------------------------------------------------
def is_internal_name(name: str) -> bool:
    """Whether a path component is one heatsearch made and a user never chose: a version
    directory (``data-...``), an atomic write's temporary file (``.NAME.XXXX.tmp``) or a 0.1
    save's hidden sibling (``.NAME.tmp-*``, ``.NAME.old-*``). Messages show the user's folder
    instead."""
    return _writers.parse(name) is not None or re.match(r"^\..+\.(tmp|old)(-|$)", name) is not None


def check_target(directory: PathLike) -> None:
    """Raises :class:`IndexFileError` unless an index may be saved to ``directory``.

    Accepted: a path that does not exist yet (its nearest existing parent must be a directory
    this process may write in), an empty directory, what an interrupted first save left (only
    version directories), or a heatsearch index (``index.json`` with the format name and a
    version this heatsearch reads) that holds nothing but the index's own files. Anything
    else (a file, a folder of other files, an ``index.json`` of something else, an index with
    foreign files in it) is refused, naming the target and what is in the way. Called by the
    command line before extracting anything, and by :func:`write_index` before writing.
    """
    target = Path(directory)
    shown = repr(str(target))
    if not os.path.lexists(target):
        parent = target.absolute().parent
        while not os.path.lexists(parent) and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise IndexFileError(f"cannot create the index {shown}: {str(parent)!r} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise IndexFileError(f"cannot create the index {shown}: no permission to write in {str(parent)!r}")
        return
    if not target.is_dir():
        raise IndexFileError(
            f"{shown} exists and is not a directory (not a heatsearch index): refusing to "
            "replace it"
        )
    names = sorted(os.listdir(target))
    if POINTER in names:
        why = _not_an_index(target / POINTER)
        if why:
            raise IndexFileError(
                f"{shown} is not a heatsearch index ({POINTER} {why}): refusing to replace it; "
                "nothing was written"
            )
        foreign = [n for n in names if n != POINTER and n not in DATA_FILES and not _is_version_dir(target, n)
                   and not _is_parts_dir(target, n)]
        what = "holds files that are not part of a heatsearch index"
    else:
        foreign = [n for n in names if not _is_version_dir(target, n) and not _is_parts_dir(target, n)]
        what = f"is not a heatsearch index (no {POINTER}) and is not empty; it holds"
    if foreign:
        listed = ", ".join(repr(n) for n in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise IndexFileError(
            f"{shown} {what}: {listed}; refusing to replace it (nothing was written): choose "
            "another output folder, or move those files away"
        )
    if not os.access(target, os.W_OK | os.X_OK):
        raise IndexFileError(f"cannot replace the index {shown}: no permission to write in it")


def _not_an_index(pointer: Path) -> str:
    """Why ``pointer`` is not the ``index.json`` of an index this heatsearch reads ("" if it is)."""
    try:
        meta = _read_json(pointer)
    except _Bad as e:
        return str(e)
    except OSError as e:
        return f"cannot be read: {e}"
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        return f"has format {found!r}, not {INDEX_FORMAT!r}"
    version = meta.get("version")
    if type(version) is not int or version not in READ_VERSIONS:
        return f"has version {version!r}; this heatsearch reads versions {list(READ_VERSIONS)}"
    return ""


def _is_parts_dir(parent: Path, name: str) -> bool:
    return name == PARTS_DIR and (parent / name).is_dir() and not (parent / name).is_symlink()


def _is_version_dir(parent: Path, name: str) -> bool:
    return _writers.parse(name) is not None and (parent / name).is_dir() and not (parent / name).is_symlink()


# ---------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------
def write_index(
    directory: PathLike,
    index: StoredIndex,
    *,
    check: Optional[Callable[[], None]] = None,
    extra: Optional[Dict[str, Callable[[Path], None]]] = None,
) -> Store:
    """Writes ``index`` as the new current version of the index ``directory`` (created if
    needed), atomically: see the module docstring. Returns the index's rows as they now are:
    every segment reading from its shard in the new version (the caller keeps these, so the
    rows it held in memory are not held twice).

    ``index.paths`` are written as they are (relative to ``index.root``, or absolute; the
    identifiers of an index of descriptors); ``index.root`` must be an absolute path (None
    for an index of descriptors). ``check``: called after this module's checks of ``index``
    and before anything is written (the caller's checks of what the data means).
    ``extra``: more files of this version, ``{name: write(path)}``, written into the new
    version's directory before the switch (so they belong to exactly these descriptors; the
    approximate index, :func:`version_file`).

    Raises:
        InvalidInputError: ``index`` is inconsistent (shapes, dtypes, NaN, a mean or whitening
            of another dimension, ...): nothing is written. What is saved always loads.
        IndexFileError: ``directory`` may not be replaced (see :func:`check_target`).
        OSError: writing failed; the index that was there is untouched and what this save
            wrote is removed.
    """
    try:
        meta, store = _contents(index)
    except _Bad as e:
        raise InvalidInputError(f"cannot save the index: {e.file}: {e}") from None
    if check is not None:
        check()
    target = Path(directory)
    check_target(target)
    _warn_about_version1_leftovers(target)
    target.mkdir(parents=True, exist_ok=True)
    collect_leftovers(target)  # first, so a disk that leftovers filled has room for this save
    staging = target / _writers.new_name()
    key = os.path.abspath(staging)
    _writers.begin(key)
    try:
        switched = False
        try:
            _make_dir(staging)
            saved = _write_version(target, staging, meta, store, index)
            _write_extra(staging, extra or {})
            previous = _current(target)
            _write_json(staging / _NEW_POINTER, {"format": INDEX_FORMAT, "version": INDEX_VERSION, "data": staging.name})
            _replace(staging / _NEW_POINTER, target / POINTER)  # the switch
            switched = True
            _fsync_dir(target)
        except BaseException:
            if not switched:
                _remove_tree(staging)
            raise
    finally:
        _writers.end(key)
    _remove_replaced(target, previous, staging.name)
    return saved


def _contents(index: StoredIndex) -> Tuple[Dict[str, Any], Store]:
    """The metadata (without its ``shards``) and the rows to write, checked as
    :func:`read_index` checks them."""
    w = index.whitening
    if w is not None and not (isinstance(w, PCAWhitening) and w.is_fitted):
        raise _Bad(WHITENING, f"whitening must be a fitted PCAWhitening, got {w!r}")
    w_in, w_out = _whitening_dims(w)
    mean = None if index.mean is None else np.asarray(index.mean)
    store = index.store
    if store is None:  # rows given as arrays (one segment)
        store = Store()
        if index.descriptors is not None:
            desc = np.asarray(index.descriptors)
            pooled = None if index.pooled is None else np.asarray(index.pooled)
            if desc.ndim != 2 or (pooled is not None and pooled.ndim != 2):
                raise _Bad(DESCRIPTORS, f"must be 2-D (count, dim), got shape {desc.shape}")
            store.segments.append(Segment(Rows(desc), None if pooled is None else Rows(pooled), np.empty(0, np.int64)))
    if index.source not in SOURCES:
        raise _Bad(META, f"'source' must be one of {list(SOURCES)}, got {index.source!r}")
    images = index.source == "images"
    if store.segments and images and not store.has_pooled:
        raise _Bad(POOLED, "an index of images must hold the pooled descriptors of every row")
    if store.has_pooled:
        channels = store.segments[0].pooled.shape[1]  # type: ignore[union-attr]
    elif w is not None:
        channels = w_in
    else:
        channels = int(mean.shape[0]) if mean is not None and mean.ndim == 1 else 0
    if not images:
        channels = 0
    if store.dim is not None:
        dim = int(store.dim)
    else:
        dim = w_out if w is not None else channels
    root = index.root
    if images and (not isinstance(root, str) or not os.path.isabs(root)):
        raise _Bad(META, f"the collection root must be an absolute path, got {root!r}")
    meta: Dict[str, Any] = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "config": index.config,
        "source": index.source,
        "root": root if images else None,
        "count": len(index.paths),
        "dim": dim,
        "channels": channels,
        "dtype": index.dtype,
        "has_mean": mean is not None,
        "has_whitening": w is not None,
        "whitening_learned": bool(index.whitening_learned),
        "mean_images": index.mean_images,
        "whitening_images": index.whitening_images,
        "shards": [],
        "copy_pairs": index.copy_pairs,
    }
    _check_meta(meta, INDEX_VERSION, writing=True)
    _check_paths(list(index.paths), len(index.paths), INDEX_VERSION, index.source)
    if len(store) != len(index.paths):
        raise _Bad(DESCRIPTORS, f"must have shape (count, dim) = ({len(index.paths)}, {store.dim}) as the paths say, "
                                f"got ({len(store)}, {store.dim})")
    for seg in store.segments:
        _check_rows(DESCRIPTORS, seg.desc, index.dtype, dim, "dim")
        if images:
            _check_rows(POOLED, seg.pooled, "float32", channels, "channels")  # type: ignore[arg-type]
    for seg in store.segments:  # rows already in shards were checked when they were written
        if not seg.desc.on_disk:
            for column, name in (("desc", DESCRIPTORS), ("pooled", POOLED)):
                if column == "pooled" and not images:
                    continue
                for _, block in segment_blocks(seg, column, store.window_rows()):
                    with _field(name):
                        _validate.finite(np.ascontiguousarray(block, np.float64 if block.dtype == np.float64 else np.float32), "its values")
    if len(store) and (dim == 0 or (images and channels == 0)):
        raise _Bad(DESCRIPTORS, f"{len(store)} images with descriptors of dimension {dim} (pooled: {channels})")
    _check_mean_whitening(meta, mean, w)
    _check_copy_pairs(meta, index.copy_scatter is not None)
    if index.copy_pairs:
        _check_scatter(index.copy_scatter, channels)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _Bad(META, f"the configuration cannot be written as JSON ({e})") from None
    return meta, store


def _check_rows(name: str, rows: Optional[Rows], dtype: str, width: int, what: str) -> None:
    if rows is None:
        raise _Bad(name, "missing for some rows")
    if rows.dtype != np.dtype(dtype):
        raise _Bad(name, f"must be {dtype}, got dtype {rows.dtype}")
    if rows.shape[1] != width:
        raise _Bad(name, f"must have shape (rows, {what}) = (rows, {width}) as the metadata says, got {rows.shape}")


def _write_version(target: Path, staging: Path, meta: Dict[str, Any], store: Store, index: StoredIndex) -> Store:
    """Writes a version into ``staging``: its metadata, mean and whitening, and its shards:
    new rows (and shards a compaction rewrites) as new shard files, shards already in this
    index as hard links to their files (a fallback copy where the file system has no links),
    so that each version directory is complete by itself and removing one never removes a
    file another uses. Returns the segments reading from the new version."""
    w = _writers.me()
    _write_json(staging / WRITER, {
        "host": socket.gethostname(), "pid": w.pid, "process_start": w.start, "boot": w.boot,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    if index.mean is not None:
        _write_npy(staging / MEAN, np.asarray(index.mean))
    if index.whitening is not None:
        index.whitening.save(staging / WHITENING)
    if index.copy_pairs and not (index.copies_file is not None and _linked(Path(index.copies_file), staging / COPIES)):
        scatter = np.asarray(index.copy_scatter, np.float64)
        _write_npy(staging / COPIES, scatter[np.triu_indices(scatter.shape[0])].astype(np.float32))
    step = store.window_rows()
    here = os.path.realpath(target)
    rewrite = _to_rewrite(store, here)
    paths = list(index.paths)
    entries: List[Dict[str, Any]] = []
    segments: List[Segment] = []
    group: List[Segment] = []
    start = 0
    group_start = 0

    def flush() -> None:
        nonlocal group
        if not group:
            return
        shard = secrets.token_hex(8)
        rows = sum(s.live for s in group)
        if not rows:  # an emptied index: no shard
            group = []
            return
        pooled_name = f"{shard}.pooled.npy" if group[0].pooled is not None else None
        names: Dict[str, Any] = {"descriptors": f"{shard}.desc.npy", "pooled": pooled_name, "paths": f"{shard}.paths.json"}
        _write_npy_blocks(staging / names["descriptors"], group[0].desc.dtype, (rows, group[0].desc.shape[1]),
                          (b for s in group for _, b in segment_blocks(s, "desc", step)))
        if names["pooled"] is not None:
            _write_npy_blocks(staging / names["pooled"], group[0].pooled.dtype, (rows, group[0].pooled.shape[1]),  # type: ignore[union-attr]
                              (b for s in group for _, b in segment_blocks(s, "pooled", step)))
        mine = paths[group_start : group_start + rows]
        _write_json(staging / names["paths"], mine)
        entries.append({"rows": rows, "removed": [], **names})
        segments.append(_open_segment(staging, names, rows, [], tuple(mine)))
        group = []

    for seg in store.segments:
        if seg.shard is None or id(seg) in rewrite:
            if not group:
                group_start = start
            group.append(seg)
        else:
            flush()
            entry, saved = _keep_shard(staging, seg, paths[start : start + seg.live], step)
            entries.append(entry)
            segments.append(saved)
        start += seg.live
    flush()
    _write_json(staging / META, dict(meta, shards=entries))
    _fsync_dir(staging)
    out = Store(segments)
    return out


#: A save rewrites the trailing run of small shards (fewer than SMALL_SHARD_ROWS rows each)
#: into one once there are MERGE_SMALL_SHARDS of them, so that many small adds (the server
#: saves after each upload) do not leave thousands of files (and open files): a row is
#: rewritten a bounded number of times, never the whole index.
SMALL_SHARD_ROWS = 4096
MERGE_SMALL_SHARDS = 8


def _to_rewrite(store: Store, here: str) -> set:
    """The ids of the saved segments this save rewrites: shards of another index directory
    (an index saved elsewhere: copied), shards with too many removed rows (compaction), and
    a long trailing run of small shards."""
    out = set()
    for seg in store.segments:
        if seg.shard is None:
            continue
        elsewhere = seg.home is None or os.path.dirname(os.path.realpath(seg.home)) != here
        dead = len(seg.dead)
        if elsewhere or (dead and (store.compact_all or dead > COMPACT_DEAD_FRACTION * seg.rows)):
            out.add(id(seg))
    tail = []
    for seg in reversed(store.segments):
        if seg.shard is not None and seg.rows >= SMALL_SHARD_ROWS:
            break
        if seg.shard is not None:
            tail.append(seg)
    if len(tail) >= MERGE_SMALL_SHARDS:
        out.update(id(s) for s in tail)
    return out


def _keep_shard(staging: Path, seg: Segment, live_paths: List[str], step: int) -> Tuple[Dict[str, Any], Segment]:
    """Links the files of a shard of this index into ``staging`` (its paths file rewritten
    when the paths changed, e.g. a new root), with its tombstones."""
    assert seg.shard is not None and seg.home is not None
    names = dict(json.loads(seg.shard))
    home = Path(seg.home)
    _link_or_copy(home / names["descriptors"], staging / names["descriptors"], seg.desc, step)
    if names["pooled"] is not None:
        _link_or_copy(home / names["pooled"], staging / names["pooled"], seg.pooled, step)  # type: ignore[arg-type]
    stored = list(seg.stored_paths or ())
    alive = seg.alive()
    if names["paths"] is not None and len(stored) == seg.rows and [stored[i] for i in alive] == live_paths:
        _link_or_copy(home / names["paths"], staging / names["paths"], None, step, text=stored)
    else:
        if len(stored) != seg.rows:  # a shard with no paths file yet (open_shard)
            stored = [""] * seg.rows
        for i, p in zip(alive, live_paths):
            stored[i] = p
        names["paths"] = f"{secrets.token_hex(8)}.paths.json"
        _write_json(staging / names["paths"], stored)
    removed = [int(r) for r in seg.dead]
    entry = {"rows": seg.rows, "removed": removed, **names}
    return entry, replace(seg, home=os.path.abspath(staging), shard=json.dumps(names), stored_paths=tuple(stored))


def _link_or_copy(source: Path, destination: Path, rows: Optional[Rows], step: int, text: Optional[List[str]] = None) -> None:
    """A hard link of ``source`` at ``destination``; where that fails (the source is gone:
    a concurrent save removed its version; or no hard links here), the content written
    anew from the rows held open (or ``text``, a paths file)."""
    try:
        os.link(source, destination)
        return
    except OSError:
        pass
    if rows is None:
        _write_json(destination, text)
    else:
        _write_npy_blocks(destination, rows.dtype, rows.shape,
                          (rows.window(lo, lo + step) for lo in range(0, rows.shape[0], step)))


def _linked(source: Path, destination: Path) -> bool:
    """Whether a hard link of ``source`` could be made at ``destination`` (not when the
    source is gone, or the file system has no hard links)."""
    try:
        os.link(source, destination)
        return True
    except OSError:
        return False


def current_file(directory: PathLike, name: str) -> Optional[Path]:
    """The path of the file ``name`` in the current version of the index ``directory`` (None
    for a version-1 index, or one with no version yet); it may not exist."""
    version, data = _current(Path(directory))
    return None if version < 2 or data is None else Path(directory) / data / name


def new_shard_id() -> str:
    """A fresh shard id (16 random hex digits: two saves never pick the same)."""
    return secrets.token_hex(8)


def write_shard_column(folder: PathLike, shard: str, column: str, dtype: Any, shape: Tuple[int, int],
                       blocks: Iterator[np.ndarray]) -> Rows:
    """Writes one column (``"desc"`` or ``"pooled"``) of a shard not saved yet into
    ``folder``, a folder INSIDE an index directory (:data:`PARTS_DIR`), one block at a time
    (fsync-ed), and returns its rows, read from the file. With :func:`open_shard`: how
    :func:`heatsearch.distributed.build_index` makes an index without holding every row. The
    caller checks the values (finite): :func:`write_index` does not re-read a shard's rows."""
    name = f"{shard}.{'desc' if column == 'desc' else 'pooled'}.npy"
    path = Path(os.path.realpath(folder)) / name
    _write_npy_blocks(path, np.dtype(dtype), shape, blocks)
    return open_rows(path)


def open_shard(folder: PathLike, shard: str, *, pooled: bool) -> Segment:
    """The segment of the shard ``shard`` whose columns :func:`write_shard_column` wrote in
    ``folder``: the next :func:`write_index` to the index holding ``folder`` hard-links its
    files into the new version (no copy, as for a shard it keeps) and writes its paths file."""
    folder = Path(os.path.realpath(folder))
    _fsync_dir(folder)
    names: Dict[str, Any] = {"descriptors": f"{shard}.desc.npy", "pooled": f"{shard}.pooled.npy" if pooled else None,
                             "paths": None}
    return _open_segment(folder, names, 0, [], ())


def _open_segment(folder: Path, names: Dict[str, Any], rows: int, removed: List[int],
                  stored_paths: Tuple[str, ...]) -> Segment:
    desc = open_rows(folder / names["descriptors"])
    pooled = None if names["pooled"] is None else open_rows(folder / names["pooled"])
    return Segment(desc, pooled, np.asarray(removed, np.int64), shard=json.dumps(names),
                   home=os.path.abspath(folder), stored_paths=stored_paths)


def _write_extra(staging: Path, extra: Dict[str, Callable[[Path], None]]) -> None:
    """The caller's own files of a version (``write(path)`` writes ``path`` completely and
    syncs it), then the directory is synced again."""
    for name, write in extra.items():
        if name in (META, WRITER, _NEW_POINTER, COPIES, *DATA_FILES) or "/" in name or os.sep in name:
            raise InvalidInputError(f"extra file name {name!r} is taken or not a plain name")
        write(staging / name)
    if extra:
        _fsync_dir(staging)


def version_file(stored: StoredIndex, name: str) -> Optional[Path]:
    """The path of the file ``name`` that :func:`write_index`'s ``extra`` wrote beside the
    version ``stored`` was read from (None for a version-1 index, which has no version
    directory). The file may not exist (a version saved without it)."""
    if stored.version < 2 or "meta" not in stored.files:
        return None
    return Path(stored.files["meta"]).parent / name


def _remove_replaced(target: Path, previous: Tuple[int, Optional[str]], written: str) -> None:
    """After the switch: the version it replaced goes (best effort; a failure leaves a
    leftover that the next save or load removes). Its shard files that the new version
    uses stay: the new version holds its own links to them."""
    version, name = previous
    try:
        if version >= 2 and name and name != written:
            _remove_tree(target / name)
        elif version == 1:
            for data in DATA_FILES:  # the version-1 index that was converted
                if (target / data).is_file():
                    _unlink(target / data)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------
def read_index(directory: PathLike, *, mmap: bool = True) -> StoredIndex:
    """Reads the current version of the index ``directory`` (version 2, or version 1 as
    written by heatsearch 0.1/0.2), checked in full, then removes leftovers
    (:func:`collect_leftovers`, best effort: a read-only index is read all the same).

    Checked: every field of the metadata (types, ranges, counts, unique paths, an absolute
    root); every array's presence, dtype (float32 descriptors and pooled descriptors, float
    mean), shape against the metadata, and finiteness; the whitening file and its dimensions.
    (What the configuration means, and that the descriptors follow from the pooled ones, is
    checked by :meth:`heatsearch.app.index.Index.load`.)

    Raises:
        IndexFileError: no index there, another format or version, a missing, truncated or
            inconsistent file; the message names the file and what is wrong.
    """
    root = Path(directory)
    if not os.path.lexists(root):
        _recover_version1_swap(root)
    if not root.is_dir():
        what = "no such directory" if not os.path.lexists(root) else "not a directory"
        raise IndexFileError(f"{str(root)!r} is not a heatsearch index: no {POINTER} in it ({what})")
    _warn_about_version1_leftovers(root)
    for attempt in range(_READ_ATTEMPTS):
        version, data = _pointer(root)
        try:
            stored = _read_version(root, version, data, mmap)
        except _Vanished as e:
            # A concurrent save switched to a new version and removed this one while it was
            # being read: read the new one. The same pointer means the file is really missing.
            if attempt + 1 < _READ_ATTEMPTS and _current(root) != (version, data):
                continue
            raise IndexFileError(f"{e.file}: {e}") from None
        except _Bad as e:
            raise IndexFileError(f"{e.file}: {e}") from None
        collect_leftovers(root)
        return stored
    raise AssertionError("unreachable")  # pragma: no cover


# -- what heatsearch 0.1/0.2's save left beside an index ---------------------------------------
# Version 1's save wrote the new index into a hidden sibling ".NAME.tmp-XXXXXXXX", moved the old
# one aside to ".NAME.old-XXXXXXXX", renamed the new one in, then deleted the old one. Killed in
# between, it left these siblings (and, between the two renames, no index at NAME at all). They
# are never deleted here: nothing tells whether a heatsearch 0.1/0.2 process is still writing
# one, and an ".old" one may hold the only copy of an index.
def _version1_siblings(root: Path, kind: str) -> List[Path]:
    parent = root.absolute().parent
    pattern = re.compile(rf"^\.{re.escape(root.name)}\.{kind}-[a-z0-9_]{{8}}$")
    try:
        return sorted(p for p in parent.iterdir() if pattern.match(p.name) and p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _recover_version1_swap(root: Path) -> None:
    """No index at ``root``: if a save of heatsearch 0.1/0.2 was killed between its two renames,
    the previous index is complete in one ``.NAME.old-*`` sibling: it is renamed back (the
    state before that save), with a warning. With several candidates, the error lists them."""
    candidates = [p for p in _version1_siblings(root, "old") if not _not_an_index(p / POINTER)]
    if len(candidates) == 1:
        try:
            os.rename(candidates[0], root)
        except OSError:
            return  # someone else recovered it, or it cannot be moved: reported as missing
        warnings.warn(
            f"{str(root)!r} was missing: a save of heatsearch 0.1/0.2 was interrupted after it "
            f"moved the index aside to {str(candidates[0])!r}; that index is back in place",
            stacklevel=3,
        )
    elif candidates:
        raise IndexFileError(
            f"{str(root)!r} is missing, and interrupted saves of heatsearch 0.1/0.2 left "
            f"{len(candidates)} complete indexes beside it ({', '.join(repr(str(c)) for c in candidates)}): "
            f"rename the one to keep to {root.name!r}"
        )


def _warn_about_version1_leftovers(root: Path) -> None:
    leftovers = _version1_siblings(root, "tmp") + _version1_siblings(root, "old")
    if leftovers:
        size = sum(f.stat().st_size for d in leftovers for f in d.rglob("*") if f.is_file())
        warnings.warn(
            f"interrupted saves of heatsearch 0.1/0.2 left {len(leftovers)} folder(s) beside the "
            f"index {str(root)!r} ({size / 1e9:.2f} GB): {', '.join(repr(p.name) for p in leftovers[:3])}"
            f"{' ...' if len(leftovers) > 3 else ''}; heatsearch does not delete them (it cannot tell "
            "whether a heatsearch 0.1/0.2 process still writes one): delete them when none does",
            stacklevel=3,
        )


class _Vanished(_Bad):
    """Internal: a file of the version being read does not exist."""


def _pointer(root: Path) -> Tuple[int, Optional[str]]:
    """``(version, data directory name)`` from ``index.json`` (name None for version 1)."""
    path = root / POINTER
    if not path.is_file():
        hint = ""
        if any(_is_version_dir(root, n) for n in os.listdir(root)):
            hint = " (only what an interrupted first save left: no index was ever completed here)"
        raise IndexFileError(f"{str(root)!r} is not a heatsearch index: no {POINTER} in it{hint}")
    try:
        meta = _read_json(path)
    except _Bad as e:
        raise IndexFileError(f"{path}: {e}") from None
    except OSError as e:
        raise IndexFileError(f"{path}: cannot be read ({e})") from None
    if not isinstance(meta, dict):
        raise IndexFileError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != INDEX_FORMAT:
        raise IndexFileError(f"{path}: expected format {INDEX_FORMAT!r}, got {meta.get('format')!r}")
    version = meta.get("version")
    if type(version) is not int:
        raise IndexFileError(f"{path}: the format version must be an integer, got {version!r}")
    if version not in READ_VERSIONS:
        raise IndexFileError(
            f"{path}: index format version {version!r}, this heatsearch reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}" + (" (written by a newer heatsearch?)" if version > INDEX_VERSION else "")
        )
    if version == 1:
        return 1, None
    if sorted(meta) != ["data", "format", "version"]:
        raise IndexFileError(f"{path}: expected the keys 'format', 'version' and 'data', got {sorted(meta)}")
    data = meta["data"]
    if not isinstance(data, str) or _writers.parse(data) is None:
        raise IndexFileError(f"{path}: 'data' must name a version directory (data-...), got {data!r}")
    return version, data


def _current(root: Path) -> Tuple[int, Optional[str]]:
    """What ``index.json`` names now: ``(version, name)`` (2 or 3), ``(1, None)``, or
    ``(0, None)`` when there is no readable pointer."""
    try:
        return _pointer(root)
    except (IndexFileError, OSError):
        return 0, None


def _read_version(root: Path, version: int, data: Optional[str], mmap: bool) -> StoredIndex:
    folder = root if data is None else root / data
    if not folder.is_dir():
        raise _Vanished(str(root / POINTER), f"names the version directory {data!r}, which does not exist")
    meta_file = folder / (POINTER if version == 1 else META)
    meta = _read_version_json(meta_file)
    if isinstance(meta, dict):
        meta = {**_META_LATER.get(version, {}), **meta}
    try:
        _check_meta(meta, version)
    except _Bad as e:
        raise _Bad(str(meta_file), str(e)) from None
    files = {"meta": str(meta_file)}
    files.update({n.split(".")[0]: str(folder / n) for n in DATA_FILES})
    if version >= 3:
        return _read_version3(folder, meta, files)
    mode: Optional[Literal["r"]] = "r" if mmap else None
    desc = _read_npy(folder / DESCRIPTORS, mode)
    pooled = _read_npy(folder / POOLED, mode)
    mean = _read_npy(folder / MEAN, None) if meta["has_mean"] else None
    whitening = _read_whitening(folder / WHITENING) if meta["has_whitening"] else None
    if version == 1:
        # Version 1 did not record C: it is the width of the pooled descriptors.
        meta = dict(meta, channels=int(pooled.shape[1]) if pooled.ndim == 2 else -1, root=None,
                    mean_images=None, whitening_images=None)
    try:
        _check_arrays(meta, desc, pooled, mean, whitening)
    except _Bad as e:
        raise _Bad(str(folder / e.file), str(e)) from None
    empty = _empty(meta)
    return _stored(meta, version, files, mean, whitening, paths=list(meta["paths"]),
                   descriptors=None if empty else desc, pooled=None if empty else pooled)


def _empty(meta: Dict[str, Any]) -> bool:
    """The metadata of an index that never held a row (no dimension known)."""
    return bool(meta["count"] == 0 and meta["dim"] == 0 and meta["channels"] == 0)


def _stored(meta: Dict[str, Any], version: int, files: Dict[str, str], mean: Optional[np.ndarray],
            whitening: Optional[PCAWhitening], **rows: Any) -> StoredIndex:
    """The :class:`StoredIndex` of a version read: its metadata's fields, the mean and whitening
    read, and ``rows`` (the paths and the descriptors: arrays, or a store)."""
    return StoredIndex(
        config=meta["config"],
        mean=mean,
        whitening=whitening,
        whitening_learned=meta["whitening_learned"],
        root=meta["root"],
        mean_images=meta["mean_images"],
        whitening_images=meta["whitening_images"],
        version=version,
        files=files,
        **rows,
    )


def _read_version3(folder: Path, meta: Dict[str, Any], files: Dict[str, str]) -> StoredIndex:
    """A version-3 version: its shards opened (kept open, read window by window), every file
    checked against the metadata (dtype, shape, finite values streamed), and its mean and
    whitening."""
    images = meta["source"] == "images"
    mean = _read_npy(folder / MEAN, None) if meta["has_mean"] else None
    whitening = _read_whitening(folder / WHITENING) if meta["has_whitening"] else None
    segments: List[Segment] = []
    live_paths: List[str] = []
    for entry in meta["shards"]:
        rows = entry["rows"]
        columns: Dict[str, Optional[Rows]] = {"descriptors": None, "pooled": None}
        for key, dtype, width, what in (("descriptors", meta["dtype"], meta["dim"], "dim"),
                                        ("pooled", "float32", meta["channels"], "channels")):
            if entry[key] is None:
                continue
            path = folder / entry[key]
            try:
                r = open_rows(path)
            except FileNotFoundError:
                raise _Vanished(str(path), "missing file") from None
            except (OSError, ValueError) as e:
                raise _Bad(str(path), f"not a readable .npy array, truncated or corrupt ({type(e).__name__}: {e})") from None
            if r.dtype != np.dtype(dtype):
                raise _Bad(str(path), f"must be {dtype}, got dtype {r.dtype}")
            if r.shape != (rows, width):
                raise _Bad(str(path), f"must have shape (rows, {what}) = ({rows}, {width}) as the metadata says, got {r.shape}")
            columns[key] = r
        path = folder / entry["paths"]
        stored = _read_version_json(path)
        if not isinstance(stored, list) or len(stored) != rows:
            raise _Bad(str(path), f"must be a list of {rows} paths (the shard's rows), got {type(stored).__name__}"
                       + (f" of {len(stored)}" if isinstance(stored, list) else ""))
        seg = Segment(columns["descriptors"], columns["pooled"], np.asarray(entry["removed"], np.int64),  # type: ignore[arg-type]
                      shard=json.dumps({k: entry[k] for k in ("descriptors", "pooled", "paths")}),
                      home=os.path.abspath(folder), stored_paths=tuple(stored))
        removed = set(entry["removed"])
        live_paths.extend(p for i, p in enumerate(stored) if i not in removed)
        for column, key in (("desc", "descriptors"), ("pooled", "pooled")):
            if entry[key] is None:
                continue
            for _, block in segment_blocks(seg, column, Store([seg]).window_rows()):
                with _field(str(folder / entry[key])):
                    _validate.finite(np.ascontiguousarray(block, np.float64 if block.dtype == np.float64 else np.float32), "its values")
        segments.append(seg)
    try:
        _check_paths(live_paths, meta["count"], 3, meta["source"])
        if meta["count"] and (meta["dim"] == 0 or (images and meta["channels"] == 0)):
            raise _Bad(DESCRIPTORS, f"{meta['count']} images with descriptors of dimension {meta['dim']} (pooled: {meta['channels']})")
        if images and any(s.pooled is None for s in segments):
            raise _Bad(META, "an index of images must have the pooled descriptors of every shard")
        _check_mean_whitening(meta, mean, whitening)
        _check_copy_pairs(meta, bool(meta["copy_pairs"]))
        scatter = _unpacked(_read_npy(folder / COPIES, None), meta["channels"]) if meta["copy_pairs"] else None
    except _Bad as e:
        raise _Bad(str(folder / e.file) if e.file != META else files["meta"], str(e)) from None
    if segments:
        files["descriptors"] = str(folder / meta["shards"][0]["descriptors"])
        if meta["shards"][0]["pooled"]:
            files["pooled"] = str(folder / meta["shards"][0]["pooled"])
    empty = _empty(meta)
    if not segments and not empty:  # every row removed: the dimensions stay known
        segments.append(Segment(
            Rows(np.empty((0, meta["dim"]), meta["dtype"])),
            Rows(np.empty((0, meta["channels"]), np.float32)) if images else None,
            np.empty(0, np.int64),
        ))
    return _stored(meta, 3, files, mean, whitening, paths=live_paths, descriptors=None, pooled=None,
                   store=None if empty else Store(segments), source=meta["source"], dtype=meta["dtype"],
                   copy_scatter=scatter, copy_pairs=meta["copy_pairs"])


def _read_npy(path: Path, mode: Optional[Literal["r"]]) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode=mode, allow_pickle=False)
    except FileNotFoundError:
        raise _Vanished(str(path), "missing file") from None
    except Exception as e:  # a truncated or damaged header, an object array, ...: corrupt
        raise _Bad(str(path), f"not a readable .npy array, truncated or corrupt ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        raise _Bad(str(path), f"expected one .npy array, got {type(arr).__name__}")
    return arr


def _read_whitening(path: Path) -> PCAWhitening:
    try:
        return PCAWhitening.load(path)
    except FileNotFoundError:
        raise _Vanished(str(path), "missing file") from None
    except (OSError, HeatsearchError) as e:
        raise _Bad(str(path), str(e)) from None


# ---------------------------------------------------------------------------------------------
# The checks (shared by writing and reading: whatever is saved loads).
# ---------------------------------------------------------------------------------------------
def _check_meta(meta: Any, version: int, *, writing: bool = False) -> None:
    """The fields of the metadata of ``version`` (raises _Bad without a file name)."""
    if not isinstance(meta, dict):
        raise _Bad(META, f"expected a JSON object, got {type(meta).__name__}")
    keys = _META_KEYS[version]
    missing = [k for k in keys if k not in meta]
    unknown = sorted(set(meta) - set(keys))
    if missing or unknown:
        raise _Bad(META, f"missing keys {missing}, unknown keys {unknown}" if missing and unknown
                   else f"missing keys {missing}" if missing else f"unknown keys {unknown}")
    if meta["format"] != INDEX_FORMAT or type(meta["version"]) is not int or meta["version"] != version:
        raise _Bad(META, f"expected format {INDEX_FORMAT!r} version {version}, got {meta['format']!r} version {meta['version']!r}")
    if not isinstance(meta["config"], dict):
        raise _Bad(META, f"'config' must be an object, got {type(meta['config']).__name__}")
    with _field(META):
        count = _validate.integer(meta["count"], "'count'")
        _validate.integer(meta["dim"], "'dim'")
        if version >= 2:
            _validate.integer(meta["channels"], "'channels'")
        for key in ("has_mean", "has_whitening", "whitening_learned"):
            _validate.flag(meta[key], repr(key))
    if meta["whitening_learned"] and not meta["has_whitening"]:
        raise _Bad(META, "'whitening_learned' is true but there is no whitening ('has_whitening' is false)")
    if version >= 2:
        for key, learned in (("mean_images", "has_mean"), ("whitening_images", "whitening_learned")):
            if meta[key] is not None:
                with _field(META):
                    _validate.integer(meta[key], repr(key), minimum=1)
                if not meta[learned]:
                    raise _Bad(META, f"{key!r} is {meta[key]} but {learned!r} is false")
        root = meta["root"]
        if version >= 3 and meta["source"] == "descriptors":
            if root is not None:
                raise _Bad(META, f"'root' must be null for an index of descriptors, got {root!r}")
        elif not isinstance(root, str) or not os.path.isabs(root):
            raise _Bad(META, f"'root' must be an absolute path, got {root!r}")
    if version >= 3:
        _check_v3_fields(meta, writing)
    else:
        _check_paths(meta["paths"], count, version, "images")


def _check_v3_fields(meta: Dict[str, Any], writing: bool = False) -> None:
    if meta["source"] not in SOURCES:
        raise _Bad(META, f"'source' must be one of {list(SOURCES)}, got {meta['source']!r}")
    if meta["dtype"] not in DESCRIPTOR_DTYPES:
        raise _Bad(META, f"'dtype' must be one of {list(DESCRIPTOR_DTYPES)}, got {meta['dtype']!r}")
    shards = meta["shards"]
    if not isinstance(shards, list):
        raise _Bad(META, f"'shards' must be a list, got {type(shards).__name__}")
    live, seen = 0, set()
    for i, entry in enumerate(shards):
        where = f"'shards'[{i}]"
        if not isinstance(entry, dict) or sorted(entry) != sorted(_SHARD_KEYS):
            raise _Bad(META, f"{where} must be an object with the keys {list(_SHARD_KEYS)}, got {entry!r}"[:300])
        with _field(META):
            rows = _validate.integer(entry["rows"], f"{where}['rows']", minimum=1)
        removed = entry["removed"]
        if (not isinstance(removed, list) or any(type(r) is not int or not 0 <= r < rows for r in removed)
                or any(b <= a for a, b in zip(removed, removed[1:])) or len(removed) >= rows):
            raise _Bad(META, f"{where}['removed'] must list distinct rows of the shard in increasing order (fewer than its {rows}), got {str(removed)[:100]}")
        for key, kind in (("descriptors", "desc.npy"), ("pooled", "pooled.npy"), ("paths", "paths.json")):
            name = entry[key]
            if key == "pooled" and name is None and meta["source"] == "descriptors":
                continue
            if not isinstance(name, str) or not SHARD_FILE.match(name) or not name.endswith(kind) or name in seen:
                raise _Bad(META, f"{where}[{key!r}] must name a shard file (16 hex digits + '.{kind}', used once), got {name!r}")
            seen.add(name)
        live += rows - len(removed)
    if live != meta["count"] and not writing:  # (a save checks its rows against its paths)
        raise _Bad(META, f"the shards hold {live} rows (removed ones left out), 'count' says {meta['count']}")


def _check_paths(paths: Any, count: int, version: int, source: str) -> None:
    """The stored paths: ``count`` distinct non-empty strings; an index of images stores them
    absolute or normalised relative to the root (version >= 2)."""
    if not isinstance(paths, list):
        raise _Bad(META, f"'paths' must be a list of strings, got {type(paths).__name__}")
    if len(paths) != count:
        raise _Bad(META, f"'paths' has {len(paths)} entries, 'count' says {count}")
    for i, p in enumerate(paths):
        if not isinstance(p, str) or not p or "\x00" in p:
            raise _Bad(META, f"'paths'[{i}] must be a non-empty string (a file path), got {p!r}")
        # Version 2 stores paths inside the root normalised ("a/b.jpg": no '', '.' or '..'
        # parts), so that they join to the root as they are; the others absolute.
        if (version >= 2 and source == "images" and not os.path.isabs(p)
                and any(part in ("", ".", "..") for part in p.split("/"))):
            raise _Bad(META, f"'paths'[{i}] must be absolute or normalised relative to the root (no '.', '..' or empty parts), got {p!r}")
    if len(set(paths)) != len(paths):
        seen: set = set()
        dup = next(p for p in paths if p in seen or seen.add(p))  # type: ignore[func-returns-value]
        raise _Bad(META, f"'paths' lists {dup!r} twice")


def _check_arrays(
    meta: Dict[str, Any],
    desc: np.ndarray,
    pooled: np.ndarray,
    mean: Optional[np.ndarray],
    whitening: Optional[PCAWhitening],
) -> None:
    """The arrays against the metadata (raises _Bad naming the file inside the version)."""
    n, d, c = meta["count"], meta["dim"], meta["channels"]
    for name, arr, width, what in ((DESCRIPTORS, desc, d, "dim"), (POOLED, pooled, c, "channels")):
        if arr.dtype != np.float32:
            raise _Bad(name, f"must be float32, got dtype {arr.dtype}")
        if arr.shape != (n, width):
            raise _Bad(name, f"must have shape (count, {what}) = ({n}, {width}) as the metadata says, got {arr.shape}")
        with _field(name):
            _validate.finite(arr, "its values")
    if n and (d == 0 or c == 0):
        raise _Bad(DESCRIPTORS, f"{n} images with descriptors of dimension {d} (pooled: {c})")
    _check_mean_whitening(meta, mean, whitening)


def _check_mean_whitening(meta: Dict[str, Any], mean: Optional[np.ndarray], whitening: Optional[PCAWhitening]) -> None:
    """The mean and the whitening against the metadata's dimensions."""
    n, d, c = meta["count"], meta["dim"], meta["channels"]
    if meta.get("source") == "descriptors":
        if mean is not None or whitening is not None:
            raise _Bad(META, "an index of descriptors computed elsewhere has no HeW mean and no whitening")
        return
    known = not (n == 0 and d == 0 and c == 0)  # a fresh empty index has no dimensions yet
    if mean is not None:
        if mean.dtype not in _validate.FLOAT_DTYPES:
            raise _Bad(MEAN, f"must be float32 or float64, got dtype {mean.dtype}")
        if mean.ndim != 1 or (known and mean.shape != (c,)):
            raise _Bad(MEAN, f"must have shape (channels,) = ({c},), got {mean.shape}")
        with _field(MEAN):
            _validate.finite(mean, "its values")
    if whitening is not None and known:
        w_in, w_out = _whitening_dims(whitening)
        if (w_in, w_out) != (c, d):
            raise _Bad(
                WHITENING,
                f"maps {w_in} dimensions to {w_out}, but the pooled descriptors have {c} "
                f"and the final ones {d}",
            )
    elif whitening is None and d != c:
        raise _Bad(DESCRIPTORS, f"dimension {d} differs from the pooled descriptors' {c}, and there is no whitening to change it")


def _unpacked(packed: np.ndarray, c: int) -> np.ndarray:
    """The symmetric ``(c, c)`` float64 matrix whose upper triangle (row by row) ``packed``
    ``(c (c + 1) / 2,)`` float32 holds (``copies.npy``), checked: dtype, shape, finite values
    (symmetric by construction)."""
    if packed.dtype != np.float32 or packed.shape != (c * (c + 1) // 2,):
        raise _Bad(COPIES, f"must be float32 of shape (channels (channels + 1) / 2,) = ({c * (c + 1) // 2},), "
                           f"got dtype {packed.dtype}, shape {packed.shape}")
    with _field(COPIES):
        _validate.finite(packed, "its values")
    out = np.zeros((c, c))
    out[np.triu_indices(c)] = packed
    return out + np.triu(out, 1).T


def _check_copy_pairs(meta: Dict[str, Any], scatter: bool) -> None:
    """The metadata's ``copy_pairs``: an int >= 0, positive exactly when there is a copies'
    ``scatter``, and only for an index of images."""
    with _field(META):
        pairs = _validate.integer(meta["copy_pairs"], "'copy_pairs'")
    if not pairs and scatter:
        raise _Bad(COPIES, "the copies' scatter is given but 'copy_pairs' is 0")
    if pairs and meta["source"] != "images":
        raise _Bad(META, f"'copy_pairs' is {pairs} but an index of descriptors has no images to copy")


def _check_scatter(scatter: Any, c: int) -> None:
    """A copies' difference scatter to write: ``(c, c)`` float64, finite and symmetric."""
    if not isinstance(scatter, np.ndarray) or scatter.dtype != np.float64 or scatter.shape != (c, c):
        what = f"float64 of shape {scatter.shape}" if isinstance(scatter, np.ndarray) and scatter.dtype == np.float64 else (
            f"dtype {scatter.dtype}, shape {scatter.shape}" if isinstance(scatter, np.ndarray) else type(scatter).__name__)
        raise _Bad(COPIES, f"must be float64 of shape (channels, channels) = ({c}, {c}), got {what}")
    with _field(COPIES):
        _validate.finite(scatter, "its values")
    if not np.allclose(scatter, scatter.T, rtol=1e-9, atol=1e-12 * max(1.0, float(np.abs(scatter).max(initial=0.0)))):
        raise _Bad(COPIES, "must be symmetric (a sum of outer products), it is not")


def _whitening_dims(whitening: Optional[PCAWhitening]) -> Tuple[int, int]:
    """``(input d, output dim)`` of a fitted whitening; ``(0, 0)`` for None."""
    if whitening is None or whitening.mean_ is None or whitening.dim_ is None:
        return 0, 0
    return int(whitening.mean_.shape[0]), int(whitening.dim_)


class _field:
    """Turns a _validate error into _Bad(file, message)."""

    def __init__(self, file: str) -> None:
        self.file = file

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if isinstance(value, HeatsearchError) and not isinstance(value, _Bad):
            raise _Bad(self.file, str(value)) from None


# ---------------------------------------------------------------------------------------------
# Leftovers.
# ---------------------------------------------------------------------------------------------
def collect_leftovers(directory: PathLike) -> List[str]:
    """Removes what interrupted or superseded saves left in the index ``directory``; returns
    the names removed. Best effort: what cannot be removed (a read-only index) stays.

    Removed: version directories that are not the current one and whose writer is gone (a
    save killed before its switch, or after it but before it removed the version it
    replaced), or whose writer is this process and no longer writing them; version-1 files
    beside a version-2 pointer (a conversion killed after its switch). Kept: the current
    version, versions that running saves (of any process on this host, or on other hosts)
    are writing, and anything that is not an index's own file.
    """
    root = Path(directory)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    removed = []
    here = _writers.me()
    for entry in entries:
        writer = _writers.parse(entry.name)
        if writer is None or entry.is_symlink() or not entry.is_dir():
            continue
        path = os.path.abspath(entry.path)
        if writer == here:
            if _writers.in_progress(path):
                continue
        elif writer.running():
            continue
        # Its writer cannot make it current any more (it is gone, or done): if the pointer,
        # read NOW (after that check), does not name it, nothing ever will.
        version, current = _current(root)
        if version == 0 or current == entry.name:
            continue
        if _remove_tree(Path(path)):
            removed.append(entry.name)
    if _current(root)[0] >= 2:
        for name in DATA_FILES:
            p = root / name
            if p.is_file() and not p.is_symlink() and _unlink(p):
                removed.append(name)
    return removed


# ---------------------------------------------------------------------------------------------
# File operations (each one step of a save; the crash tests interrupt between any two).
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    """JSON without NaN/Infinity literals or repeated keys (raises _Bad, or OSError)."""
    raw = path.read_bytes()

    def no_constants(name: str) -> NoReturn:
        raise ValueError(f"{name} is not a valid JSON number")

    def pairs(items: List[Tuple[str, Any]]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"the key {k!r} appears twice")
            out[k] = v
        return out

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants, object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Bad(str(path), f"corrupt JSON ({e})") from None


def _read_version_json(path: Path) -> Any:
    """A JSON file of the version being read (:func:`_read_json`): missing is _Vanished (a
    concurrent save removed the version: the read is retried), unreadable or corrupt is _Bad."""
    try:
        return _read_json(path)
    except FileNotFoundError:
        raise _Vanished(str(path), "missing file") from None
    except OSError as e:
        raise _Bad(str(path), f"cannot be read ({e})") from None


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "x", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "xb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _write_npy_blocks(path: Path, dtype: np.dtype, shape: Tuple[int, int], blocks: Iterator[np.ndarray]) -> None:
    """A ``.npy`` file of ``shape`` written block by block (bounded memory), fsync-ed."""
    written = 0
    with open(path, "xb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
        )
        for block in blocks:
            f.write(np.ascontiguousarray(block, dtype).tobytes())
            written += len(block)
        f.flush()
        os.fsync(f.fileno())
    if written != shape[0]:
        raise AssertionError(f"{path}: wrote {written} rows, expected {shape[0]}")  # pragma: no cover


def _make_dir(path: Path) -> None:
    os.mkdir(path)


def _replace(source: Path, destination: Path) -> None:
    os.replace(source, destination)


def _fsync_dir(path: Path) -> None:
    """Makes the entries of ``path`` durable (POSIX; a no-op where directories cannot be
    opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> bool:
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except OSError:
        return False
    return True
