"""Near-duplicate groups in pure NumPy: the full score matrix ``S = X @ X.T`` (in ``X``'s
dtype), every pair ``i < j`` with ``S[i, j] >= threshold``, and the connected components by a
depth-first walk. Obviously right, ``O(n^2)`` memory: for tests and small collections."""

from __future__ import annotations

from typing import List

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate
from ..duplicates import DEFAULT_BLOCK, DEFAULT_THRESHOLD, DuplicateGroup

__all__ = ["duplicate_groups"]


def duplicate_groups(
    X: ArrayLike, threshold: float = DEFAULT_THRESHOLD, *, block: int = DEFAULT_BLOCK
) -> List[DuplicateGroup]:
    """Reference of :func:`heatsearch.duplicate_groups` (same arguments, results and errors;
    ``block`` is checked and otherwise unused)."""
    x, t, _ = _validate.duplicates_arguments(X, threshold, block)
    n = x.shape[0]
    S = x @ x.T
    first, second = np.nonzero(np.triu(S >= t, k=1))
    neighbours: List[List[int]] = [[] for _ in range(n)]
    for i, j in zip(first.tolist(), second.tolist()):
        neighbours[i].append(j)
        neighbours[j].append(i)
    seen = np.zeros(n, bool)
    groups = []
    for start in range(n):
        if seen[start]:
            continue
        seen[start] = True
        stack, members = [start], []
        while stack:
            i = stack.pop()
            members.append(i)
            for j in neighbours[i]:
                if not seen[j]:
                    seen[j] = True
                    stack.append(j)
        if len(members) < 2:
            continue
        rows = np.array(sorted(members), np.int64)
        inside = np.isin(first, rows)
        pairs = [(float(S[i, j]), int(i), int(j)) for i, j in zip(first[inside], second[inside])]
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        groups.append(
            DuplicateGroup(
                rows=rows,
                pairs=np.array([(i, j) for _, i, j in pairs], np.int64).reshape(-1, 2),
                scores=np.array([s for s, _, _ in pairs], np.float64),
            )
        )
    groups.sort(key=lambda g: (-len(g), int(g.rows[0])))
    return groups
