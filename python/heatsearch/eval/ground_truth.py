"""Ground-truth files of the retrieval benchmarks, and a JSON format of our own.

:func:`load_ground_truth` reads, by content (falling back on the suffix):

* revisitop pickles (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``; Radenovic et al., CVPR 2018):
  a dict with ``imlist``, ``qimlist`` and ``gnd[i]`` holding ``easy``, ``hard``, ``junk``
  (0-based indices) and ``bbx``. Classic cirtorch-style pickles with ``ok``/``junk`` entries
  load too. Pickles are read with a restricted unpickler that builds only plain Python
  containers and NumPy arrays, so a pickle cannot run code when loaded.
* MATLAB ``.mat`` files of the heat-diffusion authors (``gnd_oxford5k.mat``,
  ``gnd_paris6k.mat``, ``gnd_holidays.mat``): ``imlist`` (cell array of names), ``qidx``
  (1-based database indices of the queries) and the struct array ``gnd`` with ``ok``/``junk``
  (1-based) and, for Oxford/Paris, ``bbx``. Revisited-format ``.mat`` files (``qimlist`` and
  ``gnd(i).easy/.hard/.junk``, 1-based as everything MATLAB) load too. Indices become
  0-based; bounding boxes are pixel coordinates and are never shifted. Needs SciPy
  (``pip install scipy``), imported only when a ``.mat`` file is read.
* The heatsearch JSON ground truth, for your own datasets (0-based indices)::

      {
        "format": "heatsearch-gnd",
        "version": 1,
        "images": ["img_000", "img_001", "img_002", "img_003"],
        "queries": ["img_000", "img_002"],
        "query_indices": [0, 2],
        "gnd": [
          {"ok": [1], "junk": [0], "bbx": [10.0, 20.0, 200.0, 180.0]},
          {"ok": [3], "junk": []}
        ]
      }

  ``queries`` (names) or ``query_indices`` (0-based database indices of queries that are
  database images) or both must be present; ``junk`` and ``bbx`` are optional. A revisited
  ground truth stores ``{"easy": [...], "hard": [...], "junk": [...]}`` entries instead of
  ``ok``/``junk``. :func:`save_ground_truth_json` writes this format atomically. Names may be
  image paths, absolute or relative to the JSON file's folder (:meth:`GroundTruth.image_path`):
  ``heatsearch evaluate --db INDEX_DIR`` finds them among the index's images (:func:`locate`).

What the shared benchmark files hold (checked by the tests): the classic Oxford5k/Paris6k
``.mat`` files list each query image among its own positives (``ok``), as the original Oxford
protocol does; Holidays lists each query as its own junk. The first 55 queries of revisited
Oxford/Paris are the 55 classic queries, with the same boxes.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

import numpy as np

from .._atomic import atomic_write
from ..errors import HeatsearchError, InvalidDTypeError, InvalidInputError
from ._matlab import loadmat, variables
from .evaluate import PROTOCOLS, revisited as _revisited

__all__ = [
    "GroundTruth",
    "load_ground_truth",
    "save_ground_truth_json",
    "locate",
    "JSON_FORMAT",
    "JSON_VERSION",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The ``"format"`` tag and ``"version"`` of the heatsearch JSON ground truth.
JSON_FORMAT = "heatsearch-gnd"
JSON_VERSION = 1
#: The protocol name of a classic (``ok``/``junk``) ground truth.
CLASSIC = "classic"


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """The ground truth of a retrieval benchmark (indices 0-based, read-only int64 arrays).

    Attributes:
        images: names of the ``n`` database images, in database order.
        queries: names of the ``n_queries`` query images.
        query_indices: ``(n_queries,)`` int64 database indices of the queries when the queries
            are database images (classic Oxford5k/Paris6k, Holidays), ``None`` when they are
            separate images (revisited Oxford/Paris).
        gnd: one dict per query: ``ok`` and ``junk`` (classic) or ``easy``, ``hard`` and
            ``junk`` (revisited), 0-based int64 arrays, and ``bbx``, the query's box
            ``[x1, y1, x2, y2]`` as float64 pixel coordinates, when known.
        revisited: whether ``gnd`` is in the revisited (easy/hard/junk) format.
        folder: the folder relative image names are paths from (a JSON ground truth's own
            folder, set by :func:`load_ground_truth`), or ``None``: see :meth:`image_path`.

    Construct it directly to build a JSON ground truth for your own data; the constructor
    converts the fields and checks them (InvalidInputError on inconsistencies).
    """

    images: List[str]
    queries: List[str]
    query_indices: Optional[np.ndarray]
    gnd: List[Dict[str, np.ndarray]]
    revisited: bool
    folder: Optional[str] = None

    def __post_init__(self) -> None:
        images = _names(self.images, "images")
        queries = _names(self.queries, "queries")
        n = len(images)
        if not isinstance(self.revisited, (bool, np.bool_)):
            raise InvalidInputError(f"revisited must be a bool, got {self.revisited!r}")
        rev = bool(self.revisited)
        try:
            entries = list(self.gnd)
        except TypeError:
            raise InvalidInputError(
                f"gnd must be a list of per-query dicts, got {type(self.gnd).__name__}"
            ) from None
        if len(entries) != len(queries):
            raise InvalidInputError(
                f"gnd must have one entry per query: expected {len(queries)}, got {len(entries)}"
            )
        keys = ("easy", "hard", "junk") if rev else ("ok", "junk")
        gnd = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise InvalidInputError(f"gnd[{i}] must be a dict, got {type(entry).__name__}")
            required = keys if rev else ("ok",)
            missing = [k for k in required if k not in entry]
            if missing:
                other = "classic 'ok'/'junk'" if rev else "revisited 'easy'/'hard'/'junk'"
                hint = (
                    f" (it has the {other} keys: revisited={not rev}?)"
                    if any(k in entry for k in (("ok",) if rev else ("easy", "hard")))
                    else ""
                )
                raise InvalidInputError(
                    f"gnd[{i}] must have the keys {list(required)}, missing {missing}{hint}"
                )
            out = {k: _indices(entry.get(k, []), f"gnd[{i}]['{k}']", n) for k in keys}
            if entry.get("bbx") is not None:
                out["bbx"] = _bbx(entry["bbx"], f"gnd[{i}]['bbx']")
            gnd.append(out)
        qidx = None
        if self.query_indices is not None:
            qidx = _indices(self.query_indices, "query_indices", n)
            if qidx.size != len(queries):
                raise InvalidInputError(
                    f"query_indices must have one entry per query: expected {len(queries)}, "
                    f"got {qidx.size}"
                )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "queries", queries)
        object.__setattr__(self, "query_indices", qidx)
        object.__setattr__(self, "gnd", gnd)
        object.__setattr__(self, "revisited", rev)

    def image_path(self, name: str) -> str:
        """``name`` (one of :attr:`images` or :attr:`queries`) as a path: a relative name is
        taken from :attr:`folder` when there is one (a JSON ground truth names images by path
        relative to the JSON file), else returned as it is."""
        if self.folder is None or os.path.isabs(name):
            return os.path.normpath(name)
        return os.path.normpath(os.path.join(self.folder, name))

    @property
    def n_images(self) -> int:
        """Number of database images."""
        return len(self.images)

    @property
    def n_queries(self) -> int:
        """Number of queries."""
        return len(self.queries)

    @property
    def protocols(self) -> Tuple[str, ...]:
        """The names :meth:`protocol` takes: easy/medium/hard if revisited, else classic."""
        return PROTOCOLS if self.revisited else (CLASSIC,)

    def protocol(self, name: str) -> List[Dict[str, np.ndarray]]:
        """The evaluation ground truth (``ok``/``junk`` per query) for :func:`compute_map`.

        Args:
            name: ``"easy"``, ``"medium"`` or ``"hard"`` for a revisited ground truth
                (revisitop's protocols, see :func:`heatsearch.eval.revisited`);
                ``"classic"`` for an ``ok``/``junk`` one.

        Returns:
            A new list of ``{"ok", "junk"[, "bbx"]}`` dicts, one per query.
        """
        if self.revisited:
            if name == CLASSIC:
                raise InvalidInputError(
                    f"this ground truth is revisited: protocol must be one of "
                    f"{', '.join(repr(p) for p in PROTOCOLS)}, got {name!r}"
                )
            return _revisited(self.gnd, name)
        if name != CLASSIC:
            raise InvalidInputError(
                f"this ground truth is classic (ok/junk): protocol must be {CLASSIC!r}, got "
                f"{name!r}"
            )
        return [dict(entry) for entry in self.gnd]

    def __repr__(self) -> str:
        kind = "revisited" if self.revisited else "classic"
        where = "database images" if self.query_indices is not None else "separate images"
        return (
            f"GroundTruth({kind}, images={self.n_images}, queries={self.n_queries} "
            f"({where}))"
        )


# --------------------------------------------------------------------------------------------
# Loading and saving ground truth


def load_ground_truth(path: PathLike) -> GroundTruth:
    """Load a benchmark ground truth: revisitop ``.pkl``, MATLAB ``.mat`` or heatsearch JSON.

    The format is recognised from the file's first bytes (MATLAB header, pickle opcode, JSON
    object), else from its suffix (``.pkl``/``.pickle``, ``.mat``, ``.json``); see the module
    docstring for the layouts. Indices are returned 0-based (1-based MATLAB indices are
    converted), bounding boxes unchanged.

    Raises:
        InvalidInputError: the file is corrupt, of an unknown format, or does not hold what a
            ground truth must (the message names the file and what was expected).
        MissingDependencyError: a ``.mat`` file and SciPy is not installed.
        FileNotFoundError: no such file.
    """
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(128)
    kind = _sniff(head, p)
    try:
        if kind == "mat":
            return _gt_from_mat(loadmat(p), p)
        if kind == "pickle":
            return _gt_from_pickle(p)
        return _gt_from_json(p)
    except InvalidInputError as e:
        if str(p) in str(e):
            raise
        raise InvalidInputError(f"{p}: {e}") from e


def save_ground_truth_json(gt: GroundTruth, path: PathLike) -> None:
    """Write ``gt`` in the heatsearch JSON format (0-based indices), atomically.

    The JSON goes to a temporary file in the destination folder, which is flushed, fsynced
    and then renamed over ``path`` (``os.replace``, via :func:`heatsearch._atomic.atomic_write`):
    on any error the temporary file is removed and an existing file at ``path`` is left as it
    was. The folder must exist.
    """
    if not isinstance(gt, GroundTruth):
        raise InvalidInputError(f"gt must be a GroundTruth, got {type(gt).__name__}")
    doc: Dict[str, Any] = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "images": list(gt.images),
        "queries": list(gt.queries),
    }
    if gt.query_indices is not None:
        doc["query_indices"] = gt.query_indices.tolist()
    doc["gnd"] = [{k: np.asarray(v).tolist() for k, v in entry.items()} for entry in gt.gnd]

    with atomic_write(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def _sniff(head: bytes, p: Path) -> str:
    suffix = p.suffix.lower()
    if head.startswith(b"MATLAB"):
        return "mat"
    if head[:1] == b"\x80":
        return "pickle"
    if head.lstrip()[:1] == b"{":
        return "json"
    if suffix == ".mat":
        return "mat"  # MATLAB v4 files have no text header
    if suffix in (".pkl", ".pickle"):
        return "pickle"
    if suffix == ".json":
        return "json"
    if not head:
        raise InvalidInputError(f"{p}: the file is empty, expected a ground truth")
    raise InvalidInputError(
        f"{p}: not a ground-truth file heatsearch reads: expected a revisitop pickle (.pkl), "
        f"a MATLAB v5 file (.mat) or a heatsearch JSON object (.json), got a file starting "
        f"with {head[:16]!r}"
    )


# --- pickle


class _SafeUnpickler(pickle.Unpickler):
    """Builds plain containers and NumPy arrays only: a ground-truth pickle needs no more."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        # protocols 0-2 store an array's bytes as text re-encoded by these two
        ("_codecs", "encode"),
        ("builtins", "bytes"),
        ("__builtin__", "bytes"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise InvalidInputError(
            f"the pickle refers to {module}.{name}, which a ground-truth file has no reason to "
            "hold (only lists, dicts, numbers, strings and NumPy arrays are read); refusing "
            "to load it"
        )


def _gt_from_pickle(p: Path) -> GroundTruth:
    try:
        with open(p, "rb") as f:
            data = _SafeUnpickler(f, encoding="latin1").load()
    except InvalidInputError:
        raise
    except Exception as e:  # any corruption: UnpicklingError, EOFError, ValueError, ...
        raise InvalidInputError(
            f"{p}: not a readable pickle ({type(e).__name__}: {e}); expected a revisitop "
            "ground truth dict with 'imlist', 'qimlist' and 'gnd'"
        ) from e
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            f"{p}: expected a dict with 'imlist', 'qimlist' and 'gnd', got a "
            f"{type(data).__name__}"
        )
    missing = [k for k in ("imlist", "qimlist", "gnd") if k not in data]
    if missing:
        raise InvalidInputError(
            f"{p}: expected a revisitop ground truth with keys 'imlist', 'qimlist' and 'gnd', "
            f"missing {missing} (found {sorted(map(str, data))})"
        )
    entries = _entry_list(data["gnd"], p)
    # qidx is 0-based, as everything in the Python releases.
    return _ground_truth(data["imlist"], data["qimlist"], data.get("qidx"), entries, p)


