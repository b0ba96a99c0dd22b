"""Retrieval pipelines: a first-pass search followed by one of the re-ranking methods.

One place that says what "+AQE", "+HeR", "+AQE+HeR" or "+diffusion" means, used by
:class:`heatsearch.Index` and by ``heatsearch evaluate``. Descriptors are final (post-processed,
L2-normalised) rows: database ``X (n, d)``, queries ``Q (nq, d)``.

======================  =====================================================================
``rerank``              what runs (defaults from the papers, see PEERS.md)
======================  =====================================================================
``None``                exact inner-product search
``"heat"``              HeR (Pang et al. 2019) over the first-pass top ``heat_k`` = 800
``"aqe"``               average query expansion over the top 10, then a new search
``"alpha-qe"``          alpha-QE (alpha = 3) over the top 10, then a new search
``"aqe+heat"``          HeR over the ORIGINAL first-pass top 800 with the AQE query as the
                        heat source (the paper's "QE + HeR")
``"diffusion"``         Iscen et al. 2017 diffusion (mutual 50-NN graph, truncation 1000)
======================  =====================================================================
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .errors import InvalidInputError
from .query_expansion import alpha_query_expansion, average_query_expansion

__all__ = ["RERANKERS", "rank", "HER_K", "QE_K"]

#: The re-ranking methods :func:`rank` knows.
RERANKERS = (None, "heat", "aqe", "alpha-qe", "aqe+heat", "diffusion")
#: HeR's top k (the paper: 800).
HER_K = 800
#: Query expansion's top k (AQE: 10, as in Chum et al. 2007, CroW and cirtorch).
QE_K = 10


def rank(
    X: Any,
    Q: Any,
    *,
    k: Optional[int] = None,
    rerank: Optional[str] = None,
    heat_k: int = HER_K,
    qe_k: int = QE_K,
    graph: Any = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Ranks the database for every query with an optional re-ranking.

    Args:
        X: final database descriptors ``(n, d)``, float32 or float64.
        Q: final query descriptors ``(nq, d)``, same d and dtype.
        k: length of the returned rankings (``None``: all n). Re-rankers see as many
            first-pass results as they need whatever ``k`` is.
        rerank: one of :data:`RERANKERS`.
        heat_k: HeR's top k (default 800, the paper).
        qe_k: query expansion's top k (default 10).
        graph: a kNN graph of ``X`` (:func:`heatsearch.knn_graph`) reused by "diffusion".

    Returns:
        ``(ranks, scores)``, each ``(nq, min(k, n))``: 0-based database indices, best first
        (cirtorch/revisitop use the transpose), and their scores.
    """
    from .diffusion import diffusion_rerank
    from .rerank import heat_rerank
    from .search import search

    if rerank not in RERANKERS:
        raise InvalidInputError(
            f"rerank must be one of {', '.join(repr(r) for r in RERANKERS)}, got {rerank!r}"
        )
    X = np.asarray(X)
    n = X.shape[0] if X.ndim == 2 else 0
    out_k = n if k is None else min(int(k), n)
    if rerank is None:
        return search(X, Q, out_k)
    if rerank in ("aqe", "alpha-qe"):
        ranks, _ = search(X, Q, min(qe_k, n))
        expand = average_query_expansion if rerank == "aqe" else alpha_query_expansion
        return search(X, expand(X, Q, ranks, k=qe_k), out_k)
    if rerank == "diffusion":
        ranks, scores = search(X, Q, None)
        ranks, scores = diffusion_rerank(X, Q, ranks, graph=graph)
        return ranks[:, :out_k], scores[:, :out_k]
    # HeR, with the original or the AQE query as the heat source.
    ranks, scores = search(X, Q, max(out_k, min(heat_k, n)))
    source = Q if rerank == "heat" else average_query_expansion(X, Q, ranks, k=qe_k)
    ranks, scores = heat_rerank(X, source, ranks, k=heat_k)
    return ranks[:, :out_k], scores[:, :out_k]
