"""Retrieval pipelines: a first-pass search followed by one of the re-ranking methods.

One place that says what "+AQE", "+HeR", "+AQE+HeR" or "+diffusion" means, used by
:class:`heatsearch.Index` and by ``heatsearch evaluate``. Descriptors are final (post-processed,
L2-normalised) rows: database ``X (n, d)``, queries ``Q (nq, d)``.

======================  =====================================================================
``rerank``              what runs (defaults from the papers, see docs/PEERS.md)
======================  =====================================================================
``None``                exact inner-product search
``"heat"``              HeR (Pang et al. 2019) over the first-pass top ``depth`` = 800
``"aqe"``               average query expansion over the top 10, then a new search
``"alpha-qe"``          alpha-QE (alpha = 3) over the top 10, then a new search
``"aqe+heat"``          HeR over the ORIGINAL first-pass top 800 with the AQE query as the
                        heat source (the paper's "QE + HeR")
``"diffusion"``         Iscen et al. 2017 diffusion (mutual 50-NN graph, truncation 1000)
``"auto"``              HeR over the first-pass top :data:`AUTO_DEPTH` = 20, the first-pass
                        best match kept first (see below)
======================  =====================================================================

``"auto"`` is HeR made safe for collections whose queries have few relevant images, which
is most photo collections (README, "Retrieval quality and the defaults", ``python
tools/protocols.py``): HeR at the paper's depth of 800 re-ranks a whole small collection and
buries a single positive under the query's broader neighbourhood (smvs_paintings, one
positive a query: 49.3 -> 34.0 mAP with the index's default whitening), while over the top 20,
with the first-pass best match kept first, it keeps single-positive search at the plain
ranking (49.3) and lifts collections of several photos per place (phototourism 54.3 -> 62.8;
INRIA Holidays 87.5 -> 88.2 whitened as an index whitens it, 80.2 -> 81.6 unwhitened, where
depth 800 gives 77.1). It costs copy detection about a point once many copies are queried
(every image of the demo's set 98.9 -> 97.8; a blurred copy's neighbourhood is the other
photos' blurred copies), which is why the command line and the server do not re-rank by
default. Use ``"heat"`` (depth 800) on Oxford/Paris-like
collections with many positives per query, where the paper measured it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from ._compat import accepts_old_arguments
from .diffusion import diffusion_rerank
from .knn import KnnGraph
from .query_expansion import DEFAULT_NEIGHBORS, alpha_query_expansion, average_query_expansion
from .rerank import DEFAULT_DEPTH, heat_rerank
from .search import search

__all__ = ["RERANKERS", "AUTO_DEPTH", "rank"]

#: The re-ranking methods :func:`rank` knows.
RERANKERS = (None, "heat", "aqe", "alpha-qe", "aqe+heat", "diffusion", "auto")
#: HeR's depth for ``rerank="auto"``: 20, the best of 5-800 on INRIA Holidays (authors'
#: descriptors; 10: 80.7, 20: 82.4, 40: 81.9, 100: 80.1, 800: 77.1 mAP without the guard);
#: with the index whitening before its near-duplicate neighbours' rule, depths 10 / 15 / 20 /
#: 30 gave copy detection 92.1 / 92.5 / 92.2 / 90.0 (93.5 plain), phototourism 58.5 / 62.8 /
#: 62.8 / 62.8 and Holidays 87.9 / 88.2 / 88.4 / 88.7 (87.7 plain), so 20 stays.
AUTO_DEPTH = 20
#: A first-pass cosine this close to 1 is the query's own image (an indexed image used as a
#: query): float32 descriptors of one image agree to about 1e-7.
SAME_IMAGE = 1.0 - 1e-5


@accepts_old_arguments(renamed={"heat_k": "depth", "qe_k": "qe_neighbors"})
def rank(
    X: ArrayLike,
    Q: ArrayLike,
    *,
    k: Optional[int] = None,
    rerank: Optional[str] = None,
    depth: int = DEFAULT_DEPTH,
    qe_neighbors: int = DEFAULT_NEIGHBORS,
    graph: Optional[KnnGraph] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Ranks the database for every query with an optional re-ranking.

    Args:
        X: final database descriptors ``(n, d)``, float32 or float64.
        Q: final query descriptors ``(nq, d)``, same d and dtype.
        k: length of the returned rankings (``None``: all n). Re-rankers see as many
            first-pass results as they need whatever ``k`` is.
        rerank: one of :data:`RERANKERS`.
        depth: HeR's re-ranked depth (default 800, the paper; ``"auto"`` uses
            :data:`AUTO_DEPTH` instead). (``heat_k`` before 0.2.)
        qe_neighbors: query expansion's neighbours (default 10). (``qe_k`` before 0.2.)
        graph: a kNN graph of ``X`` (:func:`heatsearch.knn_graph`) reused by "diffusion".

    Returns:
        ``(ranks, scores)``, each ``(nq, min(k, n))``: 0-based database indices, best first
        (cirtorch/revisitop use the transpose), and their scores.
    """
    _validate.choice(rerank, "rerank", RERANKERS)
    x, q, out_k = _validate.search_arguments(X, Q, k)
    n = x.shape[0]
    if rerank is None:
        return search(x, q, out_k)
    if rerank in ("aqe", "alpha-qe"):
        ranks, _ = search(x, q, min(_validate.integer(qe_neighbors, "qe_neighbors"), n))
        expand = average_query_expansion if rerank == "aqe" else alpha_query_expansion
        return search(x, expand(x, q, ranks, neighbors=qe_neighbors), out_k)
    if rerank == "diffusion":
        ranks, scores = search(x, q, None)
        ranks, scores = diffusion_rerank(x, q, ranks, graph=graph)
        return ranks[:, :out_k], scores[:, :out_k]
    # HeR, with the original or the AQE query as the heat source.
    dp = AUTO_DEPTH if rerank == "auto" else _validate.integer(depth, "depth")
    first, first_scores = search(x, q, max(out_k, min(dp, n)))
    source = q if rerank != "aqe+heat" else average_query_expansion(x, q, first, neighbors=qe_neighbors)
    ranks, scores = heat_rerank(x, source, first, depth=dp)
    if rerank == "auto":
        ranks, scores = _keep_best_match(first, first_scores, ranks, scores)
    return ranks[:, :out_k], scores[:, :out_k]


def _keep_best_match(
    first: np.ndarray, first_scores: np.ndarray, ranks: np.ndarray, scores: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """``rerank="auto"``'s guard: the first pass's best match (after the query's own image,
    cosine >= :data:`SAME_IMAGE`, when the query is in the database) stays in front of HeR's
    order, with HeR's best temperature as its score (so scores stay non-increasing).

    HeR judges a result by its neighbourhood, so it can bury a single correct match that
    resembles nothing else (smvs_paintings without whitening: 37.4 -> 31.0 mAP; with the
    guard 36.9), the match a user looking for "this painting" wants first. Rows ``(nq, m)``
    of ``first`` / ``first_scores`` (first pass) and ``ranks`` / ``scores`` (HeR's)."""
    out_ranks, out_scores = ranks.copy(), scores.copy()
    for i in range(len(first)):
        keep = min(int(np.count_nonzero(first_scores[i] >= SAME_IMAGE)) + 1, first.shape[1])
        head = first[i, :keep]
        tail = ~np.isin(ranks[i], head)
        out_ranks[i, keep:], out_scores[i, keep:] = ranks[i][tail], scores[i][tail]
        out_ranks[i, :keep] = head
        out_scores[i, :keep] = np.maximum(scores[i][np.isin(ranks[i], head)].max(), scores[i, 0])
    return out_ranks, out_scores
