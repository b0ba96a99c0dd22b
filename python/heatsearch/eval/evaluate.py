"""Retrieval evaluation: mAP and mean precision at k, with the revisitop semantics.

The protocol is the one of the Oxford/Paris benchmarks as coded in revisitop
(Radenovic et al., "Revisiting Oxford and Paris", CVPR 2018,
https://github.com/filipradenovic/revisitop, ``python/evaluate.py``) and the project's
docs/ALGORITHM.md, section 4:

* Junk images are ignored: every positive's 0-based position is decreased by the number of
  junk images ranked before it (the query itself is junk for Holidays, for example).
* AP is the area under the precision-recall curve by the trapezoid rule, with recall step
  ``1 / n_pos`` (``n_pos`` = all positives of the query, ranked or not) and, for the ``j``-th
  retrieved positive (0-based) at junk-free rank ``r``: ``precision_0 = j / r`` (1 when
  ``r = 0``) and ``precision_1 = (j + 1) / (r + 1)``. Positives missing from a truncated
  ranking add nothing (they count as never retrieved).
* A query without positives gets AP NaN and is left out of every mean.
* Precision at k, revisitop's definition: with ``pos`` the 1-based junk-free positions of the
  retrieved positives, ``kq = min(max(pos), k)`` and ``P@k = #(pos <= kq) / kq``. So k is
  clipped to the position of the last retrieved positive: a query with 3 positives all in the
  top 3 has P@10 = 1, not 0.3.

Unlike revisitop, the rankings here are ``(n_queries, m)``, one row per query (revisitop and
cirtorch take the transpose ``(n_db, n_queries)``), and the loops run over queries only, each
vectorised, so 70 queries over rankings of a million images take well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate
from .._compat import accepts_old_arguments
from ..errors import InvalidDTypeError, InvalidInputError

__all__ = ["MapResult", "compute_map", "revisited", "PROTOCOLS", "DEFAULT_KAPPAS"]

#: The protocols of the revisited Oxford/Paris ground truth (revisitop).
PROTOCOLS: Tuple[str, ...] = ("easy", "medium", "hard")
#: The k of the mean precision at k reported by revisitop (mP@1, mP@5, mP@10).
DEFAULT_KAPPAS: Tuple[int, ...] = (1, 5, 10)

# Per-query label table (one byte per database index) when the indices are dense enough;
# beyond this many entries per ranked position the sort-based path is used instead.
_TABLE_SLACK = 16
_TABLE_MIN = 1 << 22
_POS, _JUNK = np.uint8(1), np.uint8(2)


@dataclass(frozen=True, eq=False)
class MapResult:
    """What :func:`compute_map` returns (arrays are read-only).

    Attributes:
        map: mean average precision in [0, 1] over the queries with at least one positive.
        aps: ``(n_queries,)`` float64, the AP of every query, NaN for a query without positives.
        mp_at: ``{k: mean precision at k}`` over the queries with positives, one entry per
            kappa, in the order given.
        pr_at: ``(n_queries, len(kappas))`` float64, the precision at every k of every query,
            NaN rows for queries without positives.
    """

    map: float
    aps: np.ndarray
    mp_at: Dict[int, float]
    pr_at: np.ndarray

    def __repr__(self) -> str:
        mp = ", ".join(f"mP@{k}={v:.4f}" for k, v in self.mp_at.items())
        n = int(np.count_nonzero(~np.isnan(self.aps)))
        return f"MapResult(map={self.map:.4f}{', ' + mp if mp else ''}, queries={n}/{self.aps.size})"


@accepts_old_arguments(positional=("kappas",))
def compute_map(
    ranks: ArrayLike,
    gnd: Sequence[Mapping[str, Any]],
    *,
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    n: Optional[int] = None,
) -> MapResult:
    """Mean average precision and mean precision at k of ranked retrieval results.

    Args:
        ranks: integer array ``(n_queries, m)``: row ``i`` holds the 0-based database indices
            returned for query ``i``, best first; ``m <= n`` (a truncated ranking is fine:
            positives not in it count as not retrieved). NOTE: revisitop and cirtorch use the
            transpose, ``(n_db, n_queries)``; pass ``ranks.T`` for such an array. Any integer
            dtype and memory layout; no index may repeat within a row.
        gnd: one mapping per query with ``"ok"`` (0-based indices of the positives) and
            optionally ``"junk"`` (0-based indices ignored in the ranking). Other keys (such
            as ``"bbx"``) are ignored. For the revisited Oxford/Paris format (``easy``,
            ``hard``, ``junk``) build it with :func:`revisited` first. An index may not be
            both positive and junk, nor repeat within ``ok``.
        kappas: the k of the precision at k; default ``(1, 5, 10)`` as in revisitop. Positive
            integers; may be empty.
        n: database size, if known: then every index of ``ranks`` and ``gnd`` must be in
            ``[0, n)``. Negative indices are always rejected.

    Returns:
        A :class:`MapResult`. Where revisitop fails (a query with positives none of which is
        in its ranking: its ``max(pos)`` of an empty array raises), the precision at every k
        is 0 here, as is its AP.

    Raises:
        InvalidDTypeError: ``ranks`` or a ground-truth index array is not integer.
        InvalidInputError: wrong shapes (including the transposed layout), an index out of
            range, a repeated index in a row of ``ranks``, a bad kappa, a malformed ``gnd``
            entry, or no query with positives at all (the mean would be undefined).

    Complexity: ``O(n_queries * (m + n))`` time with a per-query label table of ``n`` bytes
    (``n`` = largest index + 1); a sort-based ``O(n_queries * m log m)`` path is used when the
    indices are too sparse for a table.
    """
    n = _validate.optional_integer(n, "n")
    qgnd = _check_gnd(gnd, n)
    nq = len(qgnd)
    ks = _check_kappas(kappas)
    r = _validate.ranking(ranks, nq, n, max_columns=n)
    m = r.shape[1]

    gnd_max = max((int(a.max()) for ok, junk in qgnd for a in (ok, junk) if a.size), default=-1)
    r_max = int(r.max()) if r.size else -1
    size = max(gnd_max, r_max) + 1
    use_table = size <= max(_TABLE_SLACK * m, _TABLE_MIN)

    aps = np.full(nq, np.nan)
    prs = np.full((nq, len(ks)), np.nan)
    if use_table:
        labels = np.zeros(size, dtype=np.uint8)
    for i, (ok, junk) in enumerate(qgnd):
        if ok.size == 0:
            continue
        if use_table:
            pos, jpos = _positions_table(r[i], ok, junk, labels)
        else:
            pos, jpos = _positions_sorted(r[i], ok, junk)
        if jpos.size:
            # Junk strictly before a positive moves it up by one place each.
            pos = pos - np.searchsorted(jpos, pos, side="left")
        aps[i] = _average_precision(pos, ok.size)
        prs[i] = _precision_at(pos, ks)

    valid = ~np.isnan(aps)
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        raise InvalidInputError(
            f"no query has positives (all {nq} 'ok' lists are empty): mAP is undefined; "
            "check the ground truth or the protocol"
        )
    mean_ap = float(aps[valid].mean())
    mp_at = {k: float(prs[valid, j].mean()) for j, k in enumerate(ks)}
    aps.setflags(write=False)
    prs.setflags(write=False)
    return MapResult(map=mean_ap, aps=aps, mp_at=mp_at, pr_at=prs)


def revisited(gnd: Sequence[Mapping[str, Any]], protocol: str) -> List[Dict[str, np.ndarray]]:
    """Evaluation ground truth of the revisited Oxford/Paris format for one protocol.

    Args:
        gnd: one mapping per query with ``"easy"``, ``"hard"`` and ``"junk"`` (0-based index
            sequences), as in revisitop's ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl``, and
            optionally ``"bbx"``.
        protocol: ``"easy"`` (positives: easy; junk: junk + hard), ``"medium"`` (positives:
            easy + hard; junk: junk) or ``"hard"`` (positives: hard; junk: junk + easy), as in
            revisitop's ``example_evaluate.py`` and docs/ALGORITHM.md, section 4.

    Returns:
        One ``{"ok": int64 array, "junk": int64 array}`` per query (plus ``"bbx"`` when the
        entry has one), concatenated in revisitop's order, ready for :func:`compute_map`.

    Raises:
        InvalidInputError: an unknown protocol (the message lists the valid ones) or an entry
            without ``easy``/``hard``/``junk``.
        InvalidDTypeError: non-integer indices.
    """
    _validate.choice(protocol, "protocol", PROTOCOLS)
    entries = _gnd_list(gnd)
    out: List[Dict[str, np.ndarray]] = []
    for i, entry in enumerate(entries):
        missing = [key for key in ("easy", "hard", "junk") if key not in entry]
        if missing:
            hint = (
                " (this looks like a classic 'ok'/'junk' ground truth: pass it to compute_map "
                "directly)"
                if "ok" in entry
                else ""
            )
            raise InvalidInputError(
                f"gnd[{i}] must have the keys 'easy', 'hard' and 'junk' of the revisited "
                f"format, missing {missing}{hint}"
            )
        easy = _index_array(entry["easy"], f"gnd[{i}]['easy']")
        hard = _index_array(entry["hard"], f"gnd[{i}]['hard']")
        junk = _index_array(entry["junk"], f"gnd[{i}]['junk']")
        if protocol == "easy":
            q = {"ok": easy, "junk": np.concatenate([junk, hard])}
        elif protocol == "medium":
            q = {"ok": np.concatenate([easy, hard]), "junk": junk}
        else:
            q = {"ok": hard, "junk": np.concatenate([junk, easy])}
        if "bbx" in entry:
            q["bbx"] = entry["bbx"]
        out.append(q)
    return out


# --------------------------------------------------------------------------------------------
# The per-query kernels


def _average_precision(pos: np.ndarray, n_pos: int) -> float:
    """Trapezoid AP of the sorted junk-free 0-based positions ``pos`` of retrieved positives."""
    if pos.size == 0:
        return 0.0
    j = np.arange(pos.size, dtype=np.float64)
    rank = pos.astype(np.float64)
    # rank = 0 only for j = 0 (positions are distinct), where precision_0 is 1 by definition.
    p0 = np.divide(j, rank, out=np.ones_like(rank), where=rank > 0)
    p1 = (j + 1.0) / (rank + 1.0)
    return float((p0 + p1).sum() / (2.0 * n_pos))


def _precision_at(pos: np.ndarray, ks: Tuple[int, ...]) -> np.ndarray:
    """revisitop's precision at every k: ``#(pos1 <= kq) / kq``, ``kq = min(max(pos1), k)``."""
    out = np.zeros(len(ks))
    if pos.size == 0:
        return out
    pos1 = pos + 1
    last = int(pos1[-1])
    for j, k in enumerate(ks):
        kq = min(last, k)
        out[j] = np.searchsorted(pos1, kq, side="right") / kq
    return out


