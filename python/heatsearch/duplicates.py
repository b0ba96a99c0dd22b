"""Near-duplicate groups: every pair of rows whose cosine similarity reaches a threshold,
grouped into connected components.

Descriptors are L2-normalised ROWS ``X (n, d)``, float32 or float64, so the inner product of
two rows is their cosine similarity, in ``[-1, 1]``: 1 for the same direction (an exact
copy), around 0 for unrelated directions. Pairs are found by the exact search of
:func:`heatsearch.search` (Rust, blocked, the GIL released), never by an ``n x n`` matrix:
each block of query rows asks for its top ``k`` neighbours, and only the rows whose ``k``-th
score still reaches the threshold ask again with ``2k``, so the work is the all-pairs
products (``n^2 d`` multiply-adds, as any exact method) plus a few re-searches for rows with
many duplicates, and memory stays ``O(block * k + pairs found)`` beside ``X`` itself.

Grouping is by the connected components of the graph of linked pairs (a union-find), so a
group is every image reachable through a CHAIN of links: ``A ~ B`` and ``B ~ C`` put
``A, B, C`` in one group even when ``A`` and ``C`` score below the threshold (a photo, its
crop, and a crop of the crop; or, at a low threshold, a run of similar-looking photos).
Each group therefore reports its links and :attr:`DuplicateGroup.complete` tells whether
every pair in it is linked. The pure-NumPy transcription is
:func:`heatsearch.reference.duplicate_groups`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from .search import search

__all__ = ["DuplicateGroup", "duplicate_groups", "DEFAULT_THRESHOLD", "WHITENED_THRESHOLD", "DEFAULT_BLOCK"]

#: Cosine similarity of UNWHITENED descriptors (signed square root + L2 of the pooled HeW
#: descriptors of the default IndexConfig) from which two images are near-duplicates: 0.93,
#: what :meth:`heatsearch.Index.duplicates` uses on an index of fewer than 64 images (too few
#: to learn a whitening) and on descriptors computed elsewhere. Chosen by
#: ``tools/calibrate_duplicates.py`` (README, "Near-duplicates") on collections of the demo's
#: edited copies and of 195 real photos with theirs: the threshold of a 0.01 grid whose lowest
#: grouped-pair F1 over the collections is the highest (0.29; precision 0.88-1.00, recall
#: 0.18-0.38). Photos of look-alike subjects (paintings, one landmark) crowd these cosines: at
#: 0.825 (the best F1 on the demo's edits alone) the grouped pairs of collections of 127 real
#: photos or more were 0-2% right.
DEFAULT_THRESHOLD = 0.93
#: Cosine similarity of WHITENED descriptors (whitened by the whitening an index learns on the
#: collection itself with its near-duplicate groups, :meth:`heatsearch.PCAWhitening.fit` with
#: ``duplicates``: what :meth:`heatsearch.Index.duplicates` compares from 64 images on, learned
#: at each call) from which two images are near-duplicates: 0.35, by the same rule and
#: collections as :data:`DEFAULT_THRESHOLD` (lowest F1 0.37, against 0.29 unwhitened at 0.93
#: and 0.00 at 0.825; precision 0.60-1.00, recall 0.31-0.93). The whitening makes unrelated
#: images nearly orthogonal (other pairs average 0.00) and keeps copies together (0.43 on
#: average), so the scale is low; the lowest F1 is 0.37 from 0.325 to 0.525 (a 0.005 grid):
#: the exact value is not critical. With the synthetic copies' pairs in that whitening (an
#: index's default: ``IndexConfig.whiten_copies``) the rule picks 0.33 (lowest F1 0.37, mean
#: 0.628) and 0.35 gives the same lowest F1 and mean 0.62 (0.59 without the copies; recall
#: on the collections with few copies of each photo 0.52 -> 0.67 and 0.59 -> 0.71 at equal
#: precision): one threshold serves indexes with and without the copies.
WHITENED_THRESHOLD = 0.35
#: Query rows per search call: 1024 rows x 32 neighbours keep each call's results at 0.4 MB
#: (a call with a larger ``k`` takes proportionally fewer rows).
DEFAULT_BLOCK = 1024
# Neighbours asked for first: most images have fewer than 31 near-duplicates, so most rows
# are settled by one search; the others double k until their k-th score falls below the
# threshold.
_FIRST_K = 32


@dataclass(frozen=True, eq=False)
class DuplicateGroup:
    """One group of near-duplicates (a connected component of at least two rows).

    Attributes:
        rows: ``(m,)`` int64, the group's rows of ``X``, ascending, ``m >= 2``.
        pairs: ``(p, 2)`` int64, rows ``(i, j)`` with ``i < j``: the linked pairs (cosine
            ``>=`` the threshold) inside the group, highest score first (ties: by ``i``,
            then ``j``); ``p >= m - 1`` (the links hold the group together).
        scores: ``(p,)`` float64, the cosine similarity of each pair, in ``[-1, 1]`` (to
            rounding), non-increasing.
        paths: the images of :attr:`rows` when the group comes from an index
            (:meth:`heatsearch.Index.duplicates`), else empty.
    """

    rows: np.ndarray
    pairs: np.ndarray
    scores: np.ndarray
    paths: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def max_score(self) -> float:
        """The highest link's cosine."""
        return float(self.scores[0])

    @property
    def min_score(self) -> float:
        """The weakest link's cosine (still ``>=`` the threshold)."""
        return float(self.scores[-1])

    @property
    def nearest(self) -> np.ndarray:
        """``(m,)`` float64: for each of :attr:`rows`, its highest link's cosine (to another
        image of the group)."""
        best = np.full(len(self), -np.inf)
        where = np.searchsorted(self.rows, self.pairs)
        np.maximum.at(best, where[:, 0], self.scores)
        np.maximum.at(best, where[:, 1], self.scores)
        return best

    @property
    def complete(self) -> bool:
        """True when every pair of the group is linked; False when some images are in it
        only through a chain (see the module docstring)."""
        m = len(self)
        return self.pairs.shape[0] == m * (m - 1) // 2


