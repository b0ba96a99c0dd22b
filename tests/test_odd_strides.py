"""Arrays whose byte strides are not multiples of their item size (a float field of a NumPy
structured array, a view into raw bytes) give every kernel the same result as a contiguous
copy: they used to be misread (scores of 4e19, NaN found where there was none)."""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import pytest

import heatsearch as hs
from heatsearch import reference

rng = np.random.default_rng(5)


def odd_rows(a: np.ndarray) -> np.ndarray:
    """``a`` (2-D) as the field of a structured array with a 1-byte tag before each row:
    rows start at odd byte offsets."""
    rec = np.zeros(a.shape[0], dtype=[("tag", "i1"), ("v", a.dtype, (a.shape[1],))])
    rec["v"] = a
    return rec["v"]


def odd_items(a: np.ndarray) -> np.ndarray:
    """``a`` (any ndim) with a 1-byte tag before every element: element strides are odd."""
    rec = np.zeros(a.shape, dtype=[("tag", "i1"), ("v", a.dtype)])
    rec["v"] = a
    return rec["v"]


X = hs.l2_normalize(rng.standard_normal((120, 16)))
Q = hs.l2_normalize(rng.standard_normal((5, 16)))
R, S = hs.search(X, Q, 60)
FMAPS = [np.maximum(rng.standard_normal((6, 5, 12)), 0) for _ in range(3)]
GRAPH = hs.knn_graph(X, neighbors=8)

CALLS: Dict[str, Callable[[Callable[[np.ndarray], np.ndarray]], object]] = {
    "search": lambda f: hs.search(f(X), f(Q), 10),
    "knn_graph": lambda f: hs.knn_graph(f(X), neighbors=6).similarities,
    "heat_rerank": lambda f: hs.heat_rerank(f(X), f(Q), f(R), depth=40, scores=f(S)),
    "diffusion_rerank": lambda f: hs.diffusion_rerank(
        f(X), f(Q), f(R), scores=f(S), graph=hs.KnnGraph(f(GRAPH.indices), f(GRAPH.similarities))
    ),
    "hew_weights": lambda f: hs.hew_weights(f(FMAPS[0].reshape(30, 12))),
    "hew_pool with a mean": lambda f: hs.hew_pool(f(FMAPS[0].reshape(30, 12)), f(FMAPS[1][0][0])),
    "hew_pool_batch": lambda f: hs.hew_pool_batch([f(m.reshape(30, 12)) for m in FMAPS]),
    "local_mean": lambda f: hs.local_mean([f(m.reshape(30, 12)) for m in FMAPS]),
    "average_query_expansion": lambda f: hs.average_query_expansion(f(X), f(Q), f(R), neighbors=5),
    "alpha_database_augmentation": lambda f: hs.alpha_database_augmentation(f(X), neighbors=4),
    "l2_normalize": lambda f: hs.l2_normalize(f(X)),
    "compute_map": lambda f: hs.compute_map(f(R), [{"ok": [i, i + 1]} for i in range(5)]).aps,
    "reference.heat_rerank": lambda f: reference.heat_rerank(f(X), f(Q), f(R), depth=20),
}


def _same(a: object, b: object) -> None:
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("layout", ["odd rows", "odd items"])
@pytest.mark.parametrize("name", list(CALLS))
def test_odd_strides_give_the_contiguous_result(name, layout):
    view = odd_rows if layout == "odd rows" else odd_items

    def f(a: np.ndarray) -> np.ndarray:
        if layout == "odd rows" and np.ndim(a) != 2:
            return odd_items(a)
        out = view(np.asarray(a))
        assert not out.flags.aligned  # the case under test
        return out

    _same(CALLS[name](f), CALLS[name](lambda a: np.asarray(a)))
