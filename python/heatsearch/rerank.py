"""HeR: heat-diffusion re-ranking of a first-pass ranking.

Pang et al., "Deep Feature Aggregation and Image Re-ranking with Heat Diffusion for Image
Retrieval", IEEE TMM 21(6), 2019, section IV; the exact computation is the project's
ALGORITHM.md, section 2. For each query, its top ``k`` database vectors and the query itself
form a small graph (rows centred by their own mean, affinity = Gram matrix with the diagonal
and the negative entries set to 0, a ground node of conductance ``ground * mean of the positive
affinities``). The query is held at temperature 1 as the only heat source, and the top ``k``
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

from typing import Any, Optional, Tuple

import numpy as np

from . import _checks, _core
from .errors import InvalidDTypeError, InvalidInputError

__all__ = ["heat_rerank", "DEFAULT_K", "DEFAULT_GROUND"]

#: Candidates re-ranked per query: 800 (the paper's HeR experiments).
DEFAULT_K = 800
#: Ground conductance factor: ``z = 0.1 * mean of the positive affinities`` (the paper).
DEFAULT_GROUND = 0.1


def heat_rerank(
    X: Any,
    Q: Any,
    ranks: Any,
    k: int = DEFAULT_K,
    *,
    ground: float = DEFAULT_GROUND,
    scores: Optional[Any] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Re-rank the top ``k`` of each query's ranking by heat diffusion (HeR).

    For query ``q`` with first-pass ranking ``r``: the rows ``X[r[0]], ..., X[r[k-1]], q``
    (query last) are centred by their mean (no re-normalisation); ``A`` = their Gram matrix
    with ``A_ii = 0`` and negative entries set to 0; ``z = ground * mean{A_ij > 0}``;
    ``D_ii = sum_j A_ij + z``. The score of candidate ``i`` is ``G_{i,q}``, column ``q`` of
    ``G = (I - D^-1 A)^-1``: its temperature when the query alone is heated. The top ``k`` are
    re-ordered by descending temperature; positions ``k..m-1`` keep their order.

    Args:
        X: database ``(n, d)``, float32 or float64, any memory layout: the final descriptors
            (whitened, L2-normalised in the paper).
        Q: queries ``(nq, d)``, the dtype and ``d`` of ``X``. The query is the heat source,
            whatever produced ``ranks``: for "QE + HeR" (ALGORITHM.md section 2) pass the
            EXPANDED queries with the ORIGINAL first-pass ranking (example below).
        ranks: first-pass ranking ``(nq, m)``, integer (converted to int64), 0-based database
            indices best first, ``m <= n``, no index twice in a row. cirtorch/revisitop's
            ``(n, nq)`` layout must be transposed (``ranks.T``).
        k: candidates re-ranked per query, ``>= 0``; default 800 (the paper). ``k > m`` is
            clamped to ``m``; ``k = 0`` returns the ranking unchanged.
        ground: ground conductance factor, ``> 0``; default 0.1 (the paper).
        scores: the first-pass scores ``(nq, m)`` matching ``ranks`` (converted to ``X``'s
            dtype), returned unchanged at positions ``k..m-1``. ``None``: those positions get
            the inner products ``<q, x_i>`` (computed in float64), which costs
            ``(m - k) d`` per query: pass the scores of your search when you have them.

    Returns:
        ``(ranks, scores)``: new arrays ``(nq, m)``, int64 and ``X``'s dtype. The first
        ``min(k, m)`` scores of a row are heat temperatures (``G_{q,q} >= 1`` would be the
        query's own; candidates get values in ``[0, G_{q,q}]``), the rest first-pass scores:
        the two parts are on different scales, compare scores within a part only.
        Degenerate cases: with no positive affinity among the ``k + 1`` rows (e.g. ``k = 1``:
        two centred rows are opposite), every temperature is 0 and the first-pass order of
        the top ``k`` is kept (with ``A = 0``, ``G = I``: this is the formula, not a special
        rule); a candidate with no positive affinity to any row, or none linking it to the
        query, has temperature 0 and goes after the heated ones, in first-pass order. A row
        equal to the mean of the ``k + 1`` rows (up to 16 ulps) has affinity 0 to all.
        Equal temperatures keep their first-pass order; temperatures that agree to about
        1e-9 relative may be ordered differently by another correct solver (e.g. the
        reference), so compare solvers by scores and mAP, not by exact ranks.

    Raises:
        InvalidDTypeError (a TypeError): ``X``/``Q``/``scores`` not float32/float64, ``Q`` of
            another dtype than ``X``, non-integer ``ranks`` or ``k``, non-real ``ground``.
        InvalidInputError (a ValueError): ``X``/``Q`` not 2-D, different ``d``, an empty
            database, ``ranks`` not ``(nq, m)`` with ``m <= n``, an index outside ``[0, n)``
            or twice in a row, ``scores`` not of the shape of ``ranks``, NaN/Inf, ``k < 0``,
            ``ground <= 0``.

    Complexity: per query ``k^2 d / 2`` (Gram) + about 20 x ``k^2`` (conjugate gradient)
    multiply-adds; at ``k = 800``, ``d = 512`` about 4.5 ms per query and thread (float32).

    Example::

        import numpy as np
        import heatsearch as hs

        # First pass: inner-product search, ranks and scores (nq, n).
        sims = Q @ X.T
        ranks = np.argsort(-sims, axis=1, kind="stable")
        sims = np.take_along_axis(sims, ranks, axis=1)

        # HeR of the top 800.
        ranks2, scores2 = hs.heat_rerank(X, Q, ranks, k=800, scores=sims)

        # QE + HeR: the expanded query heats the ORIGINAL first-pass top k.
        Qe = hs.average_query_expansion(X, Q, ranks, k=10)
        ranks3, scores3 = hs.heat_rerank(X, Qe, ranks, k=800, scores=sims)
    """
    Xa, Qa, r, k, g, s = _arguments(X, Q, ranks, k, ground, scores)
    return _core.heat_rerank(Xa, Qa, r, s, k, g)


def _arguments(
    X: Any, Q: Any, ranks: Any, k: Any, ground: Any, scores: Optional[Any]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, float, Optional[np.ndarray]]:
    """Shapes, dtypes and scalars of :func:`heat_rerank`'s arguments, converted visibly.

    Index values (range, repeats) and NaN/Inf are checked by the core, in parallel.
    """
    Xa, Qa = _checks.descriptor_pair(X, Q, nonempty=True)
    n, nq = Xa.shape[0], Qa.shape[0]
    r = _checks.ranking(ranks, nq, n, max_columns=n, check_range=False, check_repeats=False)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidDTypeError(f"k must be an int, got {type(k).__name__}")
    if k < 0:
        raise InvalidInputError(f"k must be >= 0, got {k}")
    _, g = _checks.heat_params(0.0, ground)
    s = None
    if scores is not None:
        s = _checks.float_array(scores, "scores")
        if s.shape != r.shape:
            raise InvalidInputError(
                f"scores must have the shape of ranks {r.shape}, got {s.shape}"
            )
        if s.dtype != Xa.dtype:
            s = s.astype(Xa.dtype)
    # k > m is clamped (here, so that any Python int fits the core's usize).
    return Xa, Qa, r, min(int(k), r.shape[1]), g, s