# --- JSON


def _gt_from_json(p: Path) -> GroundTruth:
    try:
        with open(p, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInputError(
            f"{p}: not valid JSON ({e}); expected a heatsearch ground truth "
            f'{{"format": "{JSON_FORMAT}", "version": {JSON_VERSION}, ...}}'
        ) from e
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InvalidInputError(
            f"{p}: expected a JSON object with \"format\": \"{JSON_FORMAT}\", got {got!r}"
        )
    if doc.get("version") != JSON_VERSION:
        raise InvalidInputError(
            f"{p}: unsupported {JSON_FORMAT} version {doc.get('version')!r} (this heatsearch "
            f"reads version {JSON_VERSION})"
        )
    missing = [k for k in ("images", "gnd") if k not in doc]
    if "queries" not in doc and "query_indices" not in doc:
        missing.append("queries or query_indices")
    if missing:
        raise InvalidInputError(f"{p}: the JSON ground truth is missing {missing}")
    images = _names(doc["images"], "images")
    qidx = doc.get("query_indices")
    if qidx is not None:
        _json_ints(qidx, "query_indices")
    entries = _entry_list(doc["gnd"], p)
    for i, entry in enumerate(entries):
        for key in ("ok", "junk", "easy", "hard"):
            if key in entry:
                _json_ints(entry[key], f"gnd[{i}]['{key}']")
    if "queries" in doc:
        queries = doc["queries"]
    else:
        qi = _indices(qidx, "query_indices", len(images))
        queries = [images[i] for i in qi]
    gt = _ground_truth(images, queries, qidx, entries, p)
    object.__setattr__(gt, "folder", os.path.abspath(p.parent))
    return gt


def locate(names: Sequence[str], paths: Sequence[str], what: str) -> np.ndarray:
    """The row of each of ``names`` among ``paths`` (an index's image paths): ``(len(names),)``
    int64.

    A name matches the path equal to it (both made absolute and normalised), else the one
    path that ends with it at a folder boundary, with or without the file's extension (so
    that revisitop's ``all_souls_000013`` finds ``.../jpg/all_souls_000013.jpg``).

    Raises:
        InvalidInputError: names found nowhere or in several paths (the first few named;
            ``what`` says which list they come from, e.g. ``"database images"``).
    """
    exact = {os.path.normpath(os.path.abspath(p)): i for i, p in enumerate(paths)}
    by_base: Dict[str, List[int]] = {}
    for i, p in enumerate(paths):
        base = os.path.basename(p)
        by_base.setdefault(base, []).append(i)
        stem = os.path.splitext(base)[0]
        if stem != base:
            by_base.setdefault(stem, []).append(i)
    rows, missing, ambiguous = [], [], []
    for name in names:
        row = exact.get(os.path.normpath(os.path.abspath(name)))
        if row is None:
            tail = os.sep + os.path.normpath(name).lstrip(os.sep)
            found = sorted(
                {
                    i
                    for i in by_base.get(os.path.basename(os.path.normpath(name)), [])
                    if (os.sep + os.path.normpath(paths[i])).endswith(tail)
                    or (os.sep + os.path.splitext(os.path.normpath(paths[i]))[0]).endswith(tail)
                }
            )
            if len(found) == 1:
                row = found[0]
            elif found:
                ambiguous.append(name)
            else:
                missing.append(name)
        rows.append(-1 if row is None else row)
    for bad, why in ((missing, "not found"), (ambiguous, "matching several images")):
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise InvalidInputError(
                f"{len(bad)} of the {len(names)} {what} {why} in the index: "
                f"{', '.join(bad[:3])}{more}"
            )
    return np.asarray(rows, np.int64)


def _json_ints(v: Any, name: str) -> None:
    if not isinstance(v, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in v
    ):
        raise InvalidInputError(f"{name} must be a JSON list of integers, got {v!r:.80}")


# --- MATLAB


def _gt_from_mat(mat: Mapping[str, Any], p: Path) -> GroundTruth:
    v = variables(mat)
    missing = [k for k in ("imlist", "gnd") if k not in v]
    if "qidx" not in v and "qimlist" not in v:
        missing.append("qidx or qimlist")
    if missing:
        raise InvalidInputError(
            f"{p}: expected a MATLAB ground truth with 'imlist', 'gnd' and 'qidx' (or "
            f"'qimlist'), missing {missing} (found {sorted(v)})"
        )
    images = _mat_strings(v["imlist"], "imlist")
    entries = []
    for i, rec in enumerate(_mat_records(v["gnd"], "gnd")):
        entry: Dict[str, Any] = {}
        for key in ("ok", "junk", "easy", "hard"):
            if key in rec:
                entry[key] = _mat_indices(rec[key], f"gnd({i + 1}).{key}")
        if "bbx" in rec:
            box = _mat_numbers(rec["bbx"], f"gnd({i + 1}).bbx")
            if box.size:  # MATLAB writes [] for "no box"
                entry["bbx"] = box
        entries.append(entry)
    qidx = _mat_indices(v["qidx"], "qidx") if "qidx" in v else None
    if "qimlist" in v:
        queries = _mat_strings(v["qimlist"], "qimlist")
    else:
        assert qidx is not None
        bad = qidx[(qidx < 0) | (qidx >= len(images))]
        if bad.size:
            raise InvalidInputError(
                f"qidx must hold 1-based indices in [1, {len(images)}], got {int(bad[0]) + 1}"
            )
        queries = [images[i] for i in qidx]
    return _ground_truth(images, queries, qidx, entries, p)


def _mat_records(x: Any, name: str) -> List[Dict[str, Any]]:
    """A MATLAB struct array (or cell array of 1x1 structs) as a list of dicts, linear order."""
    arr = np.asarray(x)
    if arr.dtype.names:
        return [{f: rec[f] for f in arr.dtype.names} for rec in arr.ravel(order="F")]
    if arr.dtype == object:
        out: List[Dict[str, Any]] = []
        for k, cell in enumerate(arr.ravel(order="F")):
            c = np.asarray(cell)
            if not c.dtype.names or c.size != 1:
                raise InvalidInputError(
                    f"{name}{{{k + 1}}} must be a 1x1 struct, got {c.dtype} of shape {c.shape}"
                )
            rec = c.ravel()[0]
            out.append({f: rec[f] for f in c.dtype.names})
        return out
    raise InvalidInputError(
        f"{name} must be a MATLAB struct array, got {arr.dtype} of shape {arr.shape}"
    )


def _mat_strings(x: Any, name: str) -> List[str]:
    """A cell array of strings or a char matrix as a list of str (MATLAB linear order)."""
    arr = np.asarray(x)
    if arr.dtype.kind == "U":  # a char matrix: rows padded with blanks
        return [str(s).rstrip(" ") for s in arr.ravel(order="F")]
    if arr.dtype != object:
        raise InvalidInputError(
            f"{name} must be a cell array of strings, got {arr.dtype} of shape {arr.shape}"
        )
    out = []
    for k, cell in enumerate(arr.ravel(order="F")):
        c = np.asarray(cell)
        while c.dtype == object and c.size == 1:  # nested cells
            c = np.asarray(c.ravel()[0])
        if c.dtype.kind == "U" and c.size <= 1:
            out.append(str(c.ravel()[0]) if c.size else "")
        else:
            raise InvalidInputError(
                f"{name}{{{k + 1}}} must be a string, got {c.dtype} of shape {c.shape}"
            )
    return out


def _mat_numbers(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise InvalidInputError(f"{name} must be numeric, got {arr.dtype} of shape {arr.shape}")
    return arr.ravel(order="F").astype(np.float64)


def _mat_indices(x: Any, name: str) -> np.ndarray:
    """1-based MATLAB indices (any numeric class, scalar, row, column or empty) as 0-based."""
    arr = _mat_numbers(x, name)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise InvalidInputError(f"{name} must hold whole-number (1-based) indices")
    out = arr.astype(np.int64) - 1
    if int(out.min()) < 0:
        raise InvalidInputError(
            f"{name} must hold 1-based MATLAB indices >= 1, got {int(out.min()) + 1}"
        )
    return out


# --- shared conversions


def _entry_list(gnd: Any, p: Path) -> List[Dict[str, Any]]:
    # GroundTruth.__post_init__ converts the values to index arrays and checks them.
    if not isinstance(gnd, (list, tuple)) or not all(isinstance(e, Mapping) for e in gnd):
        raise InvalidInputError(
            f"{p}: 'gnd' must be a list with one dict per query, got {type(gnd).__name__}"
        )
    return [dict(e) for e in gnd]


def _ground_truth(
    images: Any, queries: Any, qidx: Any, entries: List[Dict[str, Any]], p: Path
) -> GroundTruth:
    """The loaded ground truth (the record's own checks run in GroundTruth)."""
    return GroundTruth(
        images=images,
        queries=queries,
        query_indices=qidx,
        gnd=cast(List[Dict[str, np.ndarray]], entries),
        revisited=_is_revisited(entries, p),
    )


def _is_revisited(entries: Sequence[Mapping[str, Any]], p: Path) -> bool:
    rev = ["easy" in e or "hard" in e for e in entries]
    if not entries:
        return False
    if all(rev):
        return True
    if not any(rev):
        return False
    raise InvalidInputError(
        f"{p}: gnd mixes revisited (easy/hard/junk) and classic (ok/junk) entries "
        f"(gnd[{rev.index(not rev[0])}] differs from gnd[0])"
    )


def _names(x: Any, name: str) -> List[str]:
    if isinstance(x, (str, bytes)):
        raise InvalidInputError(f"{name} must be a list of image names, got a single string")
    try:
        items = list(x)
    except TypeError:
        raise InvalidInputError(
            f"{name} must be a list of image names, got {type(x).__name__}"
        ) from None
    out = []
    for k, s in enumerate(items):
        if isinstance(s, np.str_):
            s = str(s)
        if not isinstance(s, str):
            raise InvalidInputError(
                f"{name}[{k}] must be a string (an image name), got {type(s).__name__}"
            )
        out.append(s)
    return out


def _indices(x: Any, name: str, n: int) -> np.ndarray:
    """0-based indices as a read-only flat int64 array, each in ``[0, n)``."""
    arr = np.asarray(x)
    if arr.size == 0:
        out = np.zeros(0, dtype=np.int64)
    else:
        if arr.dtype.kind not in "iu":
            raise InvalidInputError(
                f"{name} must hold integer indices, got {arr.dtype} values"
            )
        out = arr.reshape(-1).astype(np.int64)
        lo, hi = int(out.min()), int(out.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise InvalidInputError(
                f"{name} must hold 0-based indices in [0, {n}) ({n} database images), got {bad}"
            )
    out.setflags(write=False)
    return out


def _bbx(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf" or arr.size != 4:
        raise InvalidInputError(
            f"{name} must be 4 numbers [x1, y1, x2, y2], got {arr.dtype} of shape {arr.shape}"
        )
    out = arr.reshape(-1).astype(np.float64)
    out.setflags(write=False)
    return out
