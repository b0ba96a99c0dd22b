"""The on-disk format of an image index, written so that nothing a user had is ever lost.

An index is a directory (format version 2)::

    INDEX/
      index.json                {"format": "heatsearch-index", "version": 2, "data": "data-..."}
      data-<writer>-<random>/   the current version, the one index.json names:
        meta.json                 configuration, collection root, relative paths, sizes
        descriptors.npy           (n, d) float32 final descriptors (memory-mapped on load)
        pooled.npy                (n, C) float32 pooled descriptors before post-processing
        mean.npy                  (C,) HeW centering mean (HeW pooling, once images were added)
        whitening.npz             the fitted PCAWhitening (when there is one)
        writer.json               who wrote this version (host, pid, time), for people

``index.json`` is the pointer: it names the one complete version. Version 1 (heatsearch
0.1/0.2) kept the files of ``meta.json`` and the arrays directly in ``INDEX/`` (its
``index.json`` was the metadata); it is still read, and saving over it converts it.

**Saving** (:func:`write_index`) never touches the current version: it writes a complete new
version directory inside the index (every file and the directory fsync-ed), then writes the
new pointer inside that directory and renames it over ``index.json``. That rename is the
switch, one atomic step (``os.replace``, atomic on POSIX and Windows): a process killed at any
moment leaves ``index.json`` naming either the complete old version or the complete new one.
Only after the switch is the old version removed (for version 1, its files). The directory
name says which process writes it (:mod:`heatsearch.app._writers`), so that what a killed save
left behind can be told from a save still running.

**Loading** (:func:`read_index`) follows the pointer, checks every field of the metadata and
every array against it (:class:`~heatsearch.errors.IndexFileError` naming the file otherwise),
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
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, NoReturn, Optional, Tuple, Union

import numpy as np

from .. import _validate
from ..errors import HeatsearchError, IndexFileError, InvalidInputError
from ..whitening import PCAWhitening
from . import _writers

__all__ = [
    "is_internal_name",
    "INDEX_FORMAT",
    "INDEX_VERSION",
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
INDEX_VERSION = 2
#: Versions :func:`read_index` reads (1: heatsearch 0.1/0.2, files directly in the directory).
READ_VERSIONS = (1, 2)

POINTER = "index.json"
META = "meta.json"
WRITER = "writer.json"
DESCRIPTORS = "descriptors.npy"
POOLED = "pooled.npy"
MEAN = "mean.npy"
WHITENING = "whitening.npz"
#: The array files of a version (in INDEX/ itself for version 1).
DATA_FILES = (DESCRIPTORS, POOLED, MEAN, WHITENING)
#: The new pointer, written inside the new version's directory and renamed over index.json.
_NEW_POINTER = "index.json.new"

_META_KEYS = {
    1: ("format", "version", "config", "count", "dim", "paths", "has_mean", "has_whitening",
        "whitening_learned"),
    2: ("format", "version", "config", "root", "count", "dim", "channels", "paths", "has_mean",
        "has_whitening", "whitening_learned", "mean_images", "whitening_images"),
}
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
        foreign = [n for n in names if n != POINTER and n not in DATA_FILES and not _is_version_dir(target, n)]
        what = "holds files that are not part of a heatsearch index"
    else:
        foreign = [n for n in names if not _is_version_dir(target, n)]
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
) -> None:
    """Writes ``index`` as the new current version of the index ``directory`` (created if
    needed), atomically: see the module docstring.

    ``index.paths`` are written as they are (relative to ``index.root``, or absolute);
    ``index.root`` must be an absolute path. ``check``: called after this module's checks of
    ``index`` and before anything is written (the caller's checks of what the data means).
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
        meta, arrays = _contents(index)
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
            _write_version(staging, meta, arrays, index.whitening)
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


def _contents(index: StoredIndex) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """The metadata and arrays to write, checked as :func:`read_index` checks them."""
    w = index.whitening
    if w is not None and not (isinstance(w, PCAWhitening) and w.is_fitted):
        raise _Bad(WHITENING, f"whitening must be a fitted PCAWhitening, got {w!r}")
    w_in, w_out = _whitening_dims(w)
    mean = None if index.mean is None else np.asarray(index.mean)
    if index.pooled is not None:
        channels = int(np.shape(index.pooled)[-1])
    elif w is not None:
        channels = w_in
    else:
        channels = int(mean.shape[0]) if mean is not None and mean.ndim == 1 else 0
    if index.descriptors is not None:
        dim = int(np.shape(index.descriptors)[-1])
    else:
        dim = w_out if w is not None else channels
    n = len(index.paths)
    desc = np.zeros((0, dim), np.float32) if index.descriptors is None else np.asarray(index.descriptors)
    pooled = np.zeros((0, channels), np.float32) if index.pooled is None else np.asarray(index.pooled)
    root = index.root
    if not isinstance(root, str) or not os.path.isabs(root):
        raise _Bad(META, f"the collection root must be an absolute path, got {root!r}")
    meta = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "config": index.config,
        "root": root,
        "count": n,
        "dim": dim,
        "channels": channels,
        "paths": list(index.paths),
        "has_mean": mean is not None,
        "has_whitening": w is not None,
        "whitening_learned": bool(index.whitening_learned),
        "mean_images": index.mean_images,
        "whitening_images": index.whitening_images,
    }
    _check_meta(meta, INDEX_VERSION)
    _check_arrays(meta, desc, pooled, mean, w)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _Bad(META, f"the configuration cannot be written as JSON ({e})") from None
    arrays = {DESCRIPTORS: desc, POOLED: pooled}
    if mean is not None:
        arrays[MEAN] = mean
    return meta, arrays


