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
======================  =====================================================================
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

__all__ = ["RERANKERS", "rank"]

#: The re-ranking methods :func:`rank` knows.
RERANKERS = (None, "heat", "aqe", "alpha-qe", "aqe+heat", "diffusion")


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
        depth: HeR's re-ranked depth (default 800, the paper). (``heat_k`` before 0.2.)
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
    dp = _validate.integer(depth, "depth")
    ranks, scores = search(x, q, max(out_k, min(dp, n)))
    source = q if rerank == "heat" else average_query_expansion(x, q, ranks, neighbors=qe_neighbors)
    ranks, scores = heat_rerank(x, source, ranks, depth=dp)
    return ranks[:, :out_k], scores[:, :out_k]
