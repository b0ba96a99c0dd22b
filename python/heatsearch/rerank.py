"""HeR: heat-diffusion re-ranking of a first-pass ranking.

Pang et al., "Deep Feature Aggregation and Image Re-ranking with Heat Diffusion for Image
Retrieval", IEEE TMM 21(6), 2019, section IV; the exact computation is the project's
docs/ALGORITHM.md, section 2. For each query, its top ``depth`` database vectors and the query itself
form a small graph (rows centred by their own mean, affinity = Gram matrix with the diagonal
and the negative entries set to 0, a ground node of conductance ``ground * mean of the positive
affinities``). The query is held at temperature 1 as the only heat source, and the top ``depth``
are re-ordered by their steady-state temperature ``G_{i,q}`` (``G = (I - D^-1 A)^-1``).

The work runs in Rust with the GIL released: per query the Gram matrix (``k^2 d / 2``
multiply-adds) and ONE solve of the SPD system ``(D - A) x = D e_q`` by Jacobi-preconditioned
conjugate gradient (about 20 passes over the ``k^2 / 2`` stored entries on the Holidays
descriptors; a Cholesky factor when CG does not converge), never an inverse. Queries run in
parallel on heatsearch's thread pool (:func:`heatsearch.set_num_threads`); the result does not
depend on the number of threads. The pure-NumPy transcription (dense inverse) is
:func:`heatsearch.reference.heat_rerank`.

Vectors are ROWS: database ``X (n, d)``, queries ``Q (nq, d)``. A ranking is
``ranks (nq, m)``, best first, 0-based; cirtorch and revisitop hold the transpose
``(n, nq)``: pass ``ranks.T``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _core, _validate
from ._compat import accepts_old_arguments

__all__ = ["heat_rerank", "DEFAULT_DEPTH", "DEFAULT_GROUND"]

# The defaults are the Rust core's (rust/core/src/rerank.rs), the one place they are written.
#: Candidates re-ranked per query: 800 (the paper's HeR experiments).
DEFAULT_DEPTH: int = _core.HER_DEPTH
#: Ground conductance factor: ``z = 0.1 * mean of the positive affinities`` (the paper).
DEFAULT_GROUND: float = _core.HER_GROUND


@accepts_old_arguments(positional=("depth",), renamed={"k": "depth"})
def heat_rerank(
    X: ArrayLike,
    Q: ArrayLike,
    ranks: ArrayLike,
    *,
    depth: int = DEFAULT_DEPTH,
    ground: float = DEFAULT_GROUND,
    scores: Optional[ArrayLike] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Re-rank the top ``depth`` of each query's ranking by heat diffusion (HeR).

    For query ``q`` with first-pass ranking ``r`` and ``k = depth``: the rows
    ``X[r[0]], ..., X[r[k-1]], q``
    (query last) are centred by their mean (no re-normalisation); ``A`` = their Gram matrix
    with ``A_ii = 0`` and negative entries set to 0; ``z = ground * mean{A_ij > 0}``;
    ``D_ii = sum_j A_ij + z``. The score of candidate ``i`` is ``G_{i,q}``, column ``q`` of
    ``G = (I - D^-1 A)^-1``: its temperature when the query alone is heated. The top ``depth``
    are re-ordered by descending temperature; positions ``depth..m-1`` keep their order.

    Args:
        X: database ``(n, d)``, float32 or float64, any memory layout: the final descriptors
            (whitened, L2-normalised in the paper).
        Q: queries ``(nq, d)``, the dtype and ``d`` of ``X``. The query is the heat source,
            whatever produced ``ranks``: for "QE + HeR" (docs/ALGORITHM.md section 2) pass the
            EXPANDED queries with the ORIGINAL first-pass ranking (example below).
        ranks: first-pass ranking ``(nq, m)``, integer (converted to int64), 0-based database
            indices best first, ``m <= n``, no index twice in a row. cirtorch/revisitop's
            ``(n, nq)`` layout must be transposed (``ranks.T``).
        depth: candidates re-ranked per query, ``>= 0``; default 800 (the paper).
            ``depth > m`` is clamped to ``m``; ``depth = 0`` returns the ranking unchanged.
            (Called ``k`` before heatsearch 0.2, where ``k`` now always means results
            returned; the old spelling still works, with a DeprecationWarning.)
        ground: ground conductance factor, ``> 0``; default 0.1 (the paper).
        scores: the first-pass scores ``(nq, m)`` matching ``ranks`` (converted to ``X``'s
            dtype), returned unchanged at positions ``depth..m-1``. ``None``: those positions
            get the inner products ``<q, x_i>`` (computed in float64), which costs
            ``(m - depth) d`` per query: pass the scores of your search when you have them.

    Returns:
        ``(ranks, scores)``: new arrays ``(nq, m)``, int64 and ``X``'s dtype. The first
        ``min(depth, m)`` scores of a row are heat temperatures (``G_{q,q} >= 1`` would be the
        query's own; candidates get values in ``[0, G_{q,q}]``), the rest first-pass scores:
        the two parts are on different scales, compare scores within a part only.
        Degenerate cases: with no positive affinity among the ``k + 1`` rows (e.g. ``k = 1``:
        two centred rows are opposite), every temperature is 0 and the first-pass order of
        the top ``depth`` is kept (with ``A = 0``, ``G = I``: this is the formula, not a special
        rule); a candidate with no positive affinity to any row, or none linking it to the
        query, has temperature 0 and goes after the heated ones, in first-pass order. A row
        equal to the mean of the ``k + 1`` rows (up to 16 ulps) has affinity 0 to all.
        Equal temperatures keep their first-pass order; temperatures that agree to about
        1e-9 relative may be ordered differently by another correct solver (e.g. the
        reference), so compare solvers by scores and mAP, not by exact ranks.

    Raises:
        InvalidDTypeError (a TypeError): ``X``/``Q``/``scores`` not float32/float64, ``Q`` of
            another dtype than ``X``, non-integer ``ranks`` or ``depth``, non-real ``ground``.
        InvalidInputError (a ValueError): ``X``/``Q`` not 2-D, different ``d``, an empty
            database, ``ranks`` not ``(nq, m)`` with ``m <= n``, an index outside ``[0, n)``
            or twice in a row, ``scores`` not of the shape of ``ranks``, NaN/Inf in ``Q``,
            ``scores`` or a row of ``X`` that ``ranks`` names (other rows are not read: a
            re-ranking of the top 20 checks 20 database rows), ``depth < 0``, ``ground <= 0``.

    Complexity: per query ``k^2 d / 2`` (Gram) + about 20 x ``k^2`` (conjugate gradient)
    multiply-adds (``k = depth``); README, "Benchmarks", has the measured time per query.

    Example::

        import numpy as np
        import heatsearch as hs

        # First pass: inner-product search, ranks and scores (nq, n).
        sims = Q @ X.T
        ranks = np.argsort(-sims, axis=1, kind="stable")
        sims = np.take_along_axis(sims, ranks, axis=1)

        # HeR of the top 800.
        ranks2, scores2 = hs.heat_rerank(X, Q, ranks, depth=800, scores=sims)

        # QE + HeR: the expanded query heats the ORIGINAL first-pass top k.
        Qe = hs.average_query_expansion(X, Q, ranks, neighbors=10)
        ranks3, scores3 = hs.heat_rerank(X, Qe, ranks, depth=800, scores=sims)
    """
    x, q, r, s, dp, g = _validate.her_arguments(X, Q, ranks, scores, depth, ground)
    return _core.heat_rerank(x, q, r, depth=dp, ground=g, scores=s)