def duplicate_groups(
    X: ArrayLike, threshold: float = DEFAULT_THRESHOLD, *, block: int = DEFAULT_BLOCK
) -> List[DuplicateGroup]:
    """Groups of rows of ``X`` linked by a cosine similarity ``>= threshold``.

    Args:
        X: ``(n, d)`` float32 or float64, L2-normalised rows (each row's norm 1 within
            1e-3, or a zero row, which scores 0 with everything), any memory layout; ``n``
            at least 1.
        threshold: a cosine in ``[-1, 1]``; a pair is linked when its score is ``>=`` it.
            Default :data:`DEFAULT_THRESHOLD` (0.93, calibrated for the unwhitened
            descriptors of the default index; other descriptors need their own, e.g.
            :data:`WHITENED_THRESHOLD` for an index's whitened ones).
            1 links only exact copies up to rounding: rounding can put an identical pair a
            few 1e-7 below 1 in float32, so ask 0.999 for "identical".
        block: query rows per search call (default :data:`DEFAULT_BLOCK`), an int >= 1;
            it bounds memory, not results.

    Returns:
        The groups (singletons omitted), largest first, then by their lowest row. Scores
        are computed in ``X``'s dtype, each pair once, from its lower row's search.

    Raises:
        InvalidDTypeError (a TypeError): ``X`` not float32/float64; ``threshold`` not a real
            number; ``block`` not an int.
        InvalidInputError (a ValueError): ``X`` not 2-D or empty, NaN or infinity in it, a
            row that is not L2-normalised; ``threshold`` outside ``[-1, 1]``; ``block < 1``.

    Complexity: ``n^2 d`` multiply-adds; rows with more than 31 duplicates are searched again
    with a doubled ``k`` (``log2`` of their duplicate count times). Memory
    ``O(block * 32 + pairs)`` besides ``X``: a threshold so low that most pairs link (say
    below 0.5 on image descriptors) returns ``O(n^2)`` pairs.
    """
    x, t, b = _validate.duplicates_arguments(X, threshold, block)
    # Searched n / block times: one row-major copy now rather than a strided read each time.
    first, second, scores = _linked_pairs(np.ascontiguousarray(x), t, b)
    return _components(x.shape[0], first, second, scores)