def _write_version(
    staging: Path, meta: Dict[str, Any], arrays: Dict[str, np.ndarray], whitening: Optional[PCAWhitening]
) -> None:
    w = _writers.me()
    _write_json(staging / WRITER, {
        "host": socket.gethostname(), "pid": w.pid, "process_start": w.start, "boot": w.boot,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    for name, array in arrays.items():
        _write_npy(staging / name, array)
    if whitening is not None:
        whitening.save(staging / WHITENING)
    _write_json(staging / META, meta)
    _fsync_dir(staging)


def _write_extra(staging: Path, extra: Dict[str, Callable[[Path], None]]) -> None:
    """The caller's own files of a version (``write(path)`` writes ``path`` completely and
    syncs it), then the directory is synced again."""
    for name, write in extra.items():
        if name in (META, WRITER, _NEW_POINTER, *DATA_FILES) or "/" in name or os.sep in name:
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
    leftover that the next save or load removes)."""
    version, name = previous
    try:
        if version == 2 and name and name != written:
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
    return 2, data


def _current(root: Path) -> Tuple[int, Optional[str]]:
    """What ``index.json`` names now: ``(2, name)``, ``(1, None)``, or ``(0, None)`` when there
    is no readable pointer."""
    try:
        return _pointer(root)
    except (IndexFileError, OSError):
        return 0, None


def _read_version(root: Path, version: int, data: Optional[str], mmap: bool) -> StoredIndex:
    folder = root if data is None else root / data
    if not folder.is_dir():
        raise _Vanished(str(root / POINTER), f"names the version directory {data!r}, which does not exist")
    meta_file = folder / (POINTER if version == 1 else META)
    try:
        meta = _read_json(meta_file)
    except FileNotFoundError:
        raise _Vanished(str(meta_file), "missing file") from None
    except OSError as e:
        raise _Bad(str(meta_file), f"cannot be read ({e})") from None
    except _Bad as e:
        raise _Bad(str(meta_file), str(e)) from None
    try:
        _check_meta(meta, version)
    except _Bad as e:
        raise _Bad(str(meta_file), str(e)) from None
    files = {"meta": str(meta_file)}
    files.update({n.split(".")[0]: str(folder / n) for n in DATA_FILES})
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
    empty = meta["count"] == 0 and meta["dim"] == 0 and meta["channels"] == 0
    return StoredIndex(
        config=meta["config"],
        paths=list(meta["paths"]),
        descriptors=None if empty else desc,
        pooled=None if empty else pooled,
        mean=mean,
        whitening=whitening,
        whitening_learned=meta["whitening_learned"],
        root=meta["root"],
        mean_images=meta["mean_images"],
        whitening_images=meta["whitening_images"],
        version=version,
        files=files,
    )


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
def _check_meta(meta: Any, version: int) -> None:
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
        if not isinstance(root, str) or not os.path.isabs(root):
            raise _Bad(META, f"'root' must be an absolute path, got {root!r}")
    paths = meta["paths"]
    if not isinstance(paths, list):
        raise _Bad(META, f"'paths' must be a list of strings, got {type(paths).__name__}")
    if len(paths) != count:
        raise _Bad(META, f"'paths' has {len(paths)} entries, 'count' says {count}")
    for i, p in enumerate(paths):
        if not isinstance(p, str) or not p or "\x00" in p:
            raise _Bad(META, f"'paths'[{i}] must be a non-empty string (a file path), got {p!r}")
        # Version 2 stores paths inside the root normalised ("a/b.jpg": no '', '.' or '..'
        # parts), so that they join to the root as they are; the others absolute.
        if version >= 2 and not os.path.isabs(p) and any(part in ("", ".", "..") for part in p.split("/")):
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
    if _current(root)[0] == 2:
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