def _positions_table(
    row: np.ndarray, ok: np.ndarray, junk: np.ndarray, labels: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted positions in ``row`` of the positives and of the junk, via a label table."""
    labels[ok] = _POS
    labels[junk] |= _JUNK
    try:
        lab = labels[row.astype(np.intp, copy=False)]
    finally:
        labels[ok] = 0
        labels[junk] = 0
    hits = np.flatnonzero(lab)
    kinds = lab[hits]
    return hits[(kinds & _POS) != 0], hits[(kinds & _JUNK) != 0]


def _positions_sorted(
    row: np.ndarray, ok: np.ndarray, junk: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Same as :func:`_positions_table` by sorting (for very sparse, large indices)."""
    return np.flatnonzero(np.isin(row, ok)), np.flatnonzero(np.isin(row, junk))


# --------------------------------------------------------------------------------------------
# The ground-truth records and kappas (format checks of the evaluation's own inputs)


def _gnd_list(gnd: Any) -> List[Mapping[str, Any]]:
    if isinstance(gnd, Mapping) or isinstance(gnd, (str, bytes)):
        raise InvalidInputError(
            f"gnd must be a sequence with one mapping per query, got a {type(gnd).__name__}"
            + (" (for a loaded ground truth file pass its 'gnd' list)" if isinstance(gnd, Mapping) else "")
        )
    try:
        entries = list(gnd)
    except TypeError:
        raise InvalidInputError(
            f"gnd must be a sequence with one mapping per query, got {type(gnd).__name__}"
        ) from None
    if not entries:
        raise InvalidInputError("gnd must hold at least one query, got an empty sequence")
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise InvalidInputError(
                f"gnd[{i}] must be a mapping with 'ok' (and optional 'junk'), "
                f"got {type(entry).__name__}"
            )
    return entries


def _index_array(x: Any, name: str, n: Optional[int] = None) -> np.ndarray:
    """A flat int64 array of 0-based indices (empty allowed), checked >= 0 and < n.

    Any integer dtype, and float arrays holding whole numbers: revisitop builds its lists with
    ``np.concatenate([gnd[i]['easy']])``, which gives float64 for an empty list, and MATLAB
    files hold doubles. A value that is not a whole number is an error, never rounded."""
    arr = np.asarray(x)
    if arr.size == 0 and arr.dtype.kind in "biuf":
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "f":
        flat = arr.reshape(-1).astype(np.float64)
        bad = ~np.isfinite(flat) | (flat != np.round(flat))
        if bad.any():
            raise InvalidInputError(
                f"{name} must hold whole-number indices, got {float(flat[np.flatnonzero(bad)[0]])}"
            )
        if np.abs(flat).max() > 2**53:
            raise InvalidInputError(f"{name} holds an index too large for a float: {float(flat.max())}")
        arr = flat.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise InvalidDTypeError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    arr = arr.reshape(-1)
    if arr.dtype.kind == "u" and arr.dtype.itemsize >= 8 and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidInputError(f"{name} holds an index too large for int64: {int(arr.max())}")
    arr = arr.astype(np.int64)
    lo = int(arr.min())
    if lo < 0:
        raise InvalidInputError(f"{name} must hold 0-based indices >= 0, got {lo}")
    if n is not None:
        hi = int(arr.max())
        if hi >= n:
            raise InvalidInputError(
                f"{name} must hold indices in [0, n) = [0, {n}), got {hi}"
            )
    return arr


def _check_gnd(gnd: Any, n: Optional[int]) -> List[Tuple[np.ndarray, np.ndarray]]:
    out = []
    for i, entry in enumerate(_gnd_list(gnd)):
        if "ok" not in entry:
            hint = (
                f" (a revisited ground truth: use revisited(gnd, protocol) with protocol in "
                f"{PROTOCOLS})"
                if "easy" in entry or "hard" in entry
                else ""
            )
            raise InvalidInputError(f"gnd[{i}] has no 'ok' (positives) key{hint}")
        ok = _index_array(entry["ok"], f"gnd[{i}]['ok']", n)
        junk_raw = entry.get("junk")
        junk = _index_array([] if junk_raw is None else junk_raw, f"gnd[{i}]['junk']", n)
        if ok.size > 1 and np.unique(ok).size != ok.size:
            raise InvalidInputError(
                f"gnd[{i}]['ok'] repeats an index: every positive must be listed once "
                "(the recall step is 1 / len(ok))"
            )
        if ok.size and junk.size:
            both = np.intersect1d(ok, junk)
            if both.size:
                raise InvalidInputError(
                    f"gnd[{i}]: index {int(both[0])} is both positive ('ok') and 'junk'; an "
                    "image must be one or the other"
                )
        out.append((ok, junk))
    return out


def _check_kappas(kappas: Any) -> Tuple[int, ...]:
    if isinstance(kappas, (str, bytes)) or not hasattr(kappas, "__iter__"):
        raise InvalidInputError(f"kappas must be a sequence of positive integers, got {kappas!r}")
    ks = tuple(_validate.integer(k, f"kappas[{i}]", minimum=1) for i, k in enumerate(kappas))
    if len(set(ks)) != len(ks):
        raise InvalidInputError(f"kappas must not repeat a value, got {kappas!r}")
    return ks