def _linked_pairs(
    x: np.ndarray, t: float, block: int, nearest: Optional[Tuple[np.ndarray, np.ndarray]] = None
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` with ``x_i . x_j >= t``, from row ``i``'s search: ``(i, j, score)``.
    ``nearest``: ``(ranks, scores)`` arrays ``(n, k)`` (``k <= min(32, n)``), filled with each
    row's first ``k`` hits (itself included) from the same searches."""
    n = x.shape[0]
    budget = block * _FIRST_K  # results held per search call
    found_i: List[np.ndarray] = []
    found_j: List[np.ndarray] = []
    found_s: List[np.ndarray] = []
    for start in range(0, n, block):
        todo = np.arange(start, min(start + block, n), dtype=np.int64)
        k = min(_FIRST_K, n)
        first_pass = True  # every row of the block is searched once with k, then some again
        while todo.size:
            step = max(1, budget // k)
            unsettled = []
            for s in range(0, todo.size, step):
                rows = todo[s : s + step]
                ranks, sims = search(x, x[rows], k)
                if nearest is not None and first_pass:
                    width = nearest[0].shape[1]
                    nearest[0][rows], nearest[1][rows] = ranks[:, :width], sims[:, :width]
                # A row is settled when its k-th score is below the threshold (every later
                # one is no higher) or when it has seen the whole database.
                settled = sims[:, -1] < t if k < n else np.ones(rows.size, bool)
                linked = settled[:, None] & (sims >= t) & (ranks > rows[:, None])
                r, c = np.nonzero(linked)
                found_i.append(rows[r])
                found_j.append(ranks[r, c])
                found_s.append(sims[r, c].astype(np.float64))
                unsettled.append(rows[~settled])
            todo = np.concatenate(unsettled)
            k = min(2 * k, n)
            first_pass = False
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s)


def _component_labels(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Each node's component, named by its lowest node: a vectorised union-find (hook every
    link's higher root under the lower one, then compress paths by pointer jumping, until
    every link joins one root; a few rounds, each ``O(n + links)``)."""
    label = np.arange(n, dtype=np.int64)
    while True:
        a, b = label[first], label[second]
        split = a != b
        if not split.any():
            return label
        np.minimum.at(label, np.maximum(a[split], b[split]), np.minimum(a[split], b[split]))
        while True:  # every node points at its root
            up = label[label]
            if np.array_equal(up, label):
                break
            label = up


def _components(n: int, first: np.ndarray, second: np.ndarray, scores: np.ndarray) -> List[DuplicateGroup]:
    label = _component_labels(n, first, second)
    sizes = np.bincount(label, minlength=n)
    roots = np.flatnonzero(sizes >= 2)
    # Roots are their component's lowest row: largest first, then by lowest row.
    roots = roots[np.lexsort((roots, -sizes[roots]))]
    # Links sorted by group, then score descending, then (i, j).
    order = np.lexsort((second, first, -scores, label[first]))
    link_root = label[first][order]
    starts = np.searchsorted(link_root, roots, side="left")
    ends = np.searchsorted(link_root, roots, side="right")
    members = np.argsort(label, kind="stable")
    member_root = label[members]
    groups = []
    for root, s, e in zip(roots, starts, ends):
        links = order[s:e]
        lo, hi = np.searchsorted(member_root, [root, root + 1])
        groups.append(
            DuplicateGroup(
                rows=members[lo:hi].astype(np.int64),
                pairs=np.stack([first[links], second[links]], axis=1),
                scores=scores[links],
            )
        )
    return groups
